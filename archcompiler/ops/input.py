"""``input``: the graph's input (its shape is the spec's input at the chosen resolution)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from archcompiler.ops.base import Node, OpError, ParityBound, Shape

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, kw_only=True)
class Input(Node):
    op: ClassVar[str] = "input"
    arity = (0, 0)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if not self.shape or any(d < 1 for d in self.shape):
            raise OpError(f"input shape must be positive, got {self.shape}")
        return self.shape

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        return ParityBound.exact(0)  # the caller's values, as given
