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
    ``model.count_params()``: the ``torch`` parameters plus BN moving mean and variance,
    reported as non-trainable. MACs as ``paper``.
``fvcore``
    fvcore's FlopCountAnalysis (one "flop" = one multiply-add): ``paper`` MACs, plus 2 per
    element for each BatchNorm in eval mode (scale and shift) and 1 per input element for
    pooling. Parameters as ``torch``.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from decimal import Decimal

from archcompiler import ir

CONVENTIONS: dict[str, str] = {
    "paper": "conv/dw/FC weights and their multiply-adds (Howard et al. 2017)",
    "torch": "PyTorch parameters (weights, biases, BN affine); paper MACs",
    "keras": "Keras count_params (adds BN moving statistics as non-trainable); paper MACs",
    "fvcore": "torch parameters; fvcore flops (paper MACs + 2/element BN + pooling inputs)",
}


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
            non_trainable = r.bn_stats if convention == "keras" else 0
        macs = r.macs + (r.bn_ops + r.pool_ops if convention == "fvcore" else 0)
        acts = 0 if isinstance(node, ir.Input) else node.numel
        rows.append(NodeCost(node.name, node.op, node.category, node.shape, trainable, non_trainable, macs, acts))
    return CostReport(graph=graph, convention=convention, nodes=tuple(rows))


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
