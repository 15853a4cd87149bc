"""The optimised build (archcompiler.analysis.optimize, ``build(..., optimize=True)``, ``archc build
--optimize``): the IR rewrite, and every backend's optimised model against that backend's
unoptimised one (the oracle: the framework's own BatchNorm and padding), within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.analysis.optimize import optimize
from archcompiler.kit.registry import BackendError, get_backend

ROOT = Path(__file__).resolve().parents[2]


def graph(spec: str, width: float = 0.25, resolution: int = 96) -> ir.Graph:
    return a.compile(ROOT / spec, width=width, resolution=resolution).graph


def tiny_resnet() -> ir.Graph:
    return a.compile(ROOT / "tests/specs/tiny_resnet.yaml").graph


# -- the IR rewrite (no framework) ---------------------------------------------------------------


@pytest.mark.parametrize("spec", ["specs/mobilenet.yaml", "specs/mobilenet_keras.yaml"])
def test_mobilenet_loses_every_batchnorm_and_pad(spec: str) -> None:
    g = graph(spec, resolution=97)
    opt = optimize(g, W.init(g, seed=1))
    ops = {n.op for n in opt.graph.nodes}
    assert "batchnorm" not in ops and "zero_pad2d" not in ops
    assert all(n.use_bias for n in opt.graph.nodes if n.op in ("conv2d", "depthwise_conv2d"))
    assert opt.graph.name == f"{g.name}_optimized"
    assert opt.graph.output_shape == g.output_shape
    assert len(opt.folded) == sum(n.op == "batchnorm" for n in g.nodes)
    assert len(opt.merged) == sum(n.op == "zero_pad2d" for n in g.nodes)


def test_keras_layout_pads_merge_into_the_conv_asymmetrically() -> None:
    """keras.applications pads the stride-2 convs with ZeroPadding2D(((0, 1), (0, 1))) and a
    'valid' conv: merged, the conv pads bottom/right only, as TF's SAME does."""
    g = graph("specs/mobilenet_keras.yaml", resolution=96)
    pads = [n for n in g.nodes if n.op == "zero_pad2d"]
    assert pads, "the spec no longer writes explicit pads: pick another test graph"
    opt = optimize(g, W.init(g))
    conv = opt.graph[next(n.name for n in g.nodes if n.inputs == (pads[0].name,))]
    assert conv.padding == tuple(p + c for p, c in zip(pads[0].padding, g[conv.name].padding, strict=True))


@pytest.mark.parametrize("resolution", [96, 97])
def test_symmetric_padding_widens_asymmetric_kernels_with_zero_taps(resolution: int) -> None:
    """For torch: every conv ends up symmetrically padded; a widened kernel holds the original
    taps at the far corner and zeros on the side where the padding grew."""
    g = graph("specs/mobilenet.yaml", resolution=resolution)
    w = W.init(g, seed=3)
    opt = optimize(g, w, symmetric_padding=True)
    convs = [n for n in opt.graph.nodes if n.op in ("conv2d", "depthwise_conv2d")]
    assert all(n.padding[0] == n.padding[1] and n.padding[2] == n.padding[3] for n in convs)
    assert opt.widened == tuple(n.name for n in g.nodes if n.op.endswith("conv2d") and len(set(n.padding)) > 1)
    for name in opt.widened:
        wide, small = opt.weights[f"{name}.kernel"], optimize(g, w).weights[f"{name}.kernel"]
        kh, kw = small.shape[:2]
        np.testing.assert_array_equal(wide[-kh:, -kw:], small)
        assert not wide[: wide.shape[0] - kh].any() and not wide[:, : wide.shape[1] - kw].any()


def test_a_batchnorm_whose_conv_has_other_readers_stays() -> None:
    """tiny_resnet's second BN reads a conv only it reads (folded); its output feeds both the
    squeeze and the excite multiply, which is fine; a conv read twice would not fold."""
    g = tiny_resnet()
    opt = optimize(g, W.init(g))
    readers = {n.name: sum(n.name in m.inputs for m in g.nodes) for n in g.nodes}
    for node in g.nodes:
        if node.op == "batchnorm":
            conv_sole = g[node.inputs[0]].op in ("conv2d", "depthwise_conv2d") and readers[node.inputs[0]] == 1
            assert (node.name in opt.folded) == conv_sole
    for target in opt.names.values():  # every original value is still computed somewhere
        assert target in opt.graph


