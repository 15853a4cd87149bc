"""Layout conversions between the IR's conventions (channels-last, Keras kernels) and torch's.

Activations: IR ``(H, W, C)`` per example is torch ``(C, H, W)``; vectors are unchanged.
Weights (canonical -> torch):

* conv kernel ``(kh, kw, I/g, O)`` -> ``(O, I/g, kh, kw)``
* depthwise kernel ``(kh, kw, C, M)`` -> ``(C*M, 1, kh, kw)``, output channel ``c*M + m``
  (the order of torch's grouped conv with groups=C, and of Keras' reshape)
* dense kernel ``(in, out)`` -> ``(out, in)``
* BatchNorm gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var
"""

from __future__ import annotations

import numpy as np

from archcompiler import ir

BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
"""Canonical BatchNorm tensor -> torch state_dict suffix."""


def to_torch_layout(x: np.ndarray) -> np.ndarray:
    """Batched channels-last -> channels-first (NHWC -> NCHW); (N, C) is unchanged."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def from_torch_layout(x: np.ndarray) -> np.ndarray:
    """Batched channels-first -> channels-last (NCHW -> NHWC); (N, C) is unchanged."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def torch_key(node: ir.Node, param: str) -> str:
    """Canonical ``<node>.<param>`` -> the torch state_dict key."""
    if isinstance(node, ir.BatchNorm):
        return f"{node.name}.{BN_NAMES[param]}"
    return f"{node.name}.{'weight' if param == 'kernel' else 'bias'}"


def kernel_to_torch(node: ir.Node, k: np.ndarray) -> np.ndarray:
    """A canonical kernel in torch's layout."""
    if isinstance(node, ir.DepthwiseConv2D):
        kh, kw, c, m = k.shape
        return np.ascontiguousarray(k.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])
    if isinstance(node, ir.Conv2D):
        return np.ascontiguousarray(k.transpose(3, 2, 0, 1))
    if isinstance(node, ir.Dense):
        return np.ascontiguousarray(k.T)
    raise TypeError(f"node {node.name!r} ({node.op}) has no kernel")


def kernel_from_torch(node: ir.Node, w: np.ndarray) -> np.ndarray:
    """A torch weight in the canonical layout (inverse of :func:`kernel_to_torch`)."""
    if isinstance(node, ir.DepthwiseConv2D):
        return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0).reshape(*node.kernel, node.in_channels, node.multiplier))
    if isinstance(node, ir.Conv2D):
        return np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    if isinstance(node, ir.Dense):
        return np.ascontiguousarray(w.T)
    raise TypeError(f"node {node.name!r} ({node.op}) has no kernel")
