"""What an optimised build hands out besides the model: generated source (``archc generate
--optimize``), parity of the optimised models (``archc parity --optimize``) and ``save`` of a
model built with ``optimize=True``. The oracle is always the unoptimised model, with
archc's non-trivial initial weights (BatchNorm statistics away from 0 and 1), so a wrong fold
fails; the logits are compared (``classifier_activation="none"``), not a softmax that could
hide a wrong value."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.analysis import optimize as O
from archcompiler.kit.registry import BackendError, get_backend
from archcompiler.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
MOBILENET = str(ROOT / "specs/mobilenet.yaml")
SMALL = ["--width", "0.25", "--resolution", "96"]


def logits_net(spec: str = "specs/mobilenet.yaml") -> a.Compiled:
    """A small model whose output is the logits (stride-2 convs with TF-SAME padding: torch
    widens their kernels; the keras layout spec has explicit pads to merge)."""
    return a.compile(ROOT / spec, width=0.25, resolution=96, classifier_activation="none")


def close(got: np.ndarray, want: np.ndarray) -> None:
    """Within optimize.TOLERANCE of the output's magnitude, and not a degenerate comparison."""
    assert want.std() > 0.1
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(want).max())), err


def wrong_fold(conv: O.Conv, bn: ir.BatchNorm, weights: W.Weights) -> dict[str, Any]:
    """A plausible bug: BatchNorm's epsilon mistaken (by 0.05, against variances of 0.5 to 2)."""
    return FOLD(conv, dataclasses.replace(bn, epsilon=bn.epsilon + 0.05), weights)


FOLD = O._fold


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"archc_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the rewrite without weights (generate, save) --------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("spec", ["specs/mobilenet.yaml", "specs/mobilenet_keras.yaml", "tests/specs/tiny_resnet.yaml"])
def test_the_rewritten_graph_does_not_depend_on_the_weights(spec: str, symmetric: bool) -> None:
    """Generated source and save() rewrite the structure alone: it must be the graph a build
    with weights makes, widened kernels included."""
    g = a.compile(ROOT / spec, width=0.25, resolution=96).graph if "mobilenet" in spec else a.compile(ROOT / spec).graph
    with_weights = O.optimize(g, W.init(g, seed=2), symmetric_padding=symmetric)
    alone = O.optimize(g, None, symmetric_padding=symmetric)
    assert alone.graph == with_weights.graph and alone.weights == {}
    for field in ("folded", "merged", "widened", "names"):
        assert getattr(alone, field) == getattr(with_weights, field)
    assert alone.folded and (alone.widened or not symmetric or "resnet" in spec)


def test_holders_name_the_original_node_each_optimised_node_computes() -> None:
    g = logits_net("specs/mobilenet_keras.yaml").graph
    opt = O.optimize(g, None)
    holders = opt.holders()
    assert set(holders) == {n.name for n in opt.graph.nodes}
    for conv in (n for n in opt.graph.nodes if n.op in ("conv2d", "depthwise_conv2d")):
        readers = [n for n in g.nodes if n.inputs == (conv.name,)]
        want = readers[0].name if readers and readers[0].op == "batchnorm" else conv.name
        assert holders[conv.name] == want


# -- generate --optimize --------------------------------------------------------------------------


@pytest.mark.torch
def test_generated_optimized_torch_module_computes_the_unoptimised_model(tmp_path: Path) -> None:
    """The generated source of the optimised graph, with the folded weights an optimised build
    writes (its state_dict, as the module's docstring says), against the unoptimised model."""
    torch = pytest.importorskip("torch")
    net = logits_net()
    w = W.init(net.graph, seed=4)
    path = net.generate_to("torch", tmp_path / "gen", optimize=True)
    assert path.name == "mobilenet_v1_0_25_96_optimized_torch.py"
    source = path.read_text()
    assert "class MobilenetV1Optimized" in source and "BatchNorm2d(" not in source
    files = net.build_to("torch", tmp_path / "build", weights=w, optimize=True).files
    (pt,) = (p for p in files if p.suffix == ".pt")
    model = load_module(path).MobilenetV1Optimized().eval()
    model.load_state_dict(torch.load(pt))
    assert not list(model.buffers()) and "no buffers" in source.split('"""')[1]  # the docstring agrees
    x = np.random.default_rng(7).normal(size=(3, *net.graph.input_shape)).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    b = get_backend("torch")
    close(got, b.run(net.graph, net.build(b, weights=w), x)[net.graph.output])


