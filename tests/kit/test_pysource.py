"""The Python-source helpers: generated source comes out formatted (so ``ruff format`` need
not run on it), and what outgrows the templates' formatting goes through ruff."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import archcompiler as a
from archcompiler.kit import pysource

ROOT = Path(__file__).resolve().parents[2]


def _ruff() -> str | None:
    exe = Path(sys.executable).with_name("ruff")
    return str(exe) if exe.exists() else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff not installed")
@pytest.mark.parametrize("backend_name", ["torch", "keras"])
def test_templates_write_formatted_source_without_ruff(backend_name, tmp_path):
    """emit() skips ruff on source the templates have already formatted, so the templates
    themselves must write what ``ruff format`` leaves unchanged: every shipped spec, at widths
    and resolutions that change the numbers, with and without a feature cut."""
    from archcompiler.kit.registry import get_backend

    backend = get_backend(backend_name)
    cases = {path.stem: a.compile(path) for path in sorted((ROOT / "specs").glob("*.yaml"))}
    cases["mobilenet_075_199"] = a.compile(ROOT / "specs/mobilenet.yaml", width=0.75, resolution=199)
    cases["mobilenet_features"] = a.compile(ROOT / "specs/mobilenet.yaml", features=True)
    cases["tiny_resnet"] = a.compile(ROOT / "tests/specs/tiny_resnet.yaml")
    for name, net in cases.items():
        source = backend.emit(net.graph)
        assert not pysource.needs_formatter(source), name  # so ruff did not run on it
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    check = [_ruff(), "format", "--isolated", "--line-length", str(pysource.LINE_LENGTH), "--check", str(tmp_path)]
    res = subprocess.run(check, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(_ruff() is None, reason="ruff not installed")
def test_a_line_too_long_for_the_templates_is_formatted_by_ruff():
    long_call = "model = build(" + ", ".join(f"argument_{i}={i}" for i in range(20)) + ")\n"
    assert pysource.needs_formatter(long_call)
    formatted = pysource.ruff_format(long_call)
    assert formatted != long_call
    assert max(len(line) for line in formatted.splitlines()) <= pysource.LINE_LENGTH
    assert pysource.ruff_format("x = 1\n") == "x = 1\n"
