"""Instantiate a keras.Model from the IR (the kit checks it against the IR: backend.py glue).

The functional API mirrors the IR's DAG directly: each layer call reads the outputs of the
layers its description names. Layer names are the IR node names, so weights map by name.
"""

from __future__ import annotations

from typing import Any

from ...ir import Graph
from .ops import describe, handler_for


def build_model(graph: Graph) -> Any:
    """A keras.Model equivalent to ``graph`` (NHWC, float32, Keras' default random init)."""
    from ._framework import keras

    calls = describe(graph)  # raises UnsupportedOpError before any layer is created
    tensors: dict[str, Any] = {}
    inputs = []
    for call in calls:
        layer = handler_for(call, graph).build_layer(call)
        if call.cls == "Input":
            tensors[call.name] = layer
            inputs.append(layer)
            continue
        args = [tensors[name] for name in call.inputs]
        tensors[call.name] = layer(args[0] if len(args) == 1 else args)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs=model_inputs, outputs=tensors[graph.output], name=graph.name)
