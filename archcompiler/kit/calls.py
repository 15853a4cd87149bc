"""The neutral call description every backend's builder and emitter share (framework-free).

A backend's handler turns an IR node into :class:`Call` s: data naming the class as emitted
source spells it, literal arguments, the layer name and the layers it reads. The builder
instantiates them (:func:`describe_graph` gives every node's calls); the emitter renders the
very same calls, after :mod:`archcompiler.kit.folding` has grouped them into repeated blocks,
so generated code and built model cannot drift apart (docs/DESIGN.md, style 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from archcompiler import ir
from archcompiler.kit.pysource import literal
from archcompiler.kit.registry import BackendError, UnsupportedOpError
from archcompiler.ops import same_padding

NUMBER = re.compile(r"\d+|(?<=\d)[a-z](?![A-Za-z0-9])")
"""The indices in a layer name, what varies between block instances: its numbers
(``conv_dw_3_bn`` -> 3), and a letter that follows a number and ends a word, Keras' count of
blocks within a stage (``block2b_add`` -> 2, b)."""

Slot = int | str
"""A constructor argument: its position, or its keyword."""


@dataclass(frozen=True)
class Call:
    """One layer constructor applied to earlier layers' outputs, as plain data.

    A backend's builder instantiates it, its emitter prints it; both read the same literals,
    so generated code and built model cannot drift apart (docs/DESIGN.md, style 2).
    """

    cls: str
    """How emitted source spells the class: ``nn.Conv2d``, ``PaddedConv2d``, ``layers.Conv2D``."""
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments in a fixed order, values plain literals."""
    name: str = ""
    """The layer name; the call that gives a node's output is named after the node."""
    inputs: tuple[str, ...] = ()
    """Names of the layers (or graph inputs) it reads."""
    node: str = ""
    """The IR node it belongs to (a helper pad layer belongs to its conv)."""
    arg_names: tuple[str, ...] = ()
    """Readable names of the positional parameters (block parameters are named after them)."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """The class's defaults of keywords in ``kwargs``. Handlers give every keyword they may
    set, so two instances of one block compare equal in shape (a stride-1 and a stride-2 conv
    both carry ``stride``); a keyword at its default is left out of the source unless it
    varies within a block kind."""

    def __post_init__(self) -> None:
        for value in (*self.args, *(v for _, v in self.kwargs), *(v for _, v in self.defaults)):
            literal(value)  # TypeError now, not when the source is rendered

    def slots(self) -> list[tuple[Slot, Any]]:
        """Every argument as (position or keyword, value), in call order."""
        return [*enumerate(self.args), *self.kwargs]

    def slot_name(self, slot: Slot) -> str:
        if isinstance(slot, str):
            return slot
        return self.arg_names[slot] if slot < len(self.arg_names) else f"arg{slot}"

    def shape(self) -> tuple[Any, ...]:
        """What must agree between instances of a block for one source line to build them all."""
        return (NUMBER.sub("#", self.name), self.cls, len(self.args), tuple(k for k, _ in self.kwargs))

    def is_default(self, key: str, value: Any) -> bool:
        default = dict(self.defaults)
        return key in default and default[key] == value and type(default[key]) is type(value)

    def arguments(self, overrides: Mapping[Slot, str] | None = None) -> list[str]:
        """The argument list as source; ``overrides`` replace literals by expressions."""
        over = overrides or {}
        parts = [over.get(i, literal(a)) for i, a in enumerate(self.args)]
        parts += [f"{k}={over.get(k, literal(v))}" for k, v in self.kwargs if k in over or not self.is_default(k, v)]
        return parts


def make_call(
    cls: str,
    node: ir.Node,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    arg_names: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    name: str | None = None,
    inputs: Sequence[str] | None = None,
) -> Call:
    """A call for ``node``, named after it and reading its inputs unless told otherwise."""
    given = dict(kwargs or {})
    return Call(
        cls,
        tuple(args),
        tuple(given.items()),
        node.name if name is None else name,
        tuple(node.inputs if inputs is None else inputs),
        node.name,
        tuple(arg_names),
        tuple((k, v) for k, v in (defaults or {}).items() if k in given),
    )


class OpHandler(Protocol):
    """One IR op in one backend: the node as layer calls (an empty list: no layer, e.g. an input).

    ``describe`` gives the natural calls for this node. ``describe_general`` gives calls of a
    form that also fits every other node with the same op, categorical attributes and padding
    style (see :func:`~archcompiler.kit.folding.structure_key`) -- e.g. torch's PaddedConv2d with an explicit pad
    instead of ``nn.Conv2d(padding=1)`` -- so that a block kind stays one function. Both raise
    UnsupportedOpError for what the backend cannot express exactly.
    """

    @property
    def op(self) -> str: ...

    def describe(self, node: ir.Node, graph: ir.Graph) -> Sequence[Call]: ...

    def describe_general(self, node: ir.Node, graph: ir.Graph) -> Sequence[Call]: ...


H = TypeVar("H", bound=OpHandler)


@dataclass(frozen=True)
class Described(Generic[H]):
    """A node, the handler that describes it and its calls (the builders iterate these)."""

    node: ir.Node
    handler: H
    calls: tuple[Call, ...]


def describe_graph(graph: ir.Graph, handlers: Mapping[str, H], backend: str) -> list[Described[H]]:
    """Every node's calls, in topological order, through ``handlers`` (the backend instance's
    table). Raises UnsupportedOpError at the first node no handler can express."""
    out: list[Described[H]] = []
    names: set[str] = set()
    for node in graph.nodes:
        handler = handlers.get(node.op)
        if handler is None:
            raise UnsupportedOpError(backend, node)
        calls = tuple(handler.describe(node, graph))
        if calls and calls[-1].name != node.name:
            raise BackendError(
                f"{backend}: the {node.op!r} handler's last call for {node.name!r} is not named after it"
            )
        for call in calls:
            if call.name in names:
                raise BackendError(f"{backend}: two layers named {call.name!r}")
            names.add(call.name)
        out.append(Described(node, handler, calls))
    return out


def padding_style(node: ir.Node, graph: ir.Graph) -> str | None:
    """A windowed op's padding as a category: "valid" (none), "same" (TensorFlow SAME for this
    input) or "explicit". Frameworks with a native SAME (Keras, ONNX SAME_UPPER) spell the
    three differently, so it is part of a block's structure; the pad sizes are not."""
    pad, kernel, stride = (getattr(node, a, None) for a in ("padding", "kernel", "stride"))
    if pad is None or kernel is None or stride is None:
        return None
    if not any(pad):
        return "valid"
    dilation = getattr(node, "dilation", (1, 1))
    h, w = graph[node.inputs[0]].shape[:2]
    same = (*same_padding(h, kernel[0], stride[0], dilation[0]), *same_padding(w, kernel[1], stride[1], dilation[1]))
    return "same" if tuple(pad) == same else "explicit"
