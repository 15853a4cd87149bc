"""``batchnorm``: batch normalisation over the channel axis, every convention spelled out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from archcompiler.language.fields import Epsilon, LayerBase
from archcompiler.language.limits import EPSILON_RANGE
from archcompiler.ops.base import Fill, LowerContext, Node, OpError, ParityBound, RawCost, Shape, WeightSpec, absmax

if TYPE_CHECKING:
    import numpy as np

VarianceUpdate = Literal["biased", "unbiased"]


class BatchNormLayer(LayerBase):
    """BatchNorm over channels. Unset fields come from defaults.batchnorm."""

    op: Literal["batchnorm"]
    epsilon: Epsilon | None = None
    decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    variance_update: VarianceUpdate | None = None


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Node):
    """Batch normalisation over the channel axis.

    ``decay``: moving = decay * moving + (1 - decay) * batch (Keras' momentum; torch's momentum
    is 1 - decay). ``variance_update``: which batch variance updates the moving variance in
    training (Keras biased, torch unbiased).
    """

    op: ClassVar[str] = "batchnorm"
    spec_layers = (BatchNormLayer,)
    channels: int
    epsilon: float
    decay: float
    variance_update: VarianceUpdate
    center: bool = True
    scale: bool = True

    @classmethod
    def attributes_from_spec(cls, layer: BatchNormLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {
            "channels": inputs[0][-1],
            "epsilon": ctx.bn_epsilon if layer.epsilon is None else layer.epsilon,
            "decay": ctx.bn_decay if layer.decay is None else layer.decay,
            "variance_update": layer.variance_update or ctx.bn_variance_update,
        }

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if inputs[0][-1] != self.channels:
            raise OpError(f"batchnorm over {self.channels} channels, got an input of {inputs[0][-1]}")
        low, high = EPSILON_RANGE
        valid = low <= self.epsilon <= high and 0 < self.decay < 1
        if not valid or self.variance_update not in ("biased", "unbiased"):
            raise OpError(f"batchnorm: bad epsilon {self.epsilon}, decay {self.decay} or {self.variance_update!r}")
        return inputs[0]

    def weights(self) -> tuple[WeightSpec, ...]:
        c = (self.channels,)
        fill: dict[str, Fill] = {"gamma": "ones", "beta": "zeros", "moving_mean": "zeros", "moving_variance": "ones"}
        affine = [
            WeightSpec(p, c, init=p, fill=fill[p]) for p, on in (("gamma", self.scale), ("beta", self.center)) if on
        ]
        stats = [WeightSpec(p, c, init=p, trainable=False, fill=fill[p]) for p in ("moving_mean", "moving_variance")]
        return (*affine, *stats)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        affine = self.channels * (int(self.center) + int(self.scale))
        return RawCost(bn_affine=affine, bn_stats=2 * self.channels, bn_ops=2 * self.numel)

    @property
    def category(self) -> str:
        return "BatchNorm"

    overwritable = True  # a fresh tensor; its backward keeps its input and statistics, not its output

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """At inference x * a + (beta - mean * a) with a = gamma / sqrt(var + eps): Lipschitz
        max |a|, constant terms |a * mean| + |beta|."""
        import numpy as np

        a = 1.0 / np.sqrt(np.asarray(params["moving_variance"], np.float64) + self.epsilon)
        if "gamma" in params:
            a = a * np.asarray(params["gamma"], np.float64)
        const = absmax(a * params["moving_mean"]) + (absmax(params["beta"]) if "beta" in params else 0.0)
        return ParityBound((absmax(a),), 1, const)
