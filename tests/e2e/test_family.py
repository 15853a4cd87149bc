"""The MobileNet family specs against keras.applications built live (the oracle).

For each alpha and input size, the IR of the spec (``archcompiler.compile``) must have Keras'
layer names in Keras' order, the same weight tensors (name and shape, canonical layout is
Keras' own) and the same total / trainable / non-trainable counts. Nothing here is copied from
archc's output: the expected side is always the Keras model built in this process, plus the
published totals of NUMBERS.md as an extra check.

Keras' ``Dense(classes, activation="softmax", name="predictions")`` is one layer; archc's dense
op has no activation, so the spec writes it as the dense ``predictions`` and a softmax
``predictions_softmax`` (the one documented difference). MobileNetV3's activations are
auto-named by Keras (``re_lu_3``, ``activation_7``): there the layer kind (and activation) must
match, not the name; every layer with weights is named explicitly by Keras and compared by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import fast_first, framework, randomise_batchnorm

import archcompiler as a
from archcompiler import weights
from archcompiler.kit.registry import get_backend, read_weights

torch = framework("torch")
keras = framework("keras")

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[2]
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
SIZES = (96, 128, 160, 192, 224, 131)  # 131: odd sizes exercise V2's correct_pad (1, 1)

Side = tuple[list[str], dict[str, tuple[int, ...]], tuple[int, int, int]]
AUTO = re.compile(r"^(re_lu|activation)(_\d+)?$")
"""Names Keras makes up for unnamed layers (V3's activations)."""
KIND = {
    "Conv2D": "conv2d",
    "DepthwiseConv2D": "depthwise_conv2d",
    "BatchNormalization": "batchnorm",
    "ReLU": "activation",
    "Activation": "activation",
    "ZeroPadding2D": "zero_pad2d",
    "GlobalAveragePooling2D": "global_pool",
    "Add": "add",
    "Multiply": "multiply",
    "Dropout": "dropout",
    "Flatten": "flatten",
    "Rescaling": "rescaling",
    "Dense": "dense",
}
"""Keras layer class -> the IR op it must be."""


def keras_side(model: Any) -> Side:
    """Layer names (softmax split off the classifier), weight shapes, (total, trainable, non-trainable)."""
    names: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        names.append(layer.name)
        if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax:
            names.append(f"{layer.name}_softmax")
        for w in layer.weights:
            shapes[f"{layer.name}.{w.path.split('/')[-1]}"] = tuple(int(d) for d in w.shape)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return names, shapes, (model.count_params(), trainable, non_trainable)


def keras_layers(model: Any) -> list[tuple[str | None, str, str | None]]:
    """(name or None when auto-named, IR op, activation kind when Keras states it) per layer."""
    out: list[tuple[str | None, str, str | None]] = []
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "InputLayer":
            continue
        name = None if AUTO.match(layer.name) else layer.name
        kind = None
        if cls == "Activation":
            kind = {"hard_silu": "hard_swish", "silu": "swish"}.get(
                layer.activation.__name__, layer.activation.__name__
            )
            if kind == "softmax":
                out.append((name, "softmax", None))
                continue
        elif cls == "ReLU" and layer.max_value is None:
            kind = "relu"  # ReLU(6.0) is relu6 in V2 and hard_sigmoid's clamp in V3: left open
        out.append((name, KIND[cls], kind))
        if cls == "Dense" and layer.activation is keras.activations.softmax:
            out.append((f"{layer.name}_softmax", "softmax", None))
    return out


def archc_side(spec: str, alpha: float, size: int) -> Side:
    net = a.compile(ROOT / "specs" / spec, width=alpha, resolution=size)
    graph = net.graph
    names = [n.name for n in graph.nodes if n.op != "input"]
    shapes = {k: tuple(v) for k, v in weights.expected(graph).items()}
    c = net.cost("keras")
    return names, shapes, (c.params, c.trainable, c.non_trainable)


def compare(spec: str, build: Callable[..., Any], alpha: float, size: int) -> tuple[int, int, int]:
    keras.backend.clear_session()  # so auto-named layers get their first name
    want_names, want_shapes, want_counts = keras_side(build(weights=None, alpha=alpha, input_shape=(size, size, 3)))
    names, shapes, counts = archc_side(spec, alpha, size)
    assert names == want_names
    assert shapes == want_shapes
    assert counts == want_counts
    return counts


def compare_v3(spec: str, build: Callable[..., Any], alpha: float, size: int) -> None:
    keras.backend.clear_session()
    model = build(weights=None, alpha=alpha, input_shape=(size, size, 3), minimalistic=False)
    _, want_shapes, want_counts = keras_side(model)
    want = keras_layers(model)
    graph = a.compile(ROOT / "specs" / spec, width=alpha, resolution=size).graph
    nodes = [n for n in graph.nodes if n.op != "input"]
    got = [
        (n.name if w[0] is not None else None, n.op, getattr(n, "kind", None) if w[2] is not None else None)
        for n, w in zip(nodes, want, strict=False)
    ]
    assert len(nodes) == len(want)
    assert got == want
    _, shapes, counts = archc_side(spec, alpha, size)
    assert shapes == want_shapes
    assert counts == want_counts


def MobileNetV2(**kwargs: Any) -> Any:  # keras.applications', named alike (test ids); Keras loads in the test
    return keras.applications.MobileNetV2(**kwargs)


def MobileNetV3Large(**kwargs: Any) -> Any:
    return keras.applications.MobileNetV3Large(**kwargs)


def MobileNetV3Small(**kwargs: Any) -> Any:
    return keras.applications.MobileNetV3Small(**kwargs)


V2 = MobileNetV2


@pytest.mark.parametrize(("alpha", "size"), fast_first([(0.35, 131), (1.4, 224)]))
def test_mobilenet_v2_matches_keras(alpha: float, size: int) -> None:
    compare("mobilenet_v2.yaml", V2, alpha, size)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_mobilenet_v2_grid(alpha: float, size: int) -> None:
    compare("mobilenet_v2.yaml", V2, alpha, size)


@pytest.mark.parametrize(
    ("alpha", "total", "trainable"),
    [(1.0, 3_538_984, 3_504_872), (0.35, 1_691_208, None), (1.3, 5_431_048, None)],
)
def test_mobilenet_v2_published_totals(alpha: float, total: int, trainable: int | None) -> None:
    """NUMBERS.md (keras.applications count_params()): does not depend on the input size."""
    for size in (224, 160):
        _, _, (params, train, _) = archc_side("mobilenet_v2.yaml", alpha, size)
        assert params == total
        if trainable is not None:
            assert train == trainable


V3_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.25, 1.3, 1.4)  # issue 8 grid, plus 1.25
V3_SIZES = (96, 128, 160, 192, 224, 131)
V3L = MobileNetV3Large
V3S = MobileNetV3Small


