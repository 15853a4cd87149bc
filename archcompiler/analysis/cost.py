"""Parameters, multiply-adds and activation counts, under named counting conventions.

Papers and tools disagree on what to count, so a number is meaningless without its rule
(docs/NUMBERS.md, "How peers count"). Every op reports convention-free counts
(:meth:`archcompiler.ops.Node.cost`); this module only combines them. Every report names
its convention:

``paper``
    Howard et al. 2017: conv, depthwise and FC *weights* as parameters (no bias, no BN) and
    their multiply-adds (no BN, activation, pooling or bias). Reproduces Tables 1-7.
``torch``
    Parameters as ``sum(p.numel() for p in model.parameters())``: weights, biases and BN
    gamma/beta (BN running statistics are buffers, not parameters). MACs as ``paper``.
``keras``
    ``model.count_params()``: the ``torch`` parameters plus BN moving mean and variance, and
    Normalization's mean, variance and its scalar ``count`` (1), reported as non-trainable.
    MACs as ``paper``.
``fvcore``
    fvcore's FlopCountAnalysis (one "flop" = one multiply-add): ``paper`` MACs, plus 2 per
    element for each BatchNorm in eval mode (scale and shift) and 1 per input element for
    pooling. Parameters as ``torch``.
"""

from __future__ import annotations

import csv
import decimal
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from archcompiler import ir
from archcompiler.text import FORMATS, html_table, markdown, shape, table

CONVENTIONS: dict[str, str] = {
    "paper": "conv/dw/FC weights and their multiply-adds (Howard et al. 2017)",
    "torch": "PyTorch parameters (weights, biases, BN affine); paper MACs",
    "keras": "Keras count_params (adds BN moving statistics as non-trainable); paper MACs",
    "fvcore": "torch parameters; fvcore flops (paper MACs + 2/element BN + pooling inputs)",
}

COUNTED: dict[str, str] = {
    "paper": "conv, depthwise and dense weights",
    "torch": "weights, biases and BatchNorm gamma/beta, as model.parameters()",
    "keras": "torch's parameters plus the BatchNorm moving statistics, as count_params()",
    "fvcore": "torch's parameters; fvcore's flops as MACs",
}
"""What each convention's parameter count holds, in the words a summary shows."""

_FRAMEWORK_COUNTS = {"torch": "model.parameters()", "keras": "count_params()", "paper": "the paper's tables"}


def convention_note(convention: str) -> str:
    """What a summary's counts are and how to get a framework's own count, in one line:
    'convention paper (conv, depthwise and dense weights; --convention torch for
    model.parameters(), keras for count_params())'. The default, the paper's, counts no bias
    and no BatchNorm, and surprises whoever compares with Keras' or torch's count."""
    others = [c for c in _FRAMEWORK_COUNTS if c != convention][:2]
    how = ", ".join(f"{c} for {_FRAMEWORK_COUNTS[c]}" for c in others)
    return f"convention {convention} ({COUNTED[convention]}; --convention {how})"


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    category: str
    shape: tuple[int, ...]
    trainable: int
    non_trainable: int
    macs: int
    activations: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


@dataclass(frozen=True)
class CategoryCost:
    category: str
    params: int
    macs: int
    param_share: float
    mac_share: float


