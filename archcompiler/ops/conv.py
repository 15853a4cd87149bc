"""Convolutions: full/grouped ``conv`` and ``depthwise_conv`` (the filtering half of a separable conv)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from archcompiler.language.fields import LayerBase, Padding, PairRef, PosIntRef
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    Pad4,
    Pair,
    ParityBound,
    RawCost,
    Shape,
    WeightSpec,
    abs64,
    absmax,
    check_padding,
    image,
    pair,
    window,
)

if TYPE_CHECKING:
    import numpy as np


class ConvLayer(LayerBase):
    """A full convolution (``groups`` > 1 for a grouped one). ``filters`` is scaled by the width multiplier."""

    op: Literal["conv"]
    filters: PosIntRef
    kernel: PairRef
    stride: PairRef = 1
    padding: Padding | None = Field(None, description="Default: defaults.padding.")
    dilation: PairRef = 1
    groups: PosIntRef = 1
    bias: bool | None = Field(None, description="Default: defaults.bias.")
    scale_width: bool = Field(True, description="Apply the width multiplier and rounding rule to filters.")


class DepthwiseConvLayer(LayerBase):
    """One kernel per input channel (times ``multiplier``): the filtering half of a separable conv."""

    op: Literal["depthwise_conv"]
    kernel: PairRef
    stride: PairRef = 1
    padding: Padding | None = None
    dilation: PairRef = 1
    multiplier: PosIntRef = 1
    bias: bool | None = None


def _effective(kernel: Pair, dilation: Pair) -> Pair:
    return (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)


def _window_attributes(layer: Any, ctx: LowerContext, shape: Shape, what: str) -> dict[str, Any]:
    h, w, _ = image(shape, what)
    k, s, d = pair(layer.kernel), pair(layer.stride), pair(layer.dilation)
    return {
        "kernel": k,
        "stride": s,
        "dilation": d,
        "padding": ctx.pads(layer.padding, (h, w), _effective(k, d), s),
        "use_bias": ctx.bias if layer.bias is None else layer.bias,
    }


@dataclass(frozen=True, kw_only=True)
class Conv2D(Node):
    """A full (or grouped) convolution. Kernel layout is canonical (kh, kw, in/groups, out)."""

    op: ClassVar[str] = "conv2d"
    spec_layers = (ConvLayer,)
    in_channels: int
    filters: int
    kernel: Pair
    stride: Pair
    padding: Pad4
    dilation: Pair = (1, 1)
    groups: int = 1
    use_bias: bool = False

    @classmethod
    def attributes_from_spec(cls, layer: ConvLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        filters = int(layer.filters)
        if layer.scale_width:
            filters = ctx.round_channels(filters)
        return {
            **_window_attributes(layer, ctx, inputs[0], "conv"),
            "in_channels": image(inputs[0], "conv")[2],
            "filters": filters,
            "groups": int(layer.groups),
        }

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        h, w, c = image(inputs[0], "conv")
        check_padding(self.padding)
        if c != self.in_channels:
            raise OpError(f"conv expects {self.in_channels} input channels, got {c}")
        if c % self.groups or self.filters % self.groups:
            raise OpError(f"groups={self.groups} must divide the input channels {c} and filters {self.filters}")
        oh, ow = window("kernel", (h, w, c), self.kernel, self.stride, self.padding, self.dilation)
        return (oh, ow, self.filters)

    def weights(self) -> tuple[WeightSpec, ...]:
        taps = self.kernel[0] * self.kernel[1]
        fan_in = taps * (self.in_channels // self.groups)
        shape = (*self.kernel, self.in_channels // self.groups, self.filters)
        fan_out = taps * self.filters // self.groups  # as TF's reference and timm (fix_group_fanout)
        kernel = WeightSpec("kernel", shape, "conv_kernel", "he", fan_in, fill="normal_fan_out", fan_out=fan_out)
        return (kernel, WeightSpec("bias", (self.filters,))) if self.use_bias else (kernel,)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        w = self.kernel[0] * self.kernel[1] * (self.in_channels // self.groups) * self.filters
        return RawCost(weights=w, bias=self.filters if self.use_bias else 0, macs=w * self.shape[0] * self.shape[1])

    @property
    def category(self) -> str:
        kind = "Conv" if self.groups == 1 else f"Conv g{self.groups}"
        return f"{kind} {self.kernel[0]}x{self.kernel[1]}"

    overwritable = True  # a fresh tensor; its backward reads its input and kernel, not its output

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """The largest per-filter sum of |kernel| (kh, kw, in / groups); the fan-in is summed."""
        k = abs64(params["kernel"])  # (kh, kw, cin / groups, cout)
        bias = absmax(params["bias"]) if "bias" in params else 0.0
        return ParityBound((float(k.sum(axis=(0, 1, 2)).max()),), int(k.shape[0] * k.shape[1] * k.shape[2]), bias)


@dataclass(frozen=True, kw_only=True)
class DepthwiseConv2D(Node):
    """Depthwise convolution: one kh x kw filter per input channel (times ``multiplier``)."""

    op: ClassVar[str] = "depthwise_conv2d"
    spec_layers = (DepthwiseConvLayer,)
    in_channels: int
    multiplier: int
    kernel: Pair
    stride: Pair
    padding: Pad4
    dilation: Pair = (1, 1)
    use_bias: bool = False

    @classmethod
    def attributes_from_spec(
        cls, layer: DepthwiseConvLayer, ctx: LowerContext, inputs: Sequence[Shape]
    ) -> dict[str, Any]:
        return {
            **_window_attributes(layer, ctx, inputs[0], "depthwise_conv"),
            "in_channels": image(inputs[0], "depthwise_conv")[2],
            "multiplier": int(layer.multiplier),
        }

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        h, w, c = image(inputs[0], "depthwise_conv")
        check_padding(self.padding)
        if c != self.in_channels:
            raise OpError(f"depthwise_conv expects {self.in_channels} input channels, got {c}")
        oh, ow = window("kernel", (h, w, c), self.kernel, self.stride, self.padding, self.dilation)
        return (oh, ow, c * self.multiplier)

    def weights(self) -> tuple[WeightSpec, ...]:
        shape = (*self.kernel, self.in_channels, self.multiplier)
        taps = self.kernel[0] * self.kernel[1]
        # fan-out per group (one group per input channel): kh * kw * multiplier
        kernel = WeightSpec(
            "kernel", shape, "depthwise_kernel", "he", taps, fill="normal_fan_out", fan_out=taps * self.multiplier
        )
        bias = WeightSpec("bias", (self.in_channels * self.multiplier,))
        return (kernel, bias) if self.use_bias else (kernel,)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        w = self.kernel[0] * self.kernel[1] * self.in_channels * self.multiplier
        bias = self.in_channels * self.multiplier if self.use_bias else 0
        return RawCost(weights=w, bias=bias, macs=w * self.shape[0] * self.shape[1])

    @property
    def category(self) -> str:
        return f"Conv dw {self.kernel[0]}x{self.kernel[1]}"

    overwritable = True  # as Conv2D

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """The largest per-filter sum of |kernel| over its kh x kw taps, which are summed."""
        k = abs64(params["kernel"])  # (kh, kw, C, M)
        bias = absmax(params["bias"]) if "bias" in params else 0.0
        return ParityBound((float(k.sum(axis=(0, 1)).max()),), int(k.shape[0] * k.shape[1]), bias)
