"""``dense``: the fully connected layer (the paper's FC)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from archcompiler.language.fields import LayerBase, PosIntRef
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    ParityBound,
    RawCost,
    Shape,
    WeightSpec,
    abs64,
    absmax,
    dims,
)

if TYPE_CHECKING:
    import numpy as np


class DenseLayer(LayerBase):
    """Fully connected layer; needs a flat input (after global pooling or flatten)."""

    op: Literal["dense"]
    units: PosIntRef
    bias: bool = True
    scale_width: bool = Field(
        False, description="Apply the width multiplier to units (off: classifiers keep their size)."
    )


@dataclass(frozen=True, kw_only=True)
class Dense(Node):
    """Fully connected layer. Kernel layout is canonical (in, out)."""

    op: ClassVar[str] = "dense"
    spec_layers = (DenseLayer,)
    in_features: int
    units: int
    use_bias: bool = True

    @classmethod
    def attributes_from_spec(cls, layer: DenseLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        units = ctx.round_channels(int(layer.units)) if layer.scale_width else int(layer.units)
        return {"in_features": inputs[0][-1], "units": units, "use_bias": layer.bias}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if len(inputs[0]) != 1:
            raise OpError(f"dense needs a flat input, got {dims(inputs[0])} (add global_avg_pool or flatten first)")
        if inputs[0][0] != self.in_features:
            raise OpError(f"dense expects {self.in_features} input features, got {inputs[0][0]}")
        return (self.units,)

    def weights(self) -> tuple[WeightSpec, ...]:
        kernel = WeightSpec(
            "kernel",
            (self.in_features, self.units),
            "dense_kernel",
            "he",
            self.in_features,
            fill="uniform_fan_out",
            fan_out=self.units,
        )
        return (kernel, WeightSpec("bias", (self.units,))) if self.use_bias else (kernel,)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        w = self.in_features * self.units
        return RawCost(weights=w, bias=self.units if self.use_bias else 0, macs=w)

    @property
    def category(self) -> str:
        return "Fully Connected"

    overwritable = True  # a fresh tensor; its backward reads its input and kernel, not its output

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """The largest per-unit sum of |kernel|; the input features are summed."""
        k = abs64(params["kernel"])  # (in, out)
        bias = absmax(params["bias"]) if "bias" in params else 0.0
        return ParityBound((float(k.sum(axis=0).max()),), int(k.shape[0]), bias)
