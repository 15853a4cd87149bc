"""The ONNX backend against outside oracles: numpy formulas for single ops, archc's torch
backend for whole networks, onnxruntime as the runtime, onnx.checker for the file itself.

Expected values are computed here from the canonical weights, never read from the backend.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.kit.registry import BackendError, UnsupportedOpError, get_backend
from archcompiler.tools.cli import main
from archcompiler.weights import WeightError

onnx = framework("onnx")
ort = framework("onnxruntime")

pytestmark = pytest.mark.onnx

REPO = Path(__file__).resolve().parents[2]
PAPER = str(REPO / "specs/mobilenet.yaml")
KERAS = str(REPO / "specs/mobilenet_keras.yaml")


@pytest.fixture(scope="module")
def backend():
    return get_backend("onnx")


@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    return get_backend("torch")


def lowered(spec: str, width: float, resolution: int) -> ir.Graph:
    return a.lower(a.load(spec), width=width, resolution=resolution)


def graph_of(*nodes: ir.Node, name: str = "tiny") -> ir.Graph:
    shape = nodes[0].shape
    return ir.Graph(name=name, nodes=nodes, outputs=(nodes[-1].name,), width=1.0, resolution=shape[:2])


def run_onnx(backend, g: ir.Graph, x: np.ndarray, outputs=None, seed: int = 3):
    """Build, verify, load weights.init(seed), run; return (outputs, weights)."""
    model = backend.build(g)
    backend.verify(g, model)
    wts = W.init(g, seed=seed)
    backend.set_weights(g, model, wts)
    return backend.run(g, model, x, outputs), wts


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# numpy references (NHWC, canonical kernels)


def np_conv(x: np.ndarray, k: np.ndarray, stride: tuple[int, int], pad: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = k.shape[:2]
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], oh, ow, k.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + stride[0] * oh : stride[0], j : j + stride[1] * ow : stride[1], :]
            out += np.einsum("nhwc,co->nhwo", patch, k[i, j])
    return out


def np_depthwise(x: np.ndarray, k: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Output channel c*M + m is input channel c filtered by k[:, :, c, m] (Keras' order)."""
    top, bottom, left, right = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, c, m = k.shape
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, c, m))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += patch[..., None] * k[i, j]
    return out.reshape(x.shape[0], oh, ow, c * m)


ACTIVATIONS = {
    # PyTorch's formulas (the IR's meaning of each kind), written out independently.
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "swish": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) / 2,  # exact, not tanh's
}


# ---------------------------------------------------------------------------------------------
# the handler table and the model file


def test_every_ir_op_has_a_handler(backend):
    assert set(backend.handlers) == set(ir.IR_OPS)


def test_an_op_without_handler_is_a_named_error():
    from archcompiler.backends.onnx import OnnxBackend

    class NoSoftmax(OnnxBackend):
        handlers: ClassVar = {k: v for k, v in OnnxBackend.handlers.items() if k != "softmax"}

    g = lowered(PAPER, 0.25, 32)
    with pytest.raises(UnsupportedOpError, match=r"'onnx' cannot express softmax at node 'predictions'"):
        NoSoftmax().build(g)


def test_model_is_valid_onnx_with_named_dynamic_io(backend):
    g = lowered(PAPER, 0.25, 64)
    model = backend.build(g)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("input", ["batch", 3, 64, 64])
    assert (out.name, dims(out)) == ("output", ["batch", 1000])
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # any batch size runs
    for n in (1, 3):
        assert backend.run(g, model, rand(n, 64, 64, 3))[g.output].shape == (n, 1000)


def test_backend_imports_neither_torch_nor_tensorflow():
    code = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import archcompiler as a
        from archcompiler.kit.registry import get_backend
        g = a.lower(a.load({PAPER!r}), width=0.25, resolution=32)
        b = get_backend("onnx")
        m = b.build(g)
        b.verify(g, m)
        b.run(g, m, np.zeros((1, 32, 32, 3), np.float32))
        print(json.dumps(sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "tensorflow", "keras", "jax"))))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_missing_extra_is_a_one_line_error_naming_it():
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from archcompiler.kit.registry import get_backend, BackendError\n"
        "try:\n    get_backend('onnx')\nexcept BackendError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "backend 'onnx' needs a package that is not installed (onnxruntime); pip install 'archc[onnx]'"