@dataclass(frozen=True)
class CostReport:
    """Per-node and total costs of a graph under one convention."""

    graph: ir.Graph
    convention: str
    nodes: tuple[NodeCost, ...]

    @property
    def trainable(self) -> int:
        return sum(n.trainable for n in self.nodes)

    @property
    def non_trainable(self) -> int:
        return sum(n.non_trainable for n in self.nodes)

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def activations(self) -> int:
        return sum(n.activations for n in self.nodes)

    def node(self, name: str) -> NodeCost:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the graph and every node's costs.
        return (
            f"<CostReport {self.graph.name}, convention {self.convention}: {self.params:,} params, "
            f"{self.macs:,} MACs over {len(self.nodes)} nodes>"
        )

    def _repr_html_(self) -> str:
        """The summary as an HTML table, for notebooks (:func:`summary_html_fragment`)."""
        return summary_html_fragment(self.graph.source or self.graph.name, self)

    def by_category(self) -> tuple[CategoryCost, ...]:
        """Share of MACs and parameters per layer type (the paper's Table 2), largest first."""
        params: dict[str, int] = {}
        macs: dict[str, int] = {}
        for n in self.nodes:
            if n.params or n.macs:
                params[n.category] = params.get(n.category, 0) + n.params
                macs[n.category] = macs.get(n.category, 0) + n.macs
        tp, tm = self.params or 1, self.macs or 1
        rows = [CategoryCost(c, params[c], macs[c], params[c] / tp, macs[c] / tm) for c in params]
        return tuple(sorted(rows, key=lambda r: (-r.macs, -r.params, r.category)))


def cost(graph: ir.Graph, convention: str = "paper") -> CostReport:
    """Count every node of ``graph`` under ``convention`` (one of :data:`CONVENTIONS`)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    rows = []
    for node in graph.nodes:
        r = node.cost(graph.input_shapes(node))
        if convention == "paper":
            trainable, non_trainable = r.weights, 0
        else:
            trainable = r.weights + r.bias + r.bn_affine
            non_trainable = r.bn_stats + r.counters if convention == "keras" else 0
        macs = r.macs + (r.bn_ops + r.pool_ops if convention == "fvcore" else 0)
        acts = 0 if isinstance(node, ir.Input) else node.numel
        rows.append(NodeCost(node.name, node.op, node.category, node.shape, trainable, non_trainable, macs, acts))
    return CostReport(graph=graph, convention=convention, nodes=tuple(rows))


# -- the summary: what ``archc summary`` prints and Compiled.summary() returns ------------------


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


LAYER_COLUMNS, LAYER_ALIGN = ["name", "op", "output", "params", "MACs", "share"], "lllrrr"
CATEGORY_COLUMNS, CATEGORY_ALIGN = ["layer type", "MACs", "MACs %", "params", "params %"], "lrrrr"


def layer_cells(report: CostReport) -> list[list[str]]:
    """A summary's per-layer cells (every text format and html show them)."""
    return [
        [
            r["name"],
            r["op"],
            shape(r["output_shape"]),
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{100 * r['mac_share']:.2f}%" if r["macs"] else "",
        ]
        for r in _rows(report)
    ]


def category_cells(cats: Sequence[CategoryCost]) -> list[list[str]]:
    """A summary's per-layer-type cells (every text format and html show them)."""
    return [
        [c.category, f"{c.macs:,}", f"{100 * c.mac_share:.2f}%", f"{c.params:,}", f"{100 * c.param_share:.2f}%"]
        for c in cats
    ]


def setting(g: ir.Graph) -> str:
    """`` (variant b1, depth 1.1)`` after a model's name: which variant and depth multiplier it
    was lowered at (empty for no variant at depth 1)."""
    parts = [f"variant {g.variant}"] if g.variant else []
    parts += [f"depth {g.depth_multiplier:g}"] if g.variant or g.depth_multiplier != 1.0 else []
    return f" ({', '.join(parts)})" if parts else ""


def summary_title(file: str, report: CostReport) -> list[str]:
    """The summary's first lines: the model and setting, then what its counts are."""
    g = report.graph
    return [
        f"{g.name}{setting(g)}: {file}, width {g.width:g}, input {shape(g.input_shape)}, rounding {g.rounding}",
        convention_note(report.convention),
    ]


def totals(report: CostReport) -> str:
    return (
        f"total: {report.params:,} params ({report.trainable:,} trainable, {report.non_trainable:,} non-trainable), "
        f"{report.macs:,} MACs ({humanize(report.macs)}), {report.activations:,} activations"
    )