def test_folded_weights_are_not_the_canonical_ones() -> None:
    """Loading optimised weights into the original graph (or the reverse) fails by name."""
    g = graph("specs/mobilenet.yaml")
    w = W.init(g, seed=2)
    opt = optimize(g, w)
    with pytest.raises(W.WeightError):
        W.check(g, opt.weights)
    with pytest.raises(W.WeightError):
        W.check(opt.graph, w)


@pytest.mark.torch
def test_fold_matches_torch_fuse_conv_bn_weights() -> None:
    """The weight arithmetic against torch.nn.utils.fusion (an outside implementation), for a
    full conv with bias and a depthwise conv with channel multiplier 2."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    from archcompiler.ir.layouts import to_channels_first

    spec = {
        "archc": 1,
        "name": "pair",
        "input": {"size": 8, "channels": 3},
        "classes": 10,
        "layers": [
            {"op": "conv", "filters": 4, "kernel": 3, "bias": True, "name": "c"},
            {"op": "batchnorm", "name": "c_bn"},
            {"op": "depthwise_conv", "kernel": 3, "multiplier": 2, "name": "d"},
            {"op": "batchnorm", "name": "d_bn"},
            {"op": "activation", "kind": "relu", "name": "out"},  # a BN the model returns is not folded
        ],
    }
    g = a.compile(spec).graph
    w = W.init(g, seed=5)
    opt = optimize(g, w)
    specs = W.specs(g)
    for conv, bn in (("c", "c_bn"), ("d", "d_bn")):
        kernel = torch.from_numpy(to_channels_first(w[f"{conv}.kernel"], specs[f"{conv}.kernel"].layout))
        bias = torch.from_numpy(w[f"{conv}.bias"]) if f"{conv}.bias" in w else None
        t = {p: torch.from_numpy(w[f"{bn}.{p}"]) for p in ("moving_mean", "moving_variance", "gamma", "beta")}
        eps = g[bn].epsilon
        want_k, want_b = fuse_conv_bn_weights(
            kernel, bias, t["moving_mean"], t["moving_variance"], eps, t["gamma"], t["beta"]
        )
        got_k = to_channels_first(opt.weights[f"{conv}.kernel"], specs[f"{conv}.kernel"].layout)
        np.testing.assert_allclose(got_k, want_k.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(opt.weights[f"{conv}.bias"], want_b.detach().numpy(), rtol=1e-6, atol=1e-6)


# -- every backend: the optimised model against the unoptimised one ------------------------------


def _compare(backend: str, g: ir.Graph, **options: object) -> None:
    """build(optimize=True) with non-trivial BN statistics vs the same backend's plain model."""
    b = get_backend(backend, **options)
    net = a.Compiled(a.load(ROOT / "specs/mobilenet.yaml"), g) if g.name == "mobilenet_v1" else None
    net = net or a.compile(ROOT / "tests/specs/tiny_resnet.yaml")
    w = W.init(net.graph, seed=4)
    plain = net.build(b, weights=w)
    fast = net.build(b, weights=w, optimize=True)
    x = np.random.default_rng(7).normal(size=(3, *net.graph.input_shape)).astype(np.float32)
    want = b.run(net.graph, plain, x)[net.graph.output]
    got = b.run(optimize(net.graph, w).graph, fast, x)[net.graph.output]
    assert float(np.abs(got - want).max()) <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert want.std() > 0  # not a degenerate comparison


@pytest.mark.torch
@pytest.mark.parametrize("which", ["mobilenet", "tiny_resnet"])
def test_torch_optimized_equals_unoptimized(which: str) -> None:
    pytest.importorskip("torch")
    _compare("torch", graph("specs/mobilenet.yaml") if which == "mobilenet" else tiny_resnet())


@pytest.mark.torch
def test_torch_optimized_model_is_lean() -> None:
    """No BatchNorm left, channels-last weights, in-place ReLUs; forward_nodes still returns
    the value an in-place ReLU overwrote in the lean forward."""
    torch = pytest.importorskip("torch")
    net = a.compile(ROOT / "specs/mobilenet.yaml", width=0.25, resolution=96)
    fast = net.build("torch", optimize=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.ZeroPad2d) for m in fast.modules())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.conv1_relu.inplace
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        values = fast.forward_nodes(x, ("conv1", "conv1_relu"))
    assert float(values["conv1"].min()) < 0 <= float(values["conv1_relu"].min())


@pytest.mark.onnx
def test_onnx_optimized_equals_unoptimized() -> None:
    pytest.importorskip("onnxruntime")
    _compare("onnx", graph("specs/mobilenet.yaml"))


@pytest.mark.keras
def test_keras_optimized_equals_unoptimized() -> None:
    pytest.importorskip("tensorflow")
    _compare("keras", tiny_resnet())


