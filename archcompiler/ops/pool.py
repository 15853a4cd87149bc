"""Pooling: windowed ``avg_pool`` / ``max_pool`` and ``global_avg_pool`` / ``global_max_pool``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from archcompiler.language.fields import LayerBase, PairRef
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    Pair,
    ParityBound,
    RawCost,
    Shape,
    absmax,
    image,
    pair,
    window,
)

if TYPE_CHECKING:
    import numpy as np

PoolKind = Literal["avg", "max"]


class PoolLayer(LayerBase):
    """Windowed pooling without padding (frameworks disagree on what a padded average means)."""

    op: Literal["avg_pool", "max_pool"]
    pool: PairRef
    stride: PairRef | None = Field(None, description="Default: the pool size (as Keras).")


class GlobalPoolLayer(LayerBase):
    op: Literal["global_avg_pool", "global_max_pool"]
    keepdims: bool = False


def _check_kind(kind: str) -> None:
    if kind not in ("avg", "max"):
        raise OpError(f"pool kind must be 'avg' or 'max', got {kind!r}")


@dataclass(frozen=True, kw_only=True)
class Pool2D(Node):
    """Windowed pooling. Padding is always zero here: frameworks disagree on padded averages."""

    op: ClassVar[str] = "pool2d"
    spec_layers = (PoolLayer,)
    kind: PoolKind
    kernel: Pair
    stride: Pair

    @classmethod
    def attributes_from_spec(cls, layer: PoolLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        k = pair(layer.pool)
        return {"kind": layer.op[:3], "kernel": k, "stride": pair(layer.stride) if layer.stride is not None else k}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        _check_kind(self.kind)
        h, w, c = image(inputs[0], f"{self.kind}_pool")
        return (*window("pool", (h, w, c), self.kernel, self.stride, (0, 0, 0, 0)), c)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        return RawCost(pool_ops=math.prod(inputs[0]))

    @property
    def category(self) -> str:
        return "Pooling"

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """Max and mean are 1-Lipschitz; an average sums its window, a max rounds nothing."""
        return ParityBound((1.0,), self.kernel[0] * self.kernel[1] if self.kind == "avg" else 0)


@dataclass(frozen=True, kw_only=True)
class GlobalPool(Node):
    op: ClassVar[str] = "global_pool"
    spec_layers = (GlobalPoolLayer,)
    kind: PoolKind
    keepdims: bool = False

    @classmethod
    def attributes_from_spec(cls, layer: GlobalPoolLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        return {"kind": layer.op[len("global_") :][:3], "keepdims": layer.keepdims}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        _check_kind(self.kind)
        c = image(inputs[0], f"global_{self.kind}_pool")[2]
        return (1, 1, c) if self.keepdims else (c,)

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        return RawCost(pool_ops=math.prod(inputs[0]))

    @property
    def category(self) -> str:
        return "Pooling"

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """1-Lipschitz; an average sums H*W values, and the rounding of a sum is bounded by
        gamma_n * sum|x|, so its magnitude is the largest mean |x| (clamped), not max|x|."""
        if self.kind != "avg":
            return ParityBound((1.0,))
        import numpy as np

        x = np.abs(np.asarray(inputs[0], dtype=np.float64))  # (N, H, W, C)
        return ParityBound((1.0,), x.shape[1] * x.shape[2], absmax(x.mean(axis=(1, 2))), clamped=True)