# ---------------------------------------------------------------------------------------------
# single ops against numpy


def test_conv_with_asymmetric_pads_matches_numpy(backend):
    conv = ir.Conv2D(
        name="conv",
        inputs=("x",),
        shape=(4, 4, 5),
        in_channels=3,
        filters=5,
        kernel=(3, 2),
        stride=(2, 2),
        padding=(0, 2, 1, 0),  # top, bottom, left, right: ONNX pads would be [0, 1, 2, 0]
        use_bias=True,
    )
    g = graph_of(ir.Input(name="x", inputs=(), shape=(7, 7, 3)), conv)
    x = rand(2, 7, 7, 3, seed=1)
    got, wts = run_onnx(backend, g, x)
    ref = np_conv(x, wts["conv.kernel"], (2, 2), conv.padding) + wts["conv.bias"]
    np.testing.assert_allclose(got["conv"], ref, atol=1e-5)


def test_grouped_conv_matches_numpy_per_group(backend):
    conv = ir.Conv2D(
        name="conv", inputs=("x",), shape=(5, 5, 6), in_channels=4, filters=6, kernel=(3, 3),
        stride=(1, 1), padding=(1, 1, 1, 1), groups=2,
    )  # fmt: skip
    g = graph_of(ir.Input(name="x", inputs=(), shape=(5, 5, 4)), conv)
    x = rand(2, 5, 5, 4, seed=2)
    got, wts = run_onnx(backend, g, x)
    k = wts["conv.kernel"]  # (3, 3, 2, 6): group g reads channels 2g..2g+1, writes 3g..3g+2
    ref = np.concatenate(
        [np_conv(x[..., 2 * i : 2 * i + 2], k[..., 3 * i : 3 * i + 3], (1, 1), (1,) * 4) for i in (0, 1)], -1
    )
    np.testing.assert_allclose(got["conv"], ref, atol=1e-5)


