"""Spec loading: YAML text -> validated :class:`~archcompiler.language.spec.Spec`, or one located error.

Pydantic reports errors as ``loc`` tuples that include discriminator tags; this module maps
them back onto the YAML document so the message names the line, column and spec path the
user wrote, and phrases them as ``path: what was expected (got what)``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archcompiler.language.fields import key_hint, value_hint
from archcompiler.language.source import (
    Source,
    SpecError,
    did_you_mean,
    format_path,
    parse_text,
    read_source,
    short_repr,
)
from archcompiler.language.spec import (
    ALL_FIELD_NAMES,
    OP_LAYERS,
    BatchNormDefaults,
    BlockDef,
    Defaults,
    InputSpec,
    Rounding,
    Spec,
    Variant,
    layer_tag,
)
from archcompiler.language.variants import check as check_variants
from archcompiler.text import brief

# The model that validates the mapping at a spec path (block names replaced by '*'), so that
# an unknown key is matched against the keys that are valid *there*.
_MODEL_AT: dict[tuple[str, ...], type] = {
    (): Spec,
    ("input",): InputSpec,
    ("rounding",): Rounding,
    ("defaults",): Defaults,
    ("defaults", "batchnorm"): BatchNormDefaults,
    ("blocks", "*"): BlockDef,
    ("variants", "*"): Variant,
}


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec together with the document it came from (for error locations)."""

    spec: Spec
    source: Source

    @property
    def file(self) -> str:
        return self.source.file

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the whole spec and its source.
        return f"<LoadedSpec {brief(self.file)}: {self.spec!r}>"


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[str | int, ...], bool]:
    """Map a pydantic loc onto a path in the YAML data, dropping union tags.

    Returns the path and whether it names a mapping key (for unknown/missing keys).
    """
    path: list[str | int] = []
    cur = data
    after_index = False
    is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
            break
        if after_index and isinstance(cur, dict) and isinstance(part, str) and part == layer_tag(cur):
            after_index = False
            continue  # the discriminator tag pydantic inserts after a list index
        after_index = False
        if isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
            after_index = True
            continue
        if isinstance(cur, dict) and part in cur:
            path.append(part)
            cur = cur[part]
            continue
        if isinstance(cur, dict) and isinstance(part, str):
            # blocks: {name: {...}} - a dict of models keyed by user names
            path.append(part)
            is_key = True
            break
        if isinstance(cur, list) and isinstance(part, int):
            path.append(part)
        # Otherwise the rest of loc names union branches ('constrained-int', 'tuple[...]'),
        # not places in the document.
        break
    return tuple(path), is_key


