"""Helpers every emitter shares (framework-free)."""

from __future__ import annotations

import keyword
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .registry import BackendError


def ruff_format(source: str) -> str:
    """Format generated source with ruff when it is installed (line length 120, as the repo).

    The emitters' templates already write formatted code (their tests check ruff changes
    nothing), so the output does not depend on whether ruff is present.
    """
    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        return source
    res = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "120", "--stdin-filename", "model.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise BackendError(f"generated code does not format: {res.stderr.strip()}")
    return res.stdout


NUMBER = re.compile(r"\d+")
"""The numbers in a layer name (``conv_dw_3_bn`` -> 3): what varies between block instances."""


def template_environment(folder: Path) -> jinja2.Environment:
    """Jinja2 for Python source: StrictUndefined (a missing variable is an error, not empty
    text) and no HTML escaping, since every spec value goes in through ``repr()``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pyrepr"] = repr
    return env


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


def name_expr(name: str, number_params: Mapping[int, str], quote: Callable[[str], str] = repr) -> str:
    """``conv_dw_3_bn`` with its number 0 a parameter -> ``f"conv_dw_{index}_bn"`` (names are
    validated identifiers, so nothing needs escaping); a fixed name -> ``quote(name)``."""
    pieces, digits = NUMBER.split(name), NUMBER.findall(name)
    out = pieces[0]
    for j, d in enumerate(digits):
        out += ("{" + number_params[j] + "}" if j in number_params else d) + pieces[j + 1]
    return f'f"{out}"' if number_params else quote(name)


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
    return "object"


@dataclass(frozen=True)
class BlockParams:
    """How the columns of a repeated block's table become the block function's parameters."""

    params: list[str]
    """Parameter names in signature order: block numbers, then scalars, then tuples."""
    param_of: dict[str, str]
    """Column id -> parameter (columns with equal values share one parameter)."""
    column_of: dict[str, str]
    """Parameter -> the first column feeding it."""
    number_params: dict[int, str]
    """Position of a number in the layer names -> the parameter it becomes."""

    def rows(self, values: Mapping[str, Sequence[Any]], count: int) -> list[tuple[Any, ...]]:
        return [tuple(values[self.column_of[p]][k] for p in self.params) for k in range(count)]


def block_params(
    columns: Sequence[tuple[str, str]], values: Mapping[str, Sequence[Any]], n_numbers: int, reserved: frozenset[str]
) -> BlockParams:
    """Turn varying table columns into parameters.

    ``columns`` are (column id, preferred name); ids ``n0, n1, ...`` are the numbers in the
    layer names. A column constant over all instances is no parameter; columns with equal
    values share one (a block's in and out channels of a stride-1 block stay apart only when
    they differ somewhere).
    """
    taken: set[str] = set()
    by_values: dict[str, str] = {}
    param_of: dict[str, str] = {}
    varying_numbers = sum(1 for j in range(n_numbers) if len(set(values[f"n{j}"])) > 1)
    for cid, preferred in columns:
        seq = values[cid]
        if len({repr(v) for v in seq}) == 1:
            continue
        key = repr(seq)
        if key not in by_values:
            if preferred == "index" and varying_numbers > 1:
                preferred = f"index_{cid[1:]}"
            by_values[key] = unique(preferred, taken, reserved)
        param_of[cid] = by_values[key]
    params = list(dict.fromkeys(param_of.values()))
    column_of = {pn: cid for cid, pn in reversed(param_of.items())}
    numbers = {param_of[f"n{j}"] for j in range(n_numbers) if f"n{j}" in param_of}
    # Block numbers first, then scalars (channel counts), then tuples (paddings): a table row
    # then reads like the paper's (index, in, out, ...).
    params.sort(key=lambda n: 0 if n in numbers else 2 if isinstance(values[column_of[n]][0], tuple) else 1)
    number_params = {j: param_of[f"n{j}"] for j in range(n_numbers) if f"n{j}" in param_of}
    return BlockParams(params, param_of, column_of, number_params)
