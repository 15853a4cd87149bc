"""Instantiate a keras.Model from the IR, and check it against the IR.

The functional API mirrors the IR's DAG directly: each layer call reads the outputs of the
layers its description names. Layer names are the IR node names, so weights map by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...codegen import describe_graph
from ...cost import cost
from ...ir import Graph
from ...registry import BackendError
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


def node_output(model: Any, name: str) -> Any:
    """The symbolic output tensor of the layer built for IR node ``name``."""
    return model.get_layer(name).output


def param_counts(model: Any) -> tuple[int, int]:
    """(trainable, non-trainable) element counts, as ``model.count_params()`` splits them."""
    import numpy as np

    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    frozen = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    return trainable, frozen


def verify_model(graph: Graph, model: Any) -> None:
    """Every node's output shape, and both parameter counts, must equal the IR's."""
    for node in graph.nodes:
        try:
            layer = model.get_layer(node.name)
        except ValueError:
            raise BackendError(f"keras model has no layer for IR node {node.name!r}") from None
        got = tuple(layer.output.shape[1:])
        if got != tuple(node.shape):
            raise BackendError(f"node {node.name!r} ({node.op}): keras output shape {got}, IR says {node.shape}")
    want = cost(graph, "keras")
    trainable, frozen = param_counts(model)
    if (trainable, frozen) != (want.trainable, want.non_trainable):
        # Name the first node whose own counts differ, so the message points somewhere useful.
        for nc in want.nodes:
            layer = model.get_layer(nc.name)
            t, f = (sum(int(_numel(v)) for v in vs) for vs in (layer.trainable_weights, layer.non_trainable_weights))
            if (t, f) != (nc.trainable, nc.non_trainable):
                raise BackendError(
                    f"node {nc.name!r}: keras has {t} trainable / {f} non-trainable parameters, "
                    f"IR says {nc.trainable} / {nc.non_trainable}"
                )
        raise BackendError(
            f"keras model has {trainable} trainable / {frozen} non-trainable parameters, "
            f"IR says {want.trainable} / {want.non_trainable}"
        )


def _numel(v: Any) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n
