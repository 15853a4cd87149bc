"""YAML syntax errors are worded for people and placed on the line to fix
(archcompiler/language/yaml_errors.py), under both loaders. The oracle is the mistake itself:
each test plants one (a key's colon dropped, a line re-indented) in a shipped spec and knows
where it is. The corpus (tests/invalid/yaml_*.yaml, not_yaml_*.yaml) pins the exact wording."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from archcompiler.language import source
from archcompiler.language.source import SpecError, parse_text

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
LOADERS = [
    pytest.param(True, id="libyaml", marks=pytest.mark.skipif(source._CParser is None, reason="no libyaml")),
    pytest.param(False, id="python"),
]
PYYAML_WORDS = re.compile(r"<(block|stream|scalar|document|flow)[^>]*>|'\?'|while (parsing|scanning)|token")
"""PyYAML's token names and its 'while parsing a block mapping' asides."""
KEY_VALUE = re.compile(r"^(?P<key>\s*(?:-\s+)?[A-Za-z_]\w*):(?P<value>\s+[^\s#{\[|>].*)$")


def _mutations(text: str) -> list[tuple[str, int, str]]:
    """(kind, 1-based line, mutated text): every ``key: value`` line without its colon, and
    every line moved one or two columns left or right."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = KEY_VALUE.match(line)
        if m and "#" not in line and ":" not in m["value"]:
            out.append(("colon", i + 1, "\n".join([*lines[:i], m["key"] + m["value"], *lines[i + 1 :]])))
        indent = len(line) - len(line.lstrip(" "))
        for shift in (-2, -1, 1, 2):
            if indent + shift >= 0:
                moved = " " * (indent + shift) + line.lstrip(" ")
                out.append((f"indent{shift:+d}", i + 1, "\n".join([*lines[:i], moved, *lines[i + 1 :]])))
    return out


ALL = [(spec.name, *m) for spec in SPECS for m in _mutations(spec.read_text(encoding="utf-8"))]
SAMPLE = random.Random(20).sample(ALL, 150)


def _check(cases: list[tuple[str, str, int, str]], libyaml: bool) -> None:
    raw, elsewhere, worded = [], [], 0
    for name, kind, line, text in cases:
        try:
            parse_text(text, name, libyaml=libyaml)
            continue  # still valid YAML (the schema judges it)
        except SpecError as exc:
            message, at = str(exc), exc.line
        if "not valid YAML" not in message:
            continue
        worded += 1
        if PYYAML_WORDS.search(message) or at is None:
            raw.append(f"{kind} at line {line}: {message}")
        if kind == "colon" and at != line:  # the key without its colon is the line to fix
            elsewhere.append(f"line {line}: {message}")
    assert not raw, "\n".join(raw[:10])
    assert not elsewhere, "\n".join(elsewhere[:10])
    assert worded >= len(cases) // 2  # most mutations break the YAML: the check is not vacuous


@pytest.mark.parametrize("libyaml", LOADERS)
def test_planted_mistakes_are_worded_and_a_missing_colon_is_found_on_its_line(libyaml: bool) -> None:
    _check(SAMPLE, libyaml)


@pytest.mark.slow
@pytest.mark.parametrize("libyaml", LOADERS)
def test_every_planted_mistake_in_every_shipped_spec(libyaml: bool) -> None:
    _check(ALL, libyaml)


MISTAKES = [
    # (what, text, line, column, the message after 'not valid YAML: ')
    (
        "list item deeper than its list",
        "layers:\n  - op: conv\n    filters: 8\n   - op: dense\n",
        4, 4, "this list item is at column 4, the list's items above it (line 2) at column 3",
    ),
    (
        "list item at the keys' column of the item above",
        "layers:\n  - op: conv\n    filters: 8\n    - op: dense\n",
        4, 5, "this list item is at column 5, the list's items above it (line 2) at column 3",
    ),
    (
        "missing colon before a nested key",
        "name: x\ninput:\n  size 32\n  channels: 3\n",
        3, 3, "'size 32' has no ':' after its key (did you mean 'size: 32'?)",
    ),
    (
        "missing colon at the end of a mapping",
        "name: x\nclasses 10\n",
        2, 1, "'classes 10' has no ':' after its key (did you mean 'classes: 10'?)",
    ),
    (
        "a key indented under a key that has its value",
        "input:\n  size: 32\n    channels: 3\n",
        3, 5, "'channels' is indented more than 'size' on line 2, whose value is already given",
    ),
    ("a tab", "input:\n\tsize: 32\n", 2, 1, "a tab character where YAML needs spaces"),
    ("an unclosed bracket", "name: x\nlayers: [{op: conv}\n", 2, 9, "this '[' is not closed before line 3"),
    ("a missing comma", "layers: [{op: conv} {op: dense}]\n", 1, 21, "expected ',' or ']' here, found '{'"),
]  # fmt: skip


@pytest.mark.parametrize("libyaml", LOADERS)
@pytest.mark.parametrize(("what", "text", "line", "col", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_common_mistakes(what: str, text: str, line: int, col: int, message: str, libyaml: bool) -> None:
    with pytest.raises(SpecError) as info:
        parse_text(text, "s.yaml", libyaml=libyaml)
    assert str(info.value).startswith(f"s.yaml:{line}:{col}: not valid YAML: {message}"), str(info.value)
