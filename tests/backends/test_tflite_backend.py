"""The TFLite backend against outside oracles: archc's torch backend for whole networks,
numpy formulas for single ops, LiteRT (or tf.lite) as the runtime.

Expected values are computed here from the canonical weights, never read from the backend.
Each conversion costs seconds, so the fast tier converts few models and reuses them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import calibration, ir, quantization
from archcompiler import weights as W
from archcompiler.kit.registry import BackendError, get_backend
from archcompiler.parity.inference import parity
from archcompiler.tools.cli import main

torch = framework("torch")
framework("tensorflow")

pytestmark = [pytest.mark.keras, pytest.mark.tflite]

REPO = Path(__file__).resolve().parents[2]
PAPER = str(REPO / "specs/mobilenet.yaml")
KERAS = str(REPO / "specs/mobilenet_keras.yaml")


@pytest.fixture(scope="module")
def backend():
    return get_backend("tflite")


@pytest.fixture(scope="module")
def torch_backend():
    return get_backend("torch")


def lowered(spec: str, width: float, resolution: int) -> ir.Graph:
    return a.lower(a.load(spec), width=width, resolution=resolution)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def litert_run(path: Path, x: np.ndarray) -> np.ndarray:
    """The saved file in a bare interpreter: no archc involved."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_path=str(path))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def torch_outputs(torch_backend, g: ir.Graph, wts: W.Weights, x: np.ndarray) -> dict[str, np.ndarray]:
    tm = torch_backend.build(g)
    torch_backend.set_weights(g, tm, wts)
    return torch_backend.run(g, tm, x, [n.name for n in g.nodes])


# ---------------------------------------------------------------------------------------------
# single ops against numpy: one small graph, one conversion


def np_conv(x: np.ndarray, k: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = k.shape[:2]
    oh, ow = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, k.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum(
                "nhwc,co->nhwo", xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride], k[i, j]
            )
    return out


