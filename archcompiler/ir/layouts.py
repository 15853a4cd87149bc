"""Tensor layouts: canonical (channels-last, Keras) <-> channels-first (PyTorch, ONNX).

Written once here so that every channels-first backend (torch today, ONNX next) converts the
same way; a backend only declares which layout it wants (``Backend.weight_layout`` and
``Backend.activation_layout``). Framework-free: numpy only, imported lazily.

Weights, by the layout tag of archcompiler.weights.specs (canonical -> channels-first):

=================  =====================  ==============================================
layout             canonical              channels-first
=================  =====================  ==============================================
conv_kernel        (kh, kw, I/g, O)       (O, I/g, kh, kw)                      (OIHW)
depthwise_kernel   (kh, kw, C, M)         (C*M, 1, kh, kw), output channel c*M + m
dense_kernel       (in, out)              (out, in)
vector             (n,)                   (n,)
=================  =====================  ==============================================

The depthwise order ``c*M + m`` is that of a grouped convolution with ``groups=C`` (each group
of M consecutive outputs reads input channel c) and of Keras' own reshape of its output.

Activations: a batch is NHWC in the IR and NCHW channels-first; (N, C) vectors are the same in
both. Per-example shapes (no batch axis) convert likewise: (H, W, C) <-> (C, H, W).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

    from archcompiler.weights import Layout

WeightLayout = Literal["canonical", "channels_first"]
"""How a backend stores weight tensors: as archcompiler.weights does, or channels-first."""

ActivationLayout = Literal["channels_last", "channels_first"]
"""How a backend lays out image batches: NHWC (the IR's) or NCHW."""

WEIGHT_LAYOUTS: tuple[str, ...] = ("canonical", "channels_first")
ACTIVATION_LAYOUTS: tuple[str, ...] = ("channels_last", "channels_first")

_RANK = {"conv_kernel": 4, "depthwise_kernel": 4, "dense_kernel": 2, "vector": 1}


def to_channels_first(arr: np.ndarray, layout: Layout) -> np.ndarray:
    """A canonical tensor of ``layout`` in the channels-first layout (contiguous)."""
    import numpy as np

    channels_first_shape(tuple(arr.shape), layout)  # checks the layout and the rank
    if layout == "conv_kernel":
        return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))
    if layout == "depthwise_kernel":
        kh, kw, c, m = arr.shape
        # (kh, kw, C, M) -> (kh, kw, C*M) with C-major flattening: channel index c*M + m.
        return np.ascontiguousarray(arr.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])
    if layout == "dense_kernel":
        return np.ascontiguousarray(arr.T)
    return np.ascontiguousarray(arr)


def channels_first_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """The channels-first shape of a canonical tensor of ``shape``."""
    if layout not in _RANK:
        raise ValueError(f"unknown weight layout {layout!r}; expected one of {', '.join(_RANK)}")
    if len(shape) != _RANK[layout]:
        raise ValueError(f"a canonical {layout} has {_RANK[layout]} axes, got shape {tuple(shape)}")
    if layout == "conv_kernel":
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == "depthwise_kernel":
        return (shape[2] * shape[3], 1, shape[0], shape[1])
    if layout == "dense_kernel":
        return (shape[1], shape[0])
    return tuple(shape)


def from_channels_first(arr: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> np.ndarray:
    """The canonical tensor of ``shape`` from its channels-first form (inverse of
    :func:`to_channels_first`). ``shape`` is needed because a depthwise (C*M, 1, kh, kw)
    kernel does not say how C*M splits into C and M."""
    import numpy as np

    want = channels_first_shape(shape, layout)
    if tuple(arr.shape) != want:
        raise ValueError(f"canonical {layout} {tuple(shape)} is {want} channels-first, got {tuple(arr.shape)}")
    if layout == "conv_kernel":
        out = arr.transpose(2, 3, 1, 0)
    elif layout == "depthwise_kernel":
        out = arr[:, 0].transpose(1, 2, 0).reshape(shape)
    elif layout == "dense_kernel":
        out = arr.T
    else:
        out = arr
    return np.ascontiguousarray(out)


def weight_to(arr: np.ndarray, layout: Layout, target: WeightLayout) -> np.ndarray:
    """A canonical tensor in a backend's weight layout."""
    if target == "canonical":
        import numpy as np

        return np.ascontiguousarray(arr)
    if target == "channels_first":
        return to_channels_first(arr, layout)
    raise ValueError(f"unknown weight layout {target!r}; expected one of {', '.join(WEIGHT_LAYOUTS)}")


def weight_from(arr: np.ndarray, layout: Layout, source: WeightLayout, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor in a backend's weight layout, back in the canonical one."""
    if source == "canonical":
        import numpy as np

        return np.ascontiguousarray(arr)
    if source == "channels_first":
        return from_channels_first(arr, layout, shape)
    raise ValueError(f"unknown weight layout {source!r}; expected one of {', '.join(WEIGHT_LAYOUTS)}")


def batch_to(x: np.ndarray, target: ActivationLayout) -> np.ndarray:
    """An IR (NHWC) batch in a backend's activation layout; (N, C) vectors unchanged."""
    import numpy as np

    if target == "channels_first" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    _check_activation_layout(target)
    return x


def batch_from(x: np.ndarray, source: ActivationLayout) -> np.ndarray:
    """A batch in a backend's activation layout, back in the IR's NHWC; vectors unchanged."""
    import numpy as np

    if source == "channels_first" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    _check_activation_layout(source)
    return x


def shape_to(shape: tuple[int, ...], target: ActivationLayout) -> tuple[int, ...]:
    """A per-example IR shape (H, W, C) in a backend's activation layout ((C, H, W))."""
    _check_activation_layout(target)
    if target == "channels_first" and len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return tuple(shape)


def _check_activation_layout(layout: str) -> None:
    if layout not in ACTIVATION_LAYOUTS:
        raise ValueError(f"unknown activation layout {layout!r}; expected one of {', '.join(ACTIVATION_LAYOUTS)}")
