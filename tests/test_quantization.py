"""archcompiler.quantization with numpy models as the runtimes: the report measures the logits
on the held-out inputs, says when the weights are an untrained init, and warns when the float
model's output does not vary (no framework needed)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SPEC

import archcompiler as a
from archcompiler import calibration, quantization
from archcompiler import weights as W


@pytest.fixture(scope="module")
def graph():
    return a.compile(SPEC, width=0.25, resolution=32, classes=10).graph


def test_weights_origin_tells_an_untrained_init_from_trained_weights(graph):
    init = W.training_init(graph, 3)
    assert quantization.weights_origin(graph, init) == quantization.UNTRAINED
    trained = dict(init, **{"conv1_bn.moving_mean": init["conv1_bn.moving_mean"] + 0.1})
    assert quantization.weights_origin(graph, trained) == quantization.TRAINED


def test_report_measures_logits_on_held_out_inputs(graph):
    """Runtimes are numpy: logits = a fixed projection of the input; the 'quantized' one adds
    noise of a known power, so the SQNR is known in advance (20 dB)."""
    inputs = calibration.load("synthetic", graph, samples=16)
    proj = np.random.default_rng(0).normal(size=(int(np.prod(graph.input_shape)), 10))
    seen: list[np.ndarray] = []

    def reference(x, names):
        assert names == ("fc",)  # the softmax's input, not the softmax
        seen.append(x)
        return {"fc": x.reshape(len(x), -1) @ proj}

    full = reference(inputs.held_out, ("fc",))["fc"]
    noise = np.random.default_rng(1).normal(size=full.shape)
    noise *= np.sqrt(np.sum(full**2) / np.sum(noise**2)) / 10  # 20 dB below the signal
    rows = {r.tobytes(): k for k, r in enumerate(inputs.held_out)}

    def quantized(x, names):
        idx = [rows[r.tobytes()] for r in x]
        return {"fc": full[idx] + noise[idx]}

    seen.clear()
    r = quantization.report(graph, reference, quantized, inputs, quantize="q", reference_name="f", weights="w", batch=4)
    assert np.array_equal(np.concatenate(seen), inputs.held_out)  # every held-out sample, no calibration one
    assert r["measured_on"] == ["fc"] and r["nodes"]["fc"]["sqnr_db"] == pytest.approx(20.0, abs=0.01)
    assert r["top1_agreement"] == pytest.approx(np.mean(full.argmax(1) == (full + noise).argmax(1)))
    assert "warning" not in r and r["inputs"]["source"] == "synthetic"


def test_report_warns_when_the_float_output_is_constant(graph):
    inputs = calibration.load("synthetic", graph, samples=16)

    def constant(x, names):
        return {"fc": np.full((len(x), 10), 0.1)}

    r = quantization.report(graph, constant, constant, inputs, quantize="q", reference_name="f", weights="w")
    assert r["nodes"]["fc"]["sqnr_db"] is None and "barely varies" in r["warning"]
