"""The few torch modules that ``torch.nn`` lacks, each reproducing one IR convention exactly.

Stock ``torch.nn`` layers are used wherever one exists (counting tools such as ptflops and
thop recognise modules by exact type); what is here has no stock equivalent. These classes are
copied verbatim into emitted source (``emit.py`` reads them with ``inspect.getsource``), so they
must stay self-contained: only ``torch``, ``nn`` and ``F`` may appear in their bodies, and no
class may depend on another one defined here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BiasedBatchNorm:
    """A stock nn.BatchNorm2d (``dims=2``) or nn.BatchNorm1d (``dims=1``) whose training step
    updates the running variance as Keras does, with the *biased* batch variance.

    Calling the class returns the stock module itself, with :meth:`update_running_var` as a
    forward hook: eval mode is torch's own code, and tools that count by exact module type
    (ptflops, thop) see a BatchNorm, which a subclass would hide from them.
    """

    def __new__(cls, num_features: int, dims: int = 2, **kwargs) -> nn.BatchNorm1d | nn.BatchNorm2d:
        bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(num_features, **kwargs)
        bn.register_forward_hook(cls.update_running_var)
        return bn

    @staticmethod
    def update_running_var(bn: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        """torch normalises with the biased batch variance v but folds the unbiased one,
        v * n / (n - 1), into ``running_var``: (1 - m) r + m v n / (n - 1). Subtracting
        m v / (n - 1) leaves (1 - m) r + m v, Keras' update. Training mode only."""
        if not (bn.training and bn.track_running_stats and bn.running_var is not None and bn.momentum is not None):
            return
        x = args[0].detach()
        n = x.numel() // x.size(1)
        if n > 1:
            with torch.no_grad():
                var = x.var([0, *range(2, x.dim())], unbiased=False)
                # Through .data: autograd saved running_var for the backward (which reads it
                # only in eval mode), so an ordinary in-place change would fail its version check.
                bn.running_var.data.sub_(var * (bn.momentum / (n - 1)))


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


class ExactHardsigmoid(nn.Hardsigmoid):
    """nn.Hardsigmoid (``relu6(x + 3) / 6``) whose float64 gradient is 1/6 rounded in float64.

    torch's own backward multiplies by ``1.0f / 6.0f``, float32's 1/6, in every dtype: in float64
    the gradient is 2.98e-8 too large, far above rounding, and MobileNetV3's training steps
    differed from Keras'. In float64 the forward is therefore ``relu6(x + 3) / 6`` (bitwise the
    same values, not in place), whose backward divides by 6; float32 keeps torch's own kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            return F.relu6(x + 3.0) / 6.0
        return F.hardsigmoid(x, self.inplace)


class DropPath(nn.Module):
    """Stochastic depth (timm's ``drop_path``): in training each example's branch is zeroed
    with probability ``rate`` and the kept ones scaled by 1 / (1 - rate); the identity in eval."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def extra_repr(self) -> str:
        return f"rate={self.rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # timm's order: the same values from the same generator state


class LayerScale(nn.Module):
    """``x * gamma`` over the channels (dim 1) of (N, C, H, W) or (N, C): timm's LayerScale2d,
    its ``gamma`` named alike, so timm's state_dict keys map one to one."""

    def __init__(self, channels: int, init: float = 1e-5) -> None:
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.full((channels,), init))

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}, init={self.init}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(-1, *([1] * (x.dim() - 2)))


class Normalization(nn.Module):
    """Keras' Normalization over the channels (dim 1): ``(x - mean) / max(sqrt(variance), 1e-7)``,
    mean and variance buffers (non-trainable, as Keras' weights; Keras' ``count`` is not kept)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 2)))
        std = torch.clamp(torch.sqrt(self.variance), min=1e-7)
        return (x - self.mean.view(shape)) / std.view(shape)


class Multiply(nn.Module):
    """Element-wise product; a (N, C, 1, 1) gate broadcasts over (N, C, H, W)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class MobileMQA(nn.Module):
    """Mobile MQA (MobileNetV4), timm's ``MultiQueryAttention2d`` without biases: its submodule
    names (``query.proj``, ``key.down_conv``, ``key.norm``, ``key.proj``, ``value.*``,
    ``output.proj``), so timm's state_dict keys load as they are, and its arithmetic.

    The attention is two explicit matrix products (queries of every head as rows against the
    one key/value head), not ``F.scaled_dot_product_attention``: torch's flop counter sees
    them, which it does not see in the CPU flash kernel. ``biased_variance``: the BatchNorms'
    training step updates the running variance with the biased batch variance (Keras').
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        heads: int,
        key_dim: int,
        value_dim: int,
        kv_stride: int = 1,
        dw_kernel: int = 3,
        padding: tuple[int, int, int, int] = (1, 1, 1, 1),
        eps: float = 1e-5,
        momentum: float = 0.1,
        biased_variance: bool = False,
    ) -> None:
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.scale = key_dim**-0.5
        self.biased_variance = biased_variance
        top, bottom, left, right = padding
        symmetric = top == bottom and left == right
        self.pad = None if symmetric else (left, right, top, bottom)
        conv_pad = (top, left) if symmetric else 0
        self.query = nn.ModuleDict({"proj": nn.Conv2d(in_channels, heads * key_dim, 1, bias=False)})
        for path, dim in (("key", key_dim), ("value", value_dim)):
            parts: dict[str, nn.Module] = {}
            if kv_stride > 1:
                parts["down_conv"] = nn.Conv2d(
                    in_channels, in_channels, dw_kernel, kv_stride, conv_pad, groups=in_channels, bias=False
                )
                parts["norm"] = nn.BatchNorm2d(in_channels, eps=eps, momentum=momentum)
            parts["proj"] = nn.Conv2d(in_channels, dim, 1, bias=False)
            setattr(self, path, nn.ModuleDict(parts))
        self.output = nn.ModuleDict({"proj": nn.Conv2d(heads * value_dim, filters, 1, bias=False)})

    def _key_value(self, path: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, P): the strided depthwise conv and BatchNorm (kv_stride > 1), the projection."""
        if "down_conv" in path:
            x = path["down_conv"](x if self.pad is None else F.pad(x, self.pad))
            bn = path["norm"]
            if self.biased_variance and bn.training and x.numel() > x.size(1):
                n = x.numel() // x.size(1)
                var = x.detach().var([0, 2, 3], unbiased=False)
                x = bn(x)
                with torch.no_grad():  # torch folds v * n / (n - 1) in: leave (1 - m) r + m v
                    bn.running_var.data.sub_(var * (bn.momentum / (n - 1)))
            else:
                x = bn(x)
        return path["proj"](x).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # (B, heads * key_dim, H, W) -> rows (position, head) of key_dim: timm's head-major channels
        q = self.query["proj"](x).permute(0, 2, 3, 1).reshape(b, h * w * self.heads, self.key_dim)
        k = self._key_value(self.key, x)  # (B, key_dim, P)
        v = self._key_value(self.value, x).transpose(1, 2)  # (B, P, value_dim)
        attn = torch.softmax((q * self.scale) @ k, dim=-1)
        o = (attn @ v).reshape(b, h, w, self.heads * self.value_dim).permute(0, 3, 1, 2)
        return self.output["proj"](o)


FACTORIES = ("BiasedBatchNorm",)
"""Classes here that build a stock module rather than being one (their ``__new__`` returns it)."""