@pytest.mark.parametrize(("alpha", "size"), [(0.5, 224)])  # alpha 0.5 drops a residual Keras has at 1.0
def test_mobilenet_v3_large_matches_keras(alpha: float, size: int) -> None:
    compare_v3("mobilenet_v3_large.yaml", V3L, alpha, size)


@pytest.mark.parametrize(("alpha", "size"), [(0.75, 131)])
def test_mobilenet_v3_small_matches_keras(alpha: float, size: int) -> None:
    compare_v3("mobilenet_v3_small.yaml", V3S, alpha, size)


@pytest.mark.slow
@pytest.mark.parametrize("size", V3_SIZES)
@pytest.mark.parametrize("alpha", V3_ALPHAS)
@pytest.mark.parametrize(("spec", "build"), [("mobilenet_v3_large.yaml", V3L), ("mobilenet_v3_small.yaml", V3S)])
def test_mobilenet_v3_grid(spec: str, build: Callable[..., Any], alpha: float, size: int) -> None:
    compare_v3(spec, build, alpha, size)


@pytest.mark.parametrize(
    ("spec", "alpha", "total", "trainable"),
    [
        ("mobilenet_v3_large.yaml", 1.0, 5_507_432, 5_483_032),
        ("mobilenet_v3_large.yaml", 0.5, 2_702_512, None),
        ("mobilenet_v3_small.yaml", 1.0, 2_554_968, 2_542_856),
        ("mobilenet_v3_small.yaml", 0.6, 1_735_168, None),
        ("mobilenet_v3_small.yaml", 1.25, 3_660_640, None),
    ],
)
def test_mobilenet_v3_published_totals(spec: str, alpha: float, total: int, trainable: int | None) -> None:
    """NUMBERS.md (keras.applications count_params())."""
    _, _, (params, train, _) = archc_side(spec, alpha, 224)
    assert params == total
    if trainable is not None:
        assert train == trainable


TF_SLIM_V2 = {
    (1.4, 224): 582,
    (1.3, 224): 509,
    **dict(zip([(1.0, s) for s in (224, 192, 160, 128, 96)], (300, 221, 154, 99, 56), strict=True)),
    **dict(zip([(0.75, s) for s in (224, 192, 160, 128, 96)], (209, 153, 107, 69, 39), strict=True)),
    **dict(zip([(0.5, s) for s in (224, 192, 160, 128, 96)], (97, 71, 50, 32, 18), strict=True)),
    **dict(zip([(0.35, s) for s in (224, 192, 160, 128, 96)], (59, 43, 30, 20, 11), strict=True)),
}
"""TF-Slim's MobileNetV2 table (NUMBERS.md; 1001 classes): millions of multiply-adds, truncated."""
TF_SLIM_V2_PARAMS = {1.4: 6.06, 1.3: 5.34, 1.0: 3.47, 0.75: 2.61, 0.5: 1.95, 0.35: 1.66}


