"""The MobileNet family in all four runtimes: parity torch, keras, onnx, tflite on V2, V3-Large
and V3-Small (relu6, hard-swish, squeeze-excite, rescaling), judged by the float64 oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import framework

import archcompiler as a

framework("torch")
framework("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.keras, pytest.mark.onnx, pytest.mark.tflite]


@pytest.mark.parametrize("family", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_four_runtimes_agree_on_the_family(family: str) -> None:
    net = a.compile(ROOT / "specs" / f"{family}.yaml", width=0.5, resolution=97)
    report = net.parity(("torch", "keras", "onnx", "tflite"))
    bad = report.first_failure
    assert report.ok, f"{family}: first divergence at {bad.node} ({bad.op}): {bad.error:.3g} > {bad.allowed:.3g}"
    assert not report.skipped.get("onnx")  # onnx exposes every node; tflite only what it does not fuse
