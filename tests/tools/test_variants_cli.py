"""Variants and depths on the command line and in sweep/fit: selection, what summary/check
report, one-line errors, and ranking across variants (``archc fit --variant s0,s1,s2``).

Oracle: hand arithmetic on docs/examples/scaled.yaml (block counts from ceil(depth * n)) and
the per-variant costs compared with each other, not with recorded outputs."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, run

import archcompiler as archc
from archcompiler import SpecError


def test_the_command_line_selects_and_reports_variants(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "docs" / "examples" / "scaled.yaml")
    code, out, _ = run(capsys, "check", spec, "--variant", "s1")
    # s1: depth 1.1 -> stages of 1 + 1 + ceil(2.2) + 1 + ceil(3.3) = 10 blocks of 5 nodes, plus 6
    assert code == 0 and "scaled_s1 (variant s1, depth 1.1), 56 nodes, input 40x40x3" in out
    code, out, _ = run(capsys, "summary", spec, "--variant", "s2", "--depth", "1", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and (doc["name"], doc["variant"], doc["depth"], doc["width"]) == ("scaled_s2", "s2", 1.0, 1.5)
    code, _, err = run(capsys, "summary", spec, "--variant", "s11")
    assert (
        code == 2 and err.count("\n") == 1 and "unknown variant 's11' (did you mean 's1'?); variants: s0, s1, s2" in err
    )
    with pytest.raises(SystemExit) as exited:
        run(capsys, "check", spec, "--depth", "9")
    assert exited.value.code == 2 and "--depth: expected a multiplier in (0, 8], got '9'" in capsys.readouterr().err


def test_fit_ranks_across_variants_and_depths(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "docs" / "examples" / "scaled.yaml")
    costs = {v: archc.compile(spec, variant=v).cost().macs for v in ("s0", "s1", "s2")}
    assert costs["s0"] < costs["s1"] < costs["s2"]
    budget = str(costs["s1"])
    code, out, _ = run(capsys, "fit", spec, "--max-macs", budget, "--variant", "s0,s1,s2", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [(r["variant"], r["resolution"], r["macs"]) for r in rows] == [
        ("s1", 40, costs["s1"]),
        ("s0", 32, costs["s0"]),
    ]
    rows = archc.fit(spec, max_macs=costs["s1"], variants=["s0"], depths=[1.0, 1.1, 2.0])
    assert [r.label for r in rows][-1] == "s0 1/32" and all(r.macs <= costs["s1"] for r in rows)
    grid = archc.sweep(spec, variants=["s0", "s1"], depths=[1.0, 2.0])
    assert [(g.variant, g.depth_multiplier) for row in grid.rows for g, _ in row] == [
        ("s0", 1.0),
        ("s0", 2.0),
        ("s1", 1.0),
        ("s1", 2.0),
    ]
    with pytest.raises(SpecError, match="unknown variant 'x'"):
        archc.fit(spec, max_macs=10**9, variants=["x"], search=True)


def test_the_json_schema_covers_depth_params_and_variants(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    top, variant = schema["properties"], schema["$defs"]["Variant"]
    assert code == 0 and top["depth"]["maximum"] == 8 and top["depth"]["exclusiveMinimum"] == 0
    assert set(top["depth_rounding"]["enum"]) == {"ceil", "round", "floor"}
    assert {"depth", "width", "classes", "in"} <= set(top["params"]["propertyNames"]["not"]["enum"])
    assert variant["additionalProperties"] is False
    assert set(variant["properties"]) == {"description", "width", "depth", "resolution", "size", "params", "layers"}
