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

  ``L_i(v)`` is the op's Lipschitz constant in the max norm with respect to input i, which
  the op's definition states (``Node.parity_bound`` in archcompiler/ops, from the node's
  attributes and canonical weights: a conv's largest per-filter sum of |kernel|, a
  BatchNorm's largest |gamma| / sqrt(var + eps), 1 for relu/relu6/pools, 1/6 for
  hard_sigmoid...). ``u = 2**-24`` is float32's unit roundoff; ``n(v)`` the length of the
  node's reductions (a conv's fan-in, a global pool's H*W, the softmax's classes), so ``u * n``
  is the classic worst-case bound of a float32 sum of n terms (Higham, gamma_n), whatever the
  summation order; ``K = 16`` covers the few other roundings per element (BatchNorm's
  subtract, rsqrt and scale, bias adds, a transcendental's ulps); ``M(v)`` bounds the
  magnitudes involved: ``L(v) * max|input| + |constant terms| + max|output|`` (for a clamp,
  relu, relu6, hard_sigmoid, only its unclamped range: ``ParityBound.clamped``,
  ``archcompiler.ops.activation.KIND_BOUNDS``); ``eta = 2**-126``
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

``optimize=True`` compares the optimised models (archcompiler.analysis.optimize, as ``archc build
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
rounding holds for a float32 step at every setting; see its docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from archcompiler import ir, weights
from archcompiler.kit.backend import (
    BackendError,
    check_learning_rate,
)
from archcompiler.kit.registry import Backend

if TYPE_CHECKING:
    import numpy as np
from archcompiler.ops import ParityBound
from archcompiler.parity.bounds import ETA32, FLOAT32_MAX, K_ROUNDINGS, RTOL64, U32
from archcompiler.parity.compare import absmax, between, max_difference, nonfinite, share, times, within
from archcompiler.parity.report import NodeDiff, ParityReport
from archcompiler.parity.runs import check_arguments, check_parity_memory, loaded_model, resolve_backends
from archcompiler.parity.training import train_parity


def _optimized(backend: Backend, graph: ir.Graph, w: weights.Weights, dtype: str) -> tuple[ir.Graph, Any]:
    """``backend``'s optimised model of ``graph`` with weights ``w`` folded in ``dtype`` (so a
    float64 run is not limited by float32 folded weights), tuned as an optimised build is."""
    import numpy as np

    from archcompiler.analysis.optimize import rewrite

    opt = rewrite(backend, graph, {k: np.asarray(v, dtype) for k, v in w.items()})
    return opt.graph, backend.tune(opt.graph, loaded_model(backend, opt.graph, opt.weights, dtype))


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

    from archcompiler.analysis.optimize import optimize as rewrite_graph

    check_arguments(batch=batch, seed=seed, dtype=dtype, steps=train_steps, lr=lr, atol=atol, rtol=rtol)
    from archcompiler import arguments as A

    A.flag(optimize, "optimize")
    if instances is not None:
        A.mapping(instances, "instances")
    if optimize and train_steps:
        raise BackendError("optimised models are for inference: training parity compares the models as built")
    if train_steps:
        check_learning_rate(lr, dtype)  # before anything is built
    check_parity_memory(graph, len(set(backends)), batch, dtype, train_steps)
    pairs, (ref_name, ref_backend) = resolve_backends(
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
        g, model = _optimized(b, graph, w, dtype) if optimize else (graph, loaded_model(b, graph, w, dtype))
        outputs[n] = _run_exposed(b, g, model, x, nodes)
    # the reference: the first float64 backend's unoptimised model (float64 when judging float32)
    if dtype == "float64" and not optimize:
        reference = None  # the first backend's own run, as every other backend's
    else:
        ref = ref_backend.run(graph, loaded_model(ref_backend, graph, w, "float64"), x, everything)
        reference = {n: ref[holders[n]] for n in nodes}
    # what every backend is judged against ("": the first backend's own run; ParityReport.rule)
    oracle = "" if reference is None else f"{ref_name}{' unoptimised' if optimize else ''} in float64"
    if dtype == "float64":
        atol, rtol = atol or 0.0, RTOL64 if rtol is None else rtol
        diffs = _judge64(judged, names, outputs, atol, rtol, reference)
    else:
        atol, rtol = atol or 0.0, rtol or 0.0
        assert reference is not None
        diffs = _judge32(judged, jw, names, outputs, reference, atol, rtol)
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


def _reference_note(ref: np.ndarray, what: str, float32: bool) -> str:
    """For a node every backend gives NaN or infinity at: what ``what`` (the reference) holds,
    and for ``float32`` backends whether it is beyond their range."""
    import numpy as np

    if np.isfinite(ref).all():
        top = absmax(ref)
        beyond = " (beyond float32's 3.4e+38: float32 overflows)" if float32 and top > FLOAT32_MAX else ""
        return f"{what} is finite there, up to {top:.3g}{beyond}"
    return f"{what} gives {nonfinite([ref])} there too"


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
        allowed = atol + times(rtol, absmax(r))
        worst_abs, worst_rel, pair = between([(b, np.asarray(outputs[b][node.name], np.float64)) for b in have])
        judged = have[1:] if reference is None else have
        error, who = 0.0, judged[0]
        for other in judged:
            e = max_difference(r, np.asarray(outputs[other][node.name], dtype=np.float64))
            if e > error:
                error, who = e, other
        values = [np.asarray(outputs[b][node.name]) for b in have]
        bad = nonfinite(values)
        note = _reference_note(r, "the float64 reference", False) if bad and reference is not None else ""
        ok = within(error, allowed) and not bad
        diffs.append(
            NodeDiff(node.name, node.op, worst_abs, worst_rel, ok, error, allowed, who, skipped, bad, note, pair)
        )
    return diffs


def node_bound(node: ir.Node, w: weights.Weights, x64: Mapping[str, np.ndarray]) -> ParityBound:
    """The op's own :meth:`~archcompiler.ops.Node.parity_bound` for ``node``, from its canonical
    tensors in ``w`` and the float64 reference values ``x64`` of its inputs."""
    params = {s.param: w[f"{node.name}.{s.param}"] for s in node.weights() if f"{node.name}.{s.param}" in w}
    bound = node.parity_bound(params, [x64[i] for i in node.inputs])
    if len(bound.lipschitz) != len(node.inputs):
        raise TypeError(
            f"op {node.op!r}: parity_bound gives {len(bound.lipschitz)} Lipschitz constants for "
            f"{len(node.inputs)} inputs at node {node.name!r}"
        )
    return bound


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
    the module docstring. The arithmetic never makes NaN (:func:`times`, :func:`difference`):
    a difference of 0 passes, an infinite one fails, and a node every backend gives NaN or
    infinity at is reported as such (``nonfinite``), not blamed on one backend."""
    import numpy as np

    errors: dict[str, dict[str, float]] = {n: {} for n in names}
    diffs = []
    for node in graph.nodes:
        ref64 = np.asarray(x64[node.name], dtype=np.float64)
        have = [b for b in names if node.name in outputs[b]]
        skipped = tuple(b for b in names if b not in have)
        worst_abs, worst_rel, pair = between([(b, np.asarray(outputs[b][node.name], np.float64)) for b in have])
        bound = node_bound(node, w, x64)
        lips, n = bound.lipschitz, bound.reductions
        x_in = max((absmax(x64[i]) for i in node.inputs), default=0.0)
        out = absmax(ref64)
        spread = 0.0 if bound.clamped else times(max(lips, default=1.0), x_in)  # a clamp's input does not count
        magnitude = spread + bound.constant + out
        own = times(U32 * (K_ROUNDINGS + n), magnitude) + (K_ROUNDINGS + n) * ETA32
        if bound.rounding is not None:  # an op that sums its own stages' roundings states the total
            own = times(U32, bound.rounding + out) + (K_ROUNDINGS + n) * ETA32
        slack = atol + times(rtol, out)
        judged = None
        for b in names:
            inherited = sum(times(lip, errors[b][i]) for lip, i in zip(lips, node.inputs, strict=True))
            allowed = inherited + own + slack
            if b in skipped:
                # Not exposed (fused by the runtime): its error is taken at its bound, so the
                # nodes that read it inherit no less than it could have.
                errors[b][node.name] = allowed
                continue
            err = max_difference(ref64, np.asarray(outputs[b][node.name], dtype=np.float64))
            errors[b][node.name] = err
            ratio = share(err, allowed)
            if judged is None or ratio > judged[0]:
                judged = (ratio, err, allowed, b)
        assert judged is not None
        ratio, err, allowed, who = judged
        bad = nonfinite([np.asarray(outputs[b][node.name]) for b in have])
        note = _reference_note(ref64, "the float64 reference", True) if bad else ""
        ok = within(err, allowed) and not bad
        diffs.append(
            NodeDiff(node.name, node.op, worst_abs, worst_rel, ok, err, allowed, who, skipped, bad, note, pair)
        )
    return diffs
