"""Canonical weights <-> a built torch model's state_dict (names from archcompiler.weights)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from archcompiler import ir
from archcompiler import weights as canonical
from archcompiler.registry import BackendError

from .convert import kernel_from_torch, kernel_to_torch, torch_key


def get_weights(graph: ir.Graph, model: nn.Module) -> canonical.Weights:
    """Every canonical tensor, read from the model, as float32 numpy in Keras layouts."""
    state = model.state_dict()
    out: canonical.Weights = {}
    for name in canonical.expected(graph):
        node_name, param = name.rsplit(".", 1)
        node = graph[node_name]
        key = torch_key(node, param)
        if key not in state:
            raise BackendError(f"model has no tensor {key!r} for {name!r}")
        arr = state[key].detach().cpu().numpy().astype(np.float32, copy=True)
        out[name] = kernel_from_torch(node, arr) if param == "kernel" else arr
    return out


def set_weights(graph: ir.Graph, model: nn.Module, weights: canonical.Weights) -> None:
    """Load canonical weights after checking every name and shape (weights.check).

    All tensors are converted and checked against the model before any is copied, so a
    failure leaves the model unchanged.
    """
    canonical.check(graph, weights)
    state = model.state_dict()
    staged: dict[str, torch.Tensor] = {}
    for name in canonical.expected(graph):
        node_name, param = name.rsplit(".", 1)
        node = graph[node_name]
        arr = np.asarray(weights[name], dtype=np.float32)
        if param == "kernel":
            arr = kernel_to_torch(node, arr)
        key = torch_key(node, param)
        if key not in state or tuple(state[key].shape) != arr.shape:
            got = tuple(state[key].shape) if key in state else "absent"
            raise BackendError(f"tensor {name!r}: model tensor {key!r} is {got}, converted weight is {arr.shape}")
        staged[key] = torch.from_numpy(np.ascontiguousarray(arr))
    with torch.no_grad():
        for key, value in staged.items():
            state[key].copy_(value)
