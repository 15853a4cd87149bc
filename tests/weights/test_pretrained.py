"""Keras' published MobileNet checkpoints run in archc's PyTorch and Keras models.

keras.applications.MobileNet is built with random weights (nothing is downloaded), its BN
moving statistics randomised too, saved the way a user saves it, then read by archc into
models built from specs/mobilenet_keras.yaml with the same alpha and size. Their logits must
match keras.applications' own to 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_first, framework

import archcompiler as a
from archcompiler.kit.registry import get_backend, read_weights

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
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                    rng.normal(0, 0.2, c).astype("float32"),
                    rng.normal(0, 0.2, c).astype("float32"),
                    rng.uniform(0.5, 2.0, c).astype("float32"),
                ]
            )
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
