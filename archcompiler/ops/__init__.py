"""The op registry: one definition per IR op (see base.py for what a definition holds).

Adding an op = one module here (spec model + IR node class with its rules) listed in
:data:`NODE_TYPES`, one handler per backend, and tests (docs/adding-an-op.md).
"""

from __future__ import annotations

from archcompiler.language.fields import LayerBase
from archcompiler.ops.activation import Activation, ActivationKind, Rescaling, Softmax
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    Pad4,
    Pair,
    RawCost,
    Shape,
    Span,
    WeightSpec,
    make_divisible,
    same_padding,
)
from archcompiler.ops.conv import Conv2D, DepthwiseConv2D
from archcompiler.ops.dense import Dense
from archcompiler.ops.input import Input
from archcompiler.ops.merge import Add, Concat, Multiply
from archcompiler.ops.norm import BatchNorm
from archcompiler.ops.pool import GlobalPool, Pool2D
from archcompiler.ops.reshape import Dropout, Flatten, ZeroPad2D

NODE_TYPES: tuple[type[Node], ...] = (
    Input,
    Conv2D,
    DepthwiseConv2D,
    BatchNorm,
    Activation,
    Rescaling,
    ZeroPad2D,
    Pool2D,
    GlobalPool,
    Flatten,
    Dense,
    Dropout,
    Softmax,
    Add,
    Multiply,
    Concat,
)
"""Every IR op. Backends must cover each of these or name the ones they refuse."""

IR_OPS: frozenset[str] = frozenset(t.op for t in NODE_TYPES)
NODE_BY_OP: dict[str, type[Node]] = {t.op: t for t in NODE_TYPES}


def _spec_ops() -> dict[str, type[LayerBase]]:
    from typing import get_args

    out: dict[str, type[LayerBase]] = {}
    for node_type in NODE_TYPES:
        for model in node_type.spec_layers:
            for tag in get_args(model.model_fields["op"].annotation):
                out[tag] = model
    return out


SPEC_OPS: dict[str, type[LayerBase]] = _spec_ops()
"""The spec ops a user can write, by their ``op:`` tag."""

NODE_FOR_LAYER: dict[type[LayerBase], type[Node]] = {m: t for t in NODE_TYPES for m in t.spec_layers}


def arity_error(op: str, arity: tuple[int, int | None], count: int) -> str | None:
    """The message for ``count`` inputs to an op of ``arity``, or None when it fits."""
    low, high = arity
    if low <= count and (high is None or count <= high):
        return None
    if (low, high) == (1, 1):
        return f"{op} reads exactly one input (got {count})"
    if high is None:
        return f"{op} needs at least {_words(low)} inputs"
    if low == high:
        return f"{op} needs exactly {_words(low)} inputs"
    return f"{op} needs {low} to {high} inputs (got {count})"


def _words(n: int) -> str:
    return {0: "no", 1: "one", 2: "two", 3: "three"}.get(n, str(n))


__all__ = [
    "IR_OPS",
    "NODE_BY_OP",
    "NODE_FOR_LAYER",
    "NODE_TYPES",
    "SPEC_OPS",
    "Activation",
    "ActivationKind",
    "Add",
    "BatchNorm",
    "Concat",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalPool",
    "Input",
    "LowerContext",
    "Multiply",
    "Node",
    "OpError",
    "Pad4",
    "Pair",
    "Pool2D",
    "RawCost",
    "Rescaling",
    "Shape",
    "Softmax",
    "Span",
    "WeightSpec",
    "ZeroPad2D",
    "arity_error",
    "make_divisible",
    "same_padding",
]
