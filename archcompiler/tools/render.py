"""Text renderings of the API's results: what ``archc`` prints, as strings.

Kept apart from the command line (no argparse here) so a script or a notebook gets the same
tables as the terminal: table, json, csv and markdown for summaries and sweeps, plus the
parity table and the one-line reports of check, build and generate.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from archcompiler.analysis.cost import (
    CATEGORY_ALIGN,
    CATEGORY_COLUMNS,
    LAYER_ALIGN,
    LAYER_COLUMNS,
    CostReport,
    category_cells,
    convention_note,
    humanize,
    layer_cells,
    setting,
)
from archcompiler.analysis.cost import summary as cost_summary
from archcompiler.api import Built, Sweep, resolution_label
from archcompiler.ir.graph import Graph
from archcompiler.text import FORMATS, html_table, markdown, shape, table

if TYPE_CHECKING:
    from archcompiler.analysis.fitting import FitRow

SUMMARY_FORMATS = (*FORMATS, "html")
FIT_FORMATS = ("table", "json")


def outputs(g: Graph) -> str:
    """The output shape, or for a multi-output model every output's: ``[16x16x128, 8x8x256]``."""
    if not g.multi_output:
        return shape(g.output_shape)
    return "[" + ", ".join(shape(s) for s in g.output_shapes) + "]"


def check(file: str, report: CostReport) -> str:
    """``archc check``: one line saying the spec is valid, with its size."""
    g = report.graph
    return (
        f"ok: {file}: {g.name}{setting(g)}, {len(g)} nodes, input {shape(g.input_shape)} -> "
        f"{outputs(g)}, {report.params:,} params, {report.macs:,} MACs ({report.convention})"
    )


def summary(file: str, report: CostReport, fmt: str) -> str:
    """``archc summary``: the text formats are :func:`archcompiler.analysis.cost.summary` (what
    ``Compiled.summary()`` returns), html a page of its own (:func:`summary_html`)."""
    if fmt == "html":
        return summary_html(file, report)
    return cost_summary(file, report, fmt)


def _scaling(g: Graph) -> dict[str, object]:
    """The variant and depth of a grid's setting, for its JSON (a sweep or fit across them)."""
    return {"variant": g.variant or None, "depth": g.depth_multiplier}


def sweep(grid: Sweep, fmt: str) -> str:
    """MACs per width x resolution and params per width (the paper's Tables 6 and 7); across
    variants or depths (:attr:`Sweep.varies`) one line per setting, each naming its variant,
    depth, width and resolution (the variants' own input sizes differ)."""
    cells: list[tuple[float, Sequence[tuple[Graph, CostReport]]]] = list(zip(grid.widths, grid.rows, strict=True))
    if fmt == "json":
        return json.dumps(
            {
                "spec": grid.file,
                "convention": grid.convention,
                "grid": [
                    (_scaling(g) if grid.varies else {})
                    | {"width": w, "resolution": list(g.resolution), "macs": r.macs, "params": r.params}
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
        first = "variant,depth," if grid.varies else ""
        lines = [first + "width,resolution,macs,params" + (",latency_s" if grid.latency else "")]
        lines += [
            (f"{g.variant},{g.depth_multiplier:g}," if grid.varies else "")
            + f"{w:g},{resolution_label(g)},{r.macs},{r.params}"
            + (f",{grid.latency[i][j]:.6g}" if grid.latency else "")
            for i, (w, row) in enumerate(cells)
            for j, (g, r) in enumerate(row)
        ]
        return "\n".join(lines)
    if grid.varies:
        return _sweep_settings(grid, fmt)
    resolutions = [resolution_label(g) for g, _ in grid.rows[0]]
    headers = ["width \\ resolution", *resolutions, "params"]
    rows = []
    for w, row in cells:
        params = {r.params for _, r in row}
        p = f"{row[0][1].params:,}" if len(params) == 1 else "varies"
        rows.append([f"{w:g}", *(f"{r.macs:,}" for _, r in row), p])
    render = markdown if fmt == "markdown" else table
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


def _sweep_settings(grid: Sweep, fmt: str) -> str:
    """A sweep across variants or depths: one line per setting (variant, depth, width, input)."""
    headers = ["variant", "depth", "width", "resolution", "MACs", "params"]
    rows = []
    for i, row in enumerate(grid.rows):
        for j, (g, r) in enumerate(row):
            latency = [f"{1000 * grid.latency[i][j]:.2f}"] if grid.latency is not None else []
            cells = [g.variant or "-", f"{g.depth_multiplier:g}", f"{g.width:g}", resolution_label(g)]
            rows.append([*cells, f"{r.macs:,}", f"{r.params:,}", *latency])
    if grid.latency is not None:
        headers.append(f"ms ({grid.latency_backend})")
    render = markdown if fmt == "markdown" else table
    title = f"{grid.file}: multiply-adds by variant, depth, width and input resolution (convention {grid.convention})"
    return title + "\n\n" + render(headers, rows, "llll" + "r" * (len(headers) - 4))


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
    node_rows = layer_cells(report)
    cat_rows = category_cells(report.by_category())
    title = f"{g.name}{setting(g)}: width {g.width:g}, input {shape(g.input_shape)}"
    about = (
        f"{file}, rounding {g.rounding}, {convention_note(report.convention)}. "
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
        html_table(CATEGORY_COLUMNS, cat_rows, CATEGORY_ALIGN),
        "<h2>Graph</h2>",
        _graph_html(g),
        "<h2>Layers</h2>",
        html_table(LAYER_COLUMNS, node_rows, LAYER_ALIGN),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p)


def fit(file: str, rows: Sequence[FitRow], fmt: str, *, budget: str, search: bool = False) -> str:
    """``archc fit``: the settings within ``budget``, largest first (json: a list of objects with
    width, resolution, macs, params; resolution is a size for a square input, else [h, w])."""
    varies = any(r.variant or r.depth != 1.0 for r in rows)
    if fmt == "json":
        doc = [
            ({"variant": r.variant or None, "depth": r.depth} if varies else {})
            | {
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
            *([r.variant or "-", f"{r.depth:g}"] if varies else []),
            f"{r.width:g}",
            f"{r.resolution[0]}" if r.resolution[0] == r.resolution[1] else "x".join(map(str, r.resolution)),
            f"{r.macs:,}",
            f"{r.params:,}",
        ]
        for r in rows
    ]
    headers = [*(["variant", "depth"] if varies else []), "width", "resolution", "MACs", "params"]
    return title + "\n\n" + table(headers, body, "l" * (len(headers) - 2) + "rr")
