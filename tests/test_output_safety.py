"""Outputs never destroy anything but archc's own previous output (issue 19).

Names are checked with full-string matching (no ``$`` before a trailing newline); every file
archc writes refuses a target that is not a regular file or is one of the command's inputs;
the build manifest never names a file archc did not write; staging left by a killed build is
removed by the next one; concurrent builds into one folder publish one build each; the
default build folder names the backend.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import archcompiler as a
from archcompiler.cli import main

TINY = """\
archc: 1
name: tiny
input: {size: 8}
classes: 4
layers:
  - {op: conv, filters: 8, kernel: 3, name: conv1}
  - {op: batchnorm}
  - {op: activation}
  - {op: global_avg_pool}
  - {op: dense, units: $classes}
"""


def one_line(text: str) -> bool:
    return text.count("\n") == 1 and text.endswith("\n") and "\r" not in text and "Traceback" not in text


# -- names ------------------------------------------------------------------------------------

NAMED: dict[str, Any] = {
    "name": "tiny",
    "input": {"size": 8, "name": "image"},
    "classes": 4,
    "blocks": {
        "unit": {
            "params": {"f": 8, "tag": "b"},
            "layers": [{"op": "conv", "filters": "$f", "kernel": 3, "name": "{tag}_conv"}],
        }
    },
    "layers": [
        {"op": "conv", "filters": 8, "kernel": 3, "name": "conv1"},
        {"block": "unit", "f": 8, "name": "u"},
        {"op": "activation", "name": "act", "inputs": ["conv1"]},
        {"op": "global_avg_pool", "name": "pool_{index}"},
    ],
    "output": "pool_1",
}
"""A spec with a name in every field that takes one (compiles as it is)."""

KEY = object()
"""In a field path: the last key itself is the name (a block's, a parameter's)."""

NAME_FIELDS: dict[str, tuple[Any, ...]] = {
    "spec name": ("name",),
    "layer name": ("layers", 0, "name"),
    "inputs": ("layers", 2, "inputs", 0),
    "block name": ("blocks", "unit", KEY),
    "block call": ("layers", 1, "block"),
    "block call name": ("layers", 1, "name"),
    "block parameter name": ("blocks", "unit", "params", "f", KEY),
    "block argument name": ("layers", 1, "f", KEY),
    "block argument in a name": ("layers", 1, "tag"),
    "input name": ("input", "name"),
    "output": ("output",),
    "name template": ("layers", 3, "name"),
    "template in a block": ("blocks", "unit", "layers", 0, "name"),
}
BAD_ENDINGS = {"newline": "\n", "CR": "\r", "NUL": "\x00", "slash": "/x", "backslash": "\\x"}


def spoiled(field: tuple[Any, ...], bad: str) -> dict[str, Any]:
    """NAMED with ``bad`` appended to the name at ``field``."""
    spec = copy.deepcopy(NAMED)
    *head, last = field
    if last is KEY:
        *head, last = head
        node = spec
        for k in head:
            node = node[k]
        node[last + bad] = node.pop(last)
    else:
        node = spec
        for k in head:
            node = node[k]
        node[last] = (node[last] if last in node else "b") + bad
    return spec


def test_the_named_spec_compiles() -> None:
    assert a.compile(NAMED).graph.name == "tiny"


@pytest.mark.parametrize("bad", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
@pytest.mark.parametrize("field", NAME_FIELDS.values(), ids=NAME_FIELDS.keys())
def test_every_name_field_refuses_what_is_not_an_identifier(field: tuple[Any, ...], bad: str) -> None:
    """'notes\\n' passed re.match(r'...$') and became a file name; each is a located one-liner."""
    with pytest.raises(a.SpecError) as exc:
        a.compile(spoiled(field, bad))
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message and "\x00" not in message
    assert message.startswith("<dict>: ") and (repr(bad)[1:-1] in message or "has no parameter" in message)


@pytest.mark.parametrize("bad", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
def test_api_outputs_refuse_what_names_no_layer(bad: str) -> None:
    with pytest.raises(a.SpecError, match="--outputs: no layer named"):
        a.compile(NAMED, outputs=["conv1" + bad])


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        ("name", "name: tiny", 'name: "tiny\\n"'),
        ("layers[0].name", "name: conv1", 'name: "conv1\\r"'),
        ("layers[0].name", "name: conv1", 'name: "conv1\\0"'),
        ("input.name", "input: {size: 8}", 'input: {size: 8, name: "x/y"}'),
    ],
)
def test_cli_refuses_bad_names_in_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, old: str, new: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY.replace(old, new))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith(f"{spec}:") and f": {field}: expected" in err, err


@pytest.mark.parametrize("bad", ["\n", "\r", "\x00", "/x"], ids=["newline", "CR", "NUL", "slash"])
def test_cli_outputs_refuse_what_names_no_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY)
    assert main(["check", str(spec), "--outputs", "conv1" + bad]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith(f"{spec}: --outputs: no layer named 'conv1{repr(bad)[1:-1]}'"), err
