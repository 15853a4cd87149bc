"""`import archcompiler` and the framework-free commands load no ML framework.

Checked in fresh subprocesses: the test process itself may already have torch loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tensorflow", "keras", "jax")

PROBE = """
import io, json, sys, contextlib
import archcompiler
from archcompiler.tools.cli import main
argv = json.loads(sys.argv[1])
if argv:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code == 0, code
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy})))
""".replace("{heavy}", repr(set(HEAVY)))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["check", "specs/mobilenet.yaml"],
        ["summary", "specs/mobilenet.yaml", "--format", "json"],
        ["sweep", "specs/mobilenet.yaml", "--width", "1,0.5", "--resolution", "224,128"],
        ["schema"],
        ["backends"],
    ],
)
def test_no_framework_loaded(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