@pytest.mark.keras
def test_generated_optimized_keras_module_computes_the_unoptimised_model(tmp_path: Path) -> None:
    """keras.applications' layout: the stride-2 convs' explicit ((0, 1), (0, 1)) pads are
    merged into them, so the generated module must express an asymmetrically padded conv."""
    pytest.importorskip("tensorflow")
    net = logits_net("specs/mobilenet_keras.yaml")
    w = W.init(net.graph, seed=4)
    path = net.generate_to("keras", tmp_path / "gen", optimize=True)
    assert path.name == "mobilenet_keras_0_25_96_optimized_keras.py"
    assert "BatchNormalization(" not in path.read_text()
    net.build_to("keras", tmp_path / "build", weights=w, optimize=True)
    model = load_module(path).build_model()
    # the loading loop of the generated module's docstring
    weights = np.load(tmp_path / "build" / "mobilenet_keras_optimized.weights.npz")
    for layer in model.layers:
        for variable in layer.weights:
            variable.assign(weights[f"{layer.name}.{variable.name}"])
    x = np.random.default_rng(7).normal(size=(3, *net.graph.input_shape)).astype(np.float32)
    b = get_backend("keras")
    close(model(x, training=False).numpy(), b.run(net.graph, net.build(b, weights=w), x)[net.graph.output])


@pytest.mark.torch
def test_cli_generate_optimize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "gen"
    assert main(["generate", MOBILENET, *SMALL, "--backend", "torch", "--optimize", "-o", str(out)]) == 0
    assert "mobilenet_v1_0_25_96_optimized_torch.py" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["mobilenet_v1_0_25_96_optimized_torch.py"]
    plain = a.compile(MOBILENET, width=0.25, resolution=96).generate("torch")
    assert (out / "mobilenet_v1_0_25_96_optimized_torch.py").read_text() != plain


