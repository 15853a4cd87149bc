"""How much a quantized model loses, layer by layer: a measurement, not an equivalence verdict.

Parity (archcompiler.parity.inference) decides whether two float models compute the same
function. A quantized model does not, by design; what a deployer needs is where it loses and
how much. This module measures that from node values alone, whatever the runtime: each
runtime only exposes the (dequantized) values of the IR nodes it keeps as tensors, on held-out
inputs that were not used for calibration, next to the float reference's values of the same
nodes on the same inputs.

* **SQNR** per node, in dB: ``10 log10(sum r**2 / sum (r - q)**2)`` over every element of the
  batch (r the float reference, q the quantized runtime's value). Scale-free, so layers compare
  with each other ("error relative to the layer's range"); each bit is about 6 dB, int8
  rounding of a tensor that fills its range gives 40-48 dB, 20 dB is a 10% RMS error, 10 dB or
  less means the layer's output is mostly noise. It is the *accumulated* error: each layer sees
  the already-quantized layers before it.
* **drop** per node: the SQNR of its nearest measured input minus its own. A layer that
  quantizes badly drops 10-20 dB where the others drop 0-2 dB; the report names the layers
  with the largest drops (the later layers inherit the loss and cannot recover it).
* **weights**: for every kernel of the model the runtime quantizes (the optimised IR's
  folded kernels: BatchNorm folded into the conv, as both converters do), the SQNR of
  symmetric int8 rounding per output channel, and the worst channel, both with one scale per
  channel and with one scale for the whole tensor. A whole-tensor figure hides the classic
  MobileNet failure (a folded depthwise kernel whose dead channels are 100x larger than the
  rest: 35 dB for the tensor, 3 dB for its worst channel with one scale).
* the final top-1 agreement with the float model, the output's SQNR and largest difference.
* **degenerate reference**: when the float model's output is (nearly) constant over the
  held-out batch (its top-1 class never changes, or its values do not vary), the figures mean
  nothing (untrained weights: activations shrink to nothing through the layers); the report
  says so instead of printing reassuring numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archcompiler import ir

if TYPE_CHECKING:
    import numpy as np

INT8_LEVELS = 127
"""Symmetric int8 weights use -127..127 (TFLite's and onnxruntime's weight scheme)."""

INT8_IDEAL_DB = 20 * math.log10(256)
"""48.16 dB: int8 rounding of a signal spread evenly over its range (6.02 dB per bit). A layer's
drop is measured from its input's SQNR, counted as at most this: a layer is not blamed for the
first rounding to int8 (its input may be exact, or better than int8 can hold)."""

LOSS_DB = 6.0
"""A drop of more than this (one bit) at one layer is named as a loss worth looking at."""


def sqnr_db(reference: Any, quantized: Any) -> float:
    """``10 log10(sum r**2 / sum (r - q)**2)`` in dB over all elements (float64): infinity
    when the two are equal, minus infinity when the reference is all zero and they differ."""
    import numpy as np

    r = np.asarray(reference, dtype=np.float64)
    q = np.asarray(quantized, dtype=np.float64)
    if r.shape != q.shape:
        raise ValueError(f"cannot compare values of shapes {r.shape} and {q.shape}")
    noise = float(np.sum((r - q) ** 2))
    signal = float(np.sum(r**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def output_channels(kernel: Any, layout: str) -> np.ndarray:
    """A canonical kernel as (fan-in, output channels): conv (kh, kw, I, O) and dense (in, out)
    keep their last axis, depthwise (kh, kw, C, M) has C*M channels (archcompiler.ir.layouts)."""
    import numpy as np

    w = np.asarray(kernel, dtype=np.float64)
    if layout == "depthwise_kernel":
        return w.reshape(-1, w.shape[2] * w.shape[3])
    return w.reshape(-1, w.shape[-1])


def int8_rounded(columns: Any, per_channel: bool) -> np.ndarray:
    """Symmetric int8 rounding of (fan-in, channels) weights: scale max|w| / 127 per channel
    (``per_channel``) or over the whole tensor, values rounded and clipped to -127..127."""
    import numpy as np

    w = np.asarray(columns, dtype=np.float64)
    top = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max(keepdims=True)
    scale = np.where(top > 0, top / INT8_LEVELS, 1.0)
    return np.clip(np.round(w / scale), -INT8_LEVELS, INT8_LEVELS) * scale


def channel_sqnr_db(reference: Any, quantized: Any) -> list[float]:
    """:func:`sqnr_db` of each column of two (fan-in, channels) arrays."""
    import numpy as np

    r, q = np.asarray(reference), np.asarray(quantized)
    return [sqnr_db(r[:, c], q[:, c]) for c in range(r.shape[1])]


@dataclass(frozen=True)
class LayerLoss:
    """One node the runtime exposes: its accumulated SQNR, and the drop from its input's."""

    node: str
    op: str
    sqnr_db: float
    drop_db: float | None
    """SQNR of the nearest measured input (at most :data:`INT8_IDEAL_DB`) minus this node's
    (None for the graph input)."""
    low: float
    high: float
    """The float reference's range at this node on the held-out batch."""


