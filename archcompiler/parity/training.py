"""Training parity: N plain-SGD steps in every backend from the same weights and batches,
synchronised and free-running, judged in float64 (see :func:`train_parity`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from archcompiler import ir, weights
from archcompiler.kit.backend import (
    BackendError,
    check_learning_rate,
)
from archcompiler.kit.registry import Backend

if TYPE_CHECKING:
    import numpy as np
from archcompiler.parity.bounds import K_TRAIN, RTOL64, U64
from archcompiler.parity.compare import absmax, max_difference, nonfinite, times, within
from archcompiler.parity.report import TrainDiff, TrainingReport
from archcompiler.parity.runs import check_arguments, check_parity_memory, loaded_model, resolve_backends


def without_dropout(graph: ir.Graph) -> tuple[ir.Graph, tuple[str, ...]]:
    """``graph`` with the rate of every op that is random in training (dropout, drop path:
    ``Node.random_in_training``) set to 0, and the names of those nodes.

    Backends draw masks from their own random generators, so no two agree on a training step
    with dropout or drop path; the comparison excludes them instead (and says so).
    """
    changed = tuple(n.name for n in graph.nodes if n.random_in_training and getattr(n, "rate", 0.0) > 0)
    if not changed:
        return graph, ()
    nodes = tuple(dataclasses.replace(n, rate=0.0) if n.name in changed else n for n in graph.nodes)
    return dataclasses.replace(graph, nodes=nodes), changed


def _batches(graph: ir.Graph, steps: int, batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    classes = graph[graph.logits].shape[0]
    return [
        (
            rng.normal(0.0, 1.0, size=(batch, *graph.input_shape)).astype(np.float32),
            rng.integers(0, classes, size=batch),
        )
        for _ in range(steps)
    ]


Trajectory = list[dict[str, Any]]
"""Per step: "loss", "logits", then every canonical tensor after the update (numpy float64)."""


def _trajectory(
    backend: Backend,
    graph: ir.Graph,
    w: weights.Weights,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    lr: float,
    dtype: str,
    starts: Sequence[weights.Weights] | None = None,
) -> Trajectory:
    """Steps of ``backend`` from ``w``, one per batch. With ``starts``, step k (k >= 1) first
    loads ``starts[k]`` into the same model: each step then starts from a given state (the
    synchronised run), while anything the backend keeps outside the canonical tensors carries
    over from step to step as in a free run."""
    import numpy as np

    model = loaded_model(backend, graph, w, dtype)
    out: Trajectory = []
    for k, (x, y) in enumerate(batches):
        if starts is not None and k > 0:
            backend.set_weights(graph, model, starts[k])
        loss, logits = backend.train_step_outputs(graph, model, x, y, lr)
        if logits is None:
            raise BackendError(f"backend {backend.name!r}: its training step returns no logits to compare")
        step = {"loss": np.array(loss, dtype=np.float64), "logits": np.asarray(logits, dtype=np.float64)}
        step.update({k: np.asarray(v, dtype=np.float64) for k, v in backend.get_weights(graph, model).items()})
        out.append(step)
    return out


def _perturbed(
    states: Sequence[weights.Weights], batches: Sequence[tuple[np.ndarray, np.ndarray]], seed: int, u: float
) -> tuple[list[weights.Weights], list[tuple[np.ndarray, np.ndarray]]]:
    """States and inputs nudged elementwise by ``a * u * r``, r uniform in [-1, 1], in float64:
    one rounding of the judged dtype, whose effect measures each quantity's sensitivity."""
    import numpy as np

    rng = np.random.default_rng([seed, 2, int(u == U64)])

    def nudge(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return a + a * (u * rng.uniform(-1.0, 1.0, size=a.shape))

    return [{k: nudge(v) for k, v in s.items()} for s in states], [(nudge(x), y) for x, y in batches]


def _deviation(a: Trajectory, b: Trajectory, s: int, q: str) -> float:
    """max |a - b| of quantity ``q`` at step ``s`` (:func:`max_difference`: never NaN)."""
    return max_difference(a[s][q], b[s][q])


def _finite(a: np.ndarray) -> bool:
    import numpy as np

    return bool(np.isfinite(a).all())


def _relative(a: Trajectory, b: Trajectory, s: int, q: str) -> float:
    """:func:`_deviation` relative to max |b| (0 for no deviation, infinity for an infinite
    one: never NaN)."""
    d = _deviation(a, b, s, q)
    return d if d in (0.0, float("inf")) else d / max(absmax(b[s][q]), 1e-300)


def train_parity(
    graph: ir.Graph,
    backends: Sequence[str] = ("torch", "keras"),
    *,
    steps: int = 5,
    batch: int = 4,
    lr: float = 0.01,
    dtype: str = "float32",
    seed: int = 0,
    atol: float = 0.0,
    rtol: float | None = None,
    instances: Mapping[str, Backend] | None = None,
) -> TrainingReport:
    """Run ``steps`` plain-SGD steps in every backend from the same weights and batches, and
    compare, step by step: the loss, the training-mode logits, every parameter after the
    update and the BatchNorm moving statistics (graph order), naming the first that diverges.

    Dropout is excluded (its rate set to 0, listed in ``dropout_excluded``). A batch in which
    a BatchNorm would see one value per channel is refused by every backend alike (the kit).

    Two comparisons per step (``TrainDiff.mode``):

    * ``"step"`` (synchronised): before step k every judged backend loads the reference's
      state after step k-1 (parameters and moving statistics), so each backend's *step
      function* is compared from the same state, at every step of the trajectory. This is
      judged at every step.
    * ``"run"`` (free-running, steps 2..N): each backend follows its own trajectory, judged
      only up to the ``horizon`` (see :func:`_horizon`: plain SGD on a random MobileNet is
      unstable, and beyond it no two implementations can agree to 1e-9); later rows are
      reported (``judged`` False) but do not decide the verdict. ``sensitivity`` records the
      reference's amplification of one float64 rounding per step.

    In float64 each quantity is judged against a bound with an oracle of its own (see
    :func:`_row`). **float32 is measured, not judged**: every row then holds each backend's
    distance from the reference backend's float64 run (``judged`` False, no verdict:
    :attr:`TrainingReport.verdict`). A float32 step's own roundings are amplified within the
    step by as much as the step amplifies anything (up to 1e4-1e8x here), and no bound derived
    from the inputs' rounding held at every setting: the former one (a nudge of 2**-24, factor
    1000) failed correct models at settings the tests did not name (MobileNet 0.5, 96 px,
    batch 12: PyTorch's own float32 step beyond it). Equivalence is decided in float64
    (``dtype="float64"``).

    NaN or infinity in the reference and every judged backend at a quantity (a diverged run,
    e.g. lr 1e300) makes the row ``nonfinite``: the report says the comparison is meaningless
    from that step (:attr:`TrainingReport.not_comparable`) instead of blaming one backend.
    """
    check_arguments(batch=batch, seed=seed, dtype=dtype, steps=steps, lr=lr, atol=atol, rtol=rtol)
    if steps < 1:
        raise BackendError("training parity needs at least one step")
    lr = check_learning_rate(lr, dtype)
    check_parity_memory(graph, len(set(backends)), batch, dtype, steps)
    pairs, (ref_name, ref_backend) = resolve_backends(backends, instances, dtype, training=True)
    g, excluded = without_dropout(graph)
    w, batches = weights.init(g, seed), _batches(g, steps, batch, seed)
    free = {n: _trajectory(b, g, w, batches, lr, dtype) for n, b in pairs}
    names, verdict = tuple(free), dtype == "float64"
    if verdict:  # the reference is one of the runs, judged against the others
        rtol = RTOL64 if rtol is None else rtol
        ref, judged = free[ref_name], tuple(n for n in names if n != ref_name)
    else:  # every run measured against the reference backend in float64
        rtol = rtol or 0.0
        ref, judged = _trajectory(ref_backend, g, w, batches, lr, "float64"), names
    # the reference's state before each step: the synchronised runs start every step from it,
    # as long as it is finite (a diverged reference has no state to load: see nonfinite)
    starts = [w] + [{k: ref[s][k] for k in w} for s in range(steps - 1)]
    synced = next((k for k in range(1, steps) if not all(_finite(v) for v in starts[k].values())), steps)
    sync = {n: _trajectory(b, g, w, batches[:synced], lr, dtype, starts[:synced]) for n, b in pairs if n in judged}
    runs = _Runs(g, weights.specs(g), ref, free, sync, judged, synced, verdict, atol, rtol)
    if verdict:
        runs.probe(ref_backend, w, batches, starts[:synced], lr, seed)
    rows = tuple(_row(runs, *row) for row in runs.rows(steps))
    oracle = _oracle(ref_name, verdict, atol, rtol)
    horizon, sensitivity = runs.horizon
    return TrainingReport(g, names, dtype, steps, batch, float(lr), seed, rows, oracle, excluded, horizon, sensitivity)


def _oracle(ref_name: str, verdict: bool, atol: float, rtol: float) -> str:
    """The judging rule, as the report states it."""
    if not verdict:
        return f"the {ref_name} float64 run: float32 differences measured, not judged"
    return (
        f"{ref_name}, within {atol:g} + {rtol:g} * max|q| + {K_TRAIN:g} * "
        f"(sensitivity to a nudge of {U64:.2g} + {U64:.2g} * max|q|)"
    )


@dataclasses.dataclass
class _Runs:
    """The trajectories of one training comparison and how its rows are judged."""

    graph: ir.Graph
    specs: Mapping[str, weights.TensorSpec]
    ref: Trajectory
    """The reference: the first backend's run in float64, its float64 re-run for float32."""
    free: Mapping[str, Trajectory]
    sync: Mapping[str, Trajectory]
    """The synchronised runs: each step from the reference's state (the first ``synced``)."""
    judged: tuple[str, ...]
    synced: int
    verdict: bool
    """float64: rows are judged against a bound; float32: measured only."""
    atol: float
    rtol: float
    probe_run: Trajectory | None = None
    """The reference re-run from a nudged start (float64 only): see :func:`_row`."""
    probe_step: Trajectory | None = None
    horizon: tuple[int, tuple[float, ...]] = (0, ())
    """(the free run's horizon, the sensitivity per step): see :func:`_horizon`."""

    def probe(
        self,
        backend: Backend,
        w: weights.Weights,
        batches: Sequence[tuple[np.ndarray, np.ndarray]],
        starts: Sequence[weights.Weights],
        lr: float,
        seed: int,
    ) -> None:
        """The reference backend re-run in float64, free and synchronised, from its start
        (state and batch) nudged by one float64 rounding; and the horizon that gives."""
        w_p, batches_p = _perturbed([w], batches, seed, U64)
        self.probe_run = _trajectory(backend, self.graph, w_p[0], batches_p, lr, "float64")  # type: ignore[arg-type]
        starts_p, batches_sp = _perturbed(starts, batches[: len(starts)], seed + 1, U64)
        self.probe_step = _trajectory(backend, self.graph, starts_p[0], batches_sp, lr, "float64", starts_p)  # type: ignore[arg-type]
        self.horizon = _horizon(self.ref, self.probe_run, self.free, self.judged, len(self.ref))

    def rows(self, steps: int) -> Iterator[tuple[int, str, str]]:
        """(step, mode, quantity) of every row, in report order."""
        for s in range(steps):
            # step 1 of a free run is a synchronised step: it is compared once
            modes = ["step"] if s < self.synced else []
            modes += ["run"] if s > 0 else []
            yield from ((s, mode, q) for mode in modes for q in self.ref[s])


def _row(runs: _Runs, s: int, mode: str, q: str) -> TrainDiff:
    """One quantity at one step, judged in float64 (measured in float32).

    Each row's bound has an oracle: the reference backend re-runs in float64 from the same
    start (state and batch) nudged by one float64 rounding (u = 2**-53); the nudge's effect
    ``probe(q)`` measures how strongly quantity q amplifies rounding. A quantity passes when
    its difference from the first backend is within

        atol + rtol * max|q| + K_TRAIN * (probe(q) + u * max|q|)

    (rtol 1e-9, K_TRAIN 100: rounding arises at every operation, not only in the inputs). An
    injected learning-rate or momentum-convention bug exceeds it many times at step 1.
    """
    spec = runs.specs.get(q)
    node = spec.node if spec else (runs.graph.logits if q == "logits" else "")
    kind = q if spec is None else ("parameter" if spec.trainable else "moving statistic")
    ref, trajectories = runs.ref, runs.sync if mode == "step" else runs.free
    mag = absmax(ref[s][q])
    err, who = max((_deviation(trajectories[b], ref, s, q), b) for b in runs.judged)
    # every backend non-finite (in float64 the reference is one of them)
    bad = nonfinite([*([ref[s][q]] if runs.verdict else []), *(trajectories[b][s][q] for b in runs.judged)])
    base, is_judged = float("inf"), False
    if runs.verdict:
        probe = runs.probe_step if mode == "step" else runs.probe_run
        assert probe is not None
        base = runs.atol + times(runs.rtol, mag) + K_TRAIN * (_deviation(probe, ref, s, q) + times(U64, mag))
        is_judged = s < runs.horizon[0] if mode == "run" else True
    ok = within(err, base) and not bad
    return TrainDiff(s + 1, q, node, kind, err, mag, base, who, ok, mode, is_judged, bad)


def _horizon(
    ref: Trajectory, probe64: Trajectory, free: Mapping[str, Trajectory], judged: Sequence[str], steps: int
) -> tuple[int, tuple[float, ...]]:
    """(the free run's horizon, the reference's amplification of one float64 rounding per step).

    Plain SGD on a random MobileNet with BatchNorm over a few values per channel is unstable
    (the loss' largest Hessian eigenvalue is ~1e4-1e9 at 32-224 px, far above 2 / lr), so
    rounding-sized differences grow by up to ~1000x per step in *any* two implementations,
    PyTorch against itself with the batch in another order included (README). The free run is
    therefore judged only up to the horizon, Lyapunov-style: the steps at which the reference,
    re-run in float64 from weights and inputs nudged by one float64 rounding (2**-53), still
    reproduces every quantity to ``RTOL64`` of its magnitude."""
    sensitivity = tuple(max(_relative(probe64, ref, s, q) for q in ref[s]) / U64 for s in range(steps))
    # ... nudged, in float64, as much as the backends already differ after step 1 (at least one
    # rounding; deviations scale linearly at these sizes), but at most K_TRAIN roundings: the
    # allowance every synchronised step has for rounding. A step 1 that differs by more is not
    # rounding, and must not shorten the horizon over which it would show (torch's float64
    # Hardsigmoid gradient, with float32's 1/6, differed 1.25e4 roundings and hid that way).
    seen = max(_relative(free[b], ref, 0, q) for b in judged for q in ref[0])
    probed = max(_relative(probe64, ref, 0, q) for q in ref[0])
    scale = min(K_TRAIN, max(1.0, seen / probed)) if 0 < probed < float("inf") else 1.0
    horizon = 0
    while horizon < steps and all(
        times(scale, _deviation(probe64, ref, horizon, q)) <= RTOL64 * absmax(ref[horizon][q]) for q in ref[horizon]
    ):
        horizon += 1
    return horizon, sensitivity