def test_depthwise_multiplier_2_channel_order_matches_numpy(backend):
    dw = ir.DepthwiseConv2D(
        name="dw", inputs=("x",), shape=(4, 3, 6), in_channels=3, multiplier=2, kernel=(3, 3),
        stride=(2, 2), padding=(1, 1, 0, 1), use_bias=True,
    )  # fmt: skip
    g = graph_of(ir.Input(name="x", inputs=(), shape=(7, 6, 3)), dw)
    x = rand(3, 7, 6, 3, seed=2)
    got, wts = run_onnx(backend, g, x)
    ref = np_depthwise(x, wts["dw.kernel"], 2, dw.padding) + wts["dw.bias"]
    np.testing.assert_allclose(got["dw"], ref, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_activation_matches_numpy_formula(backend, kind):
    g = graph_of(
        ir.Input(name="x", inputs=(), shape=(4, 5, 3)),
        ir.Activation(name="act", inputs=("x",), shape=(4, 5, 3), kind=kind),
    )
    x = np.linspace(-8, 8, 2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)  # crosses every kink
    got, _ = run_onnx(backend, g, x)
    np.testing.assert_allclose(got["act"], ACTIVATIONS[kind](x.astype(np.float64)), atol=1e-6)


def test_flatten_is_hwc_order_so_dense_weights_match(backend):
    g = graph_of(
        ir.Input(name="x", inputs=(), shape=(2, 3, 4)),
        ir.Flatten(name="flat", inputs=("x",), shape=(24,)),
        ir.Dense(name="fc", inputs=("flat",), shape=(5,), in_features=24, units=5),
    )
    x = rand(2, 2, 3, 4, seed=4)
    got, wts = run_onnx(backend, g, x, ["flat", "fc"])
    np.testing.assert_array_equal(got["flat"], x.reshape(2, -1))
    np.testing.assert_allclose(got["fc"], x.reshape(2, -1) @ wts["fc.kernel"] + wts["fc.bias"], atol=1e-5)


@pytest.mark.parametrize(("center", "scale"), [(True, True), (False, False)])
def test_batchnorm_uses_ir_epsilon_and_moving_statistics(backend, center, scale):
    bn = ir.BatchNorm(
        name="bn", inputs=("x",), shape=(3, 4, 5), channels=5, epsilon=0.25, decay=0.9,
        variance_update="biased", center=center, scale=scale,
    )  # fmt: skip
    g = graph_of(ir.Input(name="x", inputs=(), shape=(3, 4, 5)), bn)
    x = rand(2, 3, 4, 5, seed=5)
    got, w = run_onnx(backend, g, x)
    y = (x - w["bn.moving_mean"]) / np.sqrt(w["bn.moving_variance"] + 0.25)  # a large eps shows if it is ignored
    y = y * w.get("bn.gamma", 1.0) + w.get("bn.beta", 0.0)
    np.testing.assert_allclose(got["bn"], y, atol=1e-5)


def test_pad_pool_softmax_add_multiply_match_numpy(backend):
    x_node = ir.Input(name="x", inputs=(), shape=(6, 5, 3))
    nodes = (
        x_node,
        ir.ZeroPad2D(name="pad", inputs=("x",), shape=(9, 7, 3), padding=(1, 2, 0, 2)),
        ir.Pool2D(name="avg", inputs=("pad",), shape=(4, 3, 3), kind="avg", kernel=(3, 3), stride=(2, 2)),
        ir.Pool2D(name="max", inputs=("pad",), shape=(4, 3, 3), kind="max", kernel=(3, 3), stride=(2, 2)),
        ir.Add(name="sum", inputs=("avg", "max", "avg"), shape=(4, 3, 3)),
        ir.GlobalPool(name="gap", inputs=("sum",), shape=(1, 1, 3), kind="avg", keepdims=True),
        ir.Multiply(name="scaled", inputs=("sum", "gap"), shape=(4, 3, 3)),
        ir.Dropout(name="drop", inputs=("scaled",), shape=(4, 3, 3), rate=0.5),
        ir.Softmax(name="soft", inputs=("drop",), shape=(4, 3, 3)),
        ir.GlobalPool(name="gmp", inputs=("soft",), shape=(3,), kind="max"),
    )
    g = graph_of(*nodes)
    x = rand(2, 6, 5, 3, seed=6).astype(np.float64)
    got, _ = run_onnx(backend, g, x.astype(np.float32), [n.name for n in nodes])
    pad = np.pad(x, ((0, 0), (1, 2), (0, 2), (0, 0)))
    win = np.stack([pad[:, i : i + 7 : 2, j : j + 5 : 2] for i in range(3) for j in range(3)])
    avg, mx = win.mean(0), win.max(0)
    s = 2 * avg + mx
    scaled = s * s.mean(axis=(1, 2), keepdims=True)
    e = np.exp(scaled - scaled.max(-1, keepdims=True))
    soft = e / e.sum(-1, keepdims=True)
    for name, ref in [("pad", pad), ("avg", avg), ("max", mx), ("sum", s), ("scaled", scaled), ("drop", scaled),
                      ("soft", soft), ("gmp", soft.max(axis=(1, 2)))]:  # fmt: skip
        np.testing.assert_allclose(got[name], ref, atol=1e-5, err_msg=name)
    assert got["gap"].shape == (2, 1, 1, 3)


@pytest.mark.parametrize("offset", [-1.0, 0.0])
def test_rescaling_and_concat_match_numpy(backend, offset):
    nodes = (
        ir.Input(name="x", inputs=(), shape=(3, 4, 2)),
        ir.Rescaling(name="scaled", inputs=("x",), shape=(3, 4, 2), scale=1 / 127.5, offset=offset),
        ir.Activation(name="act", inputs=("scaled",), shape=(3, 4, 2), kind="relu"),
        ir.Concat(name="cat", inputs=("act", "x", "scaled"), shape=(3, 4, 6)),
        ir.GlobalPool(name="gap", inputs=("cat",), shape=(6,), kind="avg"),
        ir.Concat(name="vec", inputs=("gap", "gap"), shape=(12,)),
    )
    g = graph_of(*nodes)
    x = (rand(2, 3, 4, 2, seed=12) * 128).astype(np.float32)
    got, _ = run_onnx(backend, g, x, [n.name for n in nodes])
    scaled = x * np.float32(1 / 127.5) + np.float32(offset)  # float32, as Keras computes it
    cat = np.concatenate([np.maximum(scaled, 0), x, scaled], axis=-1)  # channels, in input order
    np.testing.assert_allclose(got["scaled"], scaled, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["cat"], cat, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["vec"], np.concatenate([cat.mean((1, 2))] * 2, -1), rtol=1e-5, atol=1e-5)


def test_nhwc_input_option_gives_the_same_model(backend):
    from archcompiler.backends.onnx import OnnxBackend

    g = lowered(PAPER, 0.25, 32)
    nhwc = OnnxBackend(nhwc_input=True)
    m1, m2 = backend.build(g), nhwc.build(g)
    nhwc.verify(g, m2)
    assert [d.dim_value or d.dim_param for d in m2.graph.input[0].type.tensor_type.shape.dim] == ["batch", 32, 32, 3]
    x = rand(2, 32, 32, 3, seed=7)
    names = [n.name for n in g.nodes]
    r1, r2 = backend.run(g, m1, x, names), nhwc.run(g, m2, x, names)
    for n in names:
        np.testing.assert_allclose(r2[n], r1[n], atol=1e-6, err_msg=n)
    # and the file itself takes NHWC: plain onnxruntime, no archc
    sess = ort.InferenceSession(m2.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["output"], {"input": x})[0], r1[g.output], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# verify, weights, save


def test_verify_names_a_node_with_the_wrong_shape(backend):
    g = lowered(PAPER, 0.25, 32)
    model = backend.build(g)
    conv = next(n for n in model.graph.node if n.name == "conv_pw_3")
    for attr in conv.attribute:
        if attr.name == "strides":
            attr.ints[:] = [2, 2]
    with pytest.raises(BackendError, match="node 'conv_pw_3'"):
        backend.verify(g, model)


def test_verify_counts_parameters_per_node(backend):
    g = lowered(PAPER, 0.25, 32)
    model = backend.build(g)
    extra = onnx.numpy_helper.from_array(np.zeros(3, np.float32), "stray")
    model.graph.initializer.append(extra)
    with pytest.raises(BackendError, match="'stray' is read by no node"):
        backend.verify(g, model)
    model = backend.build(g)
    conv = next(n for n in model.graph.node if n.name == "conv1")  # a bias the IR does not have
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(8, np.float32), "conv1.bias"))
    conv.input.append("conv1.bias")
    with pytest.raises(BackendError, match=r"node 'conv1' \(conv2d\): onnx has 224 trainable / 0 non-.* says 216 / 0"):
        backend.verify(g, model)


