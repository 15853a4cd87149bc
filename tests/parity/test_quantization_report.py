"""The per-layer quantization report (archcompiler/parity/quantization.py) against outside
oracles: SQNR against the textbook figure of uniform quantization (6.02 dB per bit, 48.16 dB
for 8 bits of a uniform signal) and a hand-computed ratio; the output channels of a depthwise
kernel against archcompiler.ir.layouts' independent conversion; and a planted bad layer (dead
depthwise channels whose folded kernel is 100x larger, bad_layer_demo in issue 22's groundwork)
named as the layer that loses most."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SPEC

from archcompiler.parity.quantization import (
    MEASURES,
    channel_sqnr_db,
    degenerate,
    int8_rounded,
    output_channels,
    quantization_report,
    sqnr_db,
)


def test_sqnr_of_a_known_noise_power() -> None:
    r = np.full((4, 5), 2.0)  # power 4 per element
    q = r + np.where(np.arange(20).reshape(4, 5) % 2, 0.2, -0.2)  # noise power 0.04
    assert sqnr_db(r, q) == pytest.approx(20.0, abs=1e-9)  # 10 log10(4 / 0.04)
    assert sqnr_db(r, r) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf


def test_sqnr_of_8_bit_uniform_quantization_is_the_textbook_48_db() -> None:
    """A uniform signal over [-A, A] rounded to 256 levels: 10 log10(2**16) = 48.16 dB."""
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 1_000_000)
    step = 2.0 / 256
    q = (np.floor(x / step) + 0.5) * step  # mid-rise quantizer, 256 levels over [-1, 1]
    assert sqnr_db(x, q) == pytest.approx(20 * math.log10(256), abs=0.05)


def test_depthwise_output_channels_match_the_channels_first_layout() -> None:
    from archcompiler.ir.layouts import to_channels_first

    k = np.random.default_rng(1).normal(size=(3, 3, 4, 2))  # (kh, kw, C, M)
    cols = output_channels(k, "depthwise_kernel")
    first = to_channels_first(k, "depthwise_kernel")  # (C*M, 1, kh, kw), channel c*M + m
    assert cols.shape == (9, 8)
    for ch in range(8):
        assert sorted(cols[:, ch]) == pytest.approx(sorted(first[ch].ravel()))


def test_one_large_channel_ruins_the_others_with_one_scale_per_tensor() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(9, 16))
    w[:, 0] *= 100.0  # a dead channel's folded kernel
    per_tensor = channel_sqnr_db(w, int8_rounded(w, False))
    per_channel = channel_sqnr_db(w, int8_rounded(w, True))
    assert min(per_channel) > 35.0  # near-ideal 8-bit rounding everywhere
    assert min(per_tensor[1:]) < 15.0  # the live channels keep a few levels each
    assert sqnr_db(w, int8_rounded(w, False)) > 30.0  # the whole-tensor figure hides it


def test_constant_reference_output_is_called_degenerate() -> None:
    import archcompiler

    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10).graph
    same = {g.output: np.tile(np.linspace(0, 1, 10), (8, 1))}
    assert "hardly depends" in degenerate(g, same)
    one_class = {g.output: np.random.default_rng(0).uniform(0, 1, size=(8, 10)) + np.eye(10)[3] * 5}
    assert "same class" in degenerate(g, one_class)
    varied = {g.output: np.random.default_rng(0).normal(size=(8, 10))}
    assert degenerate(g, varied) == ""


def _fake_int8_per_tensor(kernel: np.ndarray) -> np.ndarray:
    """The test's own symmetric per-tensor int8 rounding (not the module's)."""
    scale = np.abs(kernel).max() / 127.0
    return np.clip(np.round(kernel / scale), -127, 127) * scale


@pytest.mark.onnx
def test_a_planted_bad_layer_is_named_worst() -> None:
    """Four channels of conv_dw_5 killed as training kills them (gamma x100, beta -1e4): folded
    into the kernel they are 100x the rest; every kernel rounded to int8 with one scale per
    tensor, run in onnxruntime: the report names conv_dw_5 as the layer that loses most, and
    its kernel as the one whose worst channel loses most."""
    import archcompiler
    from archcompiler import weights as W
    from archcompiler.analysis.optimize import optimize
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.runs import loaded_model

    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10).graph
    w = W.training_init(g, 0)
    w["conv_dw_5_bn.moving_variance"] = np.asarray(w["conv_dw_5_bn.moving_variance"]) * 0 + 1.0
    for c in range(4):
        w["conv_dw_5_bn.gamma"][c] *= 100.0
        w["conv_dw_5_bn.beta"][c] = -1e4
    opt = optimize(g, w)
    rounded = W.Weights(opt.weights)
    for name in rounded:
        if name.endswith(".kernel"):
            rounded[name] = _fake_int8_per_tensor(np.asarray(opt.weights[name], np.float64)).astype(np.float32)
    onnx = get_backend("onnx")
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 32, 32, 3)).astype(np.float32)
    names = [n.name for n in opt.graph.nodes]
    ref = onnx.run(opt.graph, loaded_model(onnx, opt.graph, opt.weights, "float32"), x, names)
    got = onnx.run(opt.graph, loaded_model(onnx, opt.graph, rounded, "float32"), x, names)
    report = quantization_report(opt.graph, "int8 weights", ref, got, folded=opt.weights)
    assert report.worst_layers(1)[0].node in ("conv_dw_5", "conv_dw_5_relu")
    assert report.worst_layers(1)[0].drop_db > 10.0
    assert report.worst_weights(1)[0].tensor == "conv_dw_5.kernel"
    text = report.text()
    assert "conv_dw_5" in text.split("largest drops:")[1].splitlines()[0]
    assert "not an equivalence verdict" in MEASURES and MEASURES in text
    # archc's initial weights are untrained: the float softmax is 1/10 whatever the input
    assert "untrained" in text and "hardly depends" in report.degenerate


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.tflite
def test_report_output_figures_match_litert_run_directly() -> None:
    """measure() on TFLite int8 against numpy on the same flatbuffer run with LiteRT directly
    (archc's run and dequantization not involved) and the torch float model's output."""
    from ai_edge_litert.interpreter import Interpreter

    import archcompiler
    from archcompiler import weights as W
    from archcompiler.calibration import load
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.quantization import measure

    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10, classifier_activation="none").graph
    w = W.init(g, 0)
    inputs = load("synthetic", g)
    report = measure(g, w, inputs, ["tflite-int8"], batch=len(inputs.held_out))[0]
    torch_b = get_backend("torch")
    from archcompiler.parity.runs import loaded_model

    ref = torch_b.run(g, loaded_model(torch_b, g, w, "float32"), inputs.held_out)[g.output].astype(np.float64)
    tfl = get_backend("tflite", quantize="int8", calibration=inputs)
    it = Interpreter(model_content=loaded_model(tfl, g, w, "float32").content(g))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(inputs.held_out.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], inputs.held_out)
    it.invoke()
    got = np.array(it.get_tensor(out["index"]), np.float64)  # float32 io: dequantized inside
    noise = np.sum((ref - got) ** 2)
    assert report.output_sqnr_db == pytest.approx(10 * np.log10(np.sum(ref**2) / noise), abs=1e-6)
    assert report.top1_agreement == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))
    assert report.output_max_abs_diff == pytest.approx(np.abs(ref - got).max(), rel=1e-6)