@dataclass(frozen=True)
class WeightLoss:
    """One kernel: SQNR of int8 rounding, whole tensor and worst output channel, with one
    scale per channel and with one scale for the tensor."""

    tensor: str
    channels: int
    per_channel_worst_db: float
    per_channel_worst: int
    per_tensor_db: float
    per_tensor_worst_db: float
    per_tensor_worst: int


def weight_losses(graph: ir.Graph, folded: Mapping[str, Any]) -> list[WeightLoss]:
    """:class:`WeightLoss` of every kernel in ``folded`` (canonical weights of ``graph``,
    normally the optimised graph's, BatchNorm folded in), in graph order."""
    from archcompiler.weights import specs

    out = []
    for name, spec in specs(graph).items():
        if not spec.layout.endswith("_kernel") or name not in folded:
            continue
        cols = output_channels(folded[name], spec.layout)
        pc = channel_sqnr_db(cols, int8_rounded(cols, True))
        rounded = int8_rounded(cols, False)
        pt = channel_sqnr_db(cols, rounded)
        worst_pc = min(range(len(pc)), key=pc.__getitem__)
        worst_pt = min(range(len(pt)), key=pt.__getitem__)
        out.append(WeightLoss(name, len(pc), pc[worst_pc], worst_pc, sqnr_db(cols, rounded), pt[worst_pt], worst_pt))
    return out


def _measured_input(graph: ir.Graph, node: ir.Node, measured: Mapping[str, float]) -> float | None:
    """The SQNR of the nearest measured node upstream of ``node`` (the worst, if several)."""
    seen: set[str] = set()
    todo = list(node.inputs)
    found: list[float] = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in measured:
            found.append(measured[name])
        else:
            todo.extend(graph[name].inputs)
    return min(found) if found else None


def degenerate(graph: ir.Graph, reference: Mapping[str, Any]) -> str:
    """Why the float reference's output on the held-out batch cannot be judged ("" if it can):
    it barely depends on the input (its largest change across samples is under 1% of its
    largest value: an untrained MobileNet's activations shrink to nothing through the layers,
    and its softmax is a constant 1/classes), or its top-1 class is the same for every sample."""
    import numpy as np

    out = np.asarray(reference[graph.outputs[0]], dtype=np.float64)
    flat = out.reshape(len(out), -1)
    if len(flat) < 2:
        return ""
    spread = float(np.ptp(flat, axis=0).max(initial=0.0))
    if spread <= 0.01 * float(np.abs(flat).max(initial=0.0)):
        return f"the float model's output hardly depends on the input (it changes by {spread:.2g} across samples)"
    if flat.shape[1] > 1 and len(set(flat.argmax(1).tolist())) == 1:
        return "the float model predicts the same class for every held-out sample"
    return ""


@dataclass(frozen=True)
class QuantizationReport:
    """One quantized runtime against the float reference on held-out inputs (module docstring)."""

    graph: str
    runtime: str
    reference: str
    samples: int
    layers: tuple[LayerLoss, ...]
    weights: tuple[WeightLoss, ...]
    top1_agreement: float | None
    output_sqnr_db: float
    output_max_abs_diff: float
    degenerate: str = ""
    """Why the figures mean nothing (untrained weights), or ""."""
    notes: tuple[str, ...] = field(default=())
    float_layers: tuple[str, ...] = ()
    """The layers the quantized build kept in float (its ``float_layers`` option)."""

    def worst_layers(self, k: int = 3) -> list[LayerLoss]:
        """The ``k`` layers with the largest SQNR drop (where the loss starts)."""
        dropped = [r for r in self.layers if r.drop_db is not None]
        return sorted(dropped, key=lambda r: -(r.drop_db or 0.0))[:k]

    def worst_weights(self, k: int = 3) -> list[WeightLoss]:
        """The ``k`` kernels whose worst channel loses most with one scale per tensor."""
        return sorted(self.weights, key=lambda w: w.per_tensor_worst_db)[:k]

    def to_json(self) -> dict[str, Any]:
        """A plain dict (infinite SQNR written as the string "inf")."""
        from dataclasses import asdict

        def plain(v: Any) -> Any:
            if isinstance(v, float) and math.isinf(v):
                return "inf" if v > 0 else "-inf"
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        data = plain(asdict(self))
        data["worst_layers"] = [r.node for r in self.worst_layers()]
        data["measures"] = MEASURES
        return data

    def text(self) -> str:
        """The report as people read it (archcompiler.tools.render prints it)."""
        return render(self)


