"""Text renderings of the API's results: what ``archc`` prints, as strings.

Kept apart from the command line (no argparse here) so a script or a notebook gets the same
tables as the terminal: table, json, csv and markdown for summaries and sweeps, plus the
parity table and the one-line reports of check, build and generate.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import Built, Sweep, resolution_label
from .cost import CostReport, humanize
from .ir import Graph

if TYPE_CHECKING:
    from .parity import ParityReport

FORMATS = ("table", "json", "csv", "markdown")


def shape(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _markdown(headers: list[str], rows: list[list[str]], align: str) -> str:
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [headers, sep, *rows])


def _rows(report: CostReport) -> list[dict[str, Any]]:
    total = report.macs or 1
    return [
        {
            "name": n.name,
            "op": n.op,
            "category": n.category,
            "output_shape": list(n.shape),
            "params": n.params,
            "trainable": n.trainable,
            "non_trainable": n.non_trainable,
            "macs": n.macs,
            "mac_share": n.macs / total,
            "activations": n.activations,
        }
        for n in report.nodes
    ]


def check(file: str, report: CostReport) -> str:
    """``archc check``: one line saying the spec is valid, with its size."""
    g = report.graph
    return (
        f"ok: {file}: {g.name}, {len(g)} nodes, input {shape(g.input_shape)} -> "
        f"{shape(g.output_shape)}, {report.params:,} params, {report.macs:,} MACs ({report.convention})"
    )


def summary(file: str, report: CostReport, fmt: str) -> str:
    """Per-node shapes, parameters and MACs, totals, and the share per layer type (the paper's Table 2)."""
    g = report.graph
    rows = _rows(report)
    cats = report.by_category()
    if fmt == "json":
        doc = {
            "spec": file,
            "name": g.name,
            "width": g.width,
            "resolution": list(g.resolution),
            "rounding": g.rounding,
            "convention": report.convention,
            "input_shape": list(g.input_shape),
            "output_shape": list(g.output_shape),
            "nodes": rows,
            "totals": {
                "params": report.params,
                "trainable": report.trainable,
                "non_trainable": report.non_trainable,
                "macs": report.macs,
                "activations": report.activations,
            },
            "by_category": [
                {
                    "category": c.category,
                    "params": c.params,
                    "macs": c.macs,
                    "param_share": c.param_share,
                    "mac_share": c.mac_share,
                }
                for c in cats
            ],
        }
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        fields = [
            "name",
            "op",
            "category",
            "output_shape",
            "params",
            "trainable",
            "non_trainable",
            "macs",
            "mac_share",
            "activations",
        ]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "output_shape": shape(r["output_shape"]), "mac_share": f"{r['mac_share']:.6f}"})
        return buf.getvalue().rstrip("\n")
    headers = ["name", "op", "output", "params", "MACs", "share"]
    body = [
        [
            r["name"],
            r["op"],
            shape(r["output_shape"]),
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{100 * r['mac_share']:.2f}%" if r["macs"] else "",
        ]
        for r in rows
    ]
    cat_headers = ["layer type", "MACs", "MACs %", "params", "params %"]
    cat_rows = [
        [c.category, f"{c.macs:,}", f"{100 * c.mac_share:.2f}%", f"{c.params:,}", f"{100 * c.param_share:.2f}%"]
        for c in cats
    ]
    title = (
        f"{g.name}: {file}, width {g.width:g}, input {shape(g.input_shape)}, "
        f"rounding {g.rounding}, convention {report.convention}"
    )
    totals = (
        f"total: {report.params:,} params ({report.trainable:,} trainable, {report.non_trainable:,} non-trainable), "
        f"{report.macs:,} MACs ({humanize(report.macs)}), {report.activations:,} activations"
    )
    render = _markdown if fmt == "markdown" else _table
    return "\n\n".join([title, render(headers, body, "lllrrr"), totals, render(cat_headers, cat_rows, "lrrrr")])


def sweep(grid: Sweep, fmt: str) -> str:
    """MACs per width x resolution and params per width (the paper's Tables 6 and 7)."""
    cells: list[tuple[float, Sequence[tuple[Graph, CostReport]]]] = list(zip(grid.widths, grid.rows, strict=True))
    if fmt == "json":
        return json.dumps(
            {
                "spec": grid.file,
                "convention": grid.convention,
                "grid": [
                    {"width": w, "resolution": list(g.resolution), "macs": r.macs, "params": r.params}
                    for w, row in cells
                    for g, r in row
                ],
            },
            indent=2,
        )
    if fmt == "csv":
        lines = ["width,resolution,macs,params"]
        lines += [f"{w:g},{resolution_label(g)},{r.macs},{r.params}" for w, row in cells for g, r in row]
        return "\n".join(lines)
    resolutions = [resolution_label(g) for g, _ in grid.rows[0]]
    headers = ["width \\ resolution", *resolutions, "params"]
    rows = []
    for w, row in cells:
        params = {r.params for _, r in row}
        p = f"{row[0][1].params:,}" if len(params) == 1 else "varies"
        rows.append([f"{w:g}", *(f"{r.macs:,}" for _, r in row), p])
    render = _markdown if fmt == "markdown" else _table
    title = f"{grid.file}: multiply-adds by width multiplier and input resolution (convention {grid.convention})"
    return title + "\n\n" + render(headers, rows, "l" + "r" * (len(resolutions) + 1))


def built(result: Built) -> str:
    """``archc build``: what was built, its counts, and every file written."""
    g = result.graph
    p = result.params
    head = (
        f"built {g.name} with {result.backend}: input {shape(g.input_shape)} -> output "
        f"{shape(g.output_shape)}, {p.params:,} params ({p.trainable:,} trainable), "
        f"{result.macs:,} MACs, verified against the IR"
    )
    return "\n".join([head, *(f"  wrote {f}" for f in result.files)])


def wrote(path: Path) -> str:
    return f"wrote {path}"


def parity(report: ParityReport, seed: int) -> str:
    """Every node's max abs / rel difference, the logits' difference, then PASS or the first divergence."""
    g = report.graph
    headers = ["node", "op", "max abs diff", "max rel diff", "result"]
    rows = [[d.node, d.op, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", "pass" if d.ok else "FAIL"] for d in report.diffs]
    title = (
        f"parity {' vs '.join(report.backends)}: {g.name}, width {g.width:g}, input "
        f"{shape(g.input_shape)}, atol {report.atol:g}, rtol {report.rtol:g}, seed {seed}"
    )
    logits = f"logits ({report.logits}): max abs diff {report.diff(report.logits).max_abs:.3g}"
    bad = report.first_failure
    verdict = (
        f"FAIL: first divergence at node {bad.node!r} ({bad.op}): max abs diff {bad.max_abs:.3g}"
        if bad
        else f"PASS: all {len(report.diffs)} nodes agree"
    )
    return f"{title}\n\n{_table(headers, rows, 'llrrl')}\n\n{logits}\n{verdict}"
