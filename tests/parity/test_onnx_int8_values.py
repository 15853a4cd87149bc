"""The per-layer values of the ONNX int8 report are onnxruntime's integer kernels' outputs,
not a float model with fake-quant nodes.

archc runs the QDQ model with each layer's DequantizeLinear output fetched as a graph output.
The oracle is onnxruntime's own fused model: the plain QDQ model (nothing fetched) optimised
by onnxruntime and saved (``optimized_model_filepath``), in which QLinearConv, QGemm and
QLinearGlobalAveragePool replace the Q/DQ pairs; run again with every optimisation off, its
uint8 outputs are read and dequantized here with numpy. Fetching the intermediate values
must leave the fusion as it is and give the same values.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from helpers import SPEC, framework

import archcompiler

onnx = framework("onnx")
ort = framework("onnxruntime")

pytestmark = [pytest.mark.slow, pytest.mark.onnx]


def _optimized(model, tmp_path, name: str):
    """onnxruntime's optimised graph of ``model`` (QDQ fusion is an 'extended' optimisation)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / name)
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / name))


def test_report_values_are_the_integer_kernels_outputs(tmp_path) -> None:
    from onnx import numpy_helper

    from archcompiler import weights as W
    from archcompiler.calibration import load
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.runs import loaded_model

    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10, classifier_activation="none").graph
    inputs = load("synthetic", g, samples=32)
    backend = get_backend("onnx", quantize="int8", calibration=inputs)
    model = loaded_model(backend, g, W.init(g, 0), "float32")
    q, _ = backend.quantized(g, model)
    fused = _optimized(q.model, tmp_path, "fused.onnx")
    ops = collections.Counter(n.op_type for n in fused.graph.node)
    assert ops["QLinearConv"] == 27 and ops["QGemm"] == 1  # every conv and the dense: integer kernels

    # the oracle: the fused model's uint8 outputs, dequantized with the QDQ model's scales
    consts = {t.name: numpy_helper.to_array(t) for t in [*q.model.graph.initializer, *fused.graph.initializer]}
    dq = {n.output[0]: n.input for n in q.model.graph.node if n.op_type == "DequantizeLinear"}
    integer = {n.output[0] for n in fused.graph.node if n.op_type.startswith(("QLinear", "QGemm"))}
    plain = onnx.ModelProto()
    plain.CopyFrom(fused)
    for t in sorted(integer):
        plain.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(plain.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = inputs.held_out[:8]
    order = sorted(integer)
    raw = dict(zip(order, session.run(order, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}), strict=True))

    # archc's run, every exposed node at once (the report's per-layer pass)
    run, exposed = backend.quantized_runner(g, model)
    names = [n.name for n in g.nodes if n.name in exposed]
    got = run(x, names)
    from archcompiler.backends.onnx.build import tensor_names
    from archcompiler.backends.onnx.quantize import _dequantized

    tensors = tensor_names(q.optimized.graph, False)
    compared = 0
    for name in names:
        source = dq.get(_dequantized(q.model, tensors[q.optimized.names[name]]))
        if source is None or source[0] not in raw:
            continue
        value, scale, zero = raw[source[0]], consts[source[1]], consts[source[2]]
        want = (value.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)
        want = want.transpose(0, 2, 3, 1) if want.ndim == 4 else want
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-6 * max(1.0, float(np.abs(want).max())))
        compared += 1
    assert compared >= 28, compared  # the 27 convs' activations and the pool (the logits are float: the output)
