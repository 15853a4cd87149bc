"""What several test modules share: the repository's paths, the paper's numbers (docs/NUMBERS.md)
and running the command line in-process. tests/ is on sys.path (tests/conftest.py's folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archcompiler.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")

# docs/NUMBERS.md: exact Mult-Adds of the paper's rule, width x resolution.
PAPER_MACS = {
    (1.0, 224): 568_740_352,
    (1.0, 192): 418_121_728,
    (1.0, 160): 290_675_200,
    (1.0, 128): 186_400_768,
    (0.75, 224): 325_400_448,
    (0.75, 192): 239_273_472,
    (0.75, 160): 166_396_800,
    (0.75, 128): 106_770_432,
    (0.5, 224): 149_497_088,
    (0.5, 192): 109_970_432,
    (0.5, 160): 76_524_800,
    (0.5, 128): 49_160_192,
    (0.25, 224): 41_030_272,
    (0.25, 192): 30_212_608,
    (0.25, 160): 21_059_200,
    (0.25, 128): 13_570_048,
}
PAPER_PARAMS = {1.0: 4_209_088, 0.75: 2_568_144, 0.5: 1_319_648, 0.25: 463_600}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``archc *argv`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