def test_weights_round_trip_and_shape_errors(backend):
    g = lowered(KERAS, 0.25, 32)
    model = backend.build(g)
    wts = W.init(g, seed=11)
    backend.set_weights(g, model, wts)
    back = backend.get_weights(g, model)
    assert list(back) == list(wts)
    for k in wts:
        np.testing.assert_array_equal(back[k], wts[k], err_msg=k)
    bad = dict(wts)
    bad["conv1.kernel"] = bad["conv1.kernel"][..., :-1]
    with pytest.raises(WeightError, match=r"conv1\.kernel"):
        backend.set_weights(g, model, bad)
    np.testing.assert_array_equal(backend.get_weights(g, model)["conv1.kernel"], wts["conv1.kernel"])


def test_save_is_atomic_and_loads_without_archc(backend, tmp_path, monkeypatch):
    g = lowered(PAPER, 0.25, 32)
    model = backend.build(g)
    (path,) = backend.save(g, model, tmp_path / "out")
    assert path.name == "mobilenet_v1.onnx"
    x = rand(2, 32, 32, 3, seed=8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        sess.run(["output"], {"input": x.transpose(0, 3, 1, 2)})[0], backend.run(g, model, x)[g.output], atol=1e-6
    )

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("onnx.save_model", boom)
    with pytest.raises(BackendError, match="disk full"):
        backend.save(g, model, tmp_path / "failed")
    assert list((tmp_path / "failed").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# whole networks against the torch backend


def compare_with_torch(backend, torch_backend, g: ir.Graph, seed: int = 0) -> tuple[float, float]:
    """Same canonical weights and input in both; returns (worst node, output) max abs diff,
    asserting each node within 1e-5 of torch, scaled by the node's magnitude (float32)."""
    wts = W.init(g, seed=seed)
    x = rand(2, *g.input_shape, seed=seed)
    names = [n.name for n in g.nodes]
    tm = torch_backend.build(g)
    torch_backend.set_weights(g, tm, wts)
    ref = torch_backend.run(g, tm, x, names)
    om = backend.build(g)
    backend.verify(g, om)
    backend.set_weights(g, om, wts)
    got = backend.run(g, om, x, names)
    worst = 0.0
    for n in names:
        assert got[n].shape == ref[n].shape, n
        d = float(np.abs(got[n] - ref[n]).max())
        assert d <= 1e-5 * max(1.0, float(np.abs(ref[n]).max())), (n, d)
        worst = max(worst, d)
    out = float(np.abs(backend.run(g, om, x)[g.output] - ref[g.output]).max())  # output-only (fused) session
    assert out <= 1e-5
    return worst, out


def test_mobilenet_quarter_width_64px_matches_torch(backend, torch_backend):
    compare_with_torch(backend, torch_backend, lowered(PAPER, 0.25, 64))


def test_parity_runs_onnx_on_every_node(torch_backend):
    from archcompiler.parity.inference import parity

    rep = parity(lowered(KERAS, 0.25, 64), ["torch", "onnx"])
    assert rep.ok and rep.skipped == {}
    assert rep.diff(rep.logits).max_abs <= 1e-5
    # the report names the pair compared, what each node was judged against and its bound
    text = rep.table()
    assert len(repr(rep)) <= 400 and repr(rep).startswith("<ParityReport mobilenet_keras: torch vs onnx, PASS")
    assert text.splitlines()[1].startswith("rule: every backend in float32 against torch in float64 (the oracle)")
    assert "does not expose" not in text
    for d in rep.diffs:
        row = next(line for line in text.splitlines() if line.startswith(f"{d.node} ")).split()
        assert row[3:6] == ["onnx", "vs", "torch"] and row[7:9] == ["vs", "oracle"], row
        assert row[-4:-1] == [f"{d.error:.3g}", f"{d.allowed:.3g}", row[-2]] and row[-1] == "pass", row
        assert abs(float(row[-2].rstrip("%")) - 100 * d.error / d.allowed) <= 0.051 * max(1, 100 * d.error / d.allowed)


def test_torch_weights_to_onnx_file_through_the_cli(torch_backend, tmp_path, capsys):
    """The flow users ask for: PyTorch weights -> portable .npz -> archc build --backend onnx."""
    import torch

    g = lowered(PAPER, 0.25, 64)
    tm = torch_backend.build(g)
    with torch.no_grad():  # weights that are PyTorch's own, not archc's init
        torch.manual_seed(0)
        for mod in tm.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    npz = tmp_path / "from_torch.npz"
    W.save(torch_backend.get_weights(g, tm), npz)
    out = tmp_path / "onnx_out"
    argv = ["build", PAPER, "--backend", "onnx", "--width", "0.25", "--resolution", "64"]
    assert main([*argv, "--weights", str(npz), "-o", str(out)]) == 0
    assert "verified against the IR" in capsys.readouterr().out
    x = rand(4, 64, 64, 3, seed=9)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    sess = ort.InferenceSession(str(out / "mobilenet_v1.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["output"], {"input": x.transpose(0, 3, 1, 2)})[0]
    assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("spec", [PAPER, KERAS], ids=["paper", "keras"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("resolution", [224, 128, 199])
def test_grid_matches_torch(backend, torch_backend, spec, width, resolution):
    compare_with_torch(backend, torch_backend, lowered(spec, width, resolution))


# ---------------------------------------------------------------------------------------------
# layer names that are the model's own value names


@pytest.mark.parametrize(
    ("input_name", "conv_name", "act_name"),
    [
        ("input", "output", "act"),  # a layer named 'output' that is not the model's output
        ("input", "conv", "output"),  # the output layer named 'output'
        ("output", "input", "act"),  # the input named 'output', a layer named 'input'
        ("output", "conv", "input"),  # the output layer named 'input'
    ],
)
@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw", "nhwc"])
def test_layers_named_input_or_output_load_in_onnxruntime(backend, tmp_path, input_name, conv_name, act_name, nhwc):
    from archcompiler.backends.onnx import OnnxBackend

    spec = {
        "name": "named",
        "input": {"size": [6, 5], "channels": 3, "name": input_name},
        "layers": [
            {"op": "conv", "filters": 4, "kernel": 3, "padding": "valid", "name": conv_name},
            {"op": "activation", "kind": "relu", "name": act_name},
        ],
    }
    b = OnnxBackend(nhwc_input=nhwc)
    net = a.compile(spec)
    model = net.build(b)  # verified: every node's shape and count against the IR
    (path,) = [p for p in net.save(model, b, tmp_path) if p.suffix == ".onnx"]
    kernel = W.load(tmp_path / "named.weights.npz")[f"{conv_name}.kernel"]
    x = rand(2, 6, 5, 3, seed=21)
    want = np.maximum(np_conv(x, kernel.astype(np.float64), (1, 1), (0, 0, 0, 0)), 0)  # NHWC
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # the file, no archc
    assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == ["output"]
    (got,) = sess.run(["output"], {"input": x if nhwc else x.transpose(0, 3, 1, 2)})
    np.testing.assert_allclose(got.transpose(0, 2, 3, 1), want, rtol=1e-5, atol=1e-5)
    # every node through archc's own runner too (parity exposes each one as an extra output)
    values = b.run(net.graph, model, x, [n.name for n in net.graph.nodes])
    np.testing.assert_allclose(values[act_name], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values[input_name], x)


def test_feature_outputs_named_input_and_output_load_in_onnxruntime(backend):
    spec = {
        "name": "named",
        "input": {"size": 8, "channels": 3, "name": "x"},
        "layers": [
            {"op": "conv", "filters": 4, "kernel": 3, "stride": 2, "name": "output"},
            {"op": "conv", "filters": 4, "kernel": 3, "stride": 2, "name": "input"},
        ],
    }
    net = a.compile(spec, outputs=["output", "input"])
    model = net.build(backend)
    w = backend.get_weights(net.graph, model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["output.value", "input.value"]
    x = rand(1, 8, 8, 3, seed=22)
    first, second = sess.run(None, {"input": x.transpose(0, 3, 1, 2)})
    # TF SAME, 8 -> 4 -> 2: one extra row and column at the bottom/right each time
    ref1 = np_conv(x, w["output.kernel"].astype(np.float64), (2, 2), (0, 1, 0, 1))
    ref2 = np_conv(ref1, w["input.kernel"].astype(np.float64), (2, 2), (0, 1, 0, 1))
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), ref1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second.transpose(0, 2, 3, 1), ref2, rtol=1e-5, atol=1e-5)


def test_parity_with_a_layer_named_output(torch_backend):
    # issue 19: 'archc parity --backends torch,onnx' ended in an internal error here
    spec = {
        "name": "named",
        "input": {"size": 8, "channels": 3},
        "layers": [{"op": "conv", "filters": 4, "kernel": 3, "name": "output"}, {"op": "activation", "name": "act"}],
    }
    report = a.compile(spec).parity(("torch", "onnx"))
    assert report.ok and [d.node for d in report.diffs] == ["input", "output", "act"]


# ---------------------------------------------------------------------------------------------
# int8 (QDQ, quantize_static)


def _dequantized_output(model, tensor: str) -> str:
    """The DequantizeLinear output that carries ``tensor``'s quantized value."""
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return next(n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])


def _bare_run(model, x: np.ndarray, extra: list[str], optimized: Path | None = None) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in extra:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(["output", *extra], {"input": x})


def test_int8_cli_writes_a_per_channel_qdq_model_onnxruntime_runs_with_integer_kernels(tmp_path, capsys):
    """`--quantize int8 --calibration x.npy`: a QDQ file without BatchNormalization (folded),
    per-channel conv weights, that onnxruntime runs with QLinearConv; the report's logits error
    and top-1 agreement are what the file and the float model, run bare, give on the held-out
    samples of the same source (calibration.load's split)."""
    from archcompiler import calibration

    raw = np.random.default_rng(0).integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", raw)
    argv = ["build", PAPER, "--width", "0.25", "--resolution", "32", "--classes", "10", "--backend", "onnx", "-q"]
    assert main([*argv, "-o", str(tmp_path / "f")]) == 0
    assert main([*argv, "-o", str(tmp_path / "q"), "--quantize", "int8", "--calibration", str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    fmodel = onnx.load(tmp_path / "f" / "mobilenet_v1.onnx")
    qmodel = onnx.load(tmp_path / "q" / "mobilenet_v1.onnx")
    ops = [n.op_type for n in qmodel.graph.node]
    assert "BatchNormalization" not in ops and ops.count("QuantizeLinear") > 20
    inits = {t.name: t for t in qmodel.graph.initializer}
    dq_of = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "DequantizeLinear"}
    for conv in (n for n in qmodel.graph.node if n.op_type == "Conv"):
        w = dq_of[conv.input[1]]
        scale, kernel = inits[w.input[1]], inits[w.input[0]]
        assert scale.dims[0] == kernel.dims[0] > 1, conv.name  # one scale per output channel
    graph = a.compile(PAPER, width=0.25, resolution=32, classes=10).graph
    held = calibration.load(tmp_path / "x.npy", graph).held_out.transpose(0, 3, 1, 2).copy()
    (_, flogits) = _bare_run(fmodel, held, ["fc"])
    (qout, qlogits) = _bare_run(qmodel, held, [_dequantized_output(qmodel, "fc")], tmp_path / "opt.onnx")
    assert "QLinearConv" in {n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node}
    report = json.loads((tmp_path / "q" / "mobilenet_v1.quantization.json").read_text())
    f, q = flogits.astype(np.float64), qlogits.astype(np.float64)
    sqnr = 10 * np.log10(np.sum(f**2) / np.sum((f - q) ** 2))
    assert report["measured_on"] == ["fc"] and report["nodes"]["fc"]["sqnr_db"] == pytest.approx(sqnr, abs=0.05)
    # top-1 of the logits: int8 softmax outputs come in steps of 1/256 and tie on a flat softmax
    assert report["top1_agreement"] == pytest.approx(np.mean(f.argmax(1) == q.argmax(1)))
    np.testing.assert_allclose(qout.sum(1), 1.0, atol=0.05)
    assert report["weights"].startswith("untrained") and report["inputs"]["held_out_samples"] == len(held) == 8


def test_nhwc_input_changes_the_input_only_feature_outputs_stay_nchw(tmp_path):
    """docs/deployment.md's statement, on the file: input (batch, H, W, C), each feature map
    (batch, C, H, W), and the values those of the NCHW model on the transposed input."""
    net = a.compile(PAPER, width=0.25, resolution=32, outputs=["conv_pw_5_relu", "conv_pw_13_relu"])
    for layout in ("nchw", "nhwc"):
        net.build_to(get_backend("onnx", nhwc_input=layout == "nhwc"), tmp_path / layout)
    sessions = {
        k: ort.InferenceSession(str(tmp_path / k / "mobilenet_v1.onnx"), providers=["CPUExecutionProvider"])
        for k in ("nchw", "nhwc")
    }
    assert sessions["nhwc"].get_inputs()[0].shape == ["batch", 32, 32, 3]
    shapes = [o.shape for o in sessions["nhwc"].get_outputs()]
    assert shapes == [["batch", 64, 4, 4], ["batch", 256, 1, 1]] == [o.shape for o in sessions["nchw"].get_outputs()]
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    want = sessions["nchw"].run(None, {"input": x.transpose(0, 3, 1, 2).copy()})
    for got, ref in zip(sessions["nhwc"].run(None, {"input": x}), want, strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-5)
