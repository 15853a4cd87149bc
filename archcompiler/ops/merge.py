"""Ops that read several inputs: ``add`` (residuals) and ``multiply`` (squeeze-excite)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..fields import LayerBase
from .base import Node, OpError, Shape, dims


class AddLayer(LayerBase):
    op: Literal["add"]


class MultiplyLayer(LayerBase):
    op: Literal["multiply"]


@dataclass(frozen=True, kw_only=True)
class Add(Node):
    """Element-wise sum of inputs of one shape (a residual connection)."""

    op: ClassVar[str] = "add"
    arity = (2, None)
    spec_layers = (AddLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if len(set(inputs)) != 1:
            raise OpError("add needs inputs of one shape, got " + ", ".join(dims(s) for s in inputs))
        return inputs[0]


@dataclass(frozen=True, kw_only=True)
class Multiply(Node):
    """Element-wise product; a (1, 1, C) input broadcasts over (H, W, C) (squeeze-excite)."""

    op: ClassVar[str] = "multiply"
    arity = (2, 2)
    spec_layers = (MultiplyLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        a, b = inputs
        big, small = (a, b) if math.prod(a) >= math.prod(b) else (b, a)
        if not (a == b or (len(big) == 3 and small == (1, 1, big[2]))):
            raise OpError(f"multiply needs equal shapes or (H, W, C) with (1, 1, C), got {dims(a)} and {dims(b)}")
        return big
