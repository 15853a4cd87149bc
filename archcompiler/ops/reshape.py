"""Ops that move values without arithmetic: ``zero_pad``, ``flatten``, and ``dropout`` and
``drop_path`` (identities at inference)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from archcompiler.language.fields import LayerBase, Padding, Rate
from archcompiler.ops.base import LowerContext, Node, OpError, Pad4, ParityBound, Shape, check_padding, image

if TYPE_CHECKING:
    import numpy as np


class ZeroPadLayer(LayerBase):
    op: Literal["zero_pad"]
    padding: Padding


class FlattenLayer(LayerBase):
    op: Literal["flatten"]


class DropoutLayer(LayerBase):
    op: Literal["dropout"]
    rate: Rate


class DropPathLayer(LayerBase):
    """Stochastic depth on a residual branch, placed before the ``add``: a rate per layer,
    often an expression (``$drop_path * $index / $blocks``)."""

    op: Literal["drop_path"]
    rate: Rate


@dataclass(frozen=True, kw_only=True)
class ZeroPad2D(Node):
    op: ClassVar[str] = "zero_pad2d"
    spec_layers = (ZeroPadLayer,)
    padding: Pad4

    @classmethod
    def attributes_from_spec(cls, layer: ZeroPadLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        h, w, _ = image(inputs[0], "zero_pad")
        if layer.padding in ("same", "valid"):
            raise OpError("zero_pad needs explicit padding (an integer or per-side amounts)")
        return {"padding": ctx.pads(layer.padding, (h, w), (1, 1), (1, 1))}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        h, w, c = image(inputs[0], "zero_pad")
        check_padding(self.padding)
        top, bottom, left, right = self.padding
        return (h + top + bottom, w + left + right, c)

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(1)


@dataclass(frozen=True, kw_only=True)
class Flatten(Node):
    """Flatten in (H, W, C) order, so a dense layer after it has the same weights everywhere
    (a channels-first backend transposes before flattening)."""

    op: ClassVar[str] = "flatten"
    spec_layers = (FlattenLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        return (math.prod(inputs[0]),)

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(1)


@dataclass(frozen=True, kw_only=True)
class Dropout(Node):
    """Identity at inference; kept so layer lists and names match the reference models."""

    op: ClassVar[str] = "dropout"
    spec_layers = (DropoutLayer,)
    rate: float
    random_in_training = True

    @classmethod
    def attributes_from_spec(cls, layer: DropoutLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"rate": float(layer.rate)}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if not 0.0 <= self.rate < 1.0:
            raise OpError(f"dropout rate must be in [0, 1), got {self.rate}")
        return inputs[0]

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(1)  # the identity at inference


@dataclass(frozen=True, kw_only=True)
class DropPath(Node):
    """Stochastic depth (Huang et al. 2016; timm's ``drop_path``, Keras applications'
    ``Dropout(noise_shape=(None, 1, 1, 1))``): in training, each example's whole branch is
    zeroed with probability ``rate`` and kept ones are scaled by 1 / (1 - rate); the identity
    at inference. No weights, no arithmetic any convention counts."""

    op: ClassVar[str] = "drop_path"
    spec_layers = (DropPathLayer,)
    rate: float
    random_in_training = True

    @classmethod
    def attributes_from_spec(cls, layer: DropPathLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"rate": float(layer.rate)}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if not 0.0 <= self.rate < 1.0:
            raise OpError(f"drop_path rate must be in [0, 1), got {self.rate}")
        return inputs[0]

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(1)  # the identity at inference
