"""examples/train_digits.py end to end (slow tier): a MobileNet trained in torch on scikit-learn's
digits keeps its predictions on every held-out image in Keras, ONNX and TFLite float32, and loses
at most 1 point of held-out accuracy in int8 TFLite and int8 ONNX. The oracle is the held-out
labels and torch's own predictions, never a figure copied from a run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALL_RUNTIMES = [pytest.mark.slow, pytest.mark.torch, pytest.mark.keras, pytest.mark.onnx, pytest.mark.tflite]


def all_runtimes(test):
    for mark in ALL_RUNTIMES:
        test = mark(test)
    return test


def _example():
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("sklearn")
    ex = _example()
    data = ex.load_digits_split()
    _, weights = ex.train(data, epochs=20, seed=0)
    return ex, data, weights, ex.deploy(weights, data)


@all_runtimes
def test_float32_runtimes_predict_like_torch_on_every_heldout_image(trained) -> None:
    _, data, _, results = trained
    by_name = {r.name: r for r in results}
    torch_result = by_name["torch float32"]
    assert len(data.y_test) == 450
    assert torch_result.accuracy >= 0.9  # trained: far above the 10% of chance
    for name in ("keras float32", "onnx float32", "tflite float32"):
        assert (by_name[name].predictions == torch_result.predictions).all(), name


@all_runtimes
def test_int8_runtimes_lose_at_most_one_point(trained) -> None:
    _, _, _, results = trained
    by_name = {r.name: r for r in results}
    int8 = [n for n in by_name if n.endswith("int8")]
    if not int8:
        pytest.skip("this archc has no int8 build")
    assert sorted(int8) == ["onnx int8", "tflite int8"]
    for name in int8:
        assert by_name[name].accuracy >= by_name["torch float32"].accuracy - 0.01, name


@pytest.mark.torch
def test_batchnorm_recalibration_is_what_makes_eval_mode_work() -> None:
    """The catch the example documents: with the spec's decay 0.99 the running statistics of a
    short run trail the weights; recomputing them gives the same predictions as statistics
    measured directly (float64 numpy mean/var of each BatchNorm's input over the data)."""
    torch = pytest.importorskip("torch")
    ex = _example()
    import archcompiler

    net = archcompiler.compile(ex.SPEC, width=0.25, resolution=16, classes=3, classifier_activation="none")
    model = net.build("torch")
    x = torch.randn(40, 3, 16, 16) * 2 + 1
    ex.recalibrate_batchnorm(model, x, batch=40)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}

    def keep_input(module, inputs, output) -> None:
        seen["x"] = inputs[0].detach().double()

    bn.register_forward_hook(keep_input)
    model.train()
    with torch.no_grad():
        model(x)
    inp = seen["x"].numpy()
    mean = inp.mean(axis=(0, 2, 3))
    assert bn.momentum == pytest.approx(0.01)  # the spec's decay 0.99, restored
    assert abs(bn.running_mean.double().numpy() - mean).max() < 1e-4
