"""Keras' published MobileNet and EfficientNet checkpoints run in archc's PyTorch and Keras models.

keras.applications.MobileNet is built with random weights (nothing is downloaded), its BN
moving statistics randomised too, saved the way a user saves it, then read by archc into
models built from specs/mobilenet_keras.yaml with the same alpha and size (EfficientNetB0 and EfficientNetV2B0:
specs/efficientnet_keras.yaml and efficientnet_v2.yaml). Their logits must match
keras.applications' own to 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_first, framework, randomise_batchnorm

import archcompiler as a
from archcompiler.kit.registry import get_backend, read_weights
from archcompiler.weights import WeightError

torch = framework("torch")
keras = framework("keras")

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[2]
SPEC = a.load(ROOT / "specs" / "mobilenet_keras.yaml")


def reference(alpha: float, size: int, tmp_path: Path) -> tuple[Path, keras.Model]:
    ref = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(size, size, 3))
    rng = np.random.default_rng(7)
    for layer in ref.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            randomise_batchnorm(layer, rng)
    path = tmp_path / f"mobilenet_{alpha}_{size}.weights.h5"
    ref.save_weights(path)
    return path, ref


@pytest.mark.parametrize(("alpha", "size"), fast_first([(0.25, 128), (0.5, 128), (0.75, 128), (1.0, 128), (0.5, 150)]))
def test_keras_applications_weights_in_archc(alpha: float, size: int, tmp_path: Path) -> None:
    path, ref = reference(alpha, size, tmp_path)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, size, size, 3)).astype("float32")
    logits_model = keras.Model(ref.input, ref.get_layer("reshape_2").output)
    want = np.asarray(logits_model(x, training=False))
    want_probs = np.asarray(ref(x, training=False))

    graph = a.lower(SPEC, width=alpha, resolution=size)
    w = read_weights(path, graph)
    for name in ("torch", "keras"):
        b = get_backend(name)
        model = b.build(graph)
        b.set_weights(graph, model, w)
        got = b.run(graph, model, x, ["reshape_2", "predictions"])
        np.testing.assert_allclose(got["reshape_2"], want, atol=1e-4, err_msg=f"{name} logits")
        np.testing.assert_allclose(got["predictions"], want_probs, atol=1e-5, err_msg=f"{name} probabilities")
    assert np.abs(want).max() > 0.1  # logits that are all ~0 would make the comparison vacuous


def randomised_efficientnet(ref: keras.Model, seed: int = 7) -> keras.Model:
    """Random BatchNorm statistics, and for EfficientNet's Normalization a mean and variance of
    pixels in 0-1 (what ``adapt`` would learn), so that a loader that dropped them would fail."""
    rng = np.random.default_rng(seed)
    for layer in ref.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            randomise_batchnorm(layer, rng)
        elif isinstance(layer, keras.layers.Normalization) and layer.weights:  # mean, variance, count
            mean, variance, count = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.4, 0.6, mean.shape).astype("float32"),
                    rng.uniform(0.04, 0.09, variance.shape).astype("float32"),
                    np.asarray(1000, dtype=count.dtype),
                ]
            )
    return ref


def keras_logits(ref: keras.Model, x: np.ndarray) -> np.ndarray:
    """Keras' classifier before its softmax (its Dense runs the softmax inside)."""
    features = np.asarray(keras.Model(ref.input, ref.get_layer("avg_pool").output)(x, training=False))
    kernel, bias = (np.asarray(v) for v in ref.get_layer("predictions").weights)
    return features @ kernel + bias


def float64_twin(application: Callable[..., keras.Model], size: int, path: Path) -> keras.Model:
    """keras.applications' ``application`` built in float64 with the weights of ``path``: the
    oracle. Keras' own float32 model is itself 6e-5 off it on EfficientNet-B0's logits (random
    weights and BatchNorm statistics; its oneDNN summation order), archc's builds 2e-7."""
    keras.backend.clear_session()
    keras.config.set_floatx("float64")
    try:
        twin = application(weights=None, input_shape=(size, size, 3))
        twin.load_weights(path)
    finally:
        keras.config.set_floatx("float32")
    return twin


