"""Heads like keras.applications' (include_top, pooling, classes, classifier_activation,
dropout), checked against keras.applications built live and docs/NUMBERS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

import archcompiler as a
from archcompiler.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")
SPEC = str(ROOT / "specs" / "mobilenet.yaml")


def test_include_top_false_count_is_published() -> None:
    """keras.applications.MobileNet(include_top=False) at alpha 1: 3,228,864 (docs/NUMBERS.md)."""
    net = a.compile(KERAS_SPEC, classes=0)
    assert net.cost("keras").params == 3_228_864
    assert net.graph.output_shape == (7, 7, 1024)


def test_cli_summary_without_the_classifier(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", KERAS_SPEC, "--classes", "0", "--convention", "keras"]) == 0
    assert "total: 3,228,864 params" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--pooling", "avg"], "--pooling: pooling applies when the classifier is dropped"),
        (["--dropout", "0.5"], "--dropout: the classifier has no dropout layer"),
        (["--classes", "0", "--dropout", "0.1"], "need a classifier"),
    ],
)
def test_bad_head_options_are_one_line(capsys: pytest.CaptureFixture[str], options: list[str], message: str) -> None:
    assert main(["check", SPEC, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.keras
@pytest.mark.parametrize(
    ("alpha", "size", "head", "keras_kwargs"),
    [
        (0.5, 128, {"classes": 0, "pooling": "avg"}, {"include_top": False, "pooling": "avg"}),
        (0.25, 96, {"classes": 0, "pooling": "max"}, {"include_top": False, "pooling": "max"}),
        (0.75, 128, {"classes": 0}, {"include_top": False}),
        (0.25, 128, {"classes": 10}, {"classes": 10}),
        (0.25, 128, {"classifier_activation": "none"}, {"classifier_activation": None}),
        (0.5, 160, {"dropout": 0.3}, {"dropout": 0.3}),
    ],
)
def test_heads_equal_keras_applications(alpha: float, size: int, head: dict, keras_kwargs: dict) -> None:
    import torch  # noqa: F401  (before tensorflow: the other order can crash; docs/DESIGN.md)
    from archcompiler.backends.keras._framework import keras

    ref = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(size, size, 3), **keras_kwargs)
    net = a.compile(KERAS_SPEC, width=alpha, resolution=size, **head)
    counts = net.cost("keras")
    assert (counts.trainable, counts.non_trainable) == (
        sum(int(v.numpy().size) for v in ref.trainable_weights),
        sum(int(v.numpy().size) for v in ref.non_trainable_weights),
    )
    assert net.graph.output_shape == tuple(ref.output.shape[1:])
    if "dropout" in head:
        assert [n.rate for n in net.graph.nodes if n.op == "dropout"] == [ref.get_layer("dropout").rate]
    if "classifier_activation" in head:
        assert net.graph[net.graph.output].op != "softmax"


@pytest.mark.torch
def test_build_writes_a_ten_way_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = tmp_path / "out"
    argv = ["build", SPEC, "--backend", "torch", "--width", "0.25", "--resolution", "64", "--classes", "10"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "-> output 10," in capsys.readouterr().out
    state = torch.load(out / "mobilenet_v1.pt", weights_only=True)
    assert tuple(state["fc.weight"].shape) == (10, 256)  # int(1024 * 0.25) features -> 10 classes


@pytest.mark.keras
@pytest.mark.parametrize("spec", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_v3_top_is_the_last_pool_not_a_squeeze_excite_pool(spec: str) -> None:
    """--classes 0 on V3 cut at the first squeeze-excite pool (28x28x72); the top is the first
    global pool on the main path. Oracle: keras.applications' include_top=False, built live."""
    import torch  # noqa: F401  (before tensorflow; docs/DESIGN.md)
    from archcompiler.backends.keras._framework import keras

    make = keras.applications.MobileNetV3Large if spec.endswith("large") else keras.applications.MobileNetV3Small
    ref = make(weights=None, include_top=False, input_shape=(224, 224, 3))
    net = a.compile(str(ROOT / "specs" / f"{spec}.yaml"), classes=0)
    assert net.graph.output_shape == tuple(ref.output.shape[1:])
    assert net.cost("keras").params == ref.count_params()
