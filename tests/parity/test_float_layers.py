"""Layers an int8 build keeps in float (``float_layers``, ``--float-layers``).

The oracle is a planted defect whose cause is known: four depthwise channels of conv_dw_6 are
killed (BatchNorm beta -1e4: after ReLU they are exactly 0, in float and in int8), and the
weights that read those dead channels in the next pointwise conv are made 1000x the largest
live weight. They contribute nothing (0 x w), but they set every output channel's int8 scale,
so the live weights of conv_pw_6 round to zero and its output is mostly noise (SQNR near 0
dB; float values stay O(1)). Kept in float, conv_pw_6 computes its output from the int8 input
as the float model does: its SQNR returns to the int8 level of its input (30 dB and more). The
SQNR is recomputed here from the values the runtimes give, with numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SPEC, run

import archcompiler
from archcompiler.kit.registry import BackendError
from archcompiler.quantization import float_layers

SMALL = ("--width", "0.25", "--resolution", "32", "--classes", "10")


@pytest.fixture(scope="module")
def graph():
    return archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10).graph


def test_names_are_checked_against_the_graph(graph) -> None:
    assert float_layers(graph, None) == ()
    assert float_layers(graph, ["conv_pw_6", "conv1"]) == ("conv1", "conv_pw_6")  # graph order
    assert float_layers(graph, "conv1") == ("conv1",)
    with pytest.raises(BackendError, match=r"'conv_pw6' is no layer of 'mobilenet_v1' \(did you mean 'conv_pw_6'\?\)"):
        float_layers(graph, ["conv_pw6"])
    with pytest.raises(BackendError, match="model input"):
        float_layers(graph, ["input"])
    with pytest.raises(BackendError, match="expected layer names"):
        float_layers(graph, [3])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--quantize", "dynamic", "--float-layers", "conv1"), "--float-layers is for --quantize int8"),
        (("--quantize", "int8", "--calibration", "synthetic", "--float-layers", "conv_pw6"), "mean 'conv_pw_6'"),
        (("--quantize", "int8", "--calibration", "synthetic", "--io", "int8", "--float-layers", "conv1"), "--io int8"),
    ],
)
def test_bad_float_layers_are_one_line_before_any_build(capsys, tmp_path, argv, says) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "build", SPEC, *SMALL, "--backend", "tflite", "-o", str(out), *argv)
    assert code == 2 and stdout == ""
    assert says in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--backends", "torch,keras", "--float-layers", "conv1"), "--float-layers is for a quantization report"),
        (("--backends", "torch,keras", "--format", "json"), "--format json is for a quantization report"),
        (("--backends", "torch,onnx-int8", "--calibration", "synthetic", "--float-layers", "nosuch"), "no layer"),
    ],
)
def test_bad_report_options_are_one_line(capsys, argv, says) -> None:
    code, out, err = run(capsys, "parity", SPEC, *SMALL, *argv)
    assert code == 2 and out == ""
    assert says in err and err.count("\n") == 1, err


def planted(graph):
    """archc's init with the defect of the module docstring planted in conv_pw_6."""
    from archcompiler import weights as W

    w = W.init(graph, 0)
    for c in range(4):
        w["conv_dw_6_bn.beta"][c] = -1e4
    kernel = np.asarray(w["conv_pw_6.kernel"]).copy()  # (1, 1, in, out)
    kernel[:, :, :4, :] = 1000.0 * np.abs(kernel).max()
    w["conv_pw_6.kernel"] = kernel
    return w


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def conv_pw_6_sqnr(runtime: str, floats: list[str]) -> tuple[float, float, dict]:
    """(SQNR of conv_pw_6's ReLU in the int8 runtime, of its input conv_dw_6_relu, the JSON
    report with ``floats`` kept in float, else {}) from the values the runtime gives and the
    float model's (torch)."""
    from archcompiler import weights as W
    from archcompiler.calibration import load
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.quantization import measure
    from archcompiler.parity.runs import loaded_model

    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10, classifier_activation="none").graph
    w = planted(g)
    inputs = load("synthetic", g, samples=32)
    names = ["conv_dw_6_relu", "conv_pw_6_relu"]
    torch_b = get_backend("torch")
    ref = torch_b.run(g, loaded_model(torch_b, g, w, "float32"), inputs.held_out, names)
    assert np.all(ref["conv_dw_6_relu"][..., :4] == 0.0)  # the dead channels
    options = {"float_layers": floats} if floats else {}
    backend = get_backend(runtime.removesuffix("-int8"), quantize="int8", calibration=inputs, **options)
    run_q, exposed = backend.quantized_runner(g, loaded_model(backend, g, W.Weights(w), "float32"))
    assert set(names) <= exposed
    got = run_q(inputs.held_out, names)
    report = measure(g, w, inputs, [runtime], float_layers=floats)[0].to_json() if floats else {}
    layer, its_input = (sqnr(ref[n], got[n]) for n in ("conv_pw_6_relu", "conv_dw_6_relu"))
    return layer, its_input, report


