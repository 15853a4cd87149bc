"""Multi-output models (``outputs=[...]``, ``--features``), issue 12.

Oracles: the paper's Table 1 layer list (MACs by hand), timm's MobileNet feature reductions
(2, 4, 8, 16, 32), and for values the *full* single-output model with the same weights, its
intermediate activations captured with forward hooks; the other backends against torch
through parity, which compares every output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")
OUTS = ["conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"]
"""The issue's example: MobileNet 0.5 / 128 -> (N,128,16,16), (N,256,8,8), (N,512,4,4) in torch."""

# MobileNet, the paper's Table 1 (alpha 1): (depthwise stride, pointwise output channels) per
# dw/pw pair after the 3x3/2 stem conv with 32 filters.
TABLE1 = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]


def paper_macs(alpha: float, size: int, pairs: int) -> int:
    """Multiply-adds of the stem and the first ``pairs`` dw/pw pairs (paper eq. 5), by hand."""
    side = size // 2
    channels = int(32 * alpha)
    macs = 3 * 3 * 3 * channels * side * side
    for stride, filters in TABLE1[:pairs]:
        side //= stride
        out = int(filters * alpha)
        macs += 3 * 3 * channels * side * side + channels * out * side * side
        channels = out
    return macs


def feature_net() -> a.Compiled:
    return a.compile(SPEC, width=0.5, resolution=128, outputs=OUTS)


# -- IR and costs -------------------------------------------------------------------------


def test_costs_cover_exactly_the_live_part() -> None:
    net = feature_net()
    assert net.graph.outputs == tuple(OUTS) and net.graph.multi_output
    assert net.graph.output_shapes == ((16, 16, 128), (8, 8, 256), (4, 4, 512))
    assert net.cost("paper").macs == paper_macs(0.5, 128, 13)  # no pooling, no classifier
    assert net.graph.nodes[-1].name == "conv_pw_13_relu"
    shallow = a.compile(SPEC, width=0.5, resolution=128, outputs=["conv_pw_11_relu", "conv_pw_5_relu"])
    assert shallow.cost("paper").macs == paper_macs(0.5, 128, 11)  # layers 12, 13 are dead
    assert shallow.graph.outputs == ("conv_pw_11_relu", "conv_pw_5_relu")  # the order given


def test_one_name_is_a_single_output_model() -> None:
    net = a.compile(SPEC, outputs="conv_pw_5_relu")
    assert not net.graph.multi_output and net.graph.output == "conv_pw_5_relu"


def test_graph_refuses_bad_outputs() -> None:
    g = feature_net().graph
    with pytest.raises(ir.GraphError, match="has 3 outputs"):
        _ = g.output
    with pytest.raises(ir.GraphError, match="listed twice"):
        ir.Graph(name="g", nodes=g.nodes, outputs=(OUTS[0], OUTS[0]), width=1.0, resolution=(128, 128))
    with pytest.raises(ir.GraphError, match="is not a node"):
        ir.Graph(name="g", nodes=g.nodes, outputs=("nope",), width=1.0, resolution=(128, 128))
    with pytest.raises(ir.GraphError, match="non-empty tuple"):
        ir.Graph(name="g", nodes=g.nodes, outputs=(), width=1.0, resolution=(128, 128))


@pytest.mark.parametrize("spec", [SPEC, KERAS_SPEC])
def test_features_are_the_last_layer_at_each_stride_like_timm(spec: str) -> None:
    """timm's MobileNet features_only default (out_indices 0..4): reductions 2, 4, 8, 16, 32.
    mobilenet_keras.yaml pads explicitly before strided convs; a pad is not a level."""
    from archcompiler.lowering.features import levels

    net = a.compile(spec, features=True)
    want = ("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu")
    assert net.graph.outputs == want
    assert [lv.reduction for lv in levels(a.compile(spec).graph)] == [2, 4, 8, 16, 32]
    picked = a.compile(spec, out_indices=[2, -2, -1], width=0.5, resolution=128)
    assert picked.graph.outputs == tuple(OUTS)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        # V2 and V3: the last main-path layer at a stride is the next block's expansion (timm's
        # feature_location="expansion"); squeeze-excite's 1x1 pools are side branches, not levels
        ("mobilenet_v2", ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "out_relu")),
        (
            "mobilenet_v3_large",
            ("expanded_conv_3_expand_relu", "expanded_conv_12_expand_hard_swish", "conv_1_hard_swish"),
        ),
    ],
)
def test_feature_levels_skip_side_branches(spec: str, want: tuple[str, ...]) -> None:
    from archcompiler.lowering.features import levels

    found = levels(a.compile(str(ROOT / "specs" / f"{spec}.yaml")).graph)
    assert [lv.reduction for lv in found] == [2, 4, 8, 16, 32]
    assert set(want) <= {lv.node for lv in found}
    assert found[-1].shape[:2] == (7, 7)


