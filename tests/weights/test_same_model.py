"""One model across backends by default: a build without weights starts from archc's own
deterministic init (weights.training_init), so builds of one spec for torch, onnx, keras and
tflite hold the same tensors and predict the same thing.

The oracle is a float64 run of the same weights (PyTorch's float64 model, loaded from the
portable weights one build wrote); every build is read back from its own files with its own
runtime (the generated torch module and its state_dict, onnxruntime, keras.saving, LiteRT), as
a user without archc would. The init's statistics are checked against the scheme's formulas.
The fast tier builds torch and onnx; keras and tflite are in the slow tier.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import weights as W
from archcompiler.kit.registry import get_backend
from archcompiler.tools.cli import main

torch = framework("torch")
ort = framework("onnxruntime")

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
SMALL = ["--width", "0.25", "--resolution", "96"]
RTOL32 = 1e-5
"""Float32 agreement with the float64 run, relative to the largest output (about 100 float32
roundings of it; measured: 2.5e-7)."""


def build(tmp_path: Path, backend: str, *extra: str) -> Path:
    out = tmp_path / backend
    assert main(["build", SPEC, "--backend", backend, *SMALL, "-o", str(out), "-q", *extra]) == 0
    return out


def images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, 96, 96, 3)).astype(np.float32)


def torch_files(out: Path, x: np.ndarray) -> np.ndarray:
    """The generated module and its state_dict, in plain PyTorch (NCHW)."""
    spec = importlib.util.spec_from_file_location("built_mobilenet_v1", out / "mobilenet_v1.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MobilenetV1().eval()
    model.load_state_dict(torch.load(out / "mobilenet_v1.pt", weights_only=True))
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def onnx_file(out: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(out / "mobilenet_v1.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def reference(weights: W.Weights, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) of the float64 model with ``weights``."""
    graph = a.compile(SPEC, width=0.25, resolution=96).graph
    b = get_backend("torch")
    model = b.build_in(graph, "float64")
    b.set_weights(graph, model, weights)
    out = b.run(graph, model, x.astype(np.float64), [graph.output, graph.logits])
    return out[graph.output], out[graph.logits]


