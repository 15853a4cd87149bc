"""Parity reports: what was compared and judged (the result types), and their text, as
``archc parity`` prints it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archcompiler import ir

if TYPE_CHECKING:
    pass
from archcompiler.parity.bounds import RTOL64
from archcompiler.parity.compare import share
from archcompiler.text import shape, table


@dataclass(frozen=True)
class NodeDiff:
    node: str
    op: str
    max_abs: float
    """Largest |difference| between a backend and the first backend (same dtype)."""
    max_rel: float
    ok: bool
    error: float = 0.0
    """float32: the judged backend's max |x - float64 oracle|; float64: ``max_abs``."""
    allowed: float = 0.0
    """The bound ``error`` was held to (module docstring)."""
    backend: str = ""
    """The backend judged here: the one with the largest error / allowed."""
    skipped: tuple[str, ...] = ()
    """Backends that cannot expose this node (e.g. TFLite, where the converter fused it)."""
    nonfinite: str = ""
    """What every backend compared here gives at this node besides finite numbers ("NaN",
    "infinity" or "NaN and infinity"), "" if one gives finite values only. When set, ``ok`` is
    False and the report is not comparable from here (not failed: no backend is to blame)."""
    note: str = ""
    """What the reference holds there, for a non-finite node (float32 overflow, or NaN in it too)."""


@dataclass(frozen=True)
class TrainDiff:
    """One quantity at one step: the worst backend's difference and the bound it was held to."""

    step: int
    quantity: str
    """"loss", "logits", or a canonical tensor name after the step's update (``conv1.kernel``)."""
    node: str
    kind: str
    """"loss", "logits", "parameter" or "moving statistic"."""
    error: float
    magnitude: float
    allowed: float
    backend: str
    ok: bool
    """``error <= allowed``; it decides the verdict only where ``judged``."""
    mode: str = "step"
    """"step": one step from the reference's state after the previous step (synchronised);
    "run": the backends' free-running trajectories (steps 2..N; step 1 is the same computation)."""
    judged: bool = True
    """False for free-running rows beyond the report's ``horizon``, and for every float32 row
    (float32 training is measured, not judged: see train_parity)."""
    nonfinite: str = ""
    """What every backend gives here besides finite numbers ("NaN", "infinity" or both), if all
    do (float64: the reference backend included): the comparison is meaningless from this step
    (``ok`` is False; the report says so instead of blaming one backend)."""


@dataclass(frozen=True)
class TrainingReport:
    graph: ir.Graph
    backends: tuple[str, ...]
    dtype: str
    steps: int
    batch: int
    lr: float
    seed: int
    diffs: tuple[TrainDiff, ...]
    oracle: str
    """How the verdict was reached (float64 agreement, or the float64 run float32 is judged by)."""
    dropout_excluded: tuple[str, ...]
    """Dropout nodes whose rate was set to 0 for the comparison (no mask is shared)."""
    horizon: int = 0
    """Free-running steps judged: those at which the reference, nudged by one float64 rounding,
    still reproduces every quantity to RTOL64 of its magnitude."""
    sensitivity: tuple[float, ...] = ()
    """Per step: the largest relative deviation of the reference under that nudge, in units of
    2**-53 (its amplification of one rounding; the ratio of successive steps is the growth)."""

    @property
    def verdict(self) -> bool:
        """Whether the report decides equivalence (float64); float32 training is measured only."""
        return self.dtype == "float64"

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs if d.judged or d.nonfinite)

    @property
    def first_failure(self) -> TrainDiff | None:
        """The first row outside its bound, or where every backend gives NaN or infinity
        (``nonfinite``: then the comparison is meaningless from there, :attr:`not_comparable`)."""
        return next((d for d in self.diffs if (d.judged or d.nonfinite) and not d.ok), None)

    @property
    def not_comparable(self) -> TrainDiff | None:
        """The first failure if it is NaN or infinity in every backend, else None."""
        bad = self.first_failure
        return bad if bad is not None and bad.nonfinite else None

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the graph and every step's every quantity.
        bad = self.first_failure
        if bad is not None:
            verdict = f"{'NOT COMPARABLE' if bad.nonfinite else 'FAIL'} at step {bad.step} {bad.quantity!r}"
        else:
            verdict = "PASS" if self.verdict else "measured"
        return (
            f"<TrainingReport {self.graph.name}: {' vs '.join(self.backends)}, {self.steps} SGD steps, "
            f"{self.dtype}, {verdict}>"
        )

    def worst(self, quantity: str) -> TrainDiff:
        """The step at which ``quantity`` came closest to (or beyond) its bound."""
        rows = [d for d in self.diffs if d.quantity == quantity and d.judged]
        return max(rows, key=_use)


