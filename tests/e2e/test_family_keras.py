"""The EfficientNet and EfficientNetV2 specs against keras.applications built live (the oracle).

For each variant, width and input size, the spec's IR must have Keras' layers in Keras' order
(every Keras layer name, with the documented exceptions below), the same weight tensors (name
and shape: the canonical layout is Keras' own) and the same trainable and non-trainable counts
(``--convention keras``). The expected side is always the Keras model built in this process.

specs/efficientnet.yaml and efficientnet_v2.yaml are the timm-compatible models (preprocessing
outside, as timm's): they have no counterpart of Keras' ``rescaling`` and ``normalization``
input layers (EfficientNet's ``Normalization`` holds 7 non-trainable numbers: mean, variance
and count; EfficientNetV2's none); Keras' ``se_reshape`` (a Reshape to 1x1xC) has none either
(archc's pool keeps the 1x1 map), and the activations Keras runs inside
``se_reduce``/``se_expand`` are layers of their own here (``..._activation``, left out of the
name comparison). As for MobileNet, Keras' softmax
classifier is archc's ``predictions`` plus ``predictions_softmax``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from helpers import fast_first, framework

import archcompiler as a
from archcompiler import weights

keras = framework("keras")

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[2]

PREPROCESSING = ("rescaling", "normalization")
"""Keras' input layers that the specs leave to the caller, as timm does."""
NORMALIZATION_WEIGHTS = {"efficientnet.yaml": 7, "efficientnet_v2.yaml": 0}
"""Keras' non-trainable preprocessing weights: EfficientNet's Normalization(axis=-1) on 3 channels
adapts mean (3), variance (3) and count (1); EfficientNetV2's is built from constants (none)."""
KERAS_ONLY = re.compile(r"^block\w+_se_reshape$")
ARCHC_ONLY = re.compile(r"^block\w+_se_(reduce|expand)_activation$")


def keras_side(model: Any, whole: bool = False) -> tuple[list[str], dict[str, tuple[int, ...]], tuple[int, int]]:
    """Layer names (softmax split off the classifier; preprocessing, unless ``whole``, and
    se_reshape left out), weight shapes, (trainable, non-trainable) of the layers archc's spec has.
    Normalization's scalar ``count`` is counted but has no tensor in archc (a counter: count_params()
    counts it as 1, and so does archc's keras convention)."""
    names: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    counts = [0, 0]
    for layer in model.layers:
        skipped = layer.name in PREPROCESSING and not whole
        if isinstance(layer, keras.layers.InputLayer) or skipped or KERAS_ONLY.match(layer.name):
            continue
        names.append(layer.name)
        if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax:
            names.append(f"{layer.name}_softmax")
        for w in layer.weights:
            if not (isinstance(layer, keras.layers.Normalization) and w.path.endswith("count")):
                shapes[f"{layer.name}.{w.path.split('/')[-1]}"] = tuple(int(d) for d in w.shape)
            counts[0 if w.trainable else 1] += int(w.numpy().size)
    return names, shapes, (counts[0], counts[1])


def archc_side(spec: str, size: int, **options: Any) -> tuple[list[str], dict[str, tuple[int, ...]], tuple[int, int]]:
    net = a.compile(ROOT / "specs" / spec, resolution=size, **options)
    names = [n.name for n in net.graph.nodes if n.op != "input" and not ARCHC_ONLY.match(n.name)]
    shapes = {k: tuple(v) for k, v in weights.expected(net.graph).items()}
    c = net.cost("keras")
    return names, shapes, (c.trainable, c.non_trainable)


# (spec, keras.applications model, variant, input size): B0 at its default size (fast), at an
# odd one, and the others at their default sizes (slow: B7 takes Keras a while)
SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}
V2_SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "s": 384, "m": 480, "l": 480}
CASES = [
    ("efficientnet.yaml", "EfficientNetB0", "b0", 224),
    ("efficientnet.yaml", "EfficientNetB0", "b0", 193),
    *[("efficientnet.yaml", f"EfficientNetB{v[1]}", v, SIZES[v]) for v in list(SIZES)[1:]],
    ("efficientnet_keras.yaml", "EfficientNetB0", "b0", 225),
    ("efficientnet_keras.yaml", "EfficientNetB7", "b7", 600),
    ("efficientnet_v2.yaml", "EfficientNetV2B0", "b0", 193),
    *[("efficientnet_v2.yaml", f"EfficientNetV2{v.upper()}", v, size) for v, size in V2_SIZES.items()],
]


@pytest.mark.parametrize(("spec", "model_name", "variant", "size"), fast_first(CASES))
def test_efficientnet_family_matches_keras(spec: str, model_name: str, variant: str, size: int) -> None:
    keras.backend.clear_session()
    model = getattr(keras.applications, model_name)(weights=None, input_shape=(size, size, 3))
    whole = spec == "efficientnet_keras.yaml"  # with Keras' preprocessing layers
    want_names, want_shapes, want_counts = keras_side(model, whole)
    names, shapes, counts = archc_side(spec, size, variant=variant)
    assert names == want_names
    assert shapes == want_shapes
    assert counts == want_counts
    # the whole model: what archc counts, plus Keras' Normalization weights where the spec has none
    assert model.count_params() == sum(counts) + (0 if whole else NORMALIZATION_WEIGHTS[spec])


