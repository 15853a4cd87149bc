"""Parameters, multiply-adds and activation counts, under named counting conventions.

Papers and tools disagree on what to count, so a number is meaningless without its rule
(docs/NUMBERS.md, "How peers count"). Every report names its convention:

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

import math
from dataclasses import dataclass

from . import ir

CONVENTIONS: dict[str, str] = {
    "paper": "conv/dw/FC weights and their multiply-adds (Howard et al. 2017)",
    "torch": "PyTorch parameters (weights, biases, BN affine); paper MACs",
    "keras": "Keras count_params (adds BN moving statistics as non-trainable); paper MACs",
    "fvcore": "torch parameters; fvcore flops (paper MACs + 2/element BN + pooling inputs)",
}


@dataclass(frozen=True)
class RawCost:
    """Convention-free counts of one node, from which every convention is derived."""

    weights: int = 0
    bias: int = 0
    bn_affine: int = 0
    bn_stats: int = 0
    macs: int = 0
    bn_ops: int = 0
    pool_ops: int = 0


def raw_cost(node: ir.Node, graph: ir.Graph) -> RawCost:
    """Count one node. Shapes come from the IR only (never a framework)."""
    out_hw = math.prod(node.shape[:-1]) if len(node.shape) == 3 else 1
    if isinstance(node, ir.Conv2D):
        w = node.kernel[0] * node.kernel[1] * (node.in_channels // node.groups) * node.filters
        return RawCost(weights=w, bias=node.filters if node.use_bias else 0, macs=w * out_hw)
    if isinstance(node, ir.DepthwiseConv2D):
        w = node.kernel[0] * node.kernel[1] * node.in_channels * node.multiplier
        return RawCost(weights=w, bias=node.shape[-1] if node.use_bias else 0, macs=w * out_hw)
    if isinstance(node, ir.Dense):
        w = node.in_features * node.units
        return RawCost(weights=w, bias=node.units if node.use_bias else 0, macs=w)
    if isinstance(node, ir.BatchNorm):
        affine = node.channels * (int(node.center) + int(node.scale))
        return RawCost(bn_affine=affine, bn_stats=2 * node.channels, bn_ops=2 * node.numel)
    if isinstance(node, ir.GlobalPool | ir.Pool2D):
        return RawCost(pool_ops=graph[node.inputs[0]].numel)
    return RawCost()


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


def category(node: ir.Node) -> str:
    """Layer type as the paper's Table 2 groups them (Conv 1x1, Conv dw 3x3, Conv 3x3, FC)."""
    if isinstance(node, ir.Conv2D):
        kind = "Conv" if node.groups == 1 else f"Conv g{node.groups}"
        return f"{kind} {node.kernel[0]}x{node.kernel[1]}"
    if isinstance(node, ir.DepthwiseConv2D):
        return f"Conv dw {node.kernel[0]}x{node.kernel[1]}"
    if isinstance(node, ir.Dense):
        return "Fully Connected"
    return {
        "batchnorm": "BatchNorm",
        "activation": "Activation",
        "pool2d": "Pooling",
        "global_pool": "Pooling",
    }.get(node.op, node.op.replace("_", " ").title())


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
        r = raw_cost(node, graph)
        if convention == "paper":
            trainable, non_trainable = r.weights, 0
        else:
            trainable = r.weights + r.bias + r.bn_affine
            non_trainable = r.bn_stats if convention == "keras" else 0
        macs = r.macs + (r.bn_ops + r.pool_ops if convention == "fvcore" else 0)
        acts = 0 if isinstance(node, ir.Input) else node.numel
        rows.append(NodeCost(node.name, node.op, category(node), node.shape, trainable, non_trainable, macs, acts))
    return CostReport(graph=graph, convention=convention, nodes=tuple(rows))


def parse_budget(text: str) -> int:
    """'600M', '4.2M', '1.5G', '250k', '1e9' or '123456' -> an integer count."""
    t = text.strip().replace("_", "").replace(",", "")
    scale = 1
    suffixes = {"k": 10**3, "K": 10**3, "M": 10**6, "m": 10**6, "G": 10**9, "g": 10**9, "B": 10**9}
    if t and t[-1] in suffixes:
        scale = suffixes[t[-1]]
        t = t[:-1]
    value = float(t) * scale
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return round(value)


def humanize(n: float, digits: int = 2) -> str:
    """4209088 -> '4.21M' (for tables; exact counts are in json/csv)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f}{unit}"
    return str(int(n))
