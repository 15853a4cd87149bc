"""The few torch modules that ``torch.nn`` lacks, each reproducing one IR convention exactly.

Stock ``torch.nn`` layers are used wherever one exists (counting tools such as ptflops and
thop recognise modules by exact type); what is here has no stock equivalent. These classes and
functions are copied verbatim into emitted source (``emit.py`` reads them with
``inspect.getsource``), so they must stay self-contained: only ``torch``, ``nn`` and ``F``
may appear in their bodies, and nothing may depend on another definition here except through
:data:`NEEDS`.
"""

from __future__ import annotations

import torch
from torch import nn


def biased_running_var(bn: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
    """Forward hook: turn torch's running-variance update into Keras' (the *biased* batch variance).

    torch's BatchNorm normalises with the biased batch variance v but folds the unbiased one,
    v * n / (n - 1), into ``running_var``; Keras uses v for both. After torch's update
    ``running_var`` is (1 - m) r + m v n / (n - 1); subtracting m v / (n - 1) leaves
    (1 - m) r + m v, Keras' update. Training mode only: eval mode is untouched, stock torch.
    """
    if not (bn.training and bn.track_running_stats and bn.running_var is not None and bn.momentum is not None):
        return
    x = args[0].detach()
    n = x.numel() // x.size(1)
    if n > 1:
        with torch.no_grad():
            var = x.var([0, *range(2, x.dim())], unbiased=False)
            # Through .data: autograd saved running_var for the backward (which reads it only in
            # eval mode), so an ordinary in-place change would fail its version check.
            bn.running_var.data.sub_(var * (bn.momentum / (n - 1)))


def biased_batchnorm2d(num_features: int, **kwargs) -> nn.BatchNorm2d:
    """A stock nn.BatchNorm2d whose training step updates the running variance as Keras does
    (:func:`biased_running_var`). A factory, not a subclass, so that tools that count by exact
    module type (ptflops, thop) see a BatchNorm2d."""
    bn = nn.BatchNorm2d(num_features, **kwargs)
    bn.register_forward_hook(biased_running_var)
    return bn


def biased_batchnorm1d(num_features: int, **kwargs) -> nn.BatchNorm1d:
    """The (N, C) variant of :func:`biased_batchnorm2d`."""
    bn = nn.BatchNorm1d(num_features, **kwargs)
    bn.register_forward_hook(biased_running_var)
    return bn


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


FACTORIES = ("biased_batchnorm2d", "biased_batchnorm1d")
"""Functions here that build a layer (a stock module set up specially); the rest are classes."""

NEEDS: dict[str, tuple[str, ...]] = {
    "biased_batchnorm2d": ("biased_running_var",),
    "biased_batchnorm1d": ("biased_running_var",),
}
"""Definitions that use another one from this module: emitted code copies those too."""