def check_keras_file_in_archc(
    graph: object,
    path: Path,
    x: np.ndarray,
    archc_x: np.ndarray,
    ref: keras.Model,
    twin: keras.Model,
    backends: tuple[str, ...],
) -> None:
    """The .weights.h5 read by archc into its models of ``backends``: the float64 Keras model's
    logits (1e-4 of their magnitude) and probabilities (1e-5) on the same pixels; Keras' own
    float32 model ``ref`` is checked against the same oracle (1e-3), so the twin is that model."""
    x64 = x.astype("float64")
    want = keras_logits(twin, x64)
    want_probs = np.asarray(twin(x64, training=False))
    assert want.dtype == np.float64 and np.abs(want).max() > 0.1  # logits all ~0 would be vacuous
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(keras_logits(ref, x), want, atol=1e-3 * scale, err_msg="Keras float32 vs float64")
    w = read_weights(path, graph)
    for name in backends:
        b = get_backend(name)
        model = b.build(graph)
        b.set_weights(graph, model, w)
        got = b.run(graph, model, archc_x, ["predictions", "predictions_softmax"])
        np.testing.assert_allclose(got["predictions"], want, atol=1e-4 * scale, err_msg=f"{name} logits")
        np.testing.assert_allclose(got["predictions_softmax"], want_probs, atol=1e-5, err_msg=f"{name} probabilities")


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.tflite
def test_keras_efficientnet_weights_in_archc(tmp_path: Path) -> None:
    """keras.applications.EfficientNetB0's .weights.h5 (Keras 3's save_weights) in archc's
    efficientnet_keras spec (torch, keras, onnx and tflite builds), from raw 0-255 pixels:
    Keras' Rescaling and Normalization are layers of the spec, and the Normalization's adapted
    mean and variance come from the file (its ``count``, a counter inference does not use, is
    skipped)."""
    size = 65  # odd: the stem's and stride-2 blocks' correct_pad pad (1, 1) here
    keras.backend.clear_session()
    ref = randomised_efficientnet(keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3)))
    path = tmp_path / "b0.weights.h5"
    ref.save_weights(path)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    graph = a.lower(a.load(ROOT / "specs" / "efficientnet_keras.yaml"), variant="b0", resolution=size)
    twin = float64_twin(keras.applications.EfficientNetB0, size, path)
    check_keras_file_in_archc(graph, path, x, x, ref, twin, ("torch", "keras", "onnx", "tflite"))


@pytest.mark.slow
@pytest.mark.onnx
def test_keras_efficientnet_v2_weights_in_archc(tmp_path: Path) -> None:
    """keras.applications.EfficientNetV2B0's .weights.h5 in archc's efficientnet_v2 spec. Its
    preprocessing has no weights (Rescaling(1/255) and a Normalization of constant ImageNet
    statistics) and the spec leaves it to the caller, as timm does: archc is given the
    preprocessed pixels, Keras the raw ones."""
    size = 64
    keras.backend.clear_session()
    ref = randomised_efficientnet(keras.applications.EfficientNetV2B0(weights=None, input_shape=(size, size, 3)))
    path = tmp_path / "v2b0.weights.h5"
    ref.save_weights(path)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalized = ((x / 255.0 - mean) / std).astype("float32")
    graph = a.lower(a.load(ROOT / "specs" / "efficientnet_v2.yaml"), variant="b0", resolution=size)
    twin = float64_twin(keras.applications.EfficientNetV2B0, size, path)
    check_keras_file_in_archc(graph, path, x, normalized, ref, twin, ("torch", "keras", "onnx"))


@pytest.mark.slow
def test_a_keras_file_of_another_variant_is_named(tmp_path: Path) -> None:
    """keras.applications.EfficientNetB1's .weights.h5 asked to load as B0: the error of its
    first layer that does not fit, then the variant it fits (with a depth that repeats blocks
    more than B1's, ceil(1.4 x 3) = 5 > ceil(1.1 x 3) = 4: at its own depth, said so); loaded
    as B1 it fits."""
    keras.backend.clear_session()
    path = tmp_path / "b1.weights.h5"
    keras.applications.EfficientNetB1(weights=None, input_shape=(64, 64, 3)).save_weights(path)
    spec = a.load(ROOT / "specs" / "efficientnet_keras.yaml")
    with pytest.raises(WeightError) as info:
        a.compile(spec, variant="b0", resolution=64).read_weights(path)
    assert "\n" not in str(info.value) and str(info.value).endswith("; the file fits --variant b1"), info.value
    with pytest.raises(WeightError) as info:
        a.compile(spec, variant="b0", resolution=64, depth=1.4).read_weights(path)
    assert str(info.value).endswith("; the file fits --variant b1 without --depth 1.4"), info.value
    assert a.compile(spec, variant="b1", resolution=64).read_weights(path)