def summary(file: str, report: CostReport, fmt: str = "table") -> str:
    """Per-node shapes, parameters and MACs, totals, and the share per layer type (the paper's
    Table 2) in one of :data:`~archcompiler.text.FORMATS`: what ``archc summary`` prints and
    :meth:`archcompiler.api.Compiled.summary` returns."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(_summary_document(file, report), indent=2)
    if fmt == "csv":
        return _summary_csv(report)
    render = markdown if fmt == "markdown" else table
    return "\n\n".join(
        [
            "\n".join(summary_title(file, report)),
            render(LAYER_COLUMNS, layer_cells(report), LAYER_ALIGN),
            totals(report),
            render(CATEGORY_COLUMNS, category_cells(report.by_category()), CATEGORY_ALIGN),
        ]
    )


def _summary_document(file: str, report: CostReport) -> dict[str, Any]:
    g = report.graph
    return {
        "spec": file,
        "name": g.name,
        "variant": g.variant or None,
        "depth": g.depth_multiplier,
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
        "nodes": _rows(report),
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
            for c in report.by_category()
        ],
    }


def _summary_csv(report: CostReport) -> str:
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
    for r in _rows(report):
        w.writerow({**r, "output_shape": shape(r["output_shape"]), "mac_share": f"{r['mac_share']:.6f}"})
    return buf.getvalue().rstrip("\n")


def summary_html_fragment(file: str, report: CostReport) -> str:
    """The summary as an HTML fragment (a notebook's ``_repr_html_``): the title, the layer
    table, the totals and the share per layer type. Every spec text is escaped."""
    title, note = summary_title(file, report)
    return "\n".join(
        [
            '<div class="archc-summary">',
            f"<p><b>{html.escape(title)}</b><br>{html.escape(note)}</p>",
            html_table(LAYER_COLUMNS, layer_cells(report), LAYER_ALIGN),
            f"<p>{html.escape(totals(report))}</p>",
            html_table(CATEGORY_COLUMNS, category_cells(report.by_category()), CATEGORY_ALIGN),
            "</div>",
        ]
    )


_BUDGET = re.compile(
    r"\+?(?P<number>(?:[0-9]{1,3}(?:[,_][0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<exponent>[eE][+-]?[0-9]{1,3})?(?P<suffix>[kKmMgGB]?)"
)
_SUFFIXES = {"k": 10**3, "K": 10**3, "M": 10**6, "m": 10**6, "G": 10**9, "g": 10**9, "B": 10**9}
MAX_BUDGET = 10**18
"""The largest budget (a count no network comes near; int64 in JSON)."""


def parse_budget(text: str) -> int:
    """'600M', '4.2M', '1.5G', '250k', '1e9', '123456' or '1,000,000' -> an integer count.

    ASCII digits only (``float`` would read '١٥٠'); a thousands separator (',' or '_') only
    between groups of three digits, so '1,5M' is refused rather than read as 15M. The value is
    computed exactly (decimal) and its whole part is the count: a budget of 1.5 admits what
    counts 1. One below 1 (0.5, 1e-5) admits nothing and is refused, as 0 is.
    Raises ValueError saying what is expected."""
    m = _BUDGET.fullmatch(text.strip())
    if m is None:
        raise ValueError("expected a positive count")
    digits = m["number"].replace(",", "").replace("_", "") + (m["exponent"] or "")
    with decimal.localcontext() as exact:
        exact.prec = 64  # every digit of a count up to MAX_BUDGET, and more
        value = Decimal(digits) * _SUFFIXES.get(m["suffix"], 1)
    if not 1 <= value <= MAX_BUDGET:
        raise ValueError("expected a count from 1 to 1e18")
    return int(value)


def humanize(n: float, digits: int = 2) -> str:
    """4209088 -> '4.21M' (for tables; exact counts are in json/csv)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f}{unit}"
    return str(int(n))
