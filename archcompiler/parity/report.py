"""Parity reports: what was compared and judged (the result types), and their text, as
``archc parity`` prints it."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from archcompiler import ir
from archcompiler.parity.bounds import K_ROUNDINGS, RTOL64
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
    pair: str = ""
    """The two backends ``max_abs`` is between, ``"keras vs torch"``: each backend is compared
    with the first that exposes the node ("" where fewer than two do)."""


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
    """Dropout and drop path nodes whose rate was set to 0 for the comparison (no mask is shared)."""
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
    """What every backend was judged against, in words (``"torch in float64"``); "" when the
    backends were judged against the first backend's own run (float64 agreement). :attr:`rule`
    says the whole judging rule."""
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

    @property
    def rule(self) -> str:
        """The judging rule this report applied, in words (its header says it)."""
        first = self.backends[0] if self.backends else "the first backend"
        slack = f"{self.atol:g} + " if self.atol else ""
        if self.dtype == "float64" and not self.oracle:
            return (
                f"every backend in float64 against {first}: a node passes when max|x - {first}| "
                f"<= {slack}{self.rtol:g} * max|{first}|"
            )
        if self.dtype == "float64":
            return (
                f"every backend in float64 against {self.oracle} (the oracle): a node passes when "
                f"max|x - oracle| <= {slack}{self.rtol:g} * max|oracle|"
            )
        extra = f", plus {slack}{self.rtol:g} * max|oracle|" if self.atol or self.rtol else ""
        return (
            f"every backend in {self.dtype} against {self.oracle} (the oracle): a node passes when "
            "max|x - oracle| is within its bound, the error inherited from its inputs times the op's "
            f"Lipschitz constant plus {K_ROUNDINGS} + n {self.dtype} roundings of the node's magnitude "
            f"(n: the length of its sums){extra}"
        )

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
            f"dropout and drop path excluded: rate set to 0 at {', '.join(report.dropout_excluded)} "
            "(backends draw different masks)"
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
    if not d.backend:
        return "-"  # fewer than two backends expose it: nothing was compared
    return "pass" if d.ok else "FAIL"


def _percent(fraction: float) -> str:
    """A share of a bound: '24%', '3.6%', '0.003%', 'inf%'."""
    v = 100 * fraction
    if v == float("inf"):
        return "inf%"
    return f"{v:.0f}%" if v >= 10 else f"{v:.1f}%" if v >= 0.1 else f"{v:.1g}%" if v else "0%"


def _judged(report: ParityReport, d: NodeDiff) -> str:
    """The pair judged at a node: 'keras vs oracle', or between backends 'keras vs torch'."""
    if not d.backend:
        return ""
    return f"{d.backend} vs oracle" if report.oracle else d.pair


def _rows(report: ParityReport) -> tuple[list[str], list[list[str]], str]:
    """The per-node table: what was judged, its error, bound and share of the bound used; with
    an oracle also the largest difference between backends, and between which two."""
    headers = ["node", "op", "judged", "error", "bound", "used", "result"]
    rows = [
        [
            d.node,
            d.op,
            _judged(report, d),
            f"{d.error:.3g}" if d.backend else "",
            f"{d.allowed:.3g}" if d.backend else "",
            _percent(share(d.error, d.allowed)) if d.backend else "",
            _result(d),
        ]
        for d in report.diffs
    ]
    if not report.oracle:  # the judged pairs are between backends already
        return headers, rows, "lllrrrl"
    between = [[f"{d.max_abs:.3g}" if d.pair else "", d.pair] for d in report.diffs]
    return (
        [*headers[:2], "max diff", "between", *headers[2:]],
        [[*r[:2], *b, *r[2:]] for r, b in zip(rows, between, strict=True)],
        "llrllrrrl",
    )


def _legend(report: ParityReport) -> str:
    judged = "judged: the backend closest to its bound at the node (error: max|x - reference|; used: error / bound)"
    if not report.oracle:
        return judged
    return f"max diff: the largest |difference| between a backend and {report.backends[0]}, and which; {judged}"


_FORMULA = re.compile(r"\S+(?: (?:[-+*/]|<=) \S+)+")
"""``max|x - oracle| <= 1e-09 * max|oracle|``, ``16 + n``: kept on one line when folding."""


def _wrap(text: str) -> str:
    """A long line of the report's header, folded at 110 columns (the table's width), never
    inside a formula."""
    joined = _FORMULA.sub(lambda m: m.group(0).replace(" ", "\xa0"), text)
    folded = textwrap.fill(joined, width=110, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
    return folded.replace("\xa0", " ")


def _unexposed(report: ParityReport) -> list[str]:
    """Per backend whose runtime does not expose some nodes, every such node (compared without it)."""
    total = len(report.diffs)
    return [
        _wrap(f"{backend} does not expose {len(nodes)} of the {total} nodes (compared without it): {', '.join(nodes)}")
        for backend, nodes in report.skipped.items()
        if nodes
    ]


def _outputs(report: ParityReport) -> str:
    """The logits' (or each output's) line: what was judged there and how close it came."""
    lines = []
    for n in [report.logits] if report.logits else report.graph.outputs:
        d = report.diff(n)
        between = f"max diff {d.max_abs:.3g} ({d.pair}); " if report.oracle and d.pair else ""
        judged = (
            f"{_judged(report, d)}: error {d.error:.3g}, bound {d.allowed:.3g} ({_percent(share(d.error, d.allowed))})"
            if d.backend
            else "not compared"
        )
        lines.append(f"{'logits' if report.logits else 'output'} ({n}): {between}{judged}")
    return "\n".join(lines)


def _verdict(report: ParityReport) -> str:
    bad = report.first_failure
    if bad is None:
        return f"PASS: all {len(report.diffs)} nodes agree"
    if bad.nonfinite:
        n = len(report.backends) - len(bad.skipped)
        every = "both backends" if n == 2 else f"all {n} backends"
        return (
            f"NOT COMPARABLE: {every} give {bad.nonfinite} at node {bad.node!r} ({bad.op})"
            + (f"; {bad.note}" if bad.note else "")
            + ": values that are not finite cannot be compared, so the comparison is meaningless from there"
        )
    between = f" (max diff between backends {bad.max_abs:.3g}, {bad.pair})" if report.oracle and bad.pair else ""
    return (
        f"FAIL: first divergence at node {bad.node!r} ({bad.op}), {_judged(report, bad)}: error {bad.error:.3g} "
        f"is {share(bad.error, bad.allowed):.3g}x its bound {bad.allowed:.3g}{between}"
    )


def render(report: ParityReport, seed: int | None = None) -> str:
    """The report as ``archc parity`` prints it: the pairs compared and the judging rule, the nodes
    a runtime could not expose, every node's judged pair, error, bound and share of the bound used
    (with an oracle also the largest difference between backends, naming the pair), the logits,
    then PASS or the first divergence."""
    g = report.graph
    title = (
        f"parity {' vs '.join(report.backends)}: {g.name}, width {g.width:g}, input {shape(g.input_shape)}, "
        f"{report.dtype}" + (f", seed {seed}" if seed is not None else "")
    )
    headers, rows, align = _rows(report)
    return "\n".join(
        [
            title,
            _wrap(f"rule: {report.rule}"),
            _wrap(_legend(report)),
            *_unexposed(report),
            "",
            table(headers, rows, align),
            "",
            _outputs(report),
            _verdict(report),
        ]
    )