def same_prediction(got: dict[str, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    probs, logits = ref
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e3 * RTOL32 * np.abs(logits).max()  # argmax is not a near-tie
    for name, p in got.items():
        assert p.shape == probs.shape, name
        err = np.abs(p.astype(np.float64) - probs).max()
        assert err <= RTOL32 * np.abs(probs).max(), (name, err)
        assert np.array_equal(p.argmax(1), probs.argmax(1)), name


def same_weights(outs: list[Path]) -> W.Weights:
    loaded = [W.load(o / "mobilenet_v1.weights.npz") for o in outs]
    first = loaded[0]
    for other in loaded[1:]:
        assert set(other) == set(first)
        assert all(np.array_equal(other[k], first[k]) for k in first)
    return first


@pytest.mark.onnx
def test_torch_and_onnx_builds_are_one_model(tmp_path: Path) -> None:
    outs = [build(tmp_path, "torch"), build(tmp_path, "onnx")]
    w = same_weights(outs)
    x = images()
    same_prediction({"torch": torch_files(outs[0], x), "onnx": onnx_file(outs[1], x)}, reference(w, x))
    # what they start from is the training init, not parity's probe (BatchNorm 1, 0, 0, 1)
    assert all(np.all(w[f"conv_pw_5_bn.{p}"] == v) for p, v in (("gamma", 1), ("beta", 0), ("moving_variance", 1)))


def test_the_built_weights_follow_the_scheme(tmp_path: Path) -> None:
    """MobileNet 1.0 as the build writes it: the largest kernels' spread is the formula's
    (conv: sqrt(2 / (kh * kw * out / groups)); dense: uniform within 1 / sqrt(units))."""
    out = tmp_path / "full"
    assert main(["build", SPEC, "--backend", "torch", "--resolution", "32", "-o", str(out), "-q"]) == 0
    w = W.load(out / "mobilenet_v1.weights.npz")
    for name, std in (
        ("conv_pw_13.kernel", np.sqrt(2 / 1024)),  # 1x1, 1024 -> 1024
        ("conv_dw_13.kernel", np.sqrt(2 / 9)),  # 3x3 depthwise: groups = channels, one output each
        ("conv1.kernel", np.sqrt(2 / (9 * 32))),
    ):
        k = w[name].astype(np.float64)
        assert abs(k.std() / std - 1) < 0.03 + 3 / np.sqrt(2 * k.size), (name, k.std(), std)
    r = 1 / np.sqrt(1000)
    fc = w["fc.kernel"]
    assert fc.min() >= -r and fc.max() <= r and abs(fc.std() * np.sqrt(3) / r - 1) < 0.01
    assert np.all(w["fc.bias"] == 0)
    for p, v in (("gamma", 1), ("beta", 0), ("moving_mean", 0), ("moving_variance", 1)):
        assert all(np.all(t == v) for k, t in w.items() if k.endswith(f"_bn.{p}")), p


def test_seed_changes_the_weights_and_weights_exclude_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = W.load(build(tmp_path, "torch") / "mobilenet_v1.weights.npz")
    seeded = W.load(build(tmp_path / "s1", "torch", "--seed", "1") / "mobilenet_v1.weights.npz")
    zero = W.load(build(tmp_path / "s0", "torch", "--seed", "0") / "mobilenet_v1.weights.npz")
    assert all(np.array_equal(base[k], zero[k]) for k in base)  # 0 is the default
    assert not np.array_equal(base["conv_pw_5.kernel"], seeded["conv_pw_5.kernel"])
    capsys.readouterr()
    given = str(tmp_path / "torch" / "mobilenet_v1.weights.npz")
    for extra in (["--weights", given, "--seed", "3"], ["--weights", given, "--init", "framework"]):
        assert main(["build", SPEC, "--backend", "torch", *SMALL, "-o", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "exclude each other" in err, err
    assert main(["build", SPEC, "--backend", "torch", "--init", "framework", "--seed", "3"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_python_api_init_and_seed(tmp_path: Path) -> None:
    net = a.compile(SPEC, width=0.25, resolution=96)
    b = get_backend("torch")
    default = b.get_weights(net.graph, net.build(b))
    assert all(np.array_equal(default[k], v) for k, v in W.training_init(net.graph, 0).items())
    two = b.get_weights(net.graph, net.build(b, seed=2))
    assert not np.array_equal(two["conv1.kernel"], default["conv1.kernel"])
    built = net.build_to(b, tmp_path / "fw", init="framework")
    assert "different backends hold different models" in built.note
    assert net.build_to(b, tmp_path / "archc").note == ""
    for bad in ({"weights": default, "seed": 1}, {"weights": default, "init": "framework"}, {"init": "bogus"}):
        with pytest.raises(W.WeightError):
            net.build(b, **bad)  # type: ignore[arg-type]


@pytest.mark.onnx
def test_framework_init_gives_different_models_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    outs = []
    for backend in ("torch", "onnx"):
        outs.append(build(tmp_path, backend, "--init", "framework"))
        lines = capsys.readouterr().out.splitlines()
        assert lines[1] == (
            "note: weights from the framework's own random initialisation, not archc's: builds of this spec "
            "for different backends hold different models"
        )
    w = [W.load(o / "mobilenet_v1.weights.npz") for o in outs]
    assert not np.array_equal(w[0]["conv1.kernel"], w[1]["conv1.kernel"])
    x = images()
    got = torch_files(outs[0], x), onnx_file(outs[1], x)
    assert np.abs(got[0] - got[1]).max() > 1e3 * RTOL32 * np.abs(got[1]).max()


# -- every backend --------------------------------------------------------------------------


def keras_file(out: Path, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.saving.load_model(out / "mobilenet_v1.keras")(x))


def tflite_file(out: Path, x: np.ndarray) -> np.ndarray:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    it: Any = Interpreter(model_path=str(out / "mobilenet_v1.tflite"))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
def test_all_four_backends_build_one_model(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    names = ("torch", "onnx", "keras", "tflite")
    outs = dict(zip(names, (build(tmp_path, b) for b in names), strict=True))
    w = same_weights(list(outs.values()))
    x = images()
    readers = {"torch": torch_files, "onnx": onnx_file, "keras": keras_file, "tflite": tflite_file}
    same_prediction({b: readers[b](outs[b], x) for b in names}, reference(w, x))


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.tflite
def test_framework_init_differs_across_all_four(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    names = ("torch", "keras", "tflite")  # onnx has no initialisers: its framework init is archc's
    outs = {b: build(tmp_path, b, "--init", "framework") for b in names}
    w = {b: W.load(o / "mobilenet_v1.weights.npz")["conv1.kernel"] for b, o in outs.items()}
    assert not np.array_equal(w["torch"], w["keras"]) and not np.array_equal(w["keras"], w["tflite"])