def _check_float_layer_recovers(runtime: str) -> None:
    bad, before, _ = conv_pw_6_sqnr(runtime, [])
    assert before > 30.0  # its input is an ordinary int8 tensor
    assert bad < 6.0, bad  # the live weights rounded to zero: mostly noise
    good, before_kept, kept = conv_pw_6_sqnr(runtime, ["conv_pw_6"])
    assert good > 30.0 and good > bad + 25.0, (bad, good)
    assert abs(before_kept - before) < 0.5  # the layers before it are quantized as before
    assert kept["float_layers"] == ["conv_pw_6"] and "kept in float: conv_pw_6" in kept["notes"]
    assert "conv_pw_6_relu" not in kept["worst_layers"][:1]
    row = {r["node"]: r for r in kept["layers"]}["conv_pw_6_relu"]
    assert row["sqnr_db"] == pytest.approx(good, abs=1e-6)  # the report measures what the runtime gives


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.torch
def test_onnx_float_layer_recovers_the_planted_layer() -> None:
    _check_float_layer_recovers("onnx-int8")


@pytest.mark.slow
@pytest.mark.tflite
@pytest.mark.keras
@pytest.mark.torch
def test_tflite_float_layer_recovers_the_planted_layer() -> None:
    _check_float_layer_recovers("tflite-int8")


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.torch
def test_report_json_is_one_object_per_runtime(capsys) -> None:
    argv = ("--backends", "torch,onnx-int8", "--calibration", "synthetic", "--float-layers", "conv_pw_6")
    code, out, _ = run(capsys, "parity", SPEC, *SMALL, *argv, "--format", "json")
    assert code == 0
    (report,) = json.loads(out)
    assert report["runtime"] == "onnx-int8" and report["reference"] == "torch float32"
    assert report["float_layers"] == ["conv_pw_6"]
    assert {"layers", "weights", "top1_agreement", "output_sqnr_db", "degenerate", "measures"} <= set(report)
    assert "untrained" in " ".join(report["notes"]) and report["degenerate"]


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.tflite
@pytest.mark.keras
def test_build_gives_the_int8_tflite_model_and_refuses_onnx(tmp_path) -> None:
    """build(..., quantize="int8") in TFLite: an int8 flatbuffer whose output follows the float
    model's (LiteRT on both, same weights; SQNR as the int8 grid bounds it); ONNX quantizes only
    when it saves, and says so."""
    from ai_edge_litert.interpreter import Interpreter

    from archcompiler.calibration import load

    net = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10)
    inputs = load("synthetic", net.graph, samples=32)
    with pytest.raises(BackendError, match=r"onnx: build\(\) gives the float model .* use build_to"):
        net.build("onnx", quantize="int8", calibration=inputs)
    x = inputs.held_out[:8]
    outs = {}
    built = {"float": net.build("tflite"), "int8": net.build("tflite", quantize="int8", calibration=inputs)}
    for kind, model in built.items():
        it = Interpreter(model_content=model.content(net.graph))
        runner = it.get_signature_runner()
        (key,) = runner.get_input_details()
        outs[kind] = runner(**{key: x})["output_0"].astype(np.float64)
        assert any(d["dtype"] == np.int8 for d in it.get_tensor_details()) == (kind == "int8")
    noise = np.sum((outs["float"] - outs["int8"]) ** 2)
    assert noise > 0 and 10 * np.log10(np.sum(outs["float"] ** 2) / noise) > 12.0
