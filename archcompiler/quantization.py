"""The quantization report a quantized build writes (``<name>.quantization.json``): the
quantized model against the float32 model of the same weights, on held-out inputs.

Measured where the model's output is informative: on the logits (the input of a final
softmax; a softmax of untrained weights is nearly constant, and a difference measured there
says nothing), or on every output of a feature model. The report names the nodes, the inputs
(archcompiler.calibration: disjoint from the calibration samples) and where the weights came
from; archc's untrained init is said in so many words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from archcompiler import ir
from archcompiler.calibration import Calibration

Run = Callable[[np.ndarray, tuple[str, ...]], dict[str, np.ndarray]]
"""Runs a model on a batch: (NHWC inputs, node names) -> node name -> value."""

UNTRAINED = (
    "untrained: every BatchNorm statistic and bias is still at its initial value (archc's init or a framework's); "
    "the figures describe this random model, not a trained one"
)
TRAINED = "loaded or trained weights (not an initialisation)"


def weights_origin(graph: ir.Graph, weights: Mapping[str, np.ndarray]) -> str:
    """Whether ``weights`` are an untrained initialisation: the tensors every init fills with
    zeros or ones (biases, BatchNorm's beta, gamma and statistics) all still are; a model
    without any is compared with archc's seed-0 init."""
    from archcompiler import weights as canonical

    specs = canonical.specs(graph)
    fixed = {n: 0.0 if s.fill == "zeros" else 1.0 for n, s in specs.items() if s.fill in ("zeros", "ones")}
    if fixed:
        untrained = all(np.all(np.asarray(weights[n]) == v) for n, v in fixed.items())
    else:
        init = canonical.training_init(graph, 0)
        untrained = all(np.array_equal(np.asarray(weights[n]), init[n]) for n in specs)
    return UNTRAINED if untrained else TRAINED


def measured_nodes(graph: ir.Graph) -> tuple[str, ...]:
    """The logits of a classifier (the softmax's input, else the output), every output of a
    feature model."""
    return tuple(graph.outputs) if graph.multi_output else (graph.logits,)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - got)^2), in dB
    (None when equal: infinite). 6 dB per bit; 20 dB is an RMS error of a tenth of the signal.
    The one definition is archcompiler.parity.quantization's; this rounds it for a JSON file."""
    import math

    from archcompiler.parity.quantization import sqnr_db as exact

    value = exact(ref, got)
    if value == math.inf:
        return None
    return round(max(value, -3000.0), 2)  # an all-zero reference that differs: -inf, not JSON


def _node_report(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    d = np.abs(got - ref)
    spread = float(ref.std(axis=0).mean()) if len(ref) > 1 else 0.0
    return {
        "sqnr_db": sqnr_db(ref, got),
        "max_abs_diff": float(d.max(initial=0.0)),
        "mean_abs_diff": float(d.mean()) if d.size else 0.0,
        "max_abs_reference": float(np.abs(ref).max(initial=0.0)),
        "reference_spread": spread,
    }


def report(
    graph: ir.Graph,
    reference: Run,
    quantized: Run,
    inputs: Calibration,
    *,
    quantize: str,
    reference_name: str,
    weights: str,
    batch: int = 16,
    float_layers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The quantized model's deviation from ``reference`` on ``inputs.held_out`` (``float_layers``:
    the layers the quantized model keeps in float, said in the report)."""
    names = measured_nodes(graph)
    x = inputs.held_out
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    gots: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(x), batch):
        r, q = reference(x[i : i + batch], names), quantized(x[i : i + batch], names)
        for n in names:
            refs[n].append(np.asarray(r[n], np.float64))
            gots[n].append(np.asarray(q[n], np.float64))
    ref = {n: np.concatenate(v) for n, v in refs.items()}
    got = {n: np.concatenate(v) for n, v in gots.items()}
    out: dict[str, Any] = {
        "quantize": quantize,
        "float_layers": list(float_layers),
        "reference": reference_name,
        "weights": weights,
        "inputs": inputs.describe(),
        "measured_on": list(names),
        "why": "the logits (before the softmax)" if not graph.multi_output else "every output of the feature model",
        "nodes": {n: _node_report(ref[n], got[n]) for n in names},
    }
    if not graph.multi_output and len(graph[names[0]].shape) == 1:
        out["top1_agreement"] = float(np.mean(ref[names[0]].argmax(1) == got[names[0]].argmax(1)))
    flat = [out["nodes"][n] for n in names]
    if any(r["reference_spread"] <= 1e-6 * max(r["max_abs_reference"], 1e-30) for r in flat):
        out["warning"] = "the float model's output barely varies across these inputs: the figures say little"
    return out


def float_layers(graph: ir.Graph, names: Any) -> tuple[str, ...]:
    """The IR nodes an int8 build is asked to keep in float (``float_layers``), checked against
    ``graph``: a name or a list of names, each a computing node of the graph (not an input),
    in graph order without repeats; an unknown one is a BackendError that suggests a close name.
    Each backend maps them to its own ops (onnxruntime's ``nodes_to_exclude``, the TFLite
    quantization debugger's ``denylisted_nodes``)."""
    from archcompiler.kit.registry import BackendError
    from archcompiler.language.source import did_you_mean

    if names is None:
        return ()
    given = [names] if isinstance(names, str) else names
    if not isinstance(given, list | tuple) or not all(isinstance(n, str) and n for n in given):
        raise BackendError(f"float_layers: expected layer names (a list of strings), got {names!r}")
    inputs = {i.name for i in graph.inputs}
    layers = [n.name for n in graph.nodes if n.name not in inputs]
    for name in given:
        if name not in layers:
            what = "is the model input, which is always quantized" if name in inputs else "is no layer"
            raise BackendError(f"float_layers: {name!r} {what} of {graph.name!r}{did_you_mean(name, layers)}")
    chosen = set(given)
    return tuple(n for n in layers if n in chosen)