def np_depthwise(x: np.ndarray, k: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Stride 1; output channel c*M + m is input channel c filtered by k[:, :, c, m]."""
    top, bottom, left, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, c, m = k.shape
    oh, ow = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], oh, ow, c, m))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i : i + oh, j : j + ow, :, None] * k[i, j]
    return out.reshape(x.shape[0], oh, ow, c * m)


@pytest.fixture(scope="module")
def chain():
    """rescaling -> conv (asymmetric pads, stride 2) -> depthwise (multiplier 2) ->
    hard_sigmoid -> concat with the depthwise output -> flatten -> dense, with weights and
    the numpy value of every node."""
    nodes = (
        ir.Input(name="x", inputs=(), shape=(9, 8, 3)),
        ir.Rescaling(name="scaled", inputs=("x",), shape=(9, 8, 3), scale=0.5, offset=-0.25),
        ir.Conv2D(
            name="conv", inputs=("scaled",), shape=(5, 4, 4), in_channels=3, filters=4, kernel=(3, 3),
            stride=(2, 2), padding=(0, 2, 1, 0), use_bias=True,
        ),
        ir.DepthwiseConv2D(
            name="dw", inputs=("conv",), shape=(5, 3, 8), in_channels=4, multiplier=2, kernel=(3, 3),
            stride=(1, 1), padding=(1, 1, 0, 1), use_bias=True,
        ),
        ir.Activation(name="act", inputs=("dw",), shape=(5, 3, 8), kind="hard_sigmoid"),
        ir.Concat(name="cat", inputs=("act", "dw"), shape=(5, 3, 16)),
        ir.Flatten(name="flat", inputs=("cat",), shape=(240,)),
        ir.Dense(name="fc", inputs=("flat",), shape=(6,), in_features=240, units=6),  # >= 1024 weights
    )  # fmt: skip
    g = ir.Graph(name="chain", nodes=nodes, outputs=("fc",), width=1.0, resolution=(9, 8))
    w = W.init(g, seed=4)
    x = rand(2, 9, 8, 3, seed=5)
    return g, w, x, numpy_chain(w, x)


def numpy_chain(w: W.Weights, x: np.ndarray) -> dict[str, np.ndarray]:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    ref = {"x": x.astype(np.float64)}
    ref["scaled"] = ref["x"] * 0.5 - 0.25
    ref["conv"] = np_conv(ref["scaled"], w["conv.kernel"], 2, (0, 2, 1, 0)) + w["conv.bias"]
    ref["dw"] = np_depthwise(ref["conv"], w["dw.kernel"], (1, 1, 0, 1)) + w["dw.bias"]
    ref["act"] = np.clip(ref["dw"] + 3, 0, 6) / 6  # PyTorch's hardsigmoid, not Keras 2's 0.2x + 0.5
    ref["cat"] = np.concatenate([ref["act"], ref["dw"]], axis=-1)
    ref["flat"] = ref["cat"].reshape(len(x), -1)  # (H, W, C) order
    ref["fc"] = ref["flat"] @ w["fc.kernel"] + w["fc.bias"]
    return ref


def test_single_ops_match_numpy(backend, chain):
    g, w, x, ref = chain
    model = backend.build(g)
    backend.verify(g, model)
    backend.set_weights(g, model, w)
    exposed = backend.exposed(g, model)
    # the depthwise conv may be fused with hard_sigmoid's "+3"; act still depends on its channel order
    assert {"x", "conv", "act", "cat", "flat", "fc"} <= exposed
    got = backend.run(g, model, x, [n for n in ref if n in exposed])
    for name, value in got.items():
        np.testing.assert_allclose(value, ref[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", ["float16", "dynamic"])
def test_quantization_deviation_is_measured_and_written(chain, mode, tmp_path):
    from archcompiler.backends.tflite import TfliteBackend

    g, w, _, _ = chain
    q = TfliteBackend(quantize=mode)
    model = q.build(g)
    q.set_weights(g, model, w)
    paths = q.save(g, model, tmp_path)
    assert [p.name for p in paths] == ["chain.tflite", "chain.quantization.json"]
    report = json.loads(paths[1].read_text())
    assert report["quantize"] == mode and report["measured_on"] == ["fc"]
    assert report["weights"] == quantization.TRAINED  # W.init(seed=4): biases not zero
    # measured on the held-out synthetic inputs the report names: the saved file, run bare,
    # is that far from numpy's float64 there
    xq = calibration.held_out_only(g).held_out
    assert report["inputs"]["held_out_samples"] == len(xq) and report["inputs"]["source"] == "synthetic"
    exact = numpy_chain(w, xq)["fc"]
    measured = float(np.abs(litert_run(paths[0], xq) - exact).max())
    assert measured > 1e-4  # reduced precision is visible, not hidden
    assert report["nodes"]["fc"]["max_abs_diff"] == pytest.approx(measured, rel=0.05, abs=1e-5)
    assert report["size_bytes"][mode] < report["size_bytes"]["float32"]


def test_int8_is_full_integer_per_channel_any_batch_and_reported(chain, tmp_path):
    """One int8 conversion (int8 input and output): every op computes in int8, conv and
    depthwise weights have one scale per output channel, the signature keeps a dynamic batch
    (1, 3 and 8 rows equal the rows run alone), and the report's figures are what the saved
    file, run bare, gives against numpy's float64 on the held-out inputs."""
    from archcompiler.backends.tflite import TfliteBackend

    g, w, _, _ = chain
    inputs = calibration.load("synthetic", g, samples=32)
    q = TfliteBackend(quantize="int8", calibration=inputs, io="int8")
    model = q.build(g)
    q.set_weights(g, model, w)
    paths = q.save(g, model, tmp_path)
    report = json.loads(paths[1].read_text())
    it = bare_interpreter(paths[0], no_delegate=True)
    details = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    for op in ops:  # int32 only for biases (and shapes); no float anywhere
        dtypes = {np.dtype(details[i]["dtype"]).name for i in op["inputs"] if i >= 0}
        assert dtypes <= {"int8", "int32"}, (op["op_name"], dtypes)
    kernels = [(op, details[op["inputs"][1]]) for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(kernels) == 2
    for op, k in kernels:
        axis = k["quantization_parameters"]["quantized_dimension"]
        assert len(k["quantization_parameters"]["scales"]) == k["shape"][axis] > 1, op["op_name"]
    runner = bare_interpreter(paths[0]).get_signature_runner()
    ((name, detail),) = runner.get_input_details().items()
    assert name == "x" and np.dtype(detail["dtype"]) == np.int8  # the input node's name
    x = inputs.held_out
    scale, zero = detail["quantization"]
    xi = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    alone = np.concatenate([runner(x=xi[i : i + 1])["output_0"] for i in range(8)])
    for n in (1, 3, 8):
        np.testing.assert_array_equal(runner(x=xi[:n])["output_0"], alone[:n])
    out = runner(x=xi)["output_0"]
    oscale, ozero = runner.get_output_details()["output_0"]["quantization"]
    got = (out.astype(np.float64) - ozero) * oscale
    exact = numpy_chain(w, x)["fc"]
    sqnr = 10 * np.log10(np.sum(exact**2) / np.sum((exact - got) ** 2))
    assert sqnr > 25  # int8 is close to float, and the report says how close
    assert report["nodes"]["fc"]["sqnr_db"] == pytest.approx(sqnr, abs=0.1)
    assert report["top1_agreement"] == pytest.approx(np.mean(got.argmax(1) == exact.argmax(1)))
    assert report["inputs"]["calibration_samples"] == 32 and report["inputs"]["note"].startswith("synthetic")


def bare_interpreter(path: Path, *, no_delegate: bool = False):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if no_delegate else {}
    it = Interpreter(model_path=str(path), **kw)
    it.allocate_tensors()
    return it


def test_unknown_quantize_mode_is_refused():
    from archcompiler.backends.tflite import TfliteBackend

    with pytest.raises(BackendError, match="float16, dynamic, int8"):
        TfliteBackend(quantize="int4")


def test_missing_extra_is_a_one_line_error_naming_it():
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from archcompiler.kit.registry import get_backend, BackendError\n"
        "try:\n    get_backend('tflite')\nexcept BackendError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "backend 'tflite' needs a package that is not installed (tensorflow); pip install 'archc[tflite]'"


# ---------------------------------------------------------------------------------------------
# whole networks against torch


@pytest.mark.slow
def test_mobilenet_quarter_width_64px_parity_with_torch():
    g = lowered(PAPER, 0.25, 64)
    rep = parity(g, ["torch", "tflite"])
    assert rep.ok, rep.first_failure
    assert rep.diff(g.output).max_abs <= 1e-5 and rep.diff(rep.logits).max_abs <= 1e-5
    skipped = set(rep.skipped["tflite"])
    # conv + BN are fused into one TFLite op whose tensor is the ReLU's: those are compared
    assert {"conv1", "conv1_bn", "conv_pw_13_bn"} <= skipped
    relus = {n.name for n in g.nodes if n.op == "activation"}
    assert not relus & skipped and not {"avg_pool", "fc", "predictions"} & skipped
    # the report lists every node TFLite could not expose, and names the pair at the others
    text = rep.table()
    head = text.split("\n\n")[0]
    listed = head.split("(compared without it): ")[1].replace("\n", " ").split(",")
    assert [n.strip() for n in listed] == list(rep.skipped["tflite"])
    assert f"tflite does not expose {len(skipped)} of the {len(g.nodes)} nodes" in head
    assert any(line.startswith("avg_pool ") and "tflite vs torch" in line for line in text.splitlines())


@pytest.mark.slow
def test_fused_node_is_refused_not_guessed(backend):
    g = lowered(PAPER, 0.25, 32)
    model = backend.build(g)
    with pytest.raises(BackendError, match=r"no tensor for node .conv1_bn.*fused"):
        backend.run(g, model, rand(1, 32, 32, 3), ["conv1_relu", "conv1_bn"])


@pytest.mark.slow
def test_torch_weights_to_tflite_file_through_the_cli(torch_backend, tmp_path, capsys):
    """The flow users ask for: PyTorch weights -> portable .npz -> archc build --backend tflite."""
    g = lowered(PAPER, 0.25, 64)
    tm = torch_backend.build(g)
    with torch.no_grad():  # PyTorch's own initialisation, with non-trivial BN statistics
        torch.manual_seed(0)
        for mod in tm.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    npz = tmp_path / "from_torch.npz"
    W.save(torch_backend.get_weights(g, tm), npz)
    out = tmp_path / "tflite_out"
    argv = ["build", PAPER, "--backend", "tflite", "--width", "0.25", "--resolution", "64"]
    assert main([*argv, "--weights", str(npz), "-o", str(out)]) == 0
    assert "verified against the IR" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        ".archc-build",
        ".archc-lock",
        "mobilenet_v1.tflite",
        "mobilenet_v1.weights.npz",
    ]
    x = rand(4, 64, 64, 3, seed=9)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(litert_run(out / "mobilenet_v1.tflite", x) - ref).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("spec", [PAPER, KERAS], ids=["paper", "keras"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("resolution", [224, 128, 199])
def test_grid_matches_torch(backend, torch_backend, spec, width, resolution):
    g = lowered(spec, width, resolution)
    wts = W.init(g, seed=1)
    x = rand(2, *g.input_shape, seed=1)
    ref = torch_outputs(torch_backend, g, wts, x)
    model = backend.build(g)
    backend.verify(g, model)
    backend.set_weights(g, model, wts)
    exposed = [n.name for n in g.nodes if n.name in backend.exposed(g, model)]
    got = backend.run(g, model, x, exposed)
    for n in exposed:
        d = float(np.abs(got[n] - ref[n]).max())
        assert d <= 1e-5 * max(1.0, float(np.abs(ref[n]).max())), (n, d)
    assert np.abs(backend.run(g, model, x)[g.output] - ref[g.output]).max() <= 1e-5