@pytest.mark.keras
@pytest.mark.tflite
@pytest.mark.slow
def test_tflite_optimized_equals_unoptimized() -> None:
    pytest.importorskip("tensorflow")
    _compare("tflite", tiny_resnet())


# -- API and CLI ---------------------------------------------------------------------------------


@pytest.mark.onnx
def test_backend_that_cannot_optimize_is_refused_before_building() -> None:
    from archcompiler.backends.onnx import OnnxBackend

    class Plain(OnnxBackend):
        optimizable = False

        def build(self, graph):  # pragma: no cover - must not be reached
            raise AssertionError("built before refusing")

    net = a.compile(ROOT / "specs/mobilenet.yaml", width=0.25, resolution=96)
    with pytest.raises(BackendError, match="cannot build optimized models"):
        net.build(Plain(), optimize=True)


@pytest.mark.torch
def test_cli_optimize_writes_named_files_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from archcompiler.tools.cli import main

    spec = str(ROOT / "specs/mobilenet.yaml")
    out = tmp_path / "o"
    assert main(["build", spec, "--backend", "torch", "--width", "0.25", "--resolution", "96", "-q", "--optimize",
                 "-o", str(out)]) == 0  # fmt: skip
    assert "optimized" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert "mobilenet_v1_optimized.json" in names and "mobilenet_v1_optimized.pt" in names
    assert all(n.startswith("mobilenet_v1_optimized") for n in names)
    manifest = json.loads((out / "mobilenet_v1_optimized.json").read_text())
    assert manifest["optimized"] is True and manifest["from_graph"] == "mobilenet_v1"
    w = W.load(out / "mobilenet_v1_optimized.weights.npz")
    assert not any(k.endswith(".moving_mean") for k in w)


@pytest.mark.torch
def test_default_folders_keep_the_plain_and_the_optimized_build_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: both went to build/<stem>, and publishing the second removed the first's files."""
    pytest.importorskip("torch")
    from archcompiler.tools.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["build", str(ROOT / "specs/mobilenet.yaml"), "--backend", "torch", "--width", "0.25", "--resolution", "96"]
    assert main([*args, "-q"]) == 0 and main([*args, "-q", "--optimize"]) == 0
    out = capsys.readouterr().out
    assert "build/mobilenet_v1_0_25_96_torch/mobilenet_v1.pt" in out
    assert "build/mobilenet_v1_0_25_96_optimized_torch/mobilenet_v1_optimized.pt" in out
    assert (tmp_path / "build/mobilenet_v1_0_25_96_torch/mobilenet_v1.pt").is_file()
    assert (tmp_path / "build/mobilenet_v1_0_25_96_optimized_torch/mobilenet_v1_optimized.pt").is_file()
    # the line reports the optimised graph's MACs (the widened stride-2 kernels cost more)
    line = next(ln for ln in out.splitlines() if ln.startswith("built mobilenet_v1_optimized"))
    plain = a.compile(ROOT / "specs/mobilenet.yaml", width=0.25, resolution=96).cost("paper").macs
    assert f"{plain:,} MACs" not in line


@pytest.mark.torch
def test_cli_optimize_with_a_backend_that_cannot_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from archcompiler.backends.torch import TorchBackend

    from archcompiler.tools.cli import main

    monkeypatch.setattr(TorchBackend, "optimizable", False)
    spec = str(ROOT / "specs/mobilenet.yaml")
    out = tmp_path / "o"
    assert main(["build", spec, "--backend", "torch", "--optimize", "-q", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--optimize" in err and "cannot build optimized models" in err
    assert not out.exists()


@pytest.mark.torch
def test_build_optimized_then_save_writes_what_build_to_writes(tmp_path: Path) -> None:
    """Found in review: the API's optimised model could not be saved (the rewrite was private)."""
    pytest.importorskip("torch")
    net = a.compile(ROOT / "specs/mobilenet.yaml", width=0.25, resolution=96)
    opt, model = net.build_optimized("torch")
    files = net.save(model, "torch", tmp_path / "api", optimized=opt)
    built = net.build_to("torch", tmp_path / "cli", optimize=True)
    assert sorted(p.name for p in files) == sorted(p.name for p in built.files)
    saved = W.load(tmp_path / "api" / "mobilenet_v1_optimized.weights.npz")
    assert saved.keys() == opt.weights.keys()
    for k in saved:
        np.testing.assert_allclose(saved[k], opt.weights[k], rtol=1e-6, atol=1e-7)
