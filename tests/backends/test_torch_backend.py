"""The torch backend against the IR and against independent references (numpy, TensorFlow).

Expected values come from numpy re-implementations, docs/NUMBERS.md or TensorFlow, never from the
backend's own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.kit.registry import BackendError, UnsupportedOpError, get_backend
from archcompiler.weights import WeightError

torch = framework("torch")

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
PAPER = str(REPO / "specs/mobilenet.yaml")
KERAS = str(REPO / "specs/mobilenet_keras.yaml")


@pytest.fixture(scope="module")
def backend():
    return get_backend("torch")


def lowered(spec: str, width: float, resolution: int) -> ir.Graph:
    return a.lower(a.load(spec), width=width, resolution=resolution)


def graph_of(*nodes: ir.Node, name: str = "tiny") -> ir.Graph:
    shape = nodes[0].shape
    return ir.Graph(name=name, nodes=nodes, outputs=(nodes[-1].name,), width=1.0, resolution=shape[:2])


# ---------------------------------------------------------------------------------------------
# numpy references


def np_conv(x: np.ndarray, k: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """NHWC x, canonical (kh, kw, I, O) kernel: a direct convolution with explicit padding."""
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = k.shape[:2]
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, k.shape[3]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += np.einsum("nhwc,co->nhwo", patch, k[i, j])
    return out


def np_depthwise(x: np.ndarray, k: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Keras semantics: output channel c*M + m is input channel c filtered by k[:, :, c, m]."""
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, c, m = k.shape
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, c, m), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += patch[..., None] * k[i, j]
    return out.reshape(x.shape[0], oh, ow, c * m)


# ---------------------------------------------------------------------------------------------
# build + verify


@pytest.mark.parametrize("spec", [PAPER, KERAS], ids=["paper", "keras"])
@pytest.mark.parametrize(("width", "resolution"), [(0.25, 96), (0.25, 199), (0.5, 128), (0.75, 113)])
def test_build_verifies_against_ir(backend, spec, width, resolution):
    g = lowered(spec, width, resolution)
    model = backend.build(g)
    backend.verify(g, model)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # submodules carry the IR names, so the state_dict keys do too
    assert "conv_dw_1.weight" in model.state_dict()
    assert "conv1_bn.running_var" in model.state_dict()


