"""Which ops exist: the built-in definitions and those plug-ins add, each checked as it is registered.

A plug-in package adds an op by naming its node class in the ``archcompiler.ops`` entry-point
group (``clip = "archc_clip.op:Clip"``, the entry named after the op); :mod:`archcompiler.ops`
loads them once, when it is first imported, before the spec language builds its models from
the registered ops, so the new op can be written in a spec, lowered, costed and judged by
parity like a built-in one. Its backends' handlers are registered per backend
(:func:`archcompiler.kit.registry.handler_table`). docs/adding-an-op.md walks through it.

Every definition, built-in or not, is checked here (:func:`check_definition`): an op without
a shape rule or a parity bound, or whose name or spec tag another op already has, stops the
import with an :class:`OpDefinitionError` naming it, instead of being judged by a guess later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import get_args

from archcompiler.language.fields import LayerBase
from archcompiler.ops.base import Node

ENTRY_POINT_GROUP = "archcompiler.ops"
"""Entry points naming op definitions (``<op> = "package.module:NodeClass"``)."""

REQUIRED: tuple[str, ...] = ("infer_shape", "parity_bound")
"""What every op states itself: :class:`~archcompiler.ops.base.Node` has no answer for these.
(``weights``, ``cost`` and ``category`` default to none, zero and the op's name; tests check
cost against weights for every op.)"""


class OpDefinitionError(TypeError):
    """An op definition that is incomplete, malformed or clashes with another (at import)."""


def spec_tags(model: type[LayerBase]) -> tuple[str, ...]:
    """The ``op:`` tags a spec model answers to (its ``op`` field's Literal values)."""
    field = model.model_fields.get("op")
    return tuple(get_args(field.annotation)) if field is not None else ()


def check_definition(node_type: object, known: Sequence[type[Node]] = ()) -> None:
    """Raise OpDefinitionError unless ``node_type`` is a complete op definition that clashes
    with none of ``known`` (the ops registered before it): a frozen, keyword-only dataclass
    subclass of Node with its own ``op`` name, a shape rule and a parity bound, a valid arity,
    and spec models (pydantic, LayerBase) whose ``op:`` tags no other op uses."""
    where = f"{getattr(node_type, '__module__', '?')}.{getattr(node_type, '__qualname__', node_type)!s}"
    if not (isinstance(node_type, type) and issubclass(node_type, Node)) or node_type is Node:
        raise OpDefinitionError(f"{where} is not an op definition (a subclass of archcompiler.ops.Node)")
    op = node_type.__dict__.get("op")
    if not isinstance(op, str) or not op.isidentifier():
        raise OpDefinitionError(f"{where} does not name its op: set op: ClassVar[str] = '<name>' on the class")
    what = f"op {op!r} ({where})"
    params = node_type.__dict__.get("__dataclass_params__")
    if not dataclasses.is_dataclass(node_type) or params is None or not params.frozen:
        raise OpDefinitionError(f"{what} must be a frozen dataclass: @dataclass(frozen=True, kw_only=True)")
    missing = [name for name in REQUIRED if getattr(node_type, name) is getattr(Node, name)]
    if missing:
        raise OpDefinitionError(
            f"{what} does not define {' or '.join(missing)}: every op states its shape rule and its "
            "parity bound (docs/adding-an-op.md)"
        )
    _check_arity(what, node_type.arity)
    for other in known:
        if other.op == op:
            raise OpDefinitionError(f"{what}: op {op!r} is already defined by {other.__module__}.{other.__qualname__}")
    taken = {tag: other.op for other in known for model in other.spec_layers for tag in spec_tags(model)}
    for model in node_type.spec_layers:
        if not (isinstance(model, type) and issubclass(model, LayerBase)):
            raise OpDefinitionError(f"{what}: spec layer {model!r} is not a LayerBase model")
        tags = spec_tags(model)
        if not tags:
            raise OpDefinitionError(f"{what}: spec layer {model.__name__} has no op: Literal[...] field")
        for tag in tags:
            if tag in taken:
                raise OpDefinitionError(f"{what}: spec op {tag!r} already lowers to op {taken[tag]!r}")


def _check_arity(what: str, arity: object) -> None:
    ok = isinstance(arity, tuple) and len(arity) == 2 and isinstance(arity[0], int) and arity[0] >= 0
    if ok:
        high = arity[1]  # type: ignore[index]
        ok = high is None or (isinstance(high, int) and high >= arity[0])  # type: ignore[index]
    if not ok:
        raise OpDefinitionError(f"{what}: arity must be (fewest, most or None) inputs, got {arity!r}")


def registered(node_types: Iterable[type[Node]]) -> tuple[type[Node], ...]:
    """``node_types`` in order, each checked against those before it (:func:`check_definition`)."""
    out: list[type[Node]] = []
    for node_type in node_types:
        check_definition(node_type, out)
        out.append(node_type)
    return tuple(out)


def plugin_ops() -> list[type[Node]]:
    """The node classes installed packages declare in the ``archcompiler.ops`` entry-point
    group, by op name. One that fails to load, or is not named after its op, is an
    OpDefinitionError naming the entry point (a broken plug-in is never skipped silently)."""
    from importlib.metadata import entry_points

    found: dict[str, type[Node]] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        try:
            node_type = ep.load()
        except Exception as exc:  # an import error, a missing attribute: name the plug-in
            raise OpDefinitionError(f"op plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if getattr(node_type, "op", None) != ep.name:
            raise OpDefinitionError(
                f"op plug-in {ep.name!r} ({ep.value}): the entry point must be named after its op "
                f"({getattr(node_type, 'op', None)!r})"
            )
        if ep.name in found and found[ep.name] is not node_type:
            raise OpDefinitionError(f"op plug-in {ep.name!r} is declared twice ({ep.value})")
        found[ep.name] = node_type
    return list(found.values())
