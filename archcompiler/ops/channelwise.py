"""Per-channel ops with weights of their own: ``layer_scale`` (MobileNetV4, ConvNeXt)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from archcompiler.language.fields import FLOAT32_MAX, FiniteRef, LayerBase
from archcompiler.ops.base import LowerContext, Node, OpError, ParityBound, RawCost, Shape, WeightSpec, absmax

if TYPE_CHECKING:
    import numpy as np


class LayerScaleLayer(LayerBase):
    """``x * gamma``, one learned gamma per channel (timm's LayerScale2d), set to ``init``
    when a model is built."""

    op: Literal["layer_scale"]
    init: FiniteRef = 1e-5


@dataclass(frozen=True, kw_only=True)
class LayerScale(Node):
    """``x * gamma`` over the channel (last) axis; gamma trainable, filled with ``init``.
    Counted as BatchNorm's gamma is (torch and keras count it, the paper's convention does
    not); no multiply-adds in any convention (torch's flop counter and fvcore count none)."""

    op: ClassVar[str] = "layer_scale"
    spec_layers = (LayerScaleLayer,)
    channels: int
    init: float = 1e-5
    overwritable = True  # a fresh tensor; its backward reads x and gamma, not its output

    @classmethod
    def attributes_from_spec(cls, layer: LayerScaleLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"channels": inputs[0][-1], "init": float(layer.init)}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if inputs[0][-1] != self.channels:
            raise OpError(f"layer_scale over {self.channels} channels, got an input of {inputs[0][-1]}")
        if not (math.isfinite(self.init) and abs(self.init) <= FLOAT32_MAX):
            raise OpError(f"layer_scale needs a finite float32 init, got {self.init}")
        return inputs[0]

    def weights(self) -> tuple[WeightSpec, ...]:
        return (WeightSpec("gamma", (self.channels,), init="gamma", fill="constant", value=self.init),)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        return RawCost(bn_affine=self.channels)

    @property
    def category(self) -> str:
        return "Layer Scale"

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        # |gamma * x - gamma * y| <= max|gamma| * |x - y|; one rounding per element
        return ParityBound((absmax(params["gamma"]),), 1)
