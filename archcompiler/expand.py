"""Lowering, stage 1: a validated spec -> a flat list of concrete layers.

Block calls and repeats are unrolled, ``$param`` references filled in (and the result
validated again, so a bad argument is reported at the call that passed it), names templated
and checked for duplicates. Nothing here knows shapes: that is stage 2 (:mod:`.infer`).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .fields import REF_RE, LayerBase, Ref
from .ir import Span
from .loading import LoadedSpec, _message
from .source import SpecError, did_you_mean, format_path
from .spec import OP_LAYERS, BlockCall, BlockDef

BLOCK_INPUT = "_input"
"""Inside a block, ``inputs: [_input]`` names the input of the block instance (for residuals)."""

MAX_LAYERS = 100_000
"""Most layers a spec may expand to: a typo such as ``repeat: 1000000000`` fails at once
instead of keeping the checker busy for hours (lowering runs about 100k layers a second)."""

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Entry:
    """One concrete layer: its final name, validated op layer, explicit inputs and origin."""

    name: str
    layer: LayerBase
    inputs: tuple[str, ...] | None
    """None: the previous layer."""
    span: Span
    context: str = ""
    """Where inside a block it came from, e.g. " (in block 'separable' instance 3, ...)"."""

    def error(self, message: str) -> SpecError:
        """A SpecError at the spec entry that made this layer."""
        s = self.span
        return SpecError(f"{self.name}: {message}{self.context}", file=s.file, line=s.line, col=s.col, path=s.path)


@dataclass
class _Expansion:
    loaded: LoadedSpec
    entries: list[Entry] = field(default_factory=list)
    seen: dict[str, Entry] = field(default_factory=dict)

    def span(self, path: Path) -> Span:
        line, col = self.loaded.source.locate(path)
        return Span(self.loaded.file, line or 1, col or 1, format_path(path))

    def err(self, path: Path, message: str, *, key: bool = False) -> SpecError:
        return self.loaded.source.error(path, message, key=key)

    def add(self, entry: Entry) -> None:
        reserved = _reserved()
        if entry.name.startswith("_") or entry.name in reserved:
            why = "names starting with '_' are kept for the frameworks' internals"
            if entry.name in reserved:
                why = f"the {reserved[entry.name]} backend's model already has an attribute of that name"
            raise entry.error(f"layer name {entry.name!r} is reserved ({why}); rename the layer")
        if len(self.entries) >= MAX_LAYERS:
            raise entry.error(f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat')")
        if entry.name in self.seen or entry.name == self.loaded.spec.input.name:
            first = self.seen.get(entry.name)
            where = f" (first at line {first.span.line})" if first else " (the input's name)"
            raise entry.error(f"duplicate layer name {entry.name!r}{where}")
        self.seen[entry.name] = entry
        self.entries.append(entry)


@functools.cache
def _reserved() -> dict[str, str]:
    from .registry import reserved_names

    return reserved_names()


def expand(loaded: LoadedSpec) -> list[Entry]:
    """Every concrete layer of the spec, in order."""
    spec = loaded.spec
    ex = _Expansion(loaded)
    globals_ = {"classes": spec.classes}
    op_counts: Counter[str] = Counter()
    block_index = 0
    for i, layer in enumerate(spec.layers):
        path: Path = ("layers", i)
        if isinstance(layer, BlockCall):
            block_index = _expand_call(ex, layer, path, globals_, block_index)
            continue
        if layer.inputs and BLOCK_INPUT in layer.inputs:
            raise ex.err((*path, "inputs"), f"{BLOCK_INPUT!r} is only meaningful inside a block")
        resolved = _substitute(ex, layer, globals_, {}, path, path)
        op = resolved.op  # type: ignore[attr-defined]
        for r in range(layer.repeat):
            if resolved.name:
                name = resolved.name.replace("{index}", str(r + 1))
            else:
                op_counts[op] += 1
                name = f"{op}_{op_counts[op]}"
            inputs = None
            if resolved.inputs is not None and r == 0:
                inputs = tuple(x.replace("{index}", str(r + 1)) for x in resolved.inputs)
            ex.add(Entry(name, resolved, inputs, ex.span(path)))
    return ex.entries


def _expand_call(ex: _Expansion, call: BlockCall, path: Path, globals_: dict[str, Any], block_index: int) -> int:
    """Unroll one block call (and its repeats); return the last block instance number."""
    spec = ex.loaded.spec
    block: BlockDef | None = spec.blocks.get(call.block)
    if block is None:
        known = ", ".join(spec.blocks) or "none defined"
        raise ex.err(
            (*path, "block"), f"unknown block {call.block!r}{did_you_mean(call.block, spec.blocks)} (blocks: {known})"
        )
    args = dict(call.model_extra or {})
    for arg in args:
        if arg not in block.params:
            raise ex.err(
                (*path, arg),
                f"block {call.block!r} has no parameter {arg!r}{did_you_mean(arg, block.params)}"
                f" (parameters: {', '.join(block.params) or 'none'})",
                key=True,
            )
    values: dict[str, Any] = dict(globals_)
    origin: dict[str, Path] = {}
    for p, default in block.params.items():
        if p in args:
            values[p], origin[p] = args[p], (*path, p)
        elif default is None:
            raise ex.err(path, f"block {call.block!r} needs parameter {p!r}")
        else:
            values[p], origin[p] = default, ("blocks", call.block, "params", p)
        values[p] = _resolve_global(ex, values[p], globals_, origin[p])
    call_span = ex.span(path)
    for rep in range(call.repeat):
        block_index += 1
        number = str(block_index)
        prefix = (call.name or f"{call.block}{{index}}").replace("{index}", number)
        block_input = ex.entries[-1].name if ex.entries else spec.input.name
        if call.inputs and rep == 0:
            if len(call.inputs) != 1:
                raise ex.err((*path, "inputs"), "a block call reads exactly one input")
            block_input = call.inputs[0].replace("{index}", number)
        local_counts: Counter[str] = Counter()
        for j, blayer in enumerate(block.layers):
            bpath = ("blocks", call.block, "layers", j)
            resolved = _substitute(ex, blayer, values, origin, bpath, path)
            op = resolved.op  # type: ignore[attr-defined]
            for r in range(resolved.repeat):
                if resolved.name:
                    name = resolved.name.replace("{index}", number)
                else:
                    local_counts[op] += 1
                    k = local_counts[op]
                    name = f"{prefix}_{op}" + (f"_{k}" if k > 1 else "")
                inputs = None
                if resolved.inputs is not None:
                    inputs = tuple(
                        block_input if x == BLOCK_INPUT else x.replace("{index}", number) for x in resolved.inputs
                    )
                elif j == 0 and r == 0:
                    inputs = (block_input,)
                context = f" (in block {call.block!r} instance {block_index}, {format_path(bpath)})"
                ex.add(Entry(name, resolved, inputs, call_span, context))
    return block_index


def _resolve_global(ex: _Expansion, value: Any, globals_: dict[str, Any], where: Path) -> Any:
    """A block argument or parameter default written as ``$classes`` takes the spec's value.

    Without this, the text '$classes' reached shape inference as if it were a number.
    """
    if not (isinstance(value, str) and REF_RE.match(value)):
        return value
    name = value[1:]
    if name not in globals_:
        available = ", ".join("$" + k for k in globals_)
        raise ex.err(
            where, f"unknown parameter {value!r}{did_you_mean(name, globals_)} (arguments may refer to {available})"
        )
    if globals_[name] is None:
        raise ex.err(where, f"{value!r} is used but the spec does not set {name!r}")
    return globals_[name]


def _substitute(
    ex: _Expansion,
    layer: LayerBase,
    values: dict[str, Any],
    origin: dict[str, Path],
    layer_path: Path,
    call_path: Path,
) -> LayerBase:
    """Fill ``$param`` references and validate the result as a concrete op layer."""
    raw = layer.model_dump(exclude_unset=True)
    used: dict[str, str] = {}

    def sub(name: str, v: Any) -> Any:
        if isinstance(v, Ref):
            p = v.param
            if p not in values:
                available = ", ".join("$" + k for k in values)
                raise ex.err(
                    (*layer_path, name),
                    f"unknown parameter {str(v)!r}{did_you_mean(p, values)} (available: {available})",
                )
            if values[p] is None:
                raise ex.err((*layer_path, name), f"{str(v)!r} is used but the spec does not set {p!r}")
            used[name] = p
            return values[p]
        if isinstance(v, tuple):
            return tuple(sub(name, x) for x in v)
        return v

    def has_ref(v: Any) -> bool:
        return isinstance(v, Ref) or (isinstance(v, tuple) and any(isinstance(x, Ref) for x in v))

    if not any(has_ref(v) for v in raw.values()):
        return layer
    filled = {k: sub(k, v) for k, v in raw.items()}
    try:
        return OP_LAYERS[filled["op"]].model_validate(filled)
    except ValidationError as exc:
        e = dict(exc.errors(include_url=False)[0])
        name = str(e["loc"][0]) if e["loc"] else ""
        p = used.get(name)
        where = origin.get(p, call_path) if p else (*layer_path, name)
        suffix = f" (from ${p}, used by {format_path((*layer_path, name))})" if p else ""
        e["loc"] = (name,)
        raise ex.err(where, f"{_message(e)}{suffix}") from None
