"""The MobileNet family specs against keras.applications built live (the oracle).

For each alpha and input size, the IR of the spec (``archcompiler.compile``) must have Keras'
layer names in Keras' order, the same weight tensors (name and shape, canonical layout is
Keras' own) and the same total / trainable / non-trainable counts. Nothing here is copied from
archc's output: the expected side is always the Keras model built in this process, plus the
published totals of NUMBERS.md as an extra check.

Keras' ``Dense(classes, activation="softmax", name="predictions")`` is one layer; archc's dense
op has no activation, so the spec writes it as the dense ``predictions`` and a softmax
``predictions_softmax`` (the one documented difference).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")  # before tensorflow (DESIGN.md pitfalls)
keras = pytest.importorskip("keras")

import archcompiler as a  # noqa: E402
from archcompiler import weights  # noqa: E402

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
SIZES = (96, 128, 160, 192, 224, 131)  # 131: odd sizes exercise V2's correct_pad (1, 1)

Side = tuple[list[str], dict[str, tuple[int, ...]], tuple[int, int, int]]


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


V2 = keras.applications.MobileNetV2


@pytest.mark.parametrize(("alpha", "size"), [(1.4, 224), (0.35, 131)])
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