# -- torch ----------------------------------------------------------------------------------


def hooked_intermediates(x: np.ndarray) -> tuple[dict[str, np.ndarray], W.Weights]:
    """The full single-output model (classifier included) with canonical weights; the OUTS
    layers' outputs captured with forward hooks, NCHW."""
    import torch

    full = a.compile(SPEC, width=0.5, resolution=128)
    w = W.init(full.graph, seed=3)
    model = full.build("torch", weights=w)
    seen: dict[str, np.ndarray] = {}
    for name in OUTS:
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().numpy().copy())
        )
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert tuple(logits.shape) == (len(x), 1000)  # it really was the whole model
    return seen, w


@pytest.mark.torch
def test_torch_outputs_equal_the_full_models_intermediates(tmp_path: Path) -> None:
    import torch

    x = np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32)
    want, w = hooked_intermediates(x)
    net = feature_net()
    model = net.build("torch", weights=w)  # full-model weights: the classifier's are dropped
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    assert isinstance(got, list) and [tuple(t.shape) for t in got] == [(2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    for name, t in zip(OUTS, got, strict=True):
        np.testing.assert_allclose(t.numpy(), want[name], rtol=0, atol=1e-6)

    # the generated module: same list, with the built model's state_dict
    namespace: dict = {}
    exec(compile(net.generate("torch"), "generated_features", "exec"), namespace)
    cls = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)][-1]
    gen = cls().eval()
    gen.load_state_dict(model.state_dict())
    with torch.no_grad():
        for t, g in zip(got, gen(torch.from_numpy(x)), strict=True):
            torch.testing.assert_close(g, t, rtol=0, atol=0)

    # saved files hold the live layers only, and a .npz of the whole model loads too
    built = net.build_to("torch", tmp_path / "feat")
    state = torch.load(tmp_path / "feat" / "mobilenet_v1.pt", weights_only=True)
    assert not any(k.startswith(("conv_preds", "fc", "predictions")) for k in state)
    saved = W.load(tmp_path / "feat" / "mobilenet_v1.weights.npz")
    assert set(saved) == set(W.specs(net.graph)) and set(saved) < set(w)
    assert built.graph.outputs == tuple(OUTS)
    W.save(w, tmp_path / "full.npz")
    again = net.build("torch", weights=tmp_path / "full.npz")
    with torch.no_grad():
        torch.testing.assert_close(again(torch.from_numpy(x))[2], got[2], rtol=0, atol=0)


@pytest.mark.torch
def test_weights_fitting_neither_model_are_refused(tmp_path: Path) -> None:
    net = feature_net()
    other = a.compile(SPEC, width=0.25, resolution=128)
    W.save(W.init(other.graph), tmp_path / "other.npz")
    with pytest.raises(W.WeightError, match=r"other\.npz"):
        net.build("torch", weights=tmp_path / "other.npz")