# Keras' base constructors at a width, depth and size no variant uses (the rounding rules: V1's
# round_filters with its 0.9 rule at width 0.75 and 0.5, V2's without it at 0.75 and 1.7; ceil
# repeats above and below depth 1): keras.src.applications.efficientnet.EfficientNet and
# efficientnet_v2.EfficientNetV2 (which takes its block table by name), archc's spec at its
# variant with the width, depth and resolution overrides (the API's form of --width, --depth,
# --resolution). V2's S/M/L tables are scaled like B0's (they once ignored --depth).
CONSTRUCTED = [
    ("efficientnet.yaml", "b0", 0.75, 1.3, 200),
    ("efficientnet_keras.yaml", "b0", 0.75, 1.3, 200),
    ("efficientnet.yaml", "b0", 0.5, 0.6, 131),
    ("efficientnet_v2.yaml", "b0", 0.75, 1.3, 200),
    ("efficientnet_v2.yaml", "b0", 1.7, 0.6, 131),
    ("efficientnet_v2.yaml", "s", 0.75, 1.3, 200),
    ("efficientnet_v2.yaml", "m", 1.0, 1.0, 301),
]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "variant", "width", "depth", "size"), CONSTRUCTED)
def test_efficientnet_family_matches_keras_constructors(
    spec: str, variant: str, width: float, depth: float, size: int
) -> None:
    import importlib

    keras.backend.clear_session()
    shape = (size, size, 3)
    if spec == "efficientnet_v2.yaml":
        module = importlib.import_module("keras.src.applications.efficientnet_v2")
        name = f"efficientnetv2-{variant}"  # the key of its block table
        model = module.EfficientNetV2(width, depth, size, name=name, weights=None, input_shape=shape)
    else:
        module = importlib.import_module("keras.src.applications.efficientnet")
        model = module.EfficientNet(width, depth, size, name="efficientnet", weights=None, input_shape=shape)
    whole = spec == "efficientnet_keras.yaml"
    want_names, want_shapes, want_counts = keras_side(model, whole)
    names, shapes, counts = archc_side(spec, size, variant=variant, width=width, depth=depth)
    assert names == want_names
    assert shapes == want_shapes
    assert counts == want_counts
    assert model.count_params() == sum(counts) + (0 if whole else NORMALIZATION_WEIGHTS[spec])


KERAS_BLOCK = re.compile(r"^(block\d)(.)_")
"""Keras' block prefix: the stage, then chr(j + 97) for the stage's j-th block."""


def numbered_past_z(names: list[str]) -> dict[str, str]:
    """Keras' block prefixes -> archc's: the same up to the letter z; past it (Keras' '{', '|',
    chr(j + 97) with j > 25) the stage and the block's number in the model, as the specs'
    headers document: block6{_ -> block6_74_ for the model's 74th block."""
    prefixes = list(dict.fromkeys(m.group(0) for n in names if (m := KERAS_BLOCK.match(n))))
    out = {}
    for number, prefix in enumerate(prefixes, 1):
        stage, letter = KERAS_BLOCK.match(prefix).groups()  # type: ignore[union-attr]
        out[prefix] = prefix if "a" <= letter <= "z" else f"{stage}_{number}_"
    return out


def renamed(name: str, prefixes: dict[str, str]) -> str:
    m = KERAS_BLOCK.match(name)
    return name if m is None else prefixes[m.group(0)] + name[m.end() :]


# Keras' constructors at a depth where one stage has more than 26 blocks (V2-B0's table: stage
# 6's 8 repeats x 3.5 = 28, so '{' and '|'; EfficientNet-B0's: stage 6's ceil(4 x 6.6) = 27, '{')
PAST_Z = [("efficientnet_v2.yaml", 3.5, 2), ("efficientnet.yaml", 6.6, 1), ("efficientnet_keras.yaml", 6.6, 1)]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "depth", "past_z"), PAST_Z)
def test_blocks_past_z_are_numbered_where_keras_goes_on_with_symbols(spec: str, depth: float, past_z: int) -> None:
    """Layer names equal Keras' but for the blocks Keras names past 'z', which differ exactly
    as the specs document; weight shapes and counts equal."""
    import importlib
    import sys

    keras.backend.clear_session()
    size = 64
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # Keras traces a 100-block functional model recursively
    try:
        if spec == "efficientnet_v2.yaml":
            module = importlib.import_module("keras.src.applications.efficientnet_v2")
            model = module.EfficientNetV2(
                1.0, depth, size, name="efficientnetv2-b0", weights=None, input_shape=(size, size, 3)
            )
        else:
            module = importlib.import_module("keras.src.applications.efficientnet")
            model = module.EfficientNet(
                1.0, depth, size, name="efficientnet", weights=None, input_shape=(size, size, 3)
            )
    finally:
        sys.setrecursionlimit(limit)
    whole = spec == "efficientnet_keras.yaml"
    keras_names, keras_shapes, want_counts = keras_side(model, whole)
    prefixes = numbered_past_z(keras_names)
    numbered = {p: q for p, q in prefixes.items() if p != q}
    assert len(numbered) == past_z and all(p[6] in "{|" for p in numbered), numbered  # not vacuous
    want_names = [r for n in keras_names if not KERAS_ONLY.match(r := renamed(n, prefixes))]
    want_shapes = {renamed(k, prefixes): v for k, v in keras_shapes.items()}
    names, shapes, counts = archc_side(spec, size, variant="b0", depth=depth)
    assert names == want_names
    assert shapes == want_shapes
    assert counts == want_counts
