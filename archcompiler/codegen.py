"""Helpers every emitter shares (framework-free)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .registry import BackendError


def ruff_format(source: str) -> str:
    """Format generated source with ruff when it is installed (line length 120, as the repo).

    The emitters' templates already write formatted code (their tests check ruff changes
    nothing), so the output does not depend on whether ruff is present.
    """
    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        return source
    res = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "120", "--stdin-filename", "model.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise BackendError(f"generated code does not format: {res.stderr.strip()}")
    return res.stdout
