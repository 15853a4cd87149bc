"""Canonical (channels-last, Keras) tensors <-> channels-first ONNX initializers, by layout tag.

Framework-free on purpose: the same four rules are what ``archcompiler/layouts.py`` (the
backend kit) provides; when it lands this module becomes a re-export of it.

==================  =============================  ==============================================
layout tag          canonical                      channels-first
==================  =============================  ==============================================
conv_kernel         (kh, kw, I/g, O)               (O, I/g, kh, kw)  (ONNX Conv ``W``)
depthwise_kernel    (kh, kw, C, M)                 (C*M, 1, kh, kw)  output channel ``c*M + m``
dense_kernel        (in, out)                      (out, in)         (Gemm with ``transB=1``)
vector              (C,)                           (C,)
==================  =============================  ==============================================
"""

from __future__ import annotations

import numpy as np


def to_channels_first(arr: np.ndarray, layout: str) -> np.ndarray:
    """A canonical tensor in the channels-first layout of its tag."""
    if layout == "conv_kernel":
        return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))
    if layout == "depthwise_kernel":
        kh, kw, c, m = arr.shape
        # Keras reshapes (kh, kw, C, M) to C*M outputs with m varying fastest: channel c*M + m.
        return np.ascontiguousarray(arr.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])
    if layout == "dense_kernel":
        return np.ascontiguousarray(arr.T)
    if layout == "vector":
        return np.ascontiguousarray(arr)
    raise ValueError(f"unknown layout tag {layout!r}")


def from_channels_first(arr: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_channels_first`; ``shape`` is the canonical shape (it fixes C and M)."""
    if layout == "conv_kernel":
        out = arr.transpose(2, 3, 1, 0)
    elif layout == "depthwise_kernel":
        out = arr[:, 0].transpose(1, 2, 0).reshape(shape)
    elif layout == "dense_kernel":
        out = arr.T
    elif layout == "vector":
        out = arr
    else:
        raise ValueError(f"unknown layout tag {layout!r}")
    return np.ascontiguousarray(out)
