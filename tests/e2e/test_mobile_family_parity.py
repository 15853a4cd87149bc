"""The mobile family specs (EfficientNet, -Lite, V2, MnasNet, MobileNetV4) run the same in
every backend: ``archcompiler.compile(...).parity``, float32 judged by the float64 oracle, and
float64 within 1e-9 between torch and Keras.

Small widths, depths and odd input sizes keep it cheap (the structure, not the size, is what
parity checks: every block kind, residuals that come and go with the width, stride-2 pads at
odd sizes). One fast case (torch against ONNX); the four-backend grid is slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import framework

import archcompiler as a

torch = framework("torch")

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]

# (spec, variant, width, depth, input size): every variant whose blocks differ from another's
GRID = [
    ("efficientnet", "b0", 0.5, 0.5, 97),
    ("efficientnet", "b3", 0.35, 0.4, 75),
    ("efficientnet_lite", "lite0", 0.75, 0.5, 81),
    ("efficientnet_v2", "b0", 0.5, 0.5, 83),
    ("efficientnet_v2", "s", 0.35, 0.3, 71),
    ("mnasnet", "b1", 0.5, None, 99),
    ("mnasnet", "a1", 0.75, None, 77),
    ("mnasnet", "small", 1.0, None, 73),
    ("mobilenet_v4", "conv_small", 0.5, None, 89),
    ("mobilenet_v4", "conv_medium", 0.35, None, 69),
    ("mobilenet_v4", "conv_large", 0.25, None, 67),
    ("mobilenet_v4", "hybrid_medium", 0.35, None, 71),
    ("mobilenet_v4", "hybrid_large", 0.25, None, 69),
]


def compiled(spec: str, variant: str, width: float, depth: float | None, size: int) -> a.Compiled:
    return a.compile(ROOT / f"specs/{spec}.yaml", variant=variant, width=width, depth=depth, resolution=size)


@pytest.mark.onnx
def test_mobile_family_parity_fast() -> None:
    """EfficientNet (squeeze-excite, TF-SAME pads at an odd size) in torch and ONNX."""
    report = compiled("efficientnet", "b0", 0.35, 0.34, 67).parity(("torch", "onnx"))
    assert report.ok, report.table()
    assert report.diffs and report.first_failure is None and not report.skipped


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
@pytest.mark.parametrize(("spec", "variant", "width", "depth", "size"), GRID)
def test_mobile_family_parity_grid(spec: str, variant: str, width: float, depth: float | None, size: int) -> None:
    model = compiled(spec, variant, width, depth, size)
    report = model.parity(("torch", "keras", "onnx", "tflite"))
    assert report.ok, report.table()
    assert report.diffs and report.first_failure is None
    # every node compared in torch, Keras and ONNX; TFLite exposes only what it does not fuse
    assert set(report.skipped) <= {"tflite"} and report.graph.nodes[-1].name not in report.skipped.get("tflite", ())
    exact = model.parity(("torch", "keras"), dtype="float64")
    assert exact.ok, exact.table()