def test_verify_names_the_node_on_shape_mismatch(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    model.conv_pad_2 = torch.nn.ZeroPad2d((0, 2, 0, 2))  # one pixel too many
    with pytest.raises(BackendError, match="conv_pad_2"):
        backend.verify(g, model)


def test_verify_names_the_node_on_param_mismatch(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    model.conv_pw_3 = torch.nn.Conv2d(32, 32, 1, bias=True)  # same shape, 32 extra parameters
    with pytest.raises(BackendError, match="conv_pw_3"):
        backend.verify(g, model)


@pytest.mark.parametrize(
    ("spec", "width", "trainable", "non_trainable"),
    [
        # docs/NUMBERS.md: keras.applications.MobileNet trainable / non-trainable, = timm's torch count
        (KERAS, 1.0, 4_231_976, 21_888),
        (KERAS, 0.75, 2_585_560, 16_416),
        (KERAS, 0.5, 1_331_592, 10_944),
        (KERAS, 0.25, 470_072, 5_472),
        (PAPER, 1.0, 4_231_976, 21_888),
    ],
)
def test_param_counts_equal_reference(backend, spec, width, trainable, non_trainable):
    # Counts do not depend on the input size (docs/NUMBERS.md), so a small resolution keeps it fast.
    model = backend.build(lowered(spec, width, 96))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    stats = sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
    assert stats == non_trainable


# ---------------------------------------------------------------------------------------------
# padding, depthwise channel order, flatten order: against numpy


def test_asymmetric_same_padding_matches_numpy(backend):
    g = lowered(PAPER, 0.25, 96)
    conv1, dw2 = g["conv1"], g["conv_dw_2"]
    # TF SAME, stride 2, even input: 0 before, 1 after; torch padding=1 would be wrong here
    assert conv1.padding == (0, 1, 0, 1)
    assert dw2.padding == (0, 1, 0, 1)
    model = backend.build(g)
    wts = W.init(g, seed=3)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(1).normal(size=(2, 96, 96, 3)).astype(np.float32)
    out = backend.run(g, model, x, ["conv1", "conv_pw_1_relu", "conv_dw_2"])
    ref = np_conv(x.astype(np.float64), wts["conv1.kernel"], 2, conv1.padding)
    np.testing.assert_allclose(out["conv1"], ref, atol=1e-4)
    ref_dw = np_depthwise(out["conv_pw_1_relu"].astype(np.float64), wts["conv_dw_2.kernel"], 2, dw2.padding)
    np.testing.assert_allclose(out["conv_dw_2"], ref_dw, atol=1e-4)
    # a symmetric pad of 1 would give a different answer: the test can fail
    wrong = np_conv(x.astype(np.float64), wts["conv1.kernel"], 2, (1, 1, 1, 1))[:, :48, :48]
    assert np.abs(out["conv1"] - wrong).max() > 1e-2


def test_depthwise_multiplier_channel_order_matches_numpy(backend):
    x_node = ir.Input(name="x", inputs=(), shape=(7, 6, 2))
    dw = ir.DepthwiseConv2D(
        name="dw",
        inputs=("x",),
        shape=(4, 3, 6),
        in_channels=2,
        multiplier=3,
        kernel=(3, 3),
        stride=(2, 2),
        padding=(1, 1, 0, 1),
        use_bias=True,
    )
    g = graph_of(x_node, dw)
    model = backend.build(g)
    backend.verify(g, model)
    wts = W.init(g, seed=5)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(2).normal(size=(3, 7, 6, 2)).astype(np.float32)
    got = backend.run(g, model, x)["dw"]
    ref = np_depthwise(x.astype(np.float64), wts["dw.kernel"], 2, dw.padding) + wts["dw.bias"]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_flatten_is_hwc_order_so_dense_weights_match(backend):
    nodes = (
        ir.Input(name="x", inputs=(), shape=(2, 3, 4)),
        ir.Flatten(name="flat", inputs=("x",), shape=(24,)),
        ir.Dense(name="fc", inputs=("flat",), shape=(5,), in_features=24, units=5),
    )
    g = graph_of(*nodes)
    model = backend.build(g)
    backend.verify(g, model)
    wts = W.init(g, seed=1)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(4).normal(size=(2, 2, 3, 4)).astype(np.float32)
    got = backend.run(g, model, x, ["flat", "fc"])
    np.testing.assert_array_equal(got["flat"], x.reshape(2, -1))
    np.testing.assert_allclose(got["fc"], x.reshape(2, -1) @ wts["fc.kernel"] + wts["fc.bias"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.keras
def test_asymmetric_padding_matches_tensorflow_same(backend):
    """The whole chain IR padding + torch module against TF's own "SAME" (torch imported first)."""
    tf = pytest.importorskip("tensorflow")
    g = lowered(PAPER, 0.25, 97)  # odd: TF SAME pads (1, 1) at stride 2 here, (0, 1) for 96
    model = backend.build(g)
    wts = W.init(g, seed=7)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(0).normal(size=(1, 97, 97, 3)).astype(np.float32)
    out = backend.run(g, model, x, ["conv1", "conv_pw_1_relu", "conv_dw_2"])
    ref = tf.nn.conv2d(x, wts["conv1.kernel"], strides=2, padding="SAME").numpy()
    np.testing.assert_allclose(out["conv1"], ref, atol=1e-4)
    ref_dw = tf.nn.depthwise_conv2d(
        out["conv_pw_1_relu"], wts["conv_dw_2.kernel"], strides=[1, 2, 2, 1], padding="SAME"
    ).numpy()
    np.testing.assert_allclose(out["conv_dw_2"], ref_dw, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# weights


def test_weight_round_trip_is_exact(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    first = backend.get_weights(g, model)
    assert set(first) == set(W.expected(g))
    wts = W.init(g, seed=11)
    backend.set_weights(g, model, wts)
    back = backend.get_weights(g, model)
    for name, arr in wts.items():
        assert back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr, err_msg=name)
    fresh = backend.build(g)
    backend.set_weights(g, fresh, back)
    again = backend.get_weights(g, fresh)
    assert all(np.array_equal(again[k], back[k]) for k in back)


def test_torch_layouts_of_loaded_weights(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    wts = W.init(g, seed=2)
    backend.set_weights(g, model, wts)
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["conv1.weight"].numpy(), wts["conv1.kernel"].transpose(3, 2, 0, 1))
    k = wts["conv_dw_1.kernel"]  # (3, 3, C, 1)
    np.testing.assert_array_equal(sd["conv_dw_1.weight"].numpy()[:, 0], k[..., 0].transpose(2, 0, 1))
    np.testing.assert_array_equal(sd["conv_pw_1_bn.running_var"].numpy(), wts["conv_pw_1_bn.moving_variance"])
    np.testing.assert_array_equal(sd["conv_pw_1_bn.weight"].numpy(), wts["conv_pw_1_bn.gamma"])


@pytest.mark.parametrize("fault", ["missing", "extra", "misshapen"])
def test_set_weights_rejects_bad_tensors(backend, fault):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wts = W.init(g, seed=0)
    if fault == "missing":
        del wts["conv_pw_4_bn.moving_mean"]
        name = "conv_pw_4_bn.moving_mean"
    elif fault == "extra":
        wts["conv_pw_99.kernel"] = np.zeros((1, 1, 2, 2), np.float32)
        name = "conv_pw_99.kernel"
    else:
        wts["conv_dw_3.kernel"] = wts["conv_dw_3.kernel"].reshape(3, 3, 1, -1)
        name = "conv_dw_3.kernel"
    with pytest.raises(WeightError, match=name.replace(".", r"\.")):
        backend.set_weights(g, model, wts)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a rejected load must change nothing"


def test_set_weights_checks_the_model_before_writing_anything(backend):
    """The model disagrees with its IR only at the last layer: earlier tensors stay untouched."""
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    model.conv_preds = torch.nn.Conv2d(256, 999, 1)  # the IR says 1000 classes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BackendError, match=r"'conv_preds\.kernel'.*\(999, 256, 1, 1\)"):
        backend.set_weights(g, model, W.init(g, seed=0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a rejected load must change nothing"


# ---------------------------------------------------------------------------------------------
# BatchNorm conventions


def bn_graph(variance_update: str) -> ir.Graph:
    return graph_of(
        ir.Input(name="x", inputs=(), shape=(3, 4, 5)),
        ir.BatchNorm(
            name="bn",
            inputs=("x",),
            shape=(3, 4, 5),
            channels=5,
            epsilon=1e-3,
            decay=0.9,
            variance_update=variance_update,
        ),
    )


@pytest.mark.parametrize("variance_update", ["biased", "unbiased"])
def test_batchnorm_moving_variance_update(backend, variance_update):
    g = bn_graph(variance_update)
    model = backend.build(g)
    wts = W.init(g, seed=9)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(3).normal(1.0, 2.0, size=(2, 3, 4, 5)).astype(np.float32)
    model.train()
    y = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    model.eval()
    after = backend.get_weights(g, model)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 1, 2))
    var_b = x64.var(axis=(0, 1, 2))
    var_u = x64.var(axis=(0, 1, 2), ddof=1)
    batch_var = var_b if variance_update == "biased" else var_u
    decay = 0.9
    np.testing.assert_allclose(
        after["bn.moving_mean"], decay * wts["bn.moving_mean"] + (1 - decay) * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        after["bn.moving_variance"], decay * wts["bn.moving_variance"] + (1 - decay) * batch_var, rtol=1e-5
    )
    # training-mode normalisation always uses the biased batch variance
    ref = (x64 - mean) / np.sqrt(var_b + 1e-3) * wts["bn.gamma"] + wts["bn.beta"]
    np.testing.assert_allclose(y, ref, atol=1e-4)
    # eval mode uses the moving statistics and epsilon of the IR
    out = backend.run(g, model, x)["bn"]
    ref_eval = (x64 - after["bn.moving_mean"]) / np.sqrt(after["bn.moving_variance"] + 1e-3)
    np.testing.assert_allclose(out, ref_eval * wts["bn.gamma"] + wts["bn.beta"], atol=1e-4)


def test_batchnorm_biased_and_unbiased_really_differ(backend):
    """Guards the test above: with 24 samples per channel the two updates are distinguishable."""
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 5, 3, 4)).astype(np.float32))
    runs = {}
    for mode in ("biased", "unbiased"):
        model = backend.build(bn_graph(mode))
        model.train()
        model(x)
        runs[mode] = model.bn.running_var.clone()
    assert (runs["unbiased"] - runs["biased"]).abs().min() > 1e-4
    assert backend.build(bn_graph("unbiased")).bn.momentum == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# training


def test_train_step_is_plain_sgd_on_softmax_cross_entropy(backend):
    g = graph_of(
        ir.Input(name="x", inputs=(), shape=(1, 1, 6)),
        ir.Flatten(name="flat", inputs=("x",), shape=(6,)),
        ir.Dense(name="fc", inputs=("flat",), shape=(4,), in_features=6, units=4),
        ir.Softmax(name="probs", inputs=("fc",), shape=(4,)),
    )
    model = backend.build(g)
    wts = W.init(g, seed=4)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(6).normal(size=(5, 1, 1, 6)).astype(np.float32)
    y = np.array([0, 3, 1, 1, 2])
    backend.train_step(g, model, x, y, lr=0.5)
    assert not model.training
    # numpy gradient of mean cross-entropy of softmax(x W + b)
    xf = x.reshape(5, 6).astype(np.float64)
    logits = xf @ wts["fc.kernel"] + wts["fc.bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(4)[y]) / 5
    new = backend.get_weights(g, model)
    np.testing.assert_allclose(new["fc.kernel"], wts["fc.kernel"] - 0.5 * xf.T @ d, atol=1e-5)
    np.testing.assert_allclose(new["fc.bias"], wts["fc.bias"] - 0.5 * d.sum(0), atol=1e-5)


def test_train_step_updates_mobilenet_moving_statistics(backend):
    g = lowered(PAPER, 0.25, 96)
    model = backend.build(g)
    wts = W.init(g, seed=0)
    backend.set_weights(g, model, wts)
    x = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype(np.float32)
    conv1_out = backend.run(g, model, x, ["conv1"])["conv1"].astype(np.float64)
    backend.train_step(g, model, x, np.array([3, 7]), lr=0.01)
    new = backend.get_weights(g, model)
    # conv1 comes before any weight update, so its batch statistics are computable in numpy
    want = 0.99 * wts["conv1_bn.moving_variance"] + 0.01 * conv1_out.var(axis=(0, 1, 2))
    np.testing.assert_allclose(new["conv1_bn.moving_variance"], want, rtol=1e-4)
    assert not np.allclose(new["fc.kernel"], wts["fc.kernel"])
    assert not model.training


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hard_sigmoid_gradient_is_one_sixth_in_the_model_dtype(backend, dtype: str) -> None:
    """torch's stock nn.Hardsigmoid backward multiplies by float32's 1/6 even in float64 (2.98e-8
    relative), which made MobileNetV3's float64 training steps differ from Keras'. numpy is the
    oracle: d/dx relu6(x + 3) / 6 is 1/6 on (-3, 3) and 0 outside; a central difference of the
    model's own forward (exact on each linear piece up to rounding) agrees."""
    shape = (4, 4, 3)
    g = graph_of(
        ir.Input(name="x", inputs=(), shape=shape),
        ir.Activation(name="gate", inputs=("x",), shape=shape, kind="hard_sigmoid"),
    )
    model = backend.build_in(g, dtype)
    model.train()
    rng = np.random.default_rng(7)
    x = rng.uniform(-5.0, 5.0, size=(2, 3, 4, 4))  # NCHW
    x[np.abs(np.abs(x) - 3.0) < 1e-2] = 0.5  # no kink within the finite difference's step
    upstream = rng.normal(size=x.shape)
    tdtype = getattr(torch, dtype)
    xt = torch.tensor(x, dtype=tdtype, requires_grad=True)
    (model(xt) * torch.tensor(upstream, dtype=tdtype)).sum().backward()
    got = xt.grad.double().numpy()
    want = np.where(np.abs(x) < 3.0, upstream / 6.0, 0.0)
    rtol = 1e-15 if dtype == "float64" else 2.0**-22
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    if dtype == "float64":
        h = 2.0**-10
        with torch.no_grad():
            fd = (model(torch.tensor(x + h)) - model(torch.tensor(x - h))).numpy() / (2 * h)
        np.testing.assert_allclose(got, upstream * fd, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# unsupported ops


def test_missing_handler_is_a_named_error(backend):
    from archcompiler.backends.torch.build import build_module
    from archcompiler.backends.torch.ops import HANDLERS

    g = lowered(PAPER, 0.25, 96)
    partial = {op: h for op, h in HANDLERS.items() if op != "softmax"}
    with pytest.raises(UnsupportedOpError, match=r"softmax.*predictions"):
        build_module(g, partial)


def test_refuses_batchnorm_with_only_one_of_center_and_scale(backend):
    g = graph_of(
        ir.Input(name="x", inputs=(), shape=(3, 4, 5)),
        ir.BatchNorm(
            name="bn_half",
            inputs=("x",),
            shape=(3, 4, 5),
            channels=5,
            epsilon=1e-3,
            decay=0.99,
            variance_update="biased",
            center=True,
            scale=False,
        ),
    )
    with pytest.raises(UnsupportedOpError, match="bn_half"):
        backend.build(g)


def test_dense_on_an_image_is_refused_by_the_ir():
    with pytest.raises(ir.GraphError, match=r"fc_img.*flat input"):
        graph_of(
            ir.Input(name="x", inputs=(), shape=(3, 4, 5)),
            ir.Dense(name="fc_img", inputs=("x",), shape=(3, 4, 2), in_features=5, units=2),
        )


def test_handler_table_covers_every_ir_op(backend):
    assert backend.ops == ir.IR_OPS


# ---------------------------------------------------------------------------------------------
# run and save


def test_run_returns_every_node_channels_last(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    x = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype(np.float32)
    outs = backend.run(g, model, x, [n.name for n in g.nodes])
    for node in g.nodes:
        assert outs[node.name].shape == (2, *node.shape), node.name
    np.testing.assert_array_equal(outs["input"], x)
    default = backend.run(g, model, x)
    assert list(default) == ["predictions"]
    np.testing.assert_allclose(default["predictions"].sum(1), 1.0, atol=1e-5)


def test_run_rejects_a_wrong_input_shape(backend):
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    with pytest.raises(BackendError, match=r"\(2, 3, 96, 96\)"):
        backend.run(g, model, np.zeros((2, 3, 96, 96), np.float32))  # NCHW by mistake


LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["archcompiler"] = None  # any import of archc now fails
    import json, numpy as np, torch
    prog, state, x_path, out_path = sys.argv[1:5]
    x = torch.from_numpy(np.load(x_path))
    if prog.endswith(".pt2"):
        module = torch.export.load(prog).module()
    elif prog.endswith(".py"):  # the emitted source, then the state_dict, as the README shows
        import importlib.util
        spec = importlib.util.spec_from_file_location("model", prog)
        code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(code)
        module = [v for v in vars(code).values() if isinstance(v, type) and v.__module__ == "model"][-1]()
        module.load_state_dict(torch.load(state, weights_only=True))
        module.eval()
    else:
        module = torch.jit.load(prog)
    with torch.no_grad():
        y = module(x)
    np.save(out_path, y.numpy())
    sd = torch.load(state, weights_only=True)
    loaded = [m for m, v in sys.modules.items() if v is not None and m.startswith("archcompiler")]
    print(json.dumps({"keys": sorted(sd), "archc": loaded}))
    """
)


def _load_alone(prog: Path, state: Path, x: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, dict]:
    """Run LOADER in a fresh interpreter that cannot import archc; (output, its report)."""
    np.save(tmp_path / "x.npy", x.transpose(0, 3, 1, 2))
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, str(script), str(prog), str(state), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return np.load(tmp_path / "y.npy"), json.loads(res.stdout.strip().splitlines()[-1])


def test_saved_source_and_state_load_without_archc(backend, tmp_path):
    """By default save writes the state_dict and the emitted source: together, plain PyTorch."""
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=1))
    paths = backend.save(g, model, tmp_path)
    assert [p.name for p in paths] == ["mobilenet_keras.pt", "mobilenet_keras.py"]
    assert paths[1].read_text() == backend.emit(g)
    x = np.random.default_rng(5).normal(size=(3, 96, 96, 3)).astype(np.float32)
    y, info = _load_alone(paths[1], paths[0], x, tmp_path)
    assert info["archc"] == []
    assert info["keys"] == sorted(model.state_dict())
    np.testing.assert_allclose(y, backend.run(g, model, x)["predictions"], atol=1e-6)


@pytest.mark.slow
def test_saved_program_loads_without_archc(tmp_path):
    """TorchBackend(export=True) also writes a torch.export program (any batch size)."""
    from archcompiler.backends.torch import TorchBackend

    backend = TorchBackend(export=True)
    g = lowered(KERAS, 0.25, 96)
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=1))
    paths = backend.save(g, model, tmp_path)
    assert [p.name for p in paths] == ["mobilenet_keras.pt", "mobilenet_keras.py", "mobilenet_keras.pt2"]
    x = np.random.default_rng(5).normal(size=(3, 96, 96, 3)).astype(np.float32)  # batch 3 != export's 2
    y, info = _load_alone(paths[2], paths[0], x, tmp_path)
    assert info["archc"] == []
    assert info["keys"] == sorted(model.state_dict())
    np.testing.assert_allclose(y, backend.run(g, model, x)["predictions"], atol=1e-6)


@pytest.mark.slow  # test_saved_program_loads_without_archc exports in the fast tier
def test_export_on_demand_from_a_build_folder(backend, tmp_path):
    """``python -m archcompiler.backends.torch.export FOLDER`` turns a build folder's .py + .pt
    into the .pt2 a user loads without archc."""
    g = lowered(PAPER, 0.25, 96)
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=3))
    state, _ = backend.save(g, model, tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "archcompiler.backends.torch.export", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    prog = tmp_path / "mobilenet_v1.pt2"
    assert res.stdout.strip() == f"wrote {prog}"
    x = np.random.default_rng(2).normal(size=(2, 96, 96, 3)).astype(np.float32)
    y, info = _load_alone(prog, state, x, tmp_path)
    assert info["archc"] == []
    np.testing.assert_allclose(y, backend.run(g, model, x)["predictions"], atol=1e-6)


@pytest.mark.slow
def test_save_falls_back_to_torchscript(tmp_path, monkeypatch):
    """When torch.export fails, a TorchScript program is written instead and still loads alone."""
    from archcompiler.backends.torch import TorchBackend

    def broken(*args, **kwargs):
        raise RuntimeError("export unavailable")

    monkeypatch.setattr(torch.export, "export", broken)
    backend = TorchBackend(export=True, source=False)
    g = lowered(PAPER, 0.25, 96)
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=2))
    with pytest.warns(UserWarning, match="TorchScript"):
        paths = backend.save(g, model, tmp_path)
    assert [p.name for p in paths] == ["mobilenet_v1.pt", "mobilenet_v1.torchscript.pt"]
    x = np.random.default_rng(1).normal(size=(2, 96, 96, 3)).astype(np.float32)
    y, info = _load_alone(paths[1], paths[0], x, tmp_path)
    assert info["archc"] == []
    np.testing.assert_allclose(y, backend.run(g, model, x)["predictions"], atol=1e-6)


@pytest.mark.parametrize("spec", [PAPER, KERAS])
def test_mobilenet_is_built_of_stock_torch_layers(backend, spec):
    """Counting tools match module types exactly (ptflops, thop): every layer is a torch.nn
    class itself, the Keras-style BatchNorm included, and state_dict keys stay <node>.<tensor>."""
    g = lowered(spec, 0.25, 96)  # even sizes: TF SAME pads stride-2 convs asymmetrically
    model = backend.build(g)
    kinds = {type(m) for m in model.children()}
    assert all(getattr(torch.nn, k.__name__, None) is k for k in kinds), kinds
    assert torch.nn.BatchNorm2d in kinds and torch.nn.ZeroPad2d in kinds
    nodes = {n.name for n in g.nodes}
    assert all(key.split(".")[0] in nodes and key.count(".") == 1 for key in model.state_dict())


def test_forward_frees_intermediates_but_forward_nodes_keeps_them(backend):
    """forward() holds only live tensors; forward_nodes() without names returns every layer's."""
    g = lowered(PAPER, 0.25, 96)
    model = backend.build(g)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        every = model.forward_nodes(x)
        assert set(every) == {"input", *(name for name, _ in model.steps)}
        some = model.forward_nodes(x, ("conv_pw_3_relu", "fc"))
        assert set(some) == {"conv_pw_3_relu", "fc"}
        torch.testing.assert_close(some["fc"], every["fc"], rtol=0, atol=0)
        torch.testing.assert_close(model(x), every[g.output], rtol=0, atol=0)
    assert all(g.output not in dead for dead in model._dead)
    assert sum(len(d) for d in model._dead) == len(model.steps)  # every value but the output dies once
