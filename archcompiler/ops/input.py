"""``input``: the graph's input (its shape is the spec's input at the chosen resolution)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from archcompiler.ops.base import Node, OpError, Shape


@dataclass(frozen=True, kw_only=True)
class Input(Node):
    op: ClassVar[str] = "input"
    arity = (0, 0)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        if not self.shape or any(d < 1 for d in self.shape):
            raise OpError(f"input shape must be positive, got {self.shape}")
        return self.shape
