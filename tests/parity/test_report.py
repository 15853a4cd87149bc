"""The parity report's text (archcompiler/parity/report.py): it names each compared pair, shows
every node's bound and the share of it used, lists what a runtime could not expose, and its
header states the judging rule actually applied. Framework-free: the reports are made here as
the judges make them; tests/backends/test_onnx_backend.py and test_tflite_backend.py check
real runs."""

from __future__ import annotations

import re

import pytest
from helpers import SPEC

import archcompiler as a
from archcompiler.parity.report import NodeDiff, ParityReport

GRAPH = a.compile(SPEC, width=0.25, resolution=96).graph
FUSED = {n.name for n in GRAPH.nodes if n.op in ("conv2d", "depthwise_conv2d", "batchnorm")}
"""What TFLite fuses into the activation after it (its runtime does not expose them)."""

# (error, bound, the share of the bound used, by hand)
SHARES = [(3e-6, 1.2e-5, "25%"), (1e-9, 1e-5, "0.01%"), (0.0, 1e-5, "0%"), (7.2e-6, 8e-6, "90%")]


def _report(dtype: str = "float32", oracle: str = "torch in float64", fail_at: str = "") -> ParityReport:
    backends = ("torch", "keras", "onnx", "tflite") if dtype == "float32" else ("torch", "keras")
    diffs = []
    for i, n in enumerate(GRAPH.nodes):
        error, bound, _ = SHARES[i % len(SHARES)]
        if n.name == fail_at:
            error = 2.5 * bound
        skipped = ("tflite",) if n.name in FUSED and "tflite" in backends else ()
        judged = backends[1 + i % (len(backends) - 1 - len(skipped))]
        pair = f"{backends[1 + (i + 1) % (len(backends) - 1 - len(skipped))]} vs torch"
        max_rel = 0.86  # elementwise relative differences near zero values: never a verdict
        diffs.append(NodeDiff(n.name, n.op, 1e-6, max_rel, error <= bound, error, bound, judged, skipped, pair=pair))
    return ParityReport(GRAPH, backends, 0.0, 1e-9 if dtype == "float64" else 0.0, tuple(diffs), GRAPH.logits,
                        dtype, oracle)  # fmt: skip


def _table(text: str) -> list[list[str]]:
    """The rows of the per-node table, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("node "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


@pytest.mark.parametrize(
    ("dtype", "oracle", "rule"),
    [
        (
            "float32",
            "torch in float64",
            "rule: every backend in float32 against torch in float64 (the oracle): a node passes when "
            "max|x - oracle| is within its bound, the error inherited from its inputs times the op's Lipschitz "
            "constant plus 16 + n float32 roundings of the node's magnitude (n: the length of its sums)",
        ),
        (
            "float64",
            "",
            "rule: every backend in float64 against torch: a node passes when max|x - torch| <= 1e-09 * max|torch|",
        ),
        (
            "float64",
            "torch unoptimised in float64",
            "rule: every backend in float64 against torch unoptimised in float64 (the oracle): a node passes when "
            "max|x - oracle| <= 1e-09 * max|oracle|",
        ),
    ],
)
def test_the_header_states_the_judging_rule_used(dtype: str, oracle: str, rule: str) -> None:
    text = _report(dtype, oracle).table()
    lines = text.splitlines()
    header = " ".join(line.strip() for line in lines[1 : next(i for i, s in enumerate(lines) if not s)])
    assert header.startswith(rule + " ")
    assert "atol" not in text and "rtol" not in text  # the slack options, at 0, are no rule
    assert "0.86" not in text and "86%" not in text  # nor is an elementwise relative difference


def test_every_node_shows_its_bound_and_the_share_of_it_used() -> None:
    rows = _table(_report().table())
    assert [r[0] for r in rows] == [n.name for n in GRAPH.nodes]
    for i, row in enumerate(rows):
        error, bound, used = SHARES[i % len(SHARES)]
        # node, op, max diff, between (3 words), judged (3 words), error, bound, used, result
        assert row[-4:] == [f"{error:.3g}", f"{bound:.3g}", used, "pass"], row


def test_each_compared_pair_is_named() -> None:
    text = _report().table()
    assert text.splitlines()[0].startswith("parity torch vs keras vs onnx vs tflite: mobilenet_v1, width 0.25")
    for row, d in zip(_table(text), _report().diffs, strict=True):
        assert " ".join(row[3:6]) == d.pair and " ".join(row[6:9]) == f"{d.backend} vs oracle", row
    float64 = _table(_report("float64", "").table())
    assert {" ".join(r[2:5]) for r in float64} == {"keras vs torch"}  # between backends: the pair judged
    assert "logits (fc): " in text and "(the oracle)" in text


def test_the_nodes_a_runtime_cannot_expose_are_listed() -> None:
    text = _report().table()
    found = re.search(r"^tflite does not expose (\d+) of the (\d+) nodes \(compared without it\): (.*?)\n\n", text,
                      re.M | re.S)  # fmt: skip
    assert found, text[:800]
    listed = [name.strip() for name in found.group(3).replace("\n", " ").split(",")]
    assert set(listed) == FUSED and int(found.group(1)) == len(FUSED) and int(found.group(2)) == len(GRAPH.nodes)


def test_a_failure_names_the_pair_its_error_and_how_far_beyond_its_bound() -> None:
    report = _report(fail_at="conv_dw_3")
    d = report.diff("conv_dw_3")
    assert report.table().splitlines()[-1] == (
        f"FAIL: first divergence at node 'conv_dw_3' (depthwise_conv2d), {d.backend} vs oracle: "
        f"error {d.error:.3g} is 2.5x its bound {d.allowed:.3g} (max diff between backends 1e-06, {d.pair})"
    )
