"""Text renderings of the API's results: what ``archc`` prints, as strings.

Kept apart from the command line (no argparse here) so a script or a notebook gets the same
tables as the terminal: table, json, csv and markdown for summaries and sweeps, plus the
parity table and the one-line reports of check, build and generate.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcompiler.analysis.cost import CategoryCost, CostReport, humanize
from archcompiler.api import Built, Sweep, resolution_label
from archcompiler.ir.graph import Graph
from archcompiler.text import shape, table

if TYPE_CHECKING:
    from archcompiler.analysis.fitting import FitRow

FORMATS = ("table", "json", "csv", "markdown")
SUMMARY_FORMATS = (*FORMATS, "html")
FIT_FORMATS = ("table", "json")


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


def outputs(g: Graph) -> str:
    """The output shape, or for a multi-output model every output's: ``[16x16x128, 8x8x256]``."""
    if not g.multi_output:
        return shape(g.output_shape)
    return "[" + ", ".join(shape(s) for s in g.output_shapes) + "]"


def check(file: str, report: CostReport) -> str:
    """``archc check``: one line saying the spec is valid, with its size."""
    g = report.graph
    return (
        f"ok: {file}: {g.name}, {len(g)} nodes, input {shape(g.input_shape)} -> "
        f"{outputs(g)}, {report.params:,} params, {report.macs:,} MACs ({report.convention})"
    )


def summary(file: str, report: CostReport, fmt: str) -> str:
    """Per-node shapes, parameters and MACs, totals, and the share per layer type (the paper's Table 2)."""
    g = report.graph
    if fmt == "html":
        return summary_html(file, report)
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
            **(
                {"outputs": list(g.outputs), "output_shapes": [list(s) for s in g.output_shapes]}
                if g.multi_output
                else {"output_shape": list(g.output_shape)}
            ),
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
    body = _layer_cells(rows)
    cat_headers = ["layer type", "MACs", "MACs %", "params", "params %"]
    cat_rows = _category_cells(cats)
    title = (
        f"{g.name}: {file}, width {g.width:g}, input {shape(g.input_shape)}, "
        f"rounding {g.rounding}, convention {report.convention}"
    )
    totals = (
        f"total: {report.params:,} params ({report.trainable:,} trainable, {report.non_trainable:,} non-trainable), "
        f"{report.macs:,} MACs ({humanize(report.macs)}), {report.activations:,} activations"
    )
    render = _markdown if fmt == "markdown" else table
    return "\n\n".join([title, render(headers, body, "lllrrr"), totals, render(cat_headers, cat_rows, "lrrrr")])


def _layer_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """A summary's per-layer cells, as text and html show them."""
    return [
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


def _category_cells(cats: Sequence[CategoryCost]) -> list[list[str]]:
    """A summary's per-layer-type cells, as text and html show them."""
    return [
        [c.category, f"{c.macs:,}", f"{100 * c.mac_share:.2f}%", f"{c.params:,}", f"{100 * c.param_share:.2f}%"]
        for c in cats
    ]


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
                    | (
                        {"latency_s": grid.latency[i][j], "latency_backend": grid.latency_backend}
                        if grid.latency
                        else {}
                    )
                    for i, (w, row) in enumerate(cells)
                    for j, (g, r) in enumerate(row)
                ],
            },
            indent=2,
        )
    if fmt == "csv":
        lines = ["width,resolution,macs,params" + (",latency_s" if grid.latency else "")]
        lines += [
            f"{w:g},{resolution_label(g)},{r.macs},{r.params}" + (f",{grid.latency[i][j]:.6g}" if grid.latency else "")
            for i, (w, row) in enumerate(cells)
            for j, (g, r) in enumerate(row)
        ]
        return "\n".join(lines)
    resolutions = [resolution_label(g) for g, _ in grid.rows[0]]
    headers = ["width \\ resolution", *resolutions, "params"]
    rows = []
    for w, row in cells:
        params = {r.params for _, r in row}
        p = f"{row[0][1].params:,}" if len(params) == 1 else "varies"
        rows.append([f"{w:g}", *(f"{r.macs:,}" for _, r in row), p])
    render = _markdown if fmt == "markdown" else table
    title = f"{grid.file}: multiply-adds by width multiplier and input resolution (convention {grid.convention})"
    text = title + "\n\n" + render(headers, rows, "l" + "r" * (len(resolutions) + 1))
    if grid.latency is not None:
        lat_rows = [
            [f"{w:g}", *(f"{1000 * t:.2f}" for t in times)] for w, times in zip(grid.widths, grid.latency, strict=True)
        ]
        text += f"\n\nmedian latency in ms, batch 1, {grid.latency_backend} on this machine\n\n" + render(
            headers[:-1], lat_rows, "l" + "r" * len(resolutions)
        )
    return text


