"""The docs' reference tables are the code's: every op, field, expression function, built-in
name, command and option is documented, and a table that drifts from the code fails here.

The oracle is the code the docs describe (the spec models, the expression grammar's function
table, the ``archc`` parser, benchmarks/results.json): the docs must say what it does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from helpers import ROOT

import archcompiler
from archcompiler.language.expr import FUNCTIONS
from archcompiler.language.spec import RESERVED_NAMES
from archcompiler.ops import SPEC_OPS
from archcompiler.tools import reference
from archcompiler.tools.cli import make_parser

DOCS = ROOT / "docs"


def test_the_docs_tables_are_made_from_the_current_code() -> None:
    stale = reference.sync(DOCS, check=True)
    assert stale == [], (
        f"docs out of date with the code: {stale}; run `make docs` (python -m archcompiler.tools.reference)"
    )


def test_the_every_op_example_lowers_and_uses_every_op() -> None:
    example = DOCS / reference.EXAMPLES
    net = archcompiler.compile(example)
    used = set(reference.examples(example.read_text(encoding="utf-8")))
    assert used == set(SPEC_OPS)
    # each layer line is one node (plus the input): the example lines shown are the layers lowered
    layers = [ln for ln in example.read_text(encoding="utf-8").splitlines() if ln.lstrip().startswith("- {op:")]
    assert len(net.graph) == len(layers) + 1


def test_every_op_has_its_section_with_its_example() -> None:
    spec = (DOCS / "spec.md").read_text(encoding="utf-8")
    for tag in SPEC_OPS:
        assert re.search(rf"^### .*\b{tag}\b", spec, re.M), f"docs/spec.md has no heading for op {tag!r}"
        assert re.search(rf"^- \{{op: {tag}\b", spec, re.M), f"docs/spec.md shows no example of op {tag!r}"


def test_every_field_of_every_op_is_in_its_table() -> None:
    spec = (DOCS / "spec.md").read_text(encoding="utf-8")
    for tag, model in reference.op_models().items():
        block = re.search(rf"<!-- generated: op-{tag} -->\n(.*?)<!-- end generated", spec, re.S)
        assert block is not None, tag
        own = {n for n in model.model_fields if n not in reference.COMMON}
        assert set(re.findall(r"^\| `(\w+)` \|", block.group(1), re.M)) == own, tag


def test_every_expression_function_and_built_in_name_is_documented() -> None:
    spec = (DOCS / "spec.md").read_text(encoding="utf-8")
    for name in FUNCTIONS:
        assert f"`{name}(" in spec, f"docs/spec.md does not document the function {name}()"
    for name in RESERVED_NAMES:
        assert f"`${name}`" in spec and f"`{name}`" in spec, f"docs/spec.md does not document ${name}"


def test_every_command_and_option_is_documented() -> None:
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = make_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"### archc {name}" in cli
        for action in command._actions:
            for flag in action.option_strings if action.dest != "help" else ():
                assert f"`{flag}`" in cli, f"docs/cli.md does not document archc {name} {flag}"


def test_the_performance_table_is_the_last_bench_run() -> None:
    text = (DOCS / "performance.md").read_text(encoding="utf-8")
    # one figure of benchmarks/results.json, as bench.py prints it: the hand-written model's
    # batch-1 median on one thread
    import json

    run = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    row = next(r for r in run["rows"] if r["case"] == "hand-written nn.Sequential, batch 1" and r["threads"] == 1)
    assert f"| inference | hand-written nn.Sequential, batch 1 | {row['median'] * 1e3:,.1f} ms |" in text


def test_a_stale_table_and_an_undocumented_op_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a changed cell is stale, a block without a page is missing, and a
    rewrite restores the page."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks")
    spec = docs / "spec.md"
    spec.write_text(spec.read_text(encoding="utf-8").replace("| `filters` |", "| `filter` |", 1), encoding="utf-8")
    assert reference.sync(docs, check=True) == ["spec.md: op-conv"]
    models = {**reference.op_models(), "clip": SPEC_OPS["conv"]}
    monkeypatch.setattr(reference, "op_models", lambda: models)
    assert "missing: op-clip" in reference.sync(docs, check=True)
    monkeypatch.undo()
    reference.sync(docs)
    assert spec.read_text(encoding="utf-8") == (DOCS / "spec.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("kernel", "integer in [1, 65,536], a list of 2 of them or an expression"),
        (
            "padding",
            "`same` or `valid`, integer ≥ 0, a list of 4 of them, a list of 2 lists of 2 of them or an expression",
        ),
        ("bias", "`true` or `false`"),
    ],
)
def test_field_types_read_as_words(field: str, text: str) -> None:
    """What archc accepts, per the validators (tests/invalid/ holds the refusals): a kernel is
    a positive size or [h, w]; padding a keyword, a size, 4 sides or 2 axes of 2."""
    schema = SPEC_OPS["conv"].model_json_schema()["properties"][field]
    assert reference.kind(schema) == text