@dataclass(frozen=True)
class ParityReport:
    graph: ir.Graph
    backends: tuple[str, ...]
    atol: float
    rtol: float
    diffs: tuple[NodeDiff, ...]
    logits: str
    """The node compared as the logits: the input of a final softmax, else the output ("" for
    a multi-output graph, whose outputs are each reported instead)."""
    dtype: str = "float32"
    oracle: str = ""
    """What the nodes were judged against, in words."""
    training: TrainingReport | None = None

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs) and (self.training is None or self.training.ok)

    @property
    def first_failure(self) -> NodeDiff | None:
        """The first node outside its bound, or where every backend gives NaN or infinity
        (``nonfinite``: then nothing from there on can be compared, :attr:`not_comparable`)."""
        return next((d for d in self.diffs if not d.ok), None)

    @property
    def not_comparable(self) -> NodeDiff | None:
        """The first failure if it is NaN or infinity in every backend, else None."""
        bad = self.first_failure
        return bad if bad is not None and bad.nonfinite else None

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
        """The rendered report, as ``archc parity`` prints it (:func:`render`)."""
        return render(self)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr would print the whole graph and every node.
        worst = self.worst
        where = f", worst {worst.node!r} max abs {worst.max_abs:.3g}" if worst else ""
        bad = self.first_failure
        verdict = "PASS" if bad is None else f"{'NOT COMPARABLE' if bad.nonfinite else 'FAIL'} at {bad.node!r}"
        return f"<ParityReport {self.graph.name}: {' vs '.join(self.backends)}, {verdict}{where}>"


def render_training(report: TrainingReport) -> str:
    """Per quantity, its worst step against its bound; then PASS or the first divergence (float64),
    or the largest measured differences (float32, no verdict)."""
    g = report.graph
    lines = [
        f"training parity {' vs '.join(report.backends)}: {g.name}, {report.steps} SGD steps, batch "
        f"{report.batch}, lr {report.lr:g}, {report.dtype}, seed {report.seed}",
        f"{'judged' if report.verdict else 'measured'} against: {report.oracle}",
    ]
    if report.dropout_excluded:
        lines.append(
            f"dropout excluded: rate set to 0 at {', '.join(report.dropout_excluded)} (backends draw different masks)"
        )
    n = report.steps
    if report.verdict:
        lines += _render_judged(report)
    else:
        lines += _render_measured(report)
    bad = report.first_failure
    if bad is not None and bad.nonfinite:
        both = "both backends" if len(report.backends) == 2 else f"all {len(report.backends)} backends"
        where = f"{bad.kind} {bad.quantity!r} (node {bad.node!r})" if bad.node else f"the {bad.quantity}"
        lines.append(
            f"NOT COMPARABLE: {both} give {bad.nonfinite} at {where} from step {bad.step}: the training "
            "diverged, and values that are not finite cannot be compared (lower --lr)"
        )
    elif bad is not None:
        lines.append(
            f"FAIL: first divergence at step {bad.step} ({_MODES[bad.mode]}), {bad.kind} {bad.quantity!r} "
            f"(node {bad.node!r}, {bad.backend}): max abs diff {bad.error:.3g}, allowed {bad.allowed:.3g}"
        )
    elif report.verdict:
        synced, free_steps = n, max(report.horizon, 1)  # step 1 of a free run is the synchronised step 1
        quantities = len({d.quantity for d in report.diffs})
        if synced == free_steps == n:
            lines.append(f"PASS: {quantities} quantities agree at every one of {n} steps")
        else:
            lines.append(
                f"PASS: {quantities} quantities agree at the steps judged: {synced} of {n} synchronised, "
                f"the first {free_steps} of {n} free-running"
            )
    else:
        lines.append(
            "NO VERDICT: float32 training is measured, not judged (a float32 step amplifies its own roundings "
            "by as much as it amplifies anything, and no bound holds at every setting); run --dtype float64 "
            "to check equivalence"
        )
    return "\n".join(lines)


