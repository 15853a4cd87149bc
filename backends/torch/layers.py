"""The few torch modules that ``torch.nn`` lacks, each reproducing one IR convention exactly.

These classes are also copied verbatim into emitted source (``emit.py`` reads them with
``inspect.getsource``), so they must stay self-contained: only ``torch``, ``nn`` and ``F``
may appear in their bodies, and no class may depend on another one defined here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PaddedConv2d(nn.Conv2d):
    """A Conv2d with explicit, possibly asymmetric, zero padding (top, bottom, left, right).

    TensorFlow "same" with an even total pad puts the extra pixel at the bottom/right; torch's
    ``padding=`` is symmetric, so the pad is applied here with F.pad. Subclassing Conv2d keeps
    the state_dict keys (``<name>.weight``) those of a plain convolution.
    """

    def __init__(self, *args, pad: tuple[int, int, int, int] = (0, 0, 0, 0), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        top, bottom, left, right = pad
        self.pad = (left, right, top, bottom)  # F.pad order: last dim first

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that updates the running variance with the *biased* batch variance (Keras).

    torch's BatchNorm normalises with the biased batch variance but folds the unbiased one
    (n / (n - 1) times larger) into ``running_var``; Keras' BatchNormalization uses the biased
    one for both. Only the training-mode update differs; eval mode is torch's own code path.
    ``momentum`` is torch's (1 - Keras decay).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        with torch.no_grad():
            self.running_mean.lerp_(mean.flatten(), self.momentum)
            self.running_var.lerp_(var.flatten(), self.momentum)
            self.num_batches_tracked.add_(1)
        # Normalised with the batch statistics, differentiably (as torch and Keras both do).
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            shape = mean.shape
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


class BatchNorm1d(nn.BatchNorm1d):
    """The (N, C) variant of :class:`BatchNorm2d`: biased running-variance update (Keras)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        mean = x.mean(0)
        var = x.var(0, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
            self.num_batches_tracked.add_(1)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


class GlobalPool(nn.Module):
    """Average or max over H and W, optionally keeping them as 1 x 1 (Keras ``keepdims``)."""

    def __init__(self, kind: str = "avg", keepdims: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.keepdims = keepdims

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, keepdims={self.keepdims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return x.amax(dim=(2, 3), keepdim=self.keepdims)
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


class FlattenHWC(nn.Module):
    """Flatten in (H, W, C) order, as a channels-last framework does.

    Flattening NCHW directly would order features (C, H, W) and the next dense layer would
    need a permuted weight matrix; permuting first keeps weights identical to Keras'.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)


class Add(nn.Module):
    """Element-wise sum of several inputs (a residual connection)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    """Concatenation along channels: dim 1 of (N, C, H, W) and of (N, C)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class Rescaling(nn.Module):
    """``x * scale + offset`` (Keras' Rescaling layer), e.g. MobileNetV3's [0, 255] -> [-1, 1]."""

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.scale = scale
        self.offset = offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class Multiply(nn.Module):
    """Element-wise product; a (N, C, 1, 1) gate broadcasts over (N, C, H, W)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out
