"""Python source helpers for the emitters (framework-free): literals and identifiers that
spec text may reach generated code through, the names generated code keeps for itself, the
Jinja2 environment the templates render in, and ruff formatting.

Spec text reaches generated code only through :func:`literal` (a ``repr``) or as a name
:func:`identifier` has checked; nothing here evaluates it.
"""

from __future__ import annotations

import keyword
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from archcompiler.kit.registry import BackendError

LINE_LENGTH = 120
"""The line length of generated source (the repo's own)."""


def needs_formatter(source: str) -> bool:
    """Whether the rendered source may not be formatted yet: the templates write ruff-formatted
    code (tests check every shipped spec in every backend), except a line that outgrows
    LINE_LENGTH (a long layer name) or non-ASCII text, whose display width ruff measures."""
    if not source.isascii() or "\\'" in source:  # width, or a quote ruff may swap
        return True
    return any(len(line) > LINE_LENGTH for line in source.splitlines())


def ruff_format(source: str) -> str:
    """Format generated source with ruff when it needs it and ruff is installed.

    Starting ruff costs about 80 ms per call (most of what ``archc build`` spends writing the
    generated module), so the already formatted common case skips it; the output then does
    not depend on whether ruff is present.
    """
    if not needs_formatter(source):
        return source
    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        return source
    res = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", str(LINE_LENGTH), "--stdin-filename", "model.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise BackendError(f"generated code does not format: {res.stderr.strip()}")
    return res.stdout


RESERVED = frozenset(
    {"nn", "torch", "F", "keras", "layers", "ops", "x", "block", "args", "name", "inputs", "outputs"}
    | {"tensors", "previous", "entry", "layer", "values", "self", "build_model", "Entry", "OrderedDict"}
)
"""Names some backend's emitted code uses itself; no block function or parameter takes one.
One set for all backends, so that the function names (chosen here) are the same in each."""


def string_literal(text: str) -> str:
    """``repr(text)`` in double quotes where that needs no escaping, as ruff format writes it
    (generated source is formatted without running ruff; see :func:`ruff_format`)."""
    quoted = repr(text)
    if quoted.startswith("'") and '"' not in text:  # then ``text`` has no ' either
        return f'"{quoted[1:-1]}"'
    return quoted


def literal(value: Any) -> str:
    """Python source for a literal argument (ints, floats, strings, bools, None, tuples).

    Anything else is refused: spec values reach generated code only as literals."""
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        return string_literal(value)
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    raise TypeError(f"not a literal layer argument: {value!r}")


def template_environment(folder: Path) -> jinja2.Environment:
    """Jinja2 for Python source: StrictUndefined (a missing variable is an error, not empty
    text) and no HTML escaping, since every spec value goes in through ``literal()``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pyrepr"] = literal
    env.filters["literal"] = literal
    return env


def identifier(text: str, what: str) -> str:
    """``text`` when it is an ASCII, non-keyword identifier; else a BackendError naming it."""
    if not (text.isascii() and text.isidentifier()) or keyword.iskeyword(text):
        raise BackendError(f"{what} {text!r} is not a valid Python identifier")
    return text


def unique(name: str, taken: set[str], reserved: frozenset[str] = frozenset()) -> str:
    """A fresh identifier from ``name``: never a keyword, a reserved name or one already taken."""
    ok = name.isidentifier() and not keyword.iskeyword(name) and name not in reserved
    base = name if ok else f"{name}_"
    if not base.isidentifier():
        base = "param"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def type_annotation(values: Sequence[Any]) -> str:
    """The annotation of a block parameter, from the values its table column holds."""
    kinds = {type(v) for v in values}
    if kinds == {int}:
        return "int"
    if kinds in ({float}, {int, float}):
        return "float"
    if kinds == {bool}:
        return "bool"
    if kinds == {str}:
        return "str"
    if kinds == {tuple}:
        return "tuple[int, ...]"
    if kinds == {int, tuple}:
        return "int | tuple[int, ...]"
    return "object"