@pytest.mark.torch
def test_torch_export_returns_the_list(tmp_path: Path) -> None:
    import torch
    from archcompiler.backends.torch.save import export_program

    net = a.compile(SPEC, width=0.25, resolution=64, outputs=["conv_pw_5_relu", "conv_pw_3_relu"])
    model = net.build("torch")
    x = torch.randn(2, 3, 64, 64)
    written: list[Path] = []

    def publish(path: Path, write) -> Path:  # type: ignore[no-untyped-def]
        write(str(path))
        written.append(path)
        return path

    out = export_program(model, x, tmp_path / "feat", publish)
    assert out.suffix == ".pt2" and written == [out]
    program = torch.export.load(out).module()
    for got, want in zip(program(x), model(x), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.torch
def test_training_needs_one_output() -> None:
    from archcompiler.kit.registry import BackendError, get_backend

    net = feature_net()
    b = get_backend("torch")
    m = net.build(b)
    with pytest.raises(BackendError, match="one \\(N, classes\\) logits output"):
        b.train_step(net.graph, m, np.zeros((2, 128, 128, 3), np.float32), np.zeros(2, np.int64), 0.1)


# -- keras, onnx, tflite: against torch ----------------------------------------------------


@pytest.mark.slow  # torch and keras return the list in the fast tier (the tests above)
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
def test_every_backend_returns_every_output_in_order() -> None:
    """Parity compares every node, outputs included, in all four backends. Two outputs of one
    shape in reverse order catch a backend that returns them permuted (TFLite's output list
    is not in the model's order)."""
    import torch  # noqa: F401  (before tensorflow; docs/DESIGN.md)

    from archcompiler.kit.registry import get_backend

    names = ["conv_pw_13_relu", "conv_pw_12_relu", "conv_pw_5_relu"]
    net = a.compile(SPEC, width=0.25, resolution=64, outputs=names)
    report = net.parity(["torch", "keras", "onnx", "tflite"])
    assert report.ok, report.table()
    assert report.logits == "" and all(f"output ({n})" in report.table() for n in names)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    w = W.init(net.graph, seed=1)
    runs = {}
    for b in ("torch", "keras", "onnx", "tflite"):
        backend = get_backend(b)
        model = net.build(backend, weights=w)
        runs[b] = backend.run(net.graph, model, x)  # the model's own outputs, by default
        assert list(runs[b]) == names
    for b in ("keras", "onnx", "tflite"):
        for n in names:
            np.testing.assert_allclose(runs[b][n], runs["torch"][n], atol=1e-4)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
def test_keras_built_and_generated_models_return_the_list() -> None:
    import torch
    from archcompiler.backends.keras._framework import keras

    from archcompiler.kit.registry import get_backend

    net = a.compile(SPEC, width=0.25, resolution=64, outputs=["conv_pw_11_relu", "conv_pw_13_relu"])
    w = W.init(net.graph, seed=2)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        want = net.build("torch", weights=w)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    built = net.build("keras", weights=w)
    namespace: dict = {}
    exec(compile(net.generate("keras"), "generated_keras_features", "exec"), namespace)
    generated = namespace["build_model"]()
    get_backend("keras").set_weights(net.graph, generated, w)
    for model in (built, generated):
        assert isinstance(model, keras.Model) and len(model.outputs) == 2
        got = model(x, training=False)
        for g, t in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), t.numpy().transpose(0, 2, 3, 1), atol=1e-4)


@pytest.mark.onnx
def test_onnx_outputs_are_named_after_their_layers() -> None:
    ort = pytest.importorskip("onnxruntime")

    net = a.compile(SPEC, width=0.25, resolution=64, outputs=["conv_pw_11_relu", "conv_pw_5_relu"])
    model = net.build("onnx")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["conv_pw_11_relu", "conv_pw_5_relu"]
    assert [o.shape for o in sess.get_outputs()] == [["batch", 128, 4, 4], ["batch", 64, 8, 8]]


# -- CLI ------------------------------------------------------------------------------------