@pytest.mark.onnx
@pytest.mark.torch
@pytest.mark.parametrize("command", ["generate", "build", "parity"])
def test_cli_optimize_with_a_backend_that_cannot_is_one_line_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from archcompiler.backends.torch import TorchBackend

    monkeypatch.setattr(TorchBackend, "optimizable", False)
    out = tmp_path / "o"
    where = ["--backends", "torch,onnx"] if command == "parity" else ["--backend", "torch", "-o", str(out)]
    assert main([command, MOBILENET, *SMALL, *where, "--optimize"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--optimize" in err and "cannot build optimized models" in err
    assert err.startswith(MOBILENET)
    assert not out.exists()


@pytest.mark.onnx
def test_api_generate_optimize_refuses_a_backend_that_cannot() -> None:
    pytest.importorskip("onnx")
    from archcompiler.backends.onnx import OnnxBackend

    class Plain(OnnxBackend):
        optimizable = False

    with pytest.raises(BackendError, match="cannot build optimized models"):
        logits_net().generate(Plain(), optimize=True)


# -- save() of a model built with optimize=True --------------------------------------------------


def _save_recognises(backend: str, tmp_path: Path) -> None:
    """save(model, backend) without ``optimized=`` writes what build_to(optimize=True) writes:
    the same file names, manifest and folded weights (against the rewrite's own weights)."""
    net = logits_net()
    w = W.init(net.graph, seed=3)
    opt, model = net.build_optimized(backend, weights=w)
    files = net.save(model, backend, tmp_path / "api")
    built = net.build_to(backend, tmp_path / "cli", weights=w, optimize=True)
    assert sorted(p.name for p in files) == sorted(p.name for p in built.files)
    assert all(p.name.startswith("mobilenet_v1_optimized") for p in files)
    manifest = json.loads((tmp_path / "api" / "mobilenet_v1_optimized.json").read_text())
    assert manifest == opt.manifest(net.graph)
    saved = W.load(tmp_path / "api" / "mobilenet_v1_optimized.weights.npz")
    assert saved.keys() == opt.weights.keys()
    for k in saved:
        np.testing.assert_allclose(saved[k], opt.weights[k], rtol=1e-6, atol=1e-7)
    # a plain model is still saved as the plain graph
    plain = net.save(net.build(backend, weights=w), backend, tmp_path / "plain")
    assert "mobilenet_v1.weights.npz" in {p.name for p in plain}
    assert not any("optimized" in p.name for p in plain)


@pytest.mark.torch
def test_save_recognises_an_optimized_torch_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _save_recognises("torch", tmp_path)


@pytest.mark.onnx
def test_save_recognises_an_optimized_onnx_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    _save_recognises("onnx", tmp_path)


@pytest.mark.keras
def test_save_recognises_an_optimized_keras_model(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    _save_recognises("keras", tmp_path)


@pytest.mark.keras
@pytest.mark.tflite
@pytest.mark.slow
def test_save_recognises_an_optimized_tflite_model(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    _save_recognises("tflite", tmp_path)


# -- parity --optimize ----------------------------------------------------------------------------


@pytest.mark.onnx
@pytest.mark.torch
def test_parity_optimize_judges_every_optimised_model_against_the_unoptimised_one() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    net = logits_net()
    report = net.parity(["torch", "onnx"], optimize=True)
    assert report.ok, report.table()
    assert report.graph.name == "mobilenet_v1_optimized"
    assert {d.node for d in report.diffs} == {n.name for n in report.graph.nodes}
    assert not any(d.op in ("batchnorm", "zero_pad2d") for d in report.diffs)
    assert "unoptimised" in report.oracle
    # the first backend is judged too (against the unoptimised float64 model), not the reference
    assert "torch" in {d.backend for d in report.diffs}
    assert max(d.error for d in report.diffs) > 0


@pytest.mark.onnx
@pytest.mark.torch
def test_parity_optimize_reports_a_fold_every_backend_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong fold goes into every backend alike, so the backends agree with each other: only
    the unoptimised oracle sees it, at the first conv with a BatchNorm folded in."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(O, "_fold", wrong_fold)
    net = logits_net()
    report = net.parity(["torch", "onnx"], optimize=True)
    assert not report.ok
    bad = report.first_failure
    assert bad is not None and bad.node == "conv1" and bad.error > 10 * bad.allowed
    assert bad.max_abs < bad.error / 100  # torch and onnx agree on the wrong values


@pytest.mark.keras
def test_parity_optimize_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64: the optimised models within 1e-9 of the unoptimised float64 model (the fold
    is done in float64 for them), and the wrong fold caught there too."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    net = a.compile(ROOT / "tests/specs/tiny_resnet.yaml", classifier_activation="none")
    report = net.parity(["torch", "keras"], optimize=True, dtype="float64")
    assert report.ok, report.table()
    assert max(d.error for d in report.diffs) > 0
    monkeypatch.setattr(O, "_fold", wrong_fold)
    bad = net.parity(["torch", "keras"], optimize=True, dtype="float64").first_failure
    assert bad is not None and bad.node == "stem"


@pytest.mark.onnx
@pytest.mark.torch
def test_cli_parity_optimize(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    args = ["parity", MOBILENET, *SMALL, "--backends", "torch,onnx", "--optimize", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1_optimized" in out and "unoptimised" in out and "conv1_bn" not in out
    monkeypatch.setattr(O, "_fold", wrong_fold)
    assert main(args) == 1
    assert "FAIL" in capsys.readouterr().out.upper()


def test_cli_parity_optimize_refuses_training(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["parity", MOBILENET, "--backends", "torch,onnx", "--optimize", "--train-steps", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--optimize" in err and "--train-steps" in err