MEASURES = (
    "what a quantized runtime loses against the float model, node by node, on held-out inputs "
    "that were not used for calibration (SQNR, accumulated); not an equivalence verdict"
)


def quantization_report(
    graph: ir.Graph,
    runtime: str,
    reference: Mapping[str, Any],
    quantized: Mapping[str, Any],
    *,
    folded: Mapping[str, Any] | None = None,
    weights_graph: ir.Graph | None = None,
    reference_name: str = "float32",
    notes: Sequence[str] = (),
) -> QuantizationReport:
    """Compare ``quantized`` (node -> the runtime's dequantized value, for the nodes it
    exposes; the graph's outputs always) with ``reference`` (node -> the float model's value,
    every node) on the same held-out batch. ``folded``: the canonical weights of
    ``weights_graph`` (default ``graph``) that the runtime quantizes, for :func:`weight_losses`."""
    import numpy as np

    measured: dict[str, float] = {}
    rows = []
    for node in graph.nodes:
        if node.name not in quantized or node.name not in reference:
            continue
        r = np.asarray(reference[node.name], dtype=np.float64)
        value = sqnr_db(r, quantized[node.name])
        before = _measured_input(graph, node, measured) if node.inputs else None
        drop = None if before is None else _difference(before, value)
        measured[node.name] = value
        rows.append(LayerLoss(node.name, node.op, value, drop, float(r.min(initial=0.0)), float(r.max(initial=0.0))))
    out = graph.outputs[0]
    r_out = np.asarray(reference[out], dtype=np.float64)
    q_out = np.asarray(quantized[out], dtype=np.float64)
    top1 = None
    if r_out.ndim == 2 and r_out.shape[1] > 1:
        top1 = float(np.mean(r_out.argmax(1) == q_out.argmax(1)))
    losses = weight_losses(weights_graph or graph, folded) if folded is not None else []
    return QuantizationReport(
        graph.name,
        runtime,
        reference_name,
        len(r_out),
        tuple(rows),
        tuple(losses),
        top1,
        sqnr_db(r_out, q_out),
        float(np.abs(r_out - q_out).max(initial=0.0)),
        degenerate(graph, reference),
        tuple(notes),
    )


def _difference(before: float, after: float) -> float:
    """``min(before, INT8_IDEAL_DB) - after`` in dB; 0 for an exact value (no loss)."""
    if after == math.inf:
        return 0.0
    return min(before, INT8_IDEAL_DB) - after


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if math.isfinite(v) else ("exact" if v > 0 else "-inf")


def render(report: QuantizationReport, rows: int | None = None) -> str:
    """The report as text: what it measures, a warning for a degenerate reference, the final
    figures, the layers that lose most (with what to try), then one line per layer and the
    kernels' worst channels. ``rows``: at most that many layer lines (None: all)."""
    r = report
    head = f"quantization report: {r.graph} in {r.runtime}, against the {r.reference} model"
    lines = [f"{head}, {r.samples} held-out samples"]
    lines.append(f"  measures {MEASURES}")
    if r.degenerate:
        lines.append(f"  WARNING: {r.degenerate}: untrained or degenerate weights, the figures below mean nothing")
    agree = "n/a" if r.top1_agreement is None else f"{r.top1_agreement:.2%}"
    lines.append(
        f"  output: top-1 agreement {agree}, SQNR {_db(r.output_sqnr_db)} dB, max abs diff {r.output_max_abs_diff:.3g}"
    )
    lines.extend(f"  note: {n}" for n in r.notes)
    worst = r.worst_layers()
    if worst:
        named = ", ".join(f"{w.node} (-{_db(w.drop_db)} dB)" for w in worst)
        lines.append(f"  largest drops: {named}")
    for w in r.worst_weights(1):
        if w.per_tensor_worst_db < w.per_channel_worst_db - LOSS_DB:
            lines.append(
                f"  {w.tensor}: worst channel {w.per_tensor_worst} at {_db(w.per_tensor_worst_db)} dB with one "
                f"scale per tensor, {_db(w.per_channel_worst_db)} dB per channel: keep per-channel weights"
            )
    lines.append(f"  {'node':24s} {'op':16s} {'SQNR dB':>8s} {'drop dB':>8s}  float range")
    for row in r.layers[:rows]:
        figures = f"{_db(row.sqnr_db):>8s} {_db(row.drop_db):>8s}"
        lines.append(f"  {row.node:24s} {row.op:16s} {figures}  {row.low:.3g}..{row.high:.3g}")
    if r.weights:
        titles = f"{'channels':>8s} {'worst ch. dB':>12s} {'per-tensor dB':>13s} {'its worst ch.':>13s}"
        lines.append(f"  {'kernel':28s} {titles}")
        for w in r.weights:
            lines.append(
                f"  {w.tensor:28s} {w.channels:8d} {_db(w.per_channel_worst_db):>12s} {_db(w.per_tensor_db):>13s} "
                f"{_db(w.per_tensor_worst_db):>13s}"
            )
    return "\n".join(lines)


