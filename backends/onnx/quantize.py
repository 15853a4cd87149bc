"""Statically quantized (QDQ) ONNX: onnxruntime.quantization.quantize_static on the float model
of the optimised IR (BatchNorm folded into the convolutions, pads merged: archc's optimize
rewrite), calibrated on archcompiler.calibration's samples.

Choices (measured in onnxruntime 1.32 on an AVX2 CPU without VNNI):
* the optimised IR: BatchNormalization left in would be quantized as an op of its own and run
  in float between the integer convolutions;
* per-channel int8 weights (symmetric), per-tensor uint8 activations (asymmetric): with int8
  activations onnxruntime's CPU provider fuses no residual Add or squeeze-excite Mul and leaves
  the convolutions around them in float;
* ``reduce_range`` (7-bit weights, default on): AVX2's u8 x s8 multiply saturates without VNNI,
  which costs accuracy on x86 machines without it; the file runs everywhere either way;
* ``float_layers``: the ONNX nodes of those IR layers are left out (``nodes_to_exclude``), and
  archc's sessions turn off the optimizer that would quantize them again (DISABLED_OPTIMIZERS).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from archcompiler.backends.onnx.build import INPUT, build_model, input_layout, nchw, owner, tensor_names, value_info

from archcompiler import ir
from archcompiler.analysis.optimize import Optimized
from archcompiler.calibration import Calibration
from archcompiler.ir.layouts import batch_from
from archcompiler.kit.registry import BackendError
from archcompiler.quiet import framework_output

CALIBRATION_BATCH = 16
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]
"""onnxruntime's session optimizers to turn off for a QDQ model with float layers: since 1.21,
WeightBiasQuantization quantizes a float Conv/Gemm's weights (one int8 scale per tensor) when
the Conv sits between DequantizeLinear and QuantizeLinear, which undoes ``nodes_to_exclude``
when the model is loaded (measured in 1.32: a kept-float conv with an outlier weight, 37 dB
with it off, 2 dB with it on). Whoever runs the file passes it too (docs/deployment.md)."""


@dataclass(frozen=True)
class QuantizedOnnx:
    """The QDQ model and the rewrite it was quantized from (its node names)."""

    model: onnx.ModelProto
    optimized: Optimized


def _batches(x: np.ndarray, nhwc: bool) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches of the model's own input (histogram calibrators need equal sizes)."""
    feed = x if nhwc else np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x
    size = min(CALIBRATION_BATCH, len(feed))
    for i in range(0, len(feed) - size + 1, size):
        yield {INPUT: np.ascontiguousarray(feed[i : i + size], np.float32)}


class _Reader:
    """onnxruntime's calibration data reader protocol (``get_next``, None at the end)."""

    def __init__(self, x: np.ndarray, nhwc: bool) -> None:
        self.batches = _batches(x, nhwc)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def excluded_nodes(model: onnx.ModelProto, optimized: Optimized, float_layers: tuple[str, ...]) -> list[str]:
    """The ONNX nodes of ``model`` (built from ``optimized.graph``) that compute the original
    graph's ``float_layers``: each layer's holder in the rewrite (a BatchNorm's conv), and the
    ONNX nodes emitted for it (named ``<node>`` or ``<node>/...``)."""
    emitted = {owner(n) for n in model.graph.node}
    for layer in float_layers:
        if optimized.names[layer] not in emitted:
            raise BackendError(f"float_layers: {layer!r} computes nothing in the ONNX model (nothing to keep in float)")
    holders = {optimized.names[n] for n in float_layers}
    return [n.name for n in model.graph.node if owner(n) in holders]


def quantize(
    optimized: Optimized,
    handlers: Any,
    inputs: Calibration,
    *,
    nhwc_input: bool,
    reduce_range: bool,
    float_layers: tuple[str, ...] = (),
) -> QuantizedOnnx:
    """The QDQ model of ``optimized`` (graph and folded weights), calibrated on ``inputs``;
    the ONNX nodes of ``float_layers`` (original graph's names) are left in float."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    float_model = build_model(optimized.graph, handlers, optimized.weights, nhwc_input=nhwc_input)

    with tempfile.TemporaryDirectory(prefix="archc-onnx-int8-") as tmp, framework_output():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(float_model, src)
        excluded = excluded_nodes(float_model, optimized, float_layers)  # its errors are the user's, unwrapped
        try:
            quantize_static(
                str(src),
                str(dst),
                _Reader(inputs.calibration, nhwc_input),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
            )
        except Exception as exc:  # onnxruntime raises whatever its steps raise
            raise BackendError(f"ONNX int8 quantization of {optimized.graph.name!r} failed: {exc}") from exc
        model = onnx.load_model(dst)
    for p in float_model.metadata_props:  # the layout and graph name run/verify read
        model.metadata_props.add(key=p.key, value=p.value)
    return QuantizedOnnx(model, optimized)


def _dequantized(model: onnx.ModelProto, tensor: str) -> str:
    """The tensor that holds ``tensor``'s value as the integer model computes it: the output of
    its QuantizeLinear -> DequantizeLinear pair when it has one, else the tensor itself."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    q = next((n for n in readers.get(tensor, []) if n.op_type == "QuantizeLinear"), None)
    dq = next((n for n in readers.get(q.output[0], []) if n.op_type == "DequantizeLinear"), None) if q else None
    return dq.output[0] if dq is not None else tensor


def run(q: QuantizedOnnx, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The QDQ model on NHWC ``x`` with onnxruntime's integer kernels: the values of the
    original graph's nodes ``names`` (mapped through the rewrite), channels-last."""
    import onnxruntime as ort

    graph: ir.Graph = q.optimized.graph
    nhwc = input_layout(q.model) == "NHWC"
    tensors = tensor_names(graph, nhwc)
    outputs = {o.name for o in q.model.graph.output}
    fetch = {n: _dequantized(q.model, tensors[q.optimized.names[n]]) for n in names}
    extended = onnx.ModelProto()
    extended.CopyFrom(q.model)
    for n, t in fetch.items():
        if t not in outputs:
            extended.graph.output.append(value_info(t, nchw(graph[q.optimized.names[n]].shape)))
            outputs.add(t)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        extended.SerializeToString(), opts, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
    )
    feed = x if nhwc or x.ndim != 4 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    order = list(dict.fromkeys(fetch.values()))
    values = dict(zip(order, session.run(order, {INPUT: np.asarray(feed, np.float32)}), strict=True))
    return {n: batch_from(values[t], "channels_first") for n, t in fetch.items()}
