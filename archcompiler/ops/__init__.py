"""The op registry: one definition per IR op (see base.py for what a definition holds).

The built-in ops are the modules here, listed in :data:`BUILTIN_NODE_TYPES`; a plug-in package
adds more through the ``archcompiler.ops`` entry-point group, loaded once, here, before the
spec language builds its models from :data:`SPEC_OPS` (registry.py). Every definition is
checked as it is registered, so an incomplete one stops the import naming what it lacks.
Adding an op, built-in or plug-in: docs/adding-an-op.md.
"""

from __future__ import annotations

from archcompiler.language.fields import LayerBase
from archcompiler.ops.activation import Activation, ActivationKind, Rescaling, Softmax
from archcompiler.ops.attention import MobileMQA
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    Pad4,
    Pair,
    ParityBound,
    RawCost,
    Shape,
    Span,
    WeightSpec,
    absmax,
    make_divisible,
    same_padding,
)
from archcompiler.ops.channelwise import LayerScale, Normalization
from archcompiler.ops.conv import Conv2D, DepthwiseConv2D
from archcompiler.ops.dense import Dense
from archcompiler.ops.input import Input
from archcompiler.ops.merge import Add, Concat, Multiply
from archcompiler.ops.norm import BatchNorm
from archcompiler.ops.pool import GlobalPool, Pool2D
from archcompiler.ops.registry import OpDefinitionError, check_definition, plugin_ops, registered, spec_tags
from archcompiler.ops.reshape import Dropout, DropPath, Flatten, ZeroPad2D

BUILTIN_NODE_TYPES: tuple[type[Node], ...] = (
    Input,
    Conv2D,
    DepthwiseConv2D,
    BatchNorm,
    Activation,
    Rescaling,
    Normalization,
    ZeroPad2D,
    Pool2D,
    GlobalPool,
    Flatten,
    Dense,
    Dropout,
    DropPath,
    LayerScale,
    Softmax,
    Add,
    Multiply,
    Concat,
    MobileMQA,
)
"""The ops archc defines itself: every built-in backend covers each (checked at its import)."""

NODE_TYPES: tuple[type[Node], ...] = registered((*BUILTIN_NODE_TYPES, *plugin_ops()))
"""Every IR op, the built-in ones and then those of installed plug-ins (registry.plugin_ops).
A backend without a handler for one refuses it by name (UnsupportedOpError)."""

IR_OPS: frozenset[str] = frozenset(t.op for t in NODE_TYPES)
BUILTIN_OPS: frozenset[str] = frozenset(t.op for t in BUILTIN_NODE_TYPES)
NODE_BY_OP: dict[str, type[Node]] = {t.op: t for t in NODE_TYPES}


def _spec_ops() -> dict[str, type[LayerBase]]:
    return {tag: model for node_type in NODE_TYPES for model in node_type.spec_layers for tag in spec_tags(model)}


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
    "BUILTIN_NODE_TYPES",
    "BUILTIN_OPS",
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
    "DropPath",
    "Dropout",
    "Flatten",
    "GlobalPool",
    "Input",
    "LayerScale",
    "LowerContext",
    "MobileMQA",
    "Multiply",
    "Node",
    "Normalization",
    "OpDefinitionError",
    "OpError",
    "Pad4",
    "Pair",
    "ParityBound",
    "Pool2D",
    "RawCost",
    "Rescaling",
    "Shape",
    "Softmax",
    "Span",
    "WeightSpec",
    "ZeroPad2D",
    "absmax",
    "arity_error",
    "check_definition",
    "make_divisible",
    "same_padding",
]