def _render_judged(report: TrainingReport) -> list[str]:
    n = report.steps
    synced = len({d.step for d in report.diffs if d.mode == "step"})
    amplifications = zip(report.sensitivity, report.sensitivity[1:], strict=False)
    growth = [b / a for a, b in amplifications if 0 < a < float("inf") and 0 < b < float("inf")]
    lines = [
        f"each step is compared from the same state (synchronised) at {synced} of {n} steps; the free-running "
        f"trajectories are judged for {report.horizon} of {n} steps"
        + (
            ""
            if report.horizon >= n
            else f" (beyond, {report.backends[0]} nudged by one float64 rounding no longer reproduces itself to "
            f"{RTOL64:g}: reported, not judged)"
        )
    ]
    if report.sensitivity:
        lines.append(
            "amplification of one float64 rounding by step: "
            + ", ".join(f"{a:.2g}" for a in report.sensitivity)
            + (f" (x{_geomean(growth):.3g} per step)" if growth else "")
        )
    judged = [d for d in report.diffs if d.judged]
    quantities = list(dict.fromkeys(d.quantity for d in judged))
    worst = [max((d for d in judged if d.quantity == q), key=_use) for q in quantities]
    top = sorted(worst, key=_use, reverse=True)[:8]
    lines.append("closest to their bounds (quantity, step, comparison, backend, max abs diff, allowed):")
    lines += [
        f"  {d.quantity} step {d.step} {_MODES[d.mode]} ({d.backend}): {d.error:.3g} <= {d.allowed:.3g}"
        for d in top
        if d.ok
    ]
    return lines


def _render_measured(report: TrainingReport) -> list[str]:
    """float32: per comparison, the quantities furthest from the float64 run, relative to their size."""
    lines = []
    for mode in ("step", "run"):
        rows = [d for d in report.diffs if d.mode == mode]
        if not rows:
            continue
        quantities = list(dict.fromkeys(d.quantity for d in rows))
        worst = [max((d for d in rows if d.quantity == q), key=_relative_error) for q in quantities]
        top = sorted(worst, key=_relative_error, reverse=True)[:5]
        what = "one step from the float64 run's state" if mode == "step" else "free-running"
        lines.append(f"largest differences, {what} (quantity, step, backend, max abs diff, of max|q|):")
        lines += [
            f"  {d.quantity} step {d.step} ({d.backend}): {d.error:.3g} of {d.magnitude:.3g} ({_relative_error(d):.2g})"
            for d in top
        ]
    return lines


def _relative_error(d: TrainDiff) -> float:
    return 0.0 if d.error == 0 else d.error / d.magnitude if d.magnitude > 0 else float("inf")


_MODES = {"step": "synchronised", "run": "free-running"}


def _use(d: TrainDiff) -> float:
    return share(d.error, d.allowed)


def _geomean(xs: Sequence[float]) -> float:
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _result(d: NodeDiff) -> str:
    """A parity node's result cell: pass, FAIL, or what every backend gave instead of numbers."""
    if d.nonfinite:
        return {"NaN": "NaN", "infinity": "inf"}.get(d.nonfinite, "NaN/inf")
    return "pass" if d.ok else "FAIL"


def render(report: ParityReport, seed: int | None = None) -> str:
    """Every node's max abs / rel difference, the logits' difference, then PASS or the first divergence."""
    g = report.graph
    headers = ["node", "op", "max abs diff", "max rel diff", "result"]
    rows = [[d.node, d.op, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", _result(d)] for d in report.diffs]
    title = (
        f"parity {' vs '.join(report.backends)}: {g.name}, width {g.width:g}, input "
        f"{shape(g.input_shape)}, atol {report.atol:g}, rtol {report.rtol:g}"
    ) + (f", seed {seed}" if seed is not None else "")
    logits = "\n".join(
        f"{'logits' if report.logits else 'output'} ({n}): max abs diff {report.diff(n).max_abs:.3g}"
        for n in ([report.logits] if report.logits else g.outputs)
    )
    bad = report.first_failure
    if bad is None:
        verdict = f"PASS: all {len(report.diffs)} nodes agree"
    elif bad.nonfinite:
        n = len(report.backends) - len(bad.skipped)
        every = "both backends" if n == 2 else f"all {n} backends"
        verdict = (
            f"NOT COMPARABLE: {every} give {bad.nonfinite} at node {bad.node!r} ({bad.op})"
            + (f"; {bad.note}" if bad.note else "")
            + ": values that are not finite cannot be compared, so the comparison is meaningless from there"
        )
    else:
        verdict = (
            f"FAIL: first divergence at node {bad.node!r} ({bad.op}), {bad.backend}: error {bad.error:.3g}, "
            f"allowed {bad.allowed:.3g} (max abs diff between backends {bad.max_abs:.3g})"
        )
    total = len(report.diffs)
    notes = "".join(
        f"\n{backend}: compared on {total - len(nodes)} of {total} nodes (its runtime does not expose the others)"
        for backend, nodes in report.skipped.items()
        if nodes
    )
    return f"{title}\n\n{table(headers, rows, 'llrrl')}\n\n{logits}{notes}\n{verdict}"
