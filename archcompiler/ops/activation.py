"""Element-wise ops without weights: ``activation``, ``rescaling`` and ``softmax``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from pydantic import Field

from archcompiler.language.fields import FLOAT32_MAX, FiniteRef, LayerBase
from archcompiler.ops.base import LowerContext, Node, OpError, ParityBound, Shape

if TYPE_CHECKING:
    import numpy as np

ActivationKind = Literal["relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish", "gelu"]
"""Every kind means PyTorch's formula (hard_sigmoid = relu6(x + 3) / 6, as Keras 3; not Keras 2's;
gelu the exact erf form x * (1 + erf(x / sqrt(2))) / 2, torch's default, not the tanh approximation)."""


@dataclass(frozen=True)
class KindBound:
    """What parity needs of one activation kind (see :class:`~archcompiler.ops.base.ParityBound`)."""

    lipschitz: float
    """sup |f'(x)|: how much an error in the input can grow."""
    clamp: float | None = None
    """For a kind whose output either equals a bound or is computed from inputs in a bounded
    range: the largest magnitude its own rounding involves (relu and relu6 pass x through
    exactly or return a constant: 0; hard_sigmoid rounds relu6(x + 3) / 6 only where
    |x| <= 3, intermediates at most 6). None: its rounding is judged at the input's magnitude."""


KIND_BOUNDS: Mapping[str, KindBound] = {
    "relu": KindBound(1.0, clamp=0.0),
    "relu6": KindBound(1.0, clamp=0.0),
    "sigmoid": KindBound(0.25),
    "tanh": KindBound(1.0),
    "hard_sigmoid": KindBound(1.0 / 6.0, clamp=6.0),
    "hard_swish": KindBound(1.5),  # d/dx x * relu6(x + 3) / 6 = (2x + 3) / 6 on [-3, 3]
    "swish": KindBound(1.1),  # max of d/dx x * sigmoid(x) is 1.0998
    "gelu": KindBound(1.129),  # max of d/dx x * Phi(x) = Phi(x) + x * phi(x) is 1.12890, at sqrt(2)
}
"""Every activation kind's parity bound. Checked at import against :data:`ActivationKind`, so a
new kind cannot be judged by a guess."""

if set(KIND_BOUNDS) != set(get_args(ActivationKind)):
    raise TypeError(
        "archcompiler.ops.activation: KIND_BOUNDS must list exactly the ActivationKind kinds; "
        f"missing {sorted(set(get_args(ActivationKind)) - set(KIND_BOUNDS))}, "
        f"unknown {sorted(set(KIND_BOUNDS) - set(get_args(ActivationKind)))}"
    )


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

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        bound = KIND_BOUNDS[self.kind]
        if bound.clamp is not None:  # no input magnitude survives a clamp: see KindBound.clamp
            return ParityBound((bound.lipschitz,), 0, bound.clamp, clamped=True)
        return ParityBound((bound.lipschitz,), 1)


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

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound((abs(self.scale),), 1, abs(self.offset))


@dataclass(frozen=True, kw_only=True)
class Softmax(Node):
    """Softmax over the channel (last) axis."""

    op: ClassVar[str] = "softmax"
    spec_layers = (SoftmaxLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        return inputs[0]

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """Softmax is 1-Lipschitz in the max norm; its sum runs over the classes and its
        values are at most 1."""
        return ParityBound((1.0,), int(self.shape[-1]), 1.0)