def _lookup(data: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path`` in the YAML data (``None`` when the path leaves the data)."""
    cur = data
    for part in path:
        found = (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        )
        if not found:
            return None
        cur = cur[part]
    return cur


_BOUNDS = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


def _keys_at(data: Any, path: tuple[str | int, ...]) -> Collection[str]:
    """Keys accepted by the mapping at ``path`` (all known keys when it cannot be told)."""
    node = _lookup(data, path)
    if isinstance(node, dict) and isinstance(node.get("op"), str) and node["op"] in OP_LAYERS:
        return OP_LAYERS[node["op"]].model_fields.keys()
    pattern = tuple("*" if i == 1 and path[0] in ("blocks", "variants") else str(p) for i, p in enumerate(path))
    model = _MODEL_AT.get(pattern)
    return model.model_fields.keys() if model is not None else ALL_FIELD_NAMES


def _message(err: dict[str, Any], keys: Collection[str] = ALL_FIELD_NAMES) -> str:
    """One clause for one pydantic error; ``keys`` are the valid keys where an unknown one is."""
    etype = err["type"]
    loc = err["loc"]
    last = loc[-1] if loc else ""
    got = f" (got {short_repr(err.get('input'))})" if "input" in err else ""
    if etype == "extra_forbidden":  # a framework's name for a field (fields.SYNONYMS), else a typo
        return f"unknown key {last!r}{key_hint(str(last), keys) or did_you_mean(str(last), keys)}"
    if etype == "missing":
        return f"missing required key {last!r}"
    if etype in ("expression", "reserved"):
        return str(err["msg"])  # already names the text and the column inside it
    if etype == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        if tag == "block":
            return "a block cannot call another block (only ops are allowed inside blocks)"
        # short_repr, not repr: it shows a look-alike such as a Cyrillic 'с' as '\u0441'
        return f"unknown op {short_repr(tag)}{did_you_mean(str(tag), OP_LAYERS)}; known ops: {', '.join(OP_LAYERS)}"
    if etype == "union_tag_not_found":
        value = err.get("input")
        if not isinstance(value, dict):
            return f"expected a layer mapping with 'op' (or 'block'){got}"
        if "op" in value:
            return f"'op' must name an op (got {short_repr(value['op'])}); known ops: {', '.join(OP_LAYERS)}"
        return "a layer needs 'op' (or 'block' to use a block)"
    if etype == "too_short" and "min_length" in err.get("ctx", {}):
        n = err["ctx"]["min_length"]
        return f"expected at least {n} item{'s' if n != 1 else ''}{got}"
    if etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        if last == "op":
            return f"unknown op {short_repr(err.get('input'))}{did_you_mean(str(err.get('input')), OP_LAYERS)}"
        hint = value_hint(err.get("input"), re.findall(r"'([^']*)'", expected))
        return f"expected {expected}{hint}{got}"
    if etype in _BOUNDS:
        # pydantic says "Input should be greater than 0"; name what is expected
        bound = next(iter(err.get("ctx", {}).values()), "?")
        return f"expected a number {_BOUNDS[etype]} {bound}{got}"
    msg: str = err["msg"]
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = "expected " + msg[len(prefix) :]
    if msg and msg[0].isupper():
        msg = msg[0].lower() + msg[1:]
    return f"{msg}{got}"


def _translate(exc: ValidationError, source: Source) -> SpecError:
    errors = exc.errors(include_url=False)
    # Prefer the most specific error: the deepest loc; pydantic lists union branches in order.
    err = max(errors, key=lambda e: len(e["loc"]))
    # A typo such as 'layer:' gives both an unknown key and a missing one: report the typo,
    # which points at the line to fix and has a did-you-mean.
    for etype in ("union_tag_invalid", "extra_forbidden", "missing"):
        first = next((e for e in errors if e["type"] == etype), None)
        if first is not None:
            err = first
            break
    path, is_key = _data_path(source.data, tuple(err["loc"]))
    if err["type"] == "union_tag_invalid":
        # point at the bad discriminator value ('op: convv'), not at the whole layer
        node = _lookup(source.data, path)
        tag_key = next((k for k in ("op", "block") if isinstance(node, dict) and k in node), None)
        if tag_key is not None:
            path = (*path, tag_key)
    keys: Collection[str] = ALL_FIELD_NAMES
    if err["type"] == "extra_forbidden":
        is_key = True
        keys = _keys_at(source.data, path[:-1])
    if err["type"] == "missing":
        # point at the mapping that lacks the key
        line, col = source.locate(path[:-1])
        return SpecError(_message(err), file=source.file, line=line, col=col, path=format_path(path))
    line, col = source.locate(path, key=is_key)
    return SpecError(_message(err, keys), file=source.file, line=line, col=col, path=format_path(path))


def validate(source: Source) -> LoadedSpec:
    """Validate parsed YAML against the spec models."""
    try:
        spec = Spec.model_validate(source.data)
    except ValidationError as exc:
        raise _translate(exc, source) from None
    check_variants(spec, source)
    return LoadedSpec(spec=spec, source=source)


def load(path: str | Path) -> LoadedSpec:
    """Read, parse and validate a spec file. Every failure is a :class:`SpecError`."""
    return validate(read_source(path))


def load_text(text: str, file: str = "<spec>") -> LoadedSpec:
    """Parse and validate spec text (tests and notebooks)."""
    return validate(parse_text(text, file))
