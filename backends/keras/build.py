"""Instantiate a keras.Model from the IR (the kit checks it against the IR: backend.py glue).

The functional API mirrors the IR's DAG directly: each layer call reads the outputs of the
layers its description names. Layer names are the IR node names, so weights map by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...codegen import describe_graph
from ...ir import Graph
from .ops import BACKEND, HANDLERS, Handler


def build_model(graph: Graph, handlers: Mapping[str, Handler] = HANDLERS) -> Any:
    """A keras.Model equivalent to ``graph`` (NHWC, float32, Keras' default random init),
    built through ``handlers`` (the backend instance's table)."""
    from ._framework import keras

    described = describe_graph(graph, handlers, BACKEND)  # UnsupportedOpError before any layer exists
    tensors: dict[str, Any] = {}
    inputs = []
    for item in described:
        for call in item.calls:
            layer = item.handler.instantiate(call)
            if not call.inputs:  # an input: keras.Input is a tensor already
                tensors[call.name] = layer
                inputs.append(layer)
                continue
            args = [tensors[name] for name in call.inputs]
            tensors[call.name] = layer(args[0] if len(args) == 1 else args)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs=model_inputs, outputs=tensors[graph.output], name=graph.name)
