"""Cross-framework parity: one IR, one set of weights, one input, every backend, every node.

The same canonical weights (:func:`archcompiler.weights.init`, with non-trivial BatchNorm
statistics) go into every backend through the portable format, the same random NHWC input
is run in eval mode in float32, and every node's output is compared with the first
backend's. The report names the first node that diverges, which is where a layout or
padding bug shows itself (later nodes only inherit the error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import ir, weights
from .registry import BUILTIN, Backend, get_backend


@dataclass(frozen=True)
class NodeDiff:
    node: str
    op: str
    max_abs: float
    max_rel: float
    ok: bool
    skipped: tuple[str, ...] = ()
    """Backends that cannot expose this node (e.g. TFLite, where the converter fused it)."""


@dataclass(frozen=True)
class ParityReport:
    graph: ir.Graph
    backends: tuple[str, ...]
    atol: float
    rtol: float
    diffs: tuple[NodeDiff, ...]
    logits: str
    """The node compared as the logits: the input of a final softmax, else the output."""

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs)

    @property
    def first_failure(self) -> NodeDiff | None:
        return next((d for d in self.diffs if not d.ok), None)

    @property
    def skipped(self) -> dict[str, tuple[str, ...]]:
        """Backend -> the nodes it could not expose, so they were compared without it."""
        out: dict[str, list[str]] = {}
        for d in self.diffs:
            for b in d.skipped:
                out.setdefault(b, []).append(d.node)
        return {b: tuple(nodes) for b, nodes in out.items()}

    def diff(self, node: str) -> NodeDiff:
        return next(d for d in self.diffs if d.node == node)

    @property
    def worst(self) -> NodeDiff | None:
        """The node with the largest max abs difference (None for an empty report)."""
        return max(self.diffs, key=lambda d: d.max_abs, default=None)

    def table(self) -> str:
        """The rendered report, as ``archc parity`` prints it (archcompiler.render.parity)."""
        from .render import parity as render_parity

        return render_parity(self)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr would print the whole graph and every node.
        worst = self.worst
        where = f", worst {worst.node!r} max abs {worst.max_abs:.3g}" if worst else ""
        bad = self.first_failure
        verdict = f"FAIL at {bad.node!r}" if bad else "PASS"
        return f"<ParityReport {self.graph.name}: {' vs '.join(self.backends)}, {verdict}{where}>"


def ordered(names: Sequence[str]) -> list[str]:
    """Built-ins in registry order (PyTorch must be imported before TensorFlow in one
    process, docs/DESIGN.md pitfalls), then plug-ins as given."""
    builtin = [b for b in BUILTIN if b in names]
    return builtin + [n for n in names if n not in BUILTIN]


def parity(
    graph: ir.Graph,
    backends: Sequence[str] = ("torch", "keras"),
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    seed: int = 0,
    batch: int = 2,
    instances: dict[str, Backend] | None = None,
) -> ParityReport:
    """Compare every node of ``graph`` across ``backends`` (the first is the reference).

    A node passes when ``max |x - ref| <= atol * max(1, max |ref|) + rtol * |ref|`` per element:
    the absolute tolerance scales with the tensor's magnitude, because float32 rounding
    does (an intermediate BatchNorm output of magnitude 15 differs by ~1.5e-5 between two
    correct float32 implementations, each that far from a float64 run). Tensors of
    magnitude <= 1, such as typical logits, are held to ``atol`` itself.
    """
    import numpy as np

    names = ordered(list(dict.fromkeys(backends)))
    if len(names) < 2:
        raise ValueError("parity needs at least two backends")
    w = weights.init(graph, seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(batch, *graph.input_shape)).astype(np.float32)
    everything = [n.name for n in graph.nodes]
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        backend = (instances or {}).get(name) or get_backend(name)
        model = backend.build(graph)
        backend.verify(graph, model)
        backend.set_weights(graph, model, w)
        exposed = getattr(backend, "exposed", None)
        shown = exposed(graph, model) | {graph.output} if exposed else set(everything)
        outputs[name] = backend.run(graph, model, x, [n for n in everything if n in shown])
    diffs = []
    for node in graph.nodes:
        worst_abs, worst_rel, ok = 0.0, 0.0, True
        have = [b for b in names if node.name in outputs[b]]
        skipped = tuple(b for b in names if b not in have)
        if len(have) < 2:  # nothing to compare it with: listed in the report as skipped
            diffs.append(NodeDiff(node.name, node.op, 0.0, 0.0, True, skipped))
            continue
        r = outputs[have[0]][node.name].astype(np.float64)
        for other in have[1:]:
            o = outputs[other][node.name].astype(np.float64)
            if o.shape != r.shape:
                diffs.append(NodeDiff(node.name, node.op, float("inf"), float("inf"), False, skipped))
                break
            d = np.abs(o - r)
            worst_abs = max(worst_abs, float(d.max(initial=0.0)))
            worst_rel = max(worst_rel, float((d / np.maximum(np.abs(r), 1e-12)).max(initial=0.0)))
            scale = max(1.0, float(np.abs(r).max(initial=0.0)))
            ok = ok and bool(np.all(d <= atol * scale + rtol * np.abs(r)))
        else:
            diffs.append(NodeDiff(node.name, node.op, worst_abs, worst_rel, ok, skipped))
    return ParityReport(graph, tuple(names), atol, rtol, tuple(diffs), graph.logits)