QUANTIZED = "-int8"
"""A runtime named ``<backend>-int8`` (``tflite-int8``, ``onnx-int8``) is that backend's
full-integer build, ``get_backend(<backend>, quantize="int8", calibration=...)``."""


def is_quantized(runtime: str) -> bool:
    return runtime.endswith(QUANTIZED)


def _batched(run: Any, x: np.ndarray, names: Sequence[str], batch: int) -> dict[str, np.ndarray]:
    """``run(x, names)`` over ``x`` in batches, the values of each node concatenated."""
    import numpy as np

    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(x), batch):
        got = run(x[i : i + batch], list(names))
        for n in names:
            parts[n].append(np.asarray(got[n], dtype=np.float64))
    return {n: np.concatenate(v) for n, v in parts.items()}


def quantized_values(
    backend: Any, graph: ir.Graph, model: Any, x: np.ndarray, batch: int = 16
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(every node the quantized runtime exposes, its outputs run alone) on ``x``: the backend's
    ``quantized_runner`` gives the values; the outputs are fetched again on their own, because
    fetching intermediate tensors can keep a runtime from fusing its integer kernels."""
    run, exposed = backend.quantized_runner(graph, model)
    inputs = {i.name for i in graph.inputs}
    keep = [n.name for n in graph.nodes if (n.name in exposed or n.name in graph.outputs) and n.name not in inputs]
    return _batched(run, x, keep, batch), _batched(run, x, list(graph.outputs), batch)


def measure(
    graph: ir.Graph,
    weights: Mapping[str, Any],
    inputs: Any,
    runtimes: Sequence[str],
    *,
    reference: str = "torch",
    notes: Sequence[str] = (),
    batch: int = 16,
    float_layers: Sequence[str] = (),
) -> list[QuantizationReport]:
    """One :class:`QuantizationReport` per quantized runtime (``<backend>-int8``), each built
    from ``weights`` and calibrated on ``inputs.calibration`` (an archcompiler.calibration
    Calibration), measured on ``inputs.held_out`` against backend ``reference`` in float32;
    ``float_layers``: IR nodes every int8 build keeps in float (its ``float_layers`` option).
    Each runtime only exposes node values (``Backend.run`` on the nodes ``Backend.exposed``
    keeps); everything measured is computed here."""
    from archcompiler import weights as W
    from archcompiler.analysis.optimize import optimize
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.runs import loaded_model

    floats = tuple(float_layers)  # checked by each backend's build (archcompiler.quantization.float_layers)
    w = W.Weights(weights)
    names = [n.name for n in graph.nodes]
    ref_backend = get_backend(reference)
    ref_model = loaded_model(ref_backend, graph, w, "float32")
    ref = _batched(lambda x, n: ref_backend.run(graph, ref_model, x, n), inputs.held_out, names, batch)
    folded = optimize(graph, w)
    described = inputs.describe()
    said = [
        f"held-out inputs: {described['held_out_samples']} samples of {described['source']}, disjoint from the "
        f"{described['calibration_samples']} calibration samples ({described['preprocessing']})",
        *([described["note"]] if "note" in described else []),
        *notes,
        *([f"kept in float: {', '.join(floats)}"] if floats else []),
        "kernels: symmetric int8 rounding of the folded kernels (BatchNorm folded in), computed from the float weights",
        "output figures: the runtime run for its outputs alone; layers: run exposing every tensor it keeps",
    ]
    reports = []
    for runtime in runtimes:
        options = {"float_layers": list(floats)} if floats else {}
        backend = get_backend(runtime.removesuffix(QUANTIZED), quantize="int8", calibration=inputs, **options)
        model = loaded_model(backend, graph, w, "float32")
        layers, outputs = quantized_values(backend, graph, model, inputs.held_out, batch)
        report = quantization_report(
            graph,
            runtime,
            ref,
            {**layers, **outputs},
            folded=folded.weights,
            weights_graph=folded.graph,
            reference_name=f"{reference} float32",
            notes=said,
        )
        reports.append(dataclasses.replace(report, float_layers=floats))
    return reports
