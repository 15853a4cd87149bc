"""``archc parity SPEC --backends torch,tflite-int8 --calibration SOURCE [--weights W]``: the
per-layer quantization report from the command line. Bad input is one line and exit status 2
before any framework loads; the report itself (slow tier) says what it measures, that archc's
init is untrained, and names every exposed layer."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SPEC, run

SMALL = ("--width", "0.25", "--resolution", "32", "--classes", "10")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--backends", "torch,tflite-int8"), "--calibration"),
        (("--backends", "torch,tflite-int8", "--calibration", "/no/such/folder"), "no such file or folder"),
        (("--backends", "torch,keras", "--weights", "w.npz"), "--weights is for a quantization report"),
        (("--backends", "torch,nosuch-int8", "--calibration", "synthetic"), "nosuch"),
        (("--backends", "torch,keras,tflite-int8", "--calibration", "synthetic"), "one float reference"),
        (("--backends", "torch,tflite-int8", "--calibration", "synthetic", "--optimize"), "--optimize"),
    ],
)
def test_bad_quantization_report_options_are_one_line(capsys, argv, says) -> None:
    code, out, err = run(capsys, "parity", SPEC, *SMALL, *argv)
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1
    assert out == ""


def test_a_calibration_array_of_the_wrong_shape_is_one_line(capsys, tmp_path) -> None:
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((20, 8, 8, 3), np.float32))
    code, _, err = run(capsys, "parity", SPEC, *SMALL, "--backends", "torch,tflite-int8", "--calibration", str(bad))
    assert code == 2 and "expected (N, 32, 32, 3)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.tflite
def test_the_report_on_archc_init_says_untrained_and_what_it_measures(capsys) -> None:
    import archcompiler

    code, out, _ = run(capsys, "parity", SPEC, *SMALL, "--backends", "torch,tflite-int8", "--calibration", "synthetic")
    assert code == 0
    assert "not an equivalence verdict" in out
    assert "untrained" in out
    assert "held-out inputs: " in out and "disjoint from the" in out
    g = archcompiler.compile(SPEC, width=0.25, resolution=32, classes=10).graph
    lines = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}
    relus = [n.name for n in g.nodes if n.name.endswith("_relu")]
    assert set(relus) <= lines  # TFLite keeps every activation as a tensor of its own
    assert "conv_dw_5.kernel" in out
