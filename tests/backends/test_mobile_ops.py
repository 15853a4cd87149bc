"""The ops the mobile family (EfficientNet, MnasNet, MobileNetV4) adds, against outside oracles:
timm's own functions and modules (skipped where timm is not installed), keras.applications'
layers, and numpy formulas. Every backend and both emitters also run them through
tests/specs/every_op.yaml (tests/backends/test_every_op_in_every_backend.py).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

from archcompiler import ir
from archcompiler.kit.registry import get_backend

torch = framework("torch")
tf = framework("tensorflow")

pytestmark = [pytest.mark.torch, pytest.mark.keras]

STUBS = Path(__file__).resolve().parents[1] / "stubs"


def timm_or_skip():
    """timm, with the torchvision stand-in in tests/stubs where torchvision is absent; skips
    the test where timm is not installed."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (pip install --no-deps timm huggingface_hub)")
    if importlib.util.find_spec("torchvision") is None and str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))
    import timm.layers

    return timm


def graph_of(node: ir.Node, shape: tuple[int, ...] = (5, 5, 4)) -> ir.Graph:
    inp = ir.Input(name="x", inputs=(), shape=shape)
    return ir.Graph(name="one_op", nodes=(inp, node), outputs=(node.name,), width=1.0, resolution=shape[:2])


def batch(n: int = 64, shape: tuple[int, ...] = (5, 5, 4), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


# -- drop_path ---------------------------------------------------------------------------


DROP = ir.DropPath(name="block2b_drop", inputs=("x",), shape=(5, 5, 4), rate=0.25)


def _whole_examples_dropped(out: np.ndarray, x: np.ndarray, rate: float) -> None:
    """Each example is all zeros or x / (1 - rate) (timm's drop_path, Keras' per-example
    Dropout), and a batch of 64 at rate 0.25 has both."""
    dropped = [bool(np.all(o == 0.0)) for o in out]
    for o, xi, gone in zip(out, x, dropped, strict=True):
        if not gone:
            np.testing.assert_allclose(o, xi / (1.0 - rate), rtol=1e-6)
    assert 0 < sum(dropped) < len(out)


def test_drop_path_in_torch_drops_whole_examples_as_timm_and_is_the_identity_in_eval() -> None:
    backend, graph = get_backend("torch"), graph_of(DROP)
    model = backend.build(graph)
    x = batch()
    np.testing.assert_array_equal(backend.run(graph, model, x)[DROP.name], x)  # eval: the identity
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    model.train()
    torch.manual_seed(7)
    out = model(xt)
    _whole_examples_dropped(out.detach().numpy().transpose(0, 2, 3, 1), x, DROP.rate)
    if importlib.util.find_spec("timm") is not None:  # the same draws as timm's own function
        timm = timm_or_skip()
        torch.manual_seed(7)
        assert torch.equal(out, timm.layers.drop_path(xt, DROP.rate, training=True))


def test_drop_path_in_keras_is_applications_per_example_dropout() -> None:
    backend, graph = get_backend("keras"), graph_of(DROP)
    model = backend.build(graph)
    layer = model.get_layer(DROP.name)
    # keras.applications.EfficientNet's "{block}drop": Dropout(rate, noise_shape=(None, 1, 1, 1))
    assert type(layer).__name__ == "Dropout" and tuple(layer.noise_shape) == (None, 1, 1, 1)
    x = batch()
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), x)
    tf.random.set_seed(3)
    _whole_examples_dropped(np.asarray(model(x, training=True)), x, DROP.rate)


# -- gelu --------------------------------------------------------------------------------


def _gelu(v: np.ndarray) -> np.ndarray:
    """The exact form, x * Phi(x), in float64 (erfc: no cancellation where x is very negative)."""
    return v * np.vectorize(math.erfc)(-v / math.sqrt(2.0)) / 2.0


@pytest.mark.parametrize("name", ["torch", "keras"])
def test_gelu_is_the_exact_erf_form_to_float64_rounding(name: str) -> None:
    # TensorFlow's own exact gelu rounds 1 / sqrt(2) to float32 (5e-9 off in float64): the Keras
    # backend's float64 model must not, or float64 parity against torch fails
    backend = get_backend(name)
    graph = graph_of(ir.Activation(name="act", inputs=("x",), shape=(5, 5, 4), kind="gelu"))
    x = np.random.default_rng(1).normal(scale=3.0, size=(4, 5, 5, 4))
    model = backend.build(graph, dtype="float64")
    got = backend.run(graph, model, x)["act"]
    # a few float64 roundings at the input's magnitude (1 + erf cancels where x is very negative)
    assert np.all(np.abs(got - _gelu(x)) <= 4 * np.finfo(np.float64).eps * (1.0 + np.abs(x)))