def test_cli_check_and_summary_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--width", "0.5", "--resolution", "128", "--outputs", ",".join(OUTS)]
    assert main(["check", SPEC, *args]) == 0
    assert "-> [16x16x128, 8x8x256, 4x4x512]" in capsys.readouterr().out
    assert main(["summary", SPEC, *args, "--format", "json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"] == OUTS and doc["output_shapes"] == [[16, 16, 128], [8, 8, 256], [4, 4, 512]]
    assert doc["totals"]["macs"] == paper_macs(0.5, 128, 13)


def test_cli_sweep_costs_the_features(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", SPEC, "--width", "0.5", "--resolution", "128", "--features", "--format", "json"]) == 0
    assert str(paper_macs(0.5, 128, 13)) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--outputs", "conv_pw_99_relu"], "--outputs: no layer named 'conv_pw_99_relu'"),
        (["--outputs", "conv1,conv1"], "--outputs: layer 'conv1' is listed twice"),
        (["--outputs", "input"], "--outputs: 'input' is the model's input"),
        (["--outputs", "conv1", "--features"], "--outputs: exclusive with --features"),
        (["--outputs", "conv1", "--classes", "10"], "--outputs: no output is in the classifier"),
        (["--features", "--classes", "0"], "--features: feature maps come before the classifier"),
        (["--out-indices", "5"], "--out-indices: index 5 is not a feature level; the graph has 5"),
    ],
)
def test_bad_outputs_are_one_line(capsys: pytest.CaptureFixture[str], options: list[str], message: str) -> None:
    assert main(["check", SPEC, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_output_in_the_classifier_keeps_the_head_options() -> None:
    net = a.compile(SPEC, classes=10, outputs=["conv_pw_13_relu", "fc"], width=0.25, resolution=64)
    assert net.graph.output_shapes == ((2, 2, 256), (10,))


def test_cli_exit_status_from_a_fresh_process() -> None:
    archc = Path(sys.executable).with_name("archc")
    proc = subprocess.run(
        [str(archc), "check", SPEC, "--outputs", "conv_pw_99_relu"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"{SPEC}: --outputs: no layer named 'conv_pw_99_relu'")


def test_a_cut_model_never_overwrites_the_whole_models_files() -> None:
    assert a.compile(SPEC, width=0.5, resolution=128).stem == "mobilenet_v1_0_5_128"
    assert feature_net().stem == "mobilenet_v1_0_5_128_features"
    cut = a.compile(SPEC, outputs=["conv1"])
    assert cut.default_output_dir("torch") == Path("build") / "mobilenet_v1_1_224_features_torch"


@pytest.mark.torch
def test_the_optimized_torch_copy_keeps_every_output() -> None:
    """A BatchNorm the model returns is not folded away (its output would take the conv's
    name, and ONNX/Keras outputs would point at another layer); the values agree."""
    import torch

    from archcompiler.analysis.optimize import optimize

    net = a.compile(SPEC, width=0.25, resolution=64, outputs=["conv_pw_5_bn", "conv_pw_11_relu"])
    w = W.init(net.graph, seed=4)
    opt = optimize(net.graph, w)
    assert opt.graph.outputs == ("conv_pw_5_bn", "conv_pw_11_relu")
    assert "conv_pw_5_bn" not in opt.folded and "conv_pw_4_bn" in opt.folded
    model, fast = net.build("torch", weights=w), net.build("torch", weights=w, optimize=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = fast(x), model(x)
    assert len(got) == len(want) == 2
    for g, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g, w_, rtol=1e-4, atol=1e-4)


SHIPPED = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
@pytest.mark.parametrize("spec", SHIPPED)
def test_features_of_every_shipped_spec_agree_in_every_backend(spec: str) -> None:
    """The grid: each shipped spec's feature levels, in all four backends, every node and output."""
    import torch  # noqa: F401  (before tensorflow; docs/DESIGN.md)

    net = a.compile(str(ROOT / "specs" / f"{spec}.yaml"), width=0.5, resolution=96, features=True)
    assert len(net.graph.outputs) == 5
    report = net.parity(["torch", "keras", "onnx", "tflite"])
    assert report.ok, report.table()


def test_feature_levels_follow_strides_not_map_sizes() -> None:
    """Found in review: keyed by map size, an 8 px MobileNet had 3 levels (the maps stop
    shrinking at 1x1), the last labelled reduction 8 though it is stride 32. Oracle: the
    paper's Table 1, whose stride-2 layers are dw2, dw4, dw6, dw12 after the stem."""
    from archcompiler.lowering.features import levels

    want = ["conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"]
    for size in (8, 224):
        got = levels(a.compile(SPEC, resolution=size).graph)
        assert [lv.node for lv in got] == want, size
        assert [lv.reduction for lv in got] == [2, 4, 8, 16, 32], size
