"""Issue 8: PyTorch and Keras give the same numbers for MobileNetV2 and V3 (Large, Small) at
several widths and odd input sizes, the verdict of ``archcompiler.compile(...).parity``.

One fast case runs by default; the grid (widths 0.35 to 1.25, sizes 97 to 224) is marked slow.
Widths change which residual adds exist (V3 at 0.5 drops one), odd sizes the stride-2 pads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import framework

import archcompiler as a

torch = framework("torch")
framework("tensorflow")

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[2]
FAMILY = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
SETTINGS = [(0.35, 97), (0.5, 131), (0.75, 224), (1.0, 113), (1.25, 160)]
"""Widths change which residual adds exist (V3 at 0.5 drops one), odd sizes the stride-2 pads."""
GRID = [(spec, width, size) for spec in FAMILY for width, size in SETTINGS]


def check(spec: str, width: float, resolution: int) -> None:
    """float32 judged by the float64 oracle (parity.py): no tolerance tuned per depth; a wrong
    weight or pad is still a FAIL at the node where it starts (tests/parity/test_parity.py)."""
    model = a.compile(ROOT / f"specs/{spec}.yaml", width=width, resolution=resolution)
    report = model.parity(("torch", "keras"))
    assert report.ok, report.table()
    assert report.diffs and report.first_failure is None
    assert not report.skipped  # every node compared in both frameworks
    exact = model.parity(("torch", "keras"), dtype="float64")
    assert exact.ok, exact.table()


def test_family_parity_fast() -> None:
    check("mobilenet_v3_small", 0.5, 97)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "width", "resolution"), GRID)
def test_family_parity_grid(spec: str, width: float, resolution: int) -> None:
    check(spec, width, resolution)