def test_keras_float32_gelu_is_keras_own_exact_gelu() -> None:
    # keras.layers.Activation("gelu"): keras.activations.gelu's default approximate=False
    model = get_backend("keras").build(graph_of(ir.Activation(name="act", inputs=("x",), shape=(5, 5, 4), kind="gelu")))
    layer = model.get_layer("act")
    assert layer.get_config()["activation"] == "gelu"
    x = batch(4)
    np.testing.assert_allclose(np.asarray(layer(x)), _gelu(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


# -- layer_scale -------------------------------------------------------------------------


SCALE = ir.LayerScale(name="scale", inputs=("x",), shape=(5, 5, 4), channels=4, init=1e-5)


def test_layer_scale_starts_at_init_and_is_timms_layer_scale2d() -> None:
    backend, graph = get_backend("torch"), graph_of(SCALE)
    model = backend.build(graph)  # built from weights.training_init: gamma filled with init
    np.testing.assert_array_equal(backend.get_weights(graph, model)["scale.gamma"], np.full(4, np.float32(1e-5)))
    gamma = np.array([0.5, -2.0, 3.0, 1e-5], np.float32)
    backend.set_weights(graph, model, {"scale.gamma": gamma})
    x = batch(4)
    np.testing.assert_array_equal(backend.run(graph, model, x)["scale"], x * gamma)  # the numpy formula
    if importlib.util.find_spec("timm") is not None:  # timm's module, loaded by its own names
        timm = timm_or_skip()
        theirs = timm.layers.LayerScale2d(4, init_values=1e-5)
        theirs.load_state_dict({"gamma": torch.from_numpy(gamma)})
        assert list(model.get_submodule("scale").state_dict()) == list(theirs.state_dict()) == ["gamma"]
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            assert torch.equal(model.get_submodule("scale")(xt), theirs(xt))


def test_layer_scale_in_keras_is_x_times_gamma_starting_at_init() -> None:
    backend, graph = get_backend("keras"), graph_of(SCALE)
    model = backend.build(graph)
    layer = model.get_layer("scale")
    assert [v.name for v in layer.trainable_weights] == ["gamma"] and not layer.non_trainable_weights
    np.testing.assert_array_equal(backend.get_weights(graph, model)["scale.gamma"], np.full(4, np.float32(1e-5)))
    gamma = np.array([0.5, -2.0, 3.0, 1e-5], np.float32)
    backend.set_weights(graph, model, {"scale.gamma": gamma})
    x = batch(4)
    np.testing.assert_array_equal(np.asarray(model(x)), x * gamma)


# -- normalization -----------------------------------------------------------------------


def _keras_preprocessing_spec(tmp_path: Path) -> Path:
    """keras.applications.EfficientNet's preprocessing: Rescaling(1/255), then Normalization."""
    spec = tmp_path / "pre.yaml"
    spec.write_text(
        "archc: 1\nname: pre\ninput: {size: 8, channels: 3}\nclasses: 2\nlayers:\n"
        "  - {op: rescaling, scale: 0.00392156862745098, name: rescaling}\n"
        "  - {op: normalization, name: normalization}\n"
        "  - {op: global_avg_pool, name: pool}\n"
        "  - {op: dense, units: $classes, name: fc}\n"
    )
    return spec


@pytest.fixture(scope="module")
def efficientnet_b0():
    from archcompiler.backends.keras._framework import keras

    return keras.applications.EfficientNetB0(weights=None)


@pytest.mark.slow  # builds EfficientNetB0 (seconds)
def test_normalization_counts_as_keras_applications_efficientnet_b0(efficientnet_b0, tmp_path: Path) -> None:
    import archcompiler as a
    from archcompiler.analysis.cost import cost

    # by type: Keras numbers auto-named layers per process ("normalization_1" after another model)
    (theirs,) = [layer for layer in efficientnet_b0.layers if type(layer).__name__ == "Normalization"]
    assert [(v.name, tuple(v.shape)) for v in theirs.weights] == [("mean", (3,)), ("variance", (3,)), ("count", ())]
    graph = a.lower(a.load(_keras_preprocessing_spec(tmp_path)))
    keras_cost = cost(graph, "keras").node("normalization")
    assert (keras_cost.trainable, keras_cost.non_trainable) == (0, theirs.count_params()) == (0, 7)
    assert cost(graph, "torch").node("normalization").params == 0  # buffers, as BatchNorm's statistics
    # EfficientNetB0's 42,023 non-trainable values are its BatchNorm statistics plus these 7
    bn_stats = sum(
        int(np.prod(v.shape))
        for layer in efficientnet_b0.layers
        if type(layer).__name__ == "BatchNormalization"
        for v in layer.non_trainable_weights
    )
    assert efficientnet_b0.count_params() == 5_330_571
    assert (
        bn_stats + keras_cost.non_trainable
        == 42_023
        == sum(int(np.prod(v.shape)) for v in efficientnet_b0.non_trainable_weights)
    )
    # archc's Keras layer is the same layer, with the same variables
    backend = get_backend("keras")
    ours = backend.build(graph).get_layer("normalization")
    assert type(ours) is type(theirs) and [v.name for v in ours.weights] == ["mean", "variance", "count"]


@pytest.mark.parametrize("name", ["torch", "keras", "onnx"])
def test_normalization_is_keras_formula_in_every_backend(name: str) -> None:
    # (x - mean) / max(sqrt(variance), 1e-7), with a variance of 0 hitting the floor
    node = ir.Normalization(name="norm", inputs=("x",), shape=(5, 5, 4), channels=4)
    backend, graph = get_backend(name), graph_of(node)
    model = backend.build(graph)
    x = batch(3)
    np.testing.assert_array_equal(backend.run(graph, model, x)["norm"], x)  # mean 0, variance 1 as built
    mean = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    variance = np.array([4.0, 0.25, 0.0, 1e-16], np.float32)
    backend.set_weights(graph, model, {"norm.mean": mean, "norm.variance": variance})
    want = (x.astype(np.float64) - mean) / np.maximum(np.sqrt(variance.astype(np.float64)), 1e-7)
    np.testing.assert_allclose(backend.run(graph, model, x)["norm"], want, rtol=1e-6)
