"""Ops that read several inputs: ``add`` (residuals), ``multiply`` (squeeze-excite), ``concat``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from archcompiler.language.fields import LayerBase
from archcompiler.ops.base import Node, OpError, ParityBound, Shape, absmax, dims

if TYPE_CHECKING:
    import numpy as np


class AddLayer(LayerBase):
    op: Literal["add"]


class MultiplyLayer(LayerBase):
    op: Literal["multiply"]


class ConcatLayer(LayerBase):
    """Channel concatenation of two or more inputs with equal spatial size, in ``inputs`` order."""

    op: Literal["concat"]


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

    overwritable = True  # a fresh tensor; a sum's backward needs no values at all

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """Each input's error passes through once; n inputs are summed."""
        return ParityBound((1.0,) * len(inputs), len(inputs))


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

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """d(ab)/da = b: an error in one input grows by the other's magnitude."""
        a, b = (absmax(x) for x in inputs)
        return ParityBound((b, a), 1)


@dataclass(frozen=True, kw_only=True)
class Concat(Node):
    """Concatenation along channels (the last axis) of inputs of one rank and spatial size."""

    op: ClassVar[str] = "concat"
    arity = (2, None)
    spec_layers = (ConcatLayer,)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        spatial = {s[:-1] for s in inputs}
        if len(spatial) != 1 or len({len(s) for s in inputs}) != 1:
            raise OpError("concat needs inputs of one spatial size, got " + ", ".join(dims(s) for s in inputs))
        return (*inputs[0][:-1], sum(s[-1] for s in inputs))

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(len(inputs))
