"""Frameworks stay quiet: no TensorFlow, absl, oneDNN, LiteRT or Python warning reaches the
terminal from an archc command unless asked for (``-v`` / ``ARCHC_VERBOSE=1``).

The mechanism (archcompiler.quiet) is tested on raw file descriptors here; the promise itself
on the whole stderr of real ``archc`` processes (which also holds what a library writes at
exit), run with ``TF_CPP_MIN_LOG_LEVEL=0``: a user's own setting, which archc does not
override, and the one under which TensorFlow says the most.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from archcompiler import quiet

ARCHC = str(Path(sys.executable).parent / "archc")
TINY = """\
archc: 1
name: tiny
input: {size: 16, channels: 3}
classes: 4
layers:
  - {op: conv, filters: 8, kernel: 3, stride: 2, name: conv1}
  - {op: batchnorm, name: bn1}
  - {op: activation, name: relu1}
  - {op: global_avg_pool, name: pool}
  - {op: dense, units: $classes, name: fc}
  - {op: softmax, name: probs}
"""

_tensorflow_installed = pytest.mark.skipif(
    find_spec("tensorflow") is None or find_spec("keras") is None, reason="needs TensorFlow and Keras"
)


def needs_tensorflow(test: Any) -> Any:
    """Marked keras (the archc it starts loads TensorFlow) and skipped where it is not installed."""
    return pytest.mark.keras(_tensorflow_installed(test))


# -- the mechanism ------------------------------------------------------------------------------


def test_framework_output_holds_native_stderr_python_output_and_warnings(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    before = os.fstat(2)
    with quiet.framework_output():
        os.write(2, b"I0000 native log line\n")  # as a C++ library writes: past sys.stderr
        print("Saved artifact at /tmp/x")
        print("python chatter", file=sys.stderr)
        warnings.warn("a framework's UserWarning", UserWarning, stacklevel=1)
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "after\n")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # fd 2 is the real one again


@pytest.mark.parametrize("how", ["env", "flag"])
def test_framework_output_lets_everything_through_when_verbose(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    with quiet.verbosity(how == "flag"), quiet.framework_output():
        os.write(2, b"I0000 native log line\n")
    assert capfd.readouterr().err == "I0000 native log line\n"


def test_framework_output_nested_and_failing(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nested hold shares the outer one; an exception carries what was held as a note, and
    fd 2 is restored either way."""
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with pytest.raises(RuntimeError) as info, quiet.framework_output():
        with quiet.framework_output():
            os.write(2, b"inner\n")
        os.write(2, b"E0000 converter.cc] the reason\n")
        raise RuntimeError("conversion failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    if sys.version_info >= (3, 11):
        assert "the reason" in "\n".join(info.value.__notes__)


def test_command_warnings_show_archc_own_as_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with quiet.command_warnings():
        warnings.warn(
            "torch.export failed, writing a TorchScript trace instead: why\nmore", quiet.ArchcWarning, stacklevel=1
        )
        np.float32(3e38) * np.float32(10)  # numpy: RuntimeWarning, overflow
        warnings.warn("Do not pass an `input_shape`", UserWarning, stacklevel=1)  # as Keras does
    err = capsys.readouterr().err
    assert err == "archc: warning: torch.export failed, writing a TorchScript trace instead: why\n"
    with quiet.verbosity(True), quiet.command_warnings(), pytest.warns(RuntimeWarning):
        np.float32(3e38) * np.float32(10)


# -- real archc processes -------------------------------------------------------------------------


def _archc(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ARCHC_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    environment.update(env)
    return subprocess.run(
        [ARCHC, *argv], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture
def spec(tmp_path: Path) -> str:
    (tmp_path / "tiny.yaml").write_text(TINY)
    return "tiny.yaml"


@pytest.mark.slow  # the mechanism is checked in-process above
@needs_tensorflow
def test_keras_bad_input_is_exactly_one_line(tmp_path: Path, spec: str) -> None:
    """Weights that do not fit, found after TensorFlow has loaded: archc's line, nothing else."""
    np.savez(tmp_path / "bad.npz", **{"conv1.kernel": np.zeros((3, 3, 3, 5), np.float32)})
    proc = _archc(tmp_path, "build", spec, "--backend", "keras", "--weights", "bad.npz", "-q", TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("tiny.yaml: bad.npz: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.slow
@needs_tensorflow
@pytest.mark.tflite
@pytest.mark.skipif(find_spec("ai_edge_litert") is None, reason="needs LiteRT")
def test_tflite_build_is_silent(tmp_path: Path, spec: str) -> None:
    """TensorFlow's import, the converter's log and stdout, LiteRT's delegate line: none shown."""
    proc = _archc(
        tmp_path, "build", spec, "--backend", "tflite", "--quantize", "dynamic", "-q", TF_CPP_MIN_LOG_LEVEL="0"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("built tiny with tflite") and "SavedModel" not in proc.stdout


@pytest.mark.slow
@needs_tensorflow
@pytest.mark.parametrize(
    "argv",
    [
        ["build", "tiny.yaml", "--backend", "keras", "-q"],
        pytest.param(["parity", "tiny.yaml", "--backends", "torch,keras", "-q"], marks=pytest.mark.torch),
        pytest.param(
            ["parity", "tiny.yaml", "--backends", "torch,keras", "--train-steps", "2", "-q"], marks=pytest.mark.torch
        ),
        pytest.param(["parity", "tiny.yaml", "--backends", "keras,tflite", "-q"], marks=pytest.mark.tflite),
        ["sweep", "tiny.yaml", "--width", "1,0.5", "--resolution", "16", "--latency", "keras", "-q"],
    ],
)
def test_framework_commands_are_silent(tmp_path: Path, spec: str, argv: list[str]) -> None:
    proc = _archc(tmp_path, *argv, TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode in (0, 1), proc.stderr  # 1: a parity verdict, not an error
    assert proc.stderr == ""


@pytest.mark.slow
@needs_tensorflow
@pytest.mark.tflite
@pytest.mark.parametrize("how", ["-v", "ARCHC_VERBOSE=1"])
def test_verbose_shows_the_frameworks_output(tmp_path: Path, spec: str, how: str) -> None:
    """Asked for, TensorFlow's own lines come through, as TensorFlow prints them by default."""
    argv = ["build", spec, "--backend", "tflite", "-q", *(["-v"] if how == "-v" else [])]
    proc = _archc(tmp_path, *argv, **({quiet.VERBOSE_ENV: "1"} if how != "-v" else {}))
    assert proc.returncode == 0, proc.stderr
    assert "absl::InitializeLog" in proc.stderr and "SavedModel" in proc.stderr