OPTIMIZED = ", optimized (BatchNorm folded, pads merged; equal to the unoptimized model within 1e-4)"


def built(result: Built) -> str:
    """``archc build``: what was built, its counts, and every file written."""
    g = result.graph
    p = result.params
    head = (
        f"built {g.name} with {result.backend}: input {shape(g.input_shape)} -> output "
        f"{outputs(g)}, {p.params:,} params ({p.trainable:,} trainable), "
        f"{result.macs:,} MACs, verified against the IR" + (OPTIMIZED if result.optimized else "")
    )
    return "\n".join([head, *([result.note] if result.note else []), *(f"  wrote {f}" for f in result.files)])


def wrote(path: Path) -> str:
    return f"wrote {path}"


def _html_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f'<{tag} class="{"num" if a == "r" else "txt"}">{html.escape(v)}</{tag}>'
            for v, a in zip(values, align, strict=True)
        )

    body = "\n".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table>\n<thead><tr>{cells('th', headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:2px 10px;border-bottom:1px solid #ddd}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.txt,th.txt{text-align:left}
pre{background:#f6f6f6;padding:1em;overflow:auto}div.graph{overflow:auto}"""


def _graph_html(g: Graph) -> str:
    """The drawing, or what to run instead when it would be too large for a page."""
    from archcompiler.tools.diagram import MAX_DRAWN, boxes, svg

    count = len(boxes(g, collapse_blocks=True)[0])
    if count > MAX_DRAWN:
        too_large = (
            f"Not drawn: {count:,} boxes (at most {MAX_DRAWN:,} are drawn here); "
            "'archc diagram SPEC --collapse-blocks --format dot | dot -Tsvg' draws it."
        )
        return f"<p>{html.escape(too_large)}</p>"
    note = "Each block instance is one box; an arrow carries the shape it is labelled with (height x width x channels)."
    return f'<p>{html.escape(note)}</p>\n<div class="graph">\n{svg(g, collapse_blocks=True)}\n</div>'


def summary_html(file: str, report: CostReport) -> str:
    """``archc summary --format html``: one self-contained page (no scripts, nothing fetched):
    the totals, the share per layer type, the graph drawn as inline SVG (block instances
    collapsed) and the per-layer table. Every spec text goes through ``html.escape``."""

    g = report.graph
    rows = _rows(report)
    node_rows = _layer_cells(rows)
    cat_rows = _category_cells(report.by_category())
    title = f"{g.name}: width {g.width:g}, input {shape(g.input_shape)}"
    about = (
        f"{file}, rounding {g.rounding}, convention {report.convention}. "
        f"Total: {report.params:,} params ({report.trainable:,} trainable, {report.non_trainable:,} non-trainable), "
        f"{report.macs:,} MACs ({humanize(report.macs)}), {report.activations:,} activations."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(g.description)}</p>" if g.description else "",
        f"<p>{html.escape(about)}</p>",
        "<h2>By layer type</h2>",
        _html_table(["layer type", "MACs", "MACs %", "params", "params %"], cat_rows, "lrrrr"),
        "<h2>Graph</h2>",
        _graph_html(g),
        "<h2>Layers</h2>",
        _html_table(["name", "op", "output", "params", "MACs", "share"], node_rows, "lllrrr"),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p)


def fit(file: str, rows: Sequence[FitRow], fmt: str, *, budget: str, search: bool = False) -> str:
    """``archc fit``: the settings within ``budget``, largest first (json: a list of objects with
    width, resolution, macs, params; resolution is a size for a square input, else [h, w])."""
    if fmt == "json":
        doc = [
            {
                "width": r.width,
                "resolution": r.resolution[0] if r.resolution[0] == r.resolution[1] else list(r.resolution),
                "macs": r.macs,
                "params": r.params,
            }
            for r in rows
        ]
        return json.dumps(doc, indent=2)
    what = "the front of the fine grid (no fitting setting is both wider and larger)" if search else "settings"
    title = f"{file}: {what} within {budget}, largest first"
    body = [
        [
            f"{r.width:g}",
            f"{r.resolution[0]}" if r.resolution[0] == r.resolution[1] else "x".join(map(str, r.resolution)),
            f"{r.macs:,}",
            f"{r.params:,}",
        ]
        for r in rows
    ]
    return title + "\n\n" + table(["width", "resolution", "MACs", "params"], body, "llrr")