def test_mobilenet_v2_tf_slim_table() -> None:
    text = (ROOT / "specs" / "mobilenet_v2.yaml").read_text().replace("classes: 1000", "classes: 1001")
    loaded = a.load_text(text, "mobilenet_v2_1001.yaml")
    for (alpha, size), macs in TF_SLIM_V2.items():
        c = a.cost(a.lower(loaded, width=alpha, resolution=size), "paper")
        assert c.macs // 1_000_000 == macs, (alpha, size, c.macs)
        assert round(c.params / 1e6, 2) == TF_SLIM_V2_PARAMS[alpha]


@pytest.mark.parametrize(
    ("spec", "macs", "params"),
    [
        ("mobilenet_v2.yaml", 300_774_272, 3_469_760),
        ("mobilenet_v3_large.yaml", 216_589_760, 5_451_272),
        ("mobilenet_v3_small.yaml", 56_510_400, 2_525_832),
    ],
)
def test_paper_convention_at_alpha_1(spec: str, macs: int, params: int) -> None:
    """NUMBERS.md: conv, dw and FC weights plus FC bias, and their multiply-adds, at 224."""
    c = a.compile(ROOT / "specs" / spec, width=1.0, resolution=224).cost("paper")
    assert (c.macs, c.params) == (macs, params)


def randomised(model: Any, seed: int = 7) -> Any:
    """Non-trivial BatchNorm statistics, so a wrong epsilon, order or wiring cannot pass by luck."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            randomise_batchnorm(layer, rng)
    return model


@pytest.mark.slow  # test_mobilenet_v3_runs_like_keras runs the fast case
@pytest.mark.torch
def test_mobilenet_v2_runs_like_keras(tmp_path: Path) -> None:
    """Keras' own weights (saved by name) in archc's torch and keras models give Keras' logits."""
    alpha, size = 0.35, 97  # odd: correct_pad pads (1, 1) at 97, then (0, 1) at 48 (even)
    keras.backend.clear_session()
    ref = randomised(V2(weights=None, alpha=alpha, input_shape=(size, size, 3)))
    path = tmp_path / "v2.weights.h5"
    ref.save_weights(path)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, size, size, 3)).astype("float32")
    features = np.asarray(keras.Model(ref.input, ref.get_layer("global_average_pooling2d").output)(x))
    kernel, bias = (np.asarray(v) for v in ref.get_layer("predictions").weights)
    want = features @ kernel + bias  # Keras' Dense before its softmax
    want_probs = np.asarray(ref(x, training=False))
    assert np.abs(want).max() > 0.1  # logits all ~0 would make the comparison vacuous

    graph = a.lower(a.load(ROOT / "specs" / "mobilenet_v2.yaml"), width=alpha, resolution=size)
    w = read_weights(path, graph)
    for name in ("torch", "keras"):
        b = get_backend(name)
        model = b.build(graph)
        b.set_weights(graph, model, w)
        got = b.run(graph, model, x, ["predictions", "predictions_softmax"])
        np.testing.assert_allclose(got["predictions"], want, atol=1e-4, err_msg=f"{name} logits")
        np.testing.assert_allclose(got["predictions_softmax"], want_probs, atol=1e-5, err_msg=f"{name} probabilities")


@pytest.mark.torch
@pytest.mark.parametrize(
    ("spec", "build", "alpha", "size"),
    [
        ("mobilenet_v3_small.yaml", V3S, 0.75, 131),
        pytest.param("mobilenet_v3_large.yaml", V3L, 0.5, 96, marks=pytest.mark.slow),
    ],
)
def test_mobilenet_v3_runs_like_keras(
    spec: str, build: Callable[..., Any], alpha: float, size: int, tmp_path: Path
) -> None:
    """Keras' weights in archc's models give Keras' logits, from raw [0, 255] pixels (Rescaling included)."""
    keras.backend.clear_session()
    ref = randomised(build(weights=None, alpha=alpha, input_shape=(size, size, 3), minimalistic=False))
    path = tmp_path / "v3.weights.h5"
    ref.save_weights(path)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    want = np.asarray(keras.Model(ref.input, ref.get_layer("flatten").output)(x, training=False))
    want_probs = np.asarray(ref(x, training=False))
    assert np.abs(want).max() > 0.1

    graph = a.lower(a.load(ROOT / "specs" / spec), width=alpha, resolution=size)
    w = read_weights(path, graph)
    for name in ("torch", "keras"):
        b = get_backend(name)
        model = b.build(graph)
        b.set_weights(graph, model, w)
        got = b.run(graph, model, x, ["flatten", "predictions"])
        np.testing.assert_allclose(got["flatten"], want, atol=1e-4, err_msg=f"{name} logits")
        np.testing.assert_allclose(got["predictions"], want_probs, atol=1e-5, err_msg=f"{name} probabilities")
