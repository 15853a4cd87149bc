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


class NormalizationLayer(LayerBase):
    """Keras' Normalization preprocessing layer over the channel (last) axis:
    ``(x - mean) / max(sqrt(variance), 1e-7)``, mean and variance non-trainable weights that a
    build starts from the values given here (default 0 and 1: the identity, as
    keras.applications' EfficientNet with ``weights=None``)."""

    op: Literal["normalization"]
    mean: list[float] | None = None
    variance: list[float] | None = None


NORMALIZATION_EPSILON = 1e-7
"""Keras' ``backend.epsilon()``, the floor of the standard deviation the layer divides by."""


@dataclass(frozen=True, kw_only=True)
class Normalization(Node):
    """``(x - mean) / max(sqrt(variance), 1e-7)`` per channel (keras.layers.Normalization,
    axis=-1). mean and variance are non-trainable weights: counted as BatchNorm's moving
    statistics (keras only); Keras also keeps a scalar ``count`` of the samples ``adapt`` saw,
    which its count_params() counts as 1: the keras convention counts it too (``counters``), so
    keras.applications.EfficientNetB0's 5,330,571 is reproduced. No multiply-adds."""

    op: ClassVar[str] = "normalization"
    spec_layers = (NormalizationLayer,)
    channels: int
    mean: tuple[float, ...] | None = None
    variance: tuple[float, ...] | None = None

    @classmethod
    def attributes_from_spec(
        cls, layer: NormalizationLayer, ctx: LowerContext, inputs: Sequence[Shape]
    ) -> dict[str, Any]:
        values = {
            k: None if v is None else tuple(float(x) for x in v)
            for k, v in (("mean", layer.mean), ("variance", layer.variance))
        }
        return {"channels": inputs[0][-1], **values}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if inputs[0][-1] != self.channels:
            raise OpError(f"normalization over {self.channels} channels, got an input of {inputs[0][-1]}")
        for what, values in (("mean", self.mean), ("variance", self.variance)):
            if values is not None and len(values) != self.channels:
                raise OpError(f"normalization {what} has {len(values)} values for {self.channels} channels")
            if values is not None and not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values):
                raise OpError(f"normalization {what} must be finite float32 numbers")
        if self.variance is not None and min(self.variance) < 0:
            raise OpError("normalization variance must not be negative")
        return inputs[0]

    def weights(self) -> tuple[WeightSpec, ...]:
        c = (self.channels,)
        mean = 0.0 if self.mean is None else self.mean
        variance = 1.0 if self.variance is None else self.variance
        return (
            WeightSpec("mean", c, init="moving_mean", trainable=False, fill="constant", value=mean),
            WeightSpec("variance", c, init="moving_variance", trainable=False, fill="constant", value=variance),
        )

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        return RawCost(bn_stats=2 * self.channels, counters=1)

    @property
    def category(self) -> str:
        return "Preprocessing"

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """(x - mean) * a with a = 1 / max(sqrt(variance), 1e-7): Lipschitz max |a|, constant
        term max |a * mean|, as BatchNorm at inference."""
        import numpy as np

        variance = np.asarray(params["variance"], np.float64)
        a = 1.0 / np.maximum(np.sqrt(np.maximum(variance, 0.0)), NORMALIZATION_EPSILON)
        return ParityBound((absmax(a),), 1, absmax(a * np.asarray(params["mean"], np.float64)))
