"""Cross-framework parity: one IR, one set of weights, one input, every backend, every node.

The same canonical weights (:func:`archcompiler.weights.init`, with non-trivial BatchNorm
statistics) go into every backend through the portable format, the same random NHWC input is
run in eval mode, and every node is judged. The report names the first node that diverges,
which is where a layout or padding bug shows itself (later nodes only inherit the error).

Parity has an oracle (docs/DESIGN.md): equivalence is decided in float64, and float32 runs are
judged by how far each is from a float64 reference, not by a tolerance tuned per node.

* ``dtype="float64"``: every backend runs in float64 and must agree with the first within
  ``rtol`` (default 1e-9) relative to the node's magnitude: ``max|x - ref| <= atol + rtol * max|ref|``.
* ``dtype="float32"``: every backend runs in float32; the first backend that builds in float64
  also runs once in float64 (the oracle). For backend b and node v,
  ``err_b(v) = max|x_b(v) - x64(v)|`` must not exceed what float32 can explain there:

      allowed_b(v) = sum_i L_i(v) * err_b(input_i)        inherited from upstream
                   + (K + n(v)) * (u * M(v) + eta)         the node's own float32 rounding
                   + atol + rtol * max|x64(v)|             optional slack (default 0)

  ``L_i(v)`` is the op's Lipschitz constant in the max norm with respect to input i, computed
  from the IR and the canonical weights (a conv's largest per-filter sum of |kernel|, a
  BatchNorm's largest |gamma| / sqrt(var + eps), 1 for relu/relu6/pools, 1/6 for
  hard_sigmoid...). ``u = 2**-24`` is float32's unit roundoff; ``n(v)`` the length of the
  node's reductions (a conv's fan-in, a global pool's H*W, the softmax's classes), so ``u * n``
  is the classic worst-case bound of a float32 sum of n terms (Higham, gamma_n), whatever the
  summation order; ``K = 16`` covers the few other roundings per element (BatchNorm's
  subtract, rsqrt and scale, bias adds, a transcendental's ulps); ``M(v)`` bounds the
  magnitudes involved: ``L(v) * max|input| + |constant terms| + max|output|`` (for a clamp,
  relu, relu6, hard_sigmoid, only its unclamped range: see ``CLAMPS``); ``eta = 2**-126``
  (float32's smallest normal number) is the absolute error of a rounding near zero, where a
  result is subnormal or flushed to zero. A clamp after a large activation, or a long
  average, is therefore judged on what it inherits and on its own length, while an injected
  difference (a wrong statistic, a padding bug) has no inherited error to hide behind and
  fails where it starts.

The arithmetic never makes NaN (0 * infinity counts as 0): a difference of 0 always passes,
an infinite one never does. NaN or infinity in every backend at a node (a float32 overflow,
say, where the float64 reference is finite) is not blamed on one backend and is not a PASS:
the report is *not comparable* from that node (:attr:`ParityReport.not_comparable`; ``archc
parity`` exits 1 and says so). NaN or infinity in one backend only is that backend's failure.

``optimize=True`` compares the optimised models (archcompiler.optimize, as ``archc build
--optimize`` makes them: BatchNorm folded, pads merged, the backend's own tuning) node by node
on the rewritten graph, and judges every backend, the first included, against the first
backend's *unoptimised* model in float64, the same model the optimised ones replace: a fold
that all backends share, and so agree on, still fails there. An optimised node is compared
with the original node whose value it computes (``Optimized.holders``: a conv with its
BatchNorm folded in, with the BN).

Every backend's capabilities (float64, training, several outputs, optimised builds: the
``Backend`` declarations) are checked before any is built (kit.require_capabilities).

Training parity (:func:`train_parity`) runs N plain-SGD steps from the same weights and batches
and compares the loss, the training-mode logits, every parameter after each update and the
BatchNorm moving statistics. It decides equivalence in float64; float32 training is measured
against the float64 run and reported without a verdict (no bound derived from the inputs'
rounding holds for a float32 step at every setting; see its docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ir, weights
from .kit import DTYPES, BackendError, activation_values, build, check_learning_rate, check_memory, require_capabilities
from .registry import BUILTIN, Backend, get_backend

if TYPE_CHECKING:
    import numpy as np

U32 = 2.0**-24
"""float32 unit roundoff (half an ulp of 1)."""
U64 = 2.0**-53
"""float64 unit roundoff."""
ETA32 = 2.0**-126
"""The absolute part of a float32 rounding (Higham's model fl(x) = x(1 + d) + e, |e| <= ETA32):
below float32's smallest normal number a result is subnormal, or 0 on a platform that flushes
subnormals to zero (TensorFlow's CPU threads do), whatever its relative size."""
K_ROUNDINGS = 16
"""Roundings per element besides a node's reductions (see the module docstring)."""
RTOL64 = 1e-9
"""float64 agreement, relative to a tensor's magnitude (max |x|)."""
K_TRAIN = 100.0
"""Training (float64): allowed includes K_TRAIN * (probe deviation + u * magnitude); see train_parity."""
FLOAT32_MAX = float(2**128 - 2**104)
"""The largest float32 (3.4e38): a reference beyond it explains an infinity in float32 (overflow)."""

ACTIVATION_LIPSCHITZ: Mapping[str, float] = {
    "relu": 1.0,
    "relu6": 1.0,
    "sigmoid": 0.25,
    "tanh": 1.0,
    "hard_sigmoid": 1.0 / 6.0,
    "hard_swish": 1.5,  # d/dx x * relu6(x + 3) / 6 = (2x + 3) / 6 on [-3, 3]
    "swish": 1.1,  # max of d/dx x * sigmoid(x) is 1.0998
}


CLAMPS: Mapping[str, float] = {"relu": 0.0, "relu6": 0.0, "hard_sigmoid": 6.0}
"""Activations whose output either equals a bound or is computed from inputs in a bounded
range: relu and relu6 pass x through exactly or return a constant (no rounding of their own);
hard_sigmoid rounds relu6(x + 3) / 6 only where |x| <= 3, intermediates at most 6. Their own
rounding is judged at that magnitude, not at the (possibly huge) input's."""


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
        """The rendered report, as ``archc parity`` prints it (archcompiler.render.parity)."""
        from .render import parity as render_parity

        return render_parity(self)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr would print the whole graph and every node.
        worst = self.worst
        where = f", worst {worst.node!r} max abs {worst.max_abs:.3g}" if worst else ""
        bad = self.first_failure
        verdict = "PASS" if bad is None else f"{'NOT COMPARABLE' if bad.nonfinite else 'FAIL'} at {bad.node!r}"
        return f"<ParityReport {self.graph.name}: {' vs '.join(self.backends)}, {verdict}{where}>"


def ordered(names: Sequence[str]) -> list[str]:
    """Built-ins in registry order (PyTorch must be imported before TensorFlow in one
    process, docs/DESIGN.md pitfalls), then plug-ins as given."""
    builtin = [b for b in BUILTIN if b in names]
    return builtin + [n for n in names if n not in BUILTIN]


def _backends(
    backends: Sequence[str], instances: Mapping[str, Backend] | None, dtype: str, **needs: bool
) -> tuple[list[tuple[str, Backend]], tuple[str, Backend]]:
    """The named backends in order, and the one whose float64 run is the reference (the first
    that builds in float64), after checking that every one can do what is asked (``dtype``,
    ``needs``: training, multi_output, optimize) before any is built."""
    names = ordered(list(dict.fromkeys(backends)))
    if len(names) < 2:
        raise BackendError("parity needs at least two backends")
    pairs = [(n, (instances or {}).get(n) or get_backend(n)) for n in names]
    require_capabilities([b for _, b in pairs], dtype=dtype, **needs)
    oracle = next(((n, b) for n, b in pairs if "float64" in getattr(b, "dtypes", ())), None)
    if oracle is None:
        raise BackendError(
            f"parity judges against a float64 run, and none of {', '.join(names)} builds models in float64 "
            "(add torch or keras to --backends)"
        )
    return pairs, oracle


def memory_needed(graph: ir.Graph, backends: int, batch: int, dtype: str, train_steps: int = 0) -> tuple[int, int]:
    """Bytes parity holds at least, estimated from the IR before anything runs: (what grows with
    the batch, what grows with the training steps).

    Inference keeps every node's value for the batch from each backend and from the float64
    reference, plus one framework's copy while it converts layouts; a training step holds its
    activations and their gradients (float64 for the reference). Training keeps about
    ``2 * backends + 4`` trajectories (free and synchronised runs, the float64 reference and its
    probes: :func:`train_parity`), each every parameter and the logits in float64 per step, and
    the batches with their nudged copies."""
    itemsize = 8 if dtype == "float64" else 4
    values = activation_values(graph)
    by_batch = batch * values * (backends * itemsize + 8 + 8)
    if not train_steps:
        return by_batch, 0
    from .cost import cost

    by_batch += 2 * batch * values * 8
    params = cost(graph, "keras").params
    per_step = (2 * backends + 4) * 8 * (params + batch * graph[graph.logits].shape[-1])
    inputs = 4 * 8 * batch * activation_values(graph, [graph.inputs[0].name])
    return by_batch, train_steps * (per_step + inputs)


def check_parity_memory(graph: ir.Graph, backends: int, batch: int, dtype: str, train_steps: int = 0) -> None:
    """MemoryLimitError (kit.check_memory) naming the batch or the training steps, whichever
    takes more, when parity would hold more than the memory limit, before any backend is built."""
    by_batch, by_steps = memory_needed(graph, backends, batch, dtype, train_steps)
    what = f"parity of {graph.name!r} in {backends} backends ({dtype}, batch {batch:,}"
    what += f", {train_steps:,} training steps)" if train_steps else ")"
    if by_steps > by_batch:
        check_memory(by_batch + by_steps, what, "the training steps", "train_steps")
    check_memory(by_batch + by_steps, what, "the batch or the input size", "batch")


def _check_arguments(
    *, batch: int, seed: int, dtype: str, steps: int, lr: float, atol: float | None, rtol: float | None
) -> None:
    """Every run argument checked before anything is built (a BackendError naming it)."""
    from . import arguments as A

    A.integer(batch, "batch", low=1)
    A.integer(seed, "seed", high=2**32 - 1)  # what numpy's generators take
    A.choice(dtype, "dtype", DTYPES)
    A.integer(steps, "train_steps")
    A.number(lr, "lr", low=0.0, low_open=True)
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None:
            A.number(tol, name, low=0.0)


def _loaded(backend: Backend, graph: ir.Graph, w: weights.Weights, dtype: str) -> Any:
    model = build(backend, graph, dtype)
    backend.verify(graph, model)
    backend.set_weights(graph, model, w)
    return model


def _optimized(backend: Backend, graph: ir.Graph, w: weights.Weights, dtype: str) -> tuple[ir.Graph, Any]:
    """``backend``'s optimised model of ``graph`` with weights ``w`` folded in ``dtype`` (so a
    float64 run is not limited by float32 folded weights), tuned as an optimised build is."""
    import numpy as np

    from .optimize import rewrite

    opt = rewrite(backend, graph, {k: np.asarray(v, dtype) for k, v in w.items()})
    return opt.graph, backend.tune(opt.graph, _loaded(backend, opt.graph, opt.weights, dtype))


def parity(
    graph: ir.Graph,
    backends: Sequence[str] = ("torch", "keras"),
    *,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    batch: int = 2,
    instances: dict[str, Backend] | None = None,
    dtype: str = "float32",
    train_steps: int = 0,
    lr: float = 0.01,
    optimize: bool = False,
) -> ParityReport:
    """Compare every node of ``graph`` across ``backends`` (the first is the reference).

    float64: all agree within ``rtol`` (1e-9) of each node's magnitude. float32: each backend
    is judged against the first backend's float64 run with the bound of the module docstring
    (``atol``/``rtol`` add slack, default 0). ``train_steps > 0`` also runs :func:`train_parity`
    (``batch``, ``lr``, same dtype and seed) and puts its report in ``training``.
    ``optimize``: the backends' optimised models, judged against the first backend's
    unoptimised model (module docstring); the report's graph is the rewritten one.
    """
    import numpy as np

    from .optimize import optimize as rewrite_graph

    _check_arguments(batch=batch, seed=seed, dtype=dtype, steps=train_steps, lr=lr, atol=atol, rtol=rtol)
    from . import arguments as A

    A.flag(optimize, "optimize")
    if instances is not None:
        A.mapping(instances, "instances")
    if optimize and train_steps:
        raise BackendError("optimised models are for inference: training parity compares the models as built")
    if train_steps:
        check_learning_rate(lr, dtype)  # before anything is built
    check_parity_memory(graph, len(set(backends)), batch, dtype, train_steps)
    pairs, (ref_name, ref_backend) = _backends(
        backends, instances, dtype, training=train_steps > 0, multi_output=graph.multi_output, optimize=optimize
    )
    names = tuple(n for n, _ in pairs)
    w = weights.init(graph, seed)
    x = np.random.default_rng(seed).normal(0.0, 1.0, size=(batch, *graph.input_shape)).astype(np.float32)
    everything = [n.name for n in graph.nodes]
    judged, jw, holders = graph, w, {n: n for n in everything}
    if optimize:
        # judged on the rewrite every backend's shares names and values with (torch's widened
        # kernels add zero taps only); each backend builds its own (optimize.rewrite)
        opt = rewrite_graph(graph, w)
        judged, jw, holders = opt.graph, opt.weights, opt.holders()
    nodes = [n.name for n in judged.nodes]
    outputs = {}
    for n, b in pairs:
        g, model = _optimized(b, graph, w, dtype) if optimize else (graph, _loaded(b, graph, w, dtype))
        outputs[n] = _run_exposed(b, g, model, x, nodes)
    # the reference: the first float64 backend's unoptimised model (float64 when judging float32)
    if dtype == "float64" and not optimize:
        reference = None  # the first backend's own run, as every other backend's
    else:
        ref = ref_backend.run(graph, _loaded(ref_backend, graph, w, "float64"), x, everything)
        reference = {n: ref[holders[n]] for n in nodes}
    what = f"{ref_name} unoptimised" if optimize else ref_name
    if dtype == "float64":
        atol, rtol = atol or 0.0, RTOL64 if rtol is None else rtol
        diffs = _judge64(judged, names, outputs, atol, rtol, reference)
        against = f"{what} in float64" if optimize else "every backend in float64"
        oracle = f"{against}, within {atol:g} + {rtol:g} * max|ref|"
    else:
        atol, rtol = atol or 0.0, rtol or 0.0
        assert reference is not None
        diffs = _judge32(judged, jw, names, outputs, reference, atol, rtol)
        oracle = f"{what} in float64; bound: inherited error * Lipschitz + float32 rounding of the node"
    training = None
    if train_steps:
        training = train_parity(
            graph, backends, steps=train_steps, batch=batch, lr=lr, dtype=dtype, seed=seed, instances=instances
        )
    logits = "" if judged.multi_output else judged.logits
    return ParityReport(judged, names, atol, rtol, tuple(diffs), logits, dtype, oracle, training)


def _run_exposed(backend: Backend, graph: ir.Graph, model: Any, x: np.ndarray, names: list[str]) -> dict:
    """The nodes a backend's runtime exposes (a backend with ``exposed()``, e.g. TFLite, whose
    converter fuses layers), and the outputs always; the others are compared without it."""
    exposed = getattr(backend, "exposed", None)
    shown = exposed(graph, model) | set(graph.outputs) if exposed else set(names)
    return backend.run(graph, model, x, [n for n in names if n in shown])


def _difference(r: np.ndarray, o: np.ndarray) -> np.ndarray:
    """|o - r| elementwise, never NaN: equal values (the same infinity, NaN in both) differ by
    0, any other pair involving NaN or infinity by infinity."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.asarray(o, dtype=np.float64) - r)
    d = np.where((o == r) | (np.isnan(o) & np.isnan(r)), 0.0, d)
    return np.where(np.isnan(d), np.inf, d)


def _maxdiff(r: np.ndarray, o: np.ndarray) -> float:
    """max |o - r| by :func:`_difference`; infinity for a shape mismatch."""
    if o.shape != r.shape:
        return float("inf")
    return float(_difference(r, o).max(initial=0.0))


def _pairwise(r: np.ndarray, o: np.ndarray) -> tuple[float, float]:
    """(max abs, max rel) difference of ``o`` from ``r`` (:func:`_difference`; never NaN)."""
    import numpy as np

    if o.shape != r.shape:
        return float("inf"), float("inf")
    d = _difference(r, o)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.where(d == 0, 0.0, d / np.maximum(np.abs(r), 1e-30))
    rel = np.where(np.isnan(rel), np.inf, rel)
    return float(d.max(initial=0.0)), float(rel.max(initial=0.0))


def _times(a: float, b: float) -> float:
    """a * b for non-negative factors, with 0 * infinity = 0 (a Lipschitz constant of 0, or an
    error of 0, contributes nothing, however large the other), so that no bound is NaN."""
    return 0.0 if a == 0 or b == 0 else a * b


def _share(error: float, allowed: float) -> float:
    """``error / allowed``, the share of its bound a difference uses: 0 for no difference,
    infinity for an infinite one or no allowance (never NaN)."""
    if error == 0:
        return 0.0
    return error / allowed if allowed > 0 and error < float("inf") else float("inf")


def _within(error: float, allowed: float) -> bool:
    """A difference of 0 always passes; an infinite one never; otherwise ``error <= allowed``."""
    return error == 0 or (error < float("inf") and error <= allowed)


def _nonfinite(arrays: Sequence[np.ndarray]) -> str:
    """What every array holds besides finite numbers ("NaN", "infinity", "NaN and infinity"), or
    "" if one of them is all finite."""
    import numpy as np

    if not arrays or any(bool(np.isfinite(a).all()) for a in arrays):
        return ""
    nan = any(bool(np.isnan(a).any()) for a in arrays)
    inf = any(bool(np.isinf(a).any()) for a in arrays)
    return "NaN and infinity" if nan and inf else "NaN" if nan else "infinity"


def _reference_note(ref: np.ndarray, what: str, float32: bool) -> str:
    """For a node every backend gives NaN or infinity at: what ``what`` (the reference) holds,
    and for ``float32`` backends whether it is beyond their range."""
    import numpy as np

    if np.isfinite(ref).all():
        top = _absmax(ref)
        beyond = " (beyond float32's 3.4e+38: float32 overflows)" if float32 and top > FLOAT32_MAX else ""
        return f"{what} is finite there, up to {top:.3g}{beyond}"
    return f"{what} gives {_nonfinite([ref])} there too"


def _judge64(
    graph: ir.Graph,
    names: Sequence[str],
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    atol: float,
    rtol: float,
    reference: Mapping[str, np.ndarray] | None = None,
) -> list[NodeDiff]:
    """Every backend against the first within ``atol + rtol * max|ref|``; with ``reference``
    (parity of optimised models), every backend against it, and ``max_abs``/``max_rel`` still
    between the backends, as in float32."""
    import numpy as np

    diffs = []
    for node in graph.nodes:
        have = [b for b in names if node.name in outputs[b]]
        skipped = tuple(b for b in names if b not in have)
        if len(have) < (1 if reference is not None else 2):  # nothing to compare: listed as skipped
            diffs.append(NodeDiff(node.name, node.op, 0.0, 0.0, True, skipped=skipped))
            continue
        first = np.asarray(outputs[have[0]][node.name], dtype=np.float64)
        r = first if reference is None else np.asarray(reference[node.name], dtype=np.float64)
        allowed = atol + _times(rtol, _absmax(r))
        worst_abs, worst_rel = 0.0, 0.0
        for other in have[1:]:
            a, rel = _pairwise(first, np.asarray(outputs[other][node.name], dtype=np.float64))
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, rel)
        judged = have[1:] if reference is None else have
        error, who = 0.0, judged[0]
        for other in judged:
            e = _maxdiff(r, np.asarray(outputs[other][node.name], dtype=np.float64))
            if e > error:
                error, who = e, other
        values = [np.asarray(outputs[b][node.name]) for b in have]
        bad = _nonfinite(values)
        note = _reference_note(r, "the float64 reference", False) if bad and reference is not None else ""
        ok = _within(error, allowed) and not bad
        diffs.append(NodeDiff(node.name, node.op, worst_abs, worst_rel, ok, error, allowed, who, skipped, bad, note))
    return diffs


def _absmax(a: np.ndarray) -> float:
    """max |a| (0 for an empty array); infinity if ``a`` holds NaN, so that a magnitude, and the
    bound made from it, is never NaN."""
    import numpy as np

    m = float(np.abs(a).max(initial=0.0))
    return float("inf") if m != m else m


def _lipschitz(
    graph: ir.Graph, node: ir.Node, w: weights.Weights, x64: Mapping[str, np.ndarray]
) -> tuple[list[float], int, float]:
    """(per-input Lipschitz constants in the max norm, reduction length n, magnitude of the
    node's constant terms), from the IR and canonical weights; see the module docstring.
    A negative constant -1 - c replaces the magnitude by c + max|output|: for a clamp, whose
    rounding is bounded by its unclamped range, and a mean, bounded by the mean of |x|."""
    import numpy as np

    op, name = node.op, node.name
    one = [1.0] * len(node.inputs)
    if op == "conv2d":
        k = np.abs(w[f"{name}.kernel"].astype(np.float64))  # (kh, kw, cin / groups, cout)
        bias = _absmax(w[f"{name}.bias"]) if f"{name}.bias" in w else 0.0
        return [float(k.sum(axis=(0, 1, 2)).max())], int(np.prod(k.shape[:3])), bias
    if op == "depthwise_conv2d":
        k = np.abs(w[f"{name}.kernel"].astype(np.float64))  # (kh, kw, C, M)
        bias = _absmax(w[f"{name}.bias"]) if f"{name}.bias" in w else 0.0
        return [float(k.sum(axis=(0, 1)).max())], int(k.shape[0] * k.shape[1]), bias
    if op == "dense":
        k = np.abs(w[f"{name}.kernel"].astype(np.float64))  # (in, out)
        bias = _absmax(w[f"{name}.bias"]) if f"{name}.bias" in w else 0.0
        return [float(k.sum(axis=0).max())], int(k.shape[0]), bias
    if op == "batchnorm":
        var = w[f"{name}.moving_variance"].astype(np.float64)
        a = 1.0 / np.sqrt(var + node.epsilon)  # type: ignore[attr-defined]
        if f"{name}.gamma" in w:
            a = a * w[f"{name}.gamma"].astype(np.float64)
        const = _absmax(a * w[f"{name}.moving_mean"]) + (_absmax(w[f"{name}.beta"]) if f"{name}.beta" in w else 0.0)
        return [_absmax(a)], 1, const
    if op == "activation":
        kind = node.kind  # type: ignore[attr-defined]
        if kind in CLAMPS:  # no input magnitude survives a clamp: see CLAMPS
            return [ACTIVATION_LIPSCHITZ[kind]], 0, -1.0 - CLAMPS[kind]  # magnitude CLAMPS[kind] + max|out|
        return [ACTIVATION_LIPSCHITZ.get(kind, 1.0)], 1, 0.0
    if op == "pool2d":
        kh, kw = node.kernel  # type: ignore[attr-defined]
        return one, kh * kw if node.kind == "avg" else 0, 0.0  # type: ignore[attr-defined]
    if op == "global_pool":
        h, wd, _ = graph[node.inputs[0]].shape
        if node.kind != "avg":  # type: ignore[attr-defined]
            return one, 0, 0.0
        # a sum's rounding is bounded by gamma_n * sum|x|: the magnitude is the largest mean |x|
        mean_abs = _absmax(np.abs(np.asarray(x64[node.inputs[0]], dtype=np.float64)).mean(axis=(1, 2)))
        return one, h * wd, -1.0 - mean_abs
    if op == "softmax":
        return one, int(node.shape[-1]), 1.0
    if op == "add":
        return one, len(node.inputs), 0.0
    if op == "multiply":
        mags = [_absmax(x64[i]) for i in node.inputs]
        return [mags[1], mags[0]], 1, 0.0
    if op == "rescaling":
        return [abs(node.scale)], 1, abs(node.offset)  # type: ignore[attr-defined]
    # exact data movement (flatten, zero_pad, concat, inference dropout) and unknown ops: an
    # unknown op gets Lipschitz 1 and the rounding of K operations per element.
    return one, 0, 0.0


def _judge32(
    graph: ir.Graph,
    w: weights.Weights,
    names: Sequence[str],
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    x64: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
) -> list[NodeDiff]:
    """Every backend's float32 values against the float64 reference ``x64``, within the bound of
    the module docstring. The arithmetic never makes NaN (:func:`_times`, :func:`_difference`):
    a difference of 0 passes, an infinite one fails, and a node every backend gives NaN or
    infinity at is reported as such (``nonfinite``), not blamed on one backend."""
    import numpy as np

    errors: dict[str, dict[str, float]] = {n: {} for n in names}
    diffs = []
    for node in graph.nodes:
        ref64 = np.asarray(x64[node.name], dtype=np.float64)
        have = [b for b in names if node.name in outputs[b]]
        skipped = tuple(b for b in names if b not in have)
        r = np.asarray(outputs[have[0]][node.name], dtype=np.float64)
        worst_abs, worst_rel = 0.0, 0.0
        for other in have[1:]:
            a, rel = _pairwise(r, np.asarray(outputs[other][node.name], dtype=np.float64))
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, rel)
        lips, n, const = _lipschitz(graph, node, w, x64)
        x_in = max((_absmax(x64[i]) for i in node.inputs), default=0.0)
        out = _absmax(ref64)
        magnitude = -1.0 - const + out if const < 0 else _times(max(lips, default=1.0), x_in) + const + out
        own = _times(U32 * (K_ROUNDINGS + n), magnitude) + (K_ROUNDINGS + n) * ETA32
        slack = atol + _times(rtol, out)
        judged = None
        for b in names:
            inherited = sum(_times(lip, errors[b][i]) for lip, i in zip(lips, node.inputs, strict=True))
            allowed = inherited + own + slack
            if b in skipped:
                # Not exposed (fused by the runtime): its error is taken at its bound, so the
                # nodes that read it inherit no less than it could have.
                errors[b][node.name] = allowed
                continue
            err = _maxdiff(ref64, np.asarray(outputs[b][node.name], dtype=np.float64))
            errors[b][node.name] = err
            ratio = _share(err, allowed)
            if judged is None or ratio > judged[0]:
                judged = (ratio, err, allowed, b)
        assert judged is not None
        ratio, err, allowed, who = judged
        bad = _nonfinite([np.asarray(outputs[b][node.name]) for b in have])
        note = _reference_note(ref64, "the float64 reference", True) if bad else ""
        ok = _within(err, allowed) and not bad
        diffs.append(NodeDiff(node.name, node.op, worst_abs, worst_rel, ok, err, allowed, who, skipped, bad, note))
    return diffs


# ---------------------------------------------------------------------------------------------
# training


def without_dropout(graph: ir.Graph) -> tuple[ir.Graph, tuple[str, ...]]:
    """``graph`` with every dropout's rate set to 0, and the names of those nodes.

    Backends draw dropout masks from their own random generators, so no two agree on a
    training step with dropout; the comparison excludes dropout instead (and says so).
    """
    changed = tuple(n.name for n in graph.nodes if n.op == "dropout" and getattr(n, "rate", 0.0) > 0)
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

    model = _loaded(backend, graph, w, dtype)
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
    """max |a - b| of quantity ``q`` at step ``s`` (:func:`_maxdiff`: never NaN)."""
    return _maxdiff(a[s][q], b[s][q])


def _finite(a: np.ndarray) -> bool:
    import numpy as np

    return bool(np.isfinite(a).all())


def _relative(a: Trajectory, b: Trajectory, s: int, q: str) -> float:
    """:func:`_deviation` relative to max |b| (0 for no deviation, infinity for an infinite
    one: never NaN)."""
    d = _deviation(a, b, s, q)
    return d if d in (0.0, float("inf")) else d / max(_absmax(b[s][q]), 1e-300)


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
    * ``"run"`` (free-running, steps 2..N): each backend follows its own trajectory. Plain SGD
      on a random MobileNet with BatchNorm over a few values per channel is unstable (the
      loss' largest Hessian eigenvalue is ~1e4-1e9 at 32-224 px, far above 2 / lr), so
      rounding-sized differences grow by up to ~1000x per step in *any* two implementations,
      PyTorch against itself with the batch in another order included (README). The free run
      is therefore judged only up to the ``horizon``: the steps at which the reference,
      re-run in float64 from weights and inputs nudged by one float64 rounding (2**-53),
      still reproduces every quantity to ``RTOL64`` of its magnitude. Beyond it no two
      implementations can agree to 1e-9; those rows are reported (``judged`` False) but do not
      decide the verdict. ``sensitivity`` records that nudge's amplification per step.

    Each row's bound has an oracle too: the reference backend re-runs in float64 from the same
    start (state and batch) nudged by one float64 rounding (u = 2**-53); the nudge's effect
    ``probe(q)`` measures how strongly quantity q amplifies rounding. A quantity passes when
    its difference from the first backend is within

        atol + rtol * max|q| + K_TRAIN * (probe(q) + u * max|q|)

    (rtol 1e-9, K_TRAIN 100: rounding arises at every operation, not only in the inputs). An
    injected learning-rate or momentum-convention bug exceeds it many times at step 1.

    **float32 is measured, not judged.** Every row then holds each backend's distance from the
    reference backend's float64 run (``judged`` False, no verdict: :attr:`TrainingReport.verdict`).
    A float32 step's own roundings are amplified within the step by as much as the step
    amplifies anything (up to 1e4-1e8x here), and no bound derived from the inputs' rounding
    held at every setting: the former one (a nudge of 2**-24, factor 1000) failed correct
    models at settings the tests did not name (MobileNet 0.5, 96 px, batch 12: PyTorch's own
    float32 step beyond it). Equivalence is decided in float64 (``dtype="float64"``).

    NaN or infinity in the reference and every judged backend at a quantity (a diverged run,
    e.g. lr 1e300) makes the row ``nonfinite``: the report says the comparison is meaningless
    from that step (:attr:`TrainingReport.not_comparable`) instead of blaming one backend.
    """
    _check_arguments(batch=batch, seed=seed, dtype=dtype, steps=steps, lr=lr, atol=atol, rtol=rtol)
    if steps < 1:
        raise BackendError("training parity needs at least one step")
    lr = check_learning_rate(lr, dtype)
    check_parity_memory(graph, len(set(backends)), batch, dtype, steps)
    pairs, (ref_name, ref_backend) = _backends(backends, instances, dtype, training=True)
    g, excluded = without_dropout(graph)
    w = weights.init(g, seed)
    batches = _batches(g, steps, batch, seed)
    specs = weights.specs(g)
    free = {n: _trajectory(b, g, w, batches, lr, dtype) for n, b in pairs}
    names = tuple(free)
    verdict = dtype == "float64"
    if verdict:
        rtol = RTOL64 if rtol is None else rtol
        ref = free[ref_name]
        judged = tuple(n for n in names if n != ref_name)
    else:
        rtol = rtol or 0.0
        ref = _trajectory(ref_backend, g, w, batches, lr, "float64")
        judged = names
    # the reference's state before each step: the synchronised runs start every step from it,
    # as long as it is finite (a diverged reference has no state to load: see nonfinite)
    starts = [w] + [{k: ref[s][k] for k in w} for s in range(steps - 1)]
    synced = next((k for k in range(1, steps) if not all(_finite(v) for v in starts[k].values())), steps)
    sync = {n: _trajectory(b, g, w, batches[:synced], lr, dtype, starts[:synced]) for n, b in pairs if n in judged}

    horizon, sensitivity = 0, ()
    probe_run: Trajectory | None = None
    probe_step: Trajectory | None = None
    if verdict:
        w_p, batches_p = _perturbed([w], batches, seed, U64)
        probe_run = _trajectory(ref_backend, g, w_p[0], batches_p, lr, "float64")  # type: ignore[arg-type]
        starts_p, batches_sp = _perturbed(starts[:synced], batches[:synced], seed + 1, U64)
        probe_step = _trajectory(ref_backend, g, starts_p[0], batches_sp, lr, "float64", starts_p)  # type: ignore[arg-type]
        horizon, sensitivity = _horizon(ref, probe_run, free, judged, steps)

    if verdict:
        oracle = (
            f"{ref_name}, within {atol:g} + {rtol:g} * max|q| + {K_TRAIN:g} * "
            f"(sensitivity to a nudge of {U64:.2g} + {U64:.2g} * max|q|)"
        )
    else:
        oracle = f"the {ref_name} float64 run: float32 differences measured, not judged"
    diffs = []
    for s in range(steps):
        # step 1 of a free run is a synchronised step: it is compared once
        modes = [("step", sync, probe_step)] if s < synced else []
        modes += [("run", free, probe_run)] if s > 0 else []
        for mode, runs, probe in modes:
            for q in ref[s]:
                spec = specs.get(q)
                node = spec.node if spec else (g.logits if q == "logits" else "")
                kind = q if spec is None else ("parameter" if spec.trainable else "moving statistic")
                mag = _absmax(ref[s][q])
                err, who = max((_deviation(runs[b], ref, s, q), b) for b in judged)
                # every backend non-finite (in float64 the reference is one of them)
                bad = _nonfinite([*([ref[s][q]] if verdict else []), *(runs[b][s][q] for b in judged)])
                if verdict:
                    assert probe is not None
                    base = atol + _times(rtol, mag) + K_TRAIN * (_deviation(probe, ref, s, q) + _times(U64, mag))
                    is_judged = s < horizon if mode == "run" else True
                else:
                    base, is_judged = float("inf"), False
                ok = _within(err, base) and not bad
                diffs.append(TrainDiff(s + 1, q, node, kind, err, mag, base, who, ok, mode, is_judged, bad))
    return TrainingReport(
        g, names, dtype, steps, batch, float(lr), seed, tuple(diffs), oracle, excluded, horizon, sensitivity
    )


def _horizon(
    ref: Trajectory, probe64: Trajectory, free: Mapping[str, Trajectory], judged: Sequence[str], steps: int
) -> tuple[int, tuple[float, ...]]:
    """(the free run's horizon, the reference's amplification of one float64 rounding per step):
    see train_parity. Lyapunov-style: the steps over which the reference, nudged, still
    reproduces itself to RTOL64."""
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
        _times(scale, _deviation(probe64, ref, horizon, q)) <= RTOL64 * _absmax(ref[horizon][q]) for q in ref[horizon]
    ):
        horizon += 1
    return horizon, sensitivity


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
    return _share(d.error, d.allowed)


def _geomean(xs: Sequence[float]) -> float:
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))
