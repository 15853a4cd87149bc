"""Canonical weights <-> a Keras model.

The canonical layout *is* Keras' (archcompiler.weights), and canonical names are
``<layer>.<variable>``, so conversion is a lookup by layer name and variable name, no
transposes. This works on any Keras model whose layer names follow the IR, including
keras.applications.MobileNet itself for specs/mobilenet_keras.yaml.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import weights as canonical
from ...ir import Graph
from ...registry import BackendError

Weights = canonical.Weights


def _variables(graph: Graph, model: Any) -> dict[str, Any]:
    """Canonical name -> Keras variable, for every tensor the graph expects."""
    out: dict[str, Any] = {}
    for name in canonical.expected(graph):
        node, param = name.rsplit(".", 1)
        try:
            layer = model.get_layer(node)
        except ValueError:
            raise BackendError(f"keras model has no layer {node!r} (for tensor {name!r})") from None
        by_name = {v.name: v for v in layer.weights}
        if param not in by_name:
            raise BackendError(f"keras layer {node!r} has no variable {param!r} (has {sorted(by_name)})")
        out[name] = by_name[param]
    return out


def get_weights(graph: Graph, model: Any) -> Weights:
    """The model's weights as canonical float32 numpy arrays."""
    return {name: np.asarray(v.numpy(), dtype=np.float32) for name, v in _variables(graph, model).items()}


def set_weights(graph: Graph, model: Any, weights: Weights) -> None:
    """Assign canonical weights; a missing, extra or misshapen tensor fails before any write."""
    canonical.check(graph, weights)
    variables = _variables(graph, model)
    for name, v in variables.items():
        if tuple(v.shape) != tuple(weights[name].shape):  # the model disagrees with its IR
            raise BackendError(f"keras variable for {name!r} has shape {tuple(v.shape)}, weights {weights[name].shape}")
    for name, v in variables.items():
        v.assign(np.asarray(weights[name], dtype=np.float32))
