"""Element-wise ops without weights: ``activation``, ``rescaling`` and ``softmax``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field

from archcompiler.language.fields import FLOAT32_MAX, FiniteRef, LayerBase
from archcompiler.ops.base import LowerContext, Node, OpError, Shape

ActivationKind = Literal["relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish"]
"""Every kind means PyTorch's formula (hard_sigmoid = relu6(x + 3) / 6, as Keras 3; not Keras 2's)."""


class ActivationLayer(LayerBase):
    op: Literal["activation"]
    kind: ActivationKind | None = Field(None, description="Default: defaults.activation.")


class RescalingLayer(LayerBase):
    """``x * scale + offset`` (Keras' Rescaling): in-model preprocessing, e.g. MobileNetV3's."""

    op: Literal["rescaling"]
    scale: FiniteRef
    offset: FiniteRef = 0.0


class SoftmaxLayer(LayerBase):
    op: Literal["softmax"]


@dataclass(frozen=True, kw_only=True)
class Activation(Node):
    op: ClassVar[str] = "activation"
    spec_layers = (ActivationLayer,)
    kind: ActivationKind

    @classmethod
    def attributes_from_spec(cls, layer: ActivationLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"kind": layer.kind or ctx.activation}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if self.kind not in get_args(ActivationKind):
            raise OpError(f"unknown activation {self.kind!r}; known: {', '.join(get_args(ActivationKind))}")
        return inputs[0]


@dataclass(frozen=True, kw_only=True)
class Rescaling(Node):
    """``x * scale + offset`` element-wise; no weights, no multiply-adds counted (as fvcore)."""

    op: ClassVar[str] = "rescaling"
    spec_layers = (RescalingLayer,)
    scale: float
    offset: float = 0.0

    @classmethod
    def attributes_from_spec(cls, layer: RescalingLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"scale": float(layer.scale), "offset": float(layer.offset)}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in (self.scale, self.offset)):
            raise OpError(f"rescaling needs finite float32 scale and offset, got {self.scale} and {self.offset}")
        return inputs[0]

    @property
    def category(self) -> str:
        return "Preprocessing"


@dataclass(frozen=True, kw_only=True)
class Softmax(Node):
    """Softmax over the channel (last) axis."""

    op: ClassVar[str] = "softmax"
    spec_layers = (SoftmaxLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        return inputs[0]
