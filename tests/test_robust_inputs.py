"""Hostile inputs end in one located line and exit status 2: never a hang, a traceback or a memory blow-up.

Spec files here; weights files further down. Cases a plain file can express also live in the
invalid-spec corpus (tests/invalid/); these are the ones that need a special file or a size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import archcompiler as archc
from archcompiler import SpecError, source
from archcompiler.source import MAX_DEPTH, MAX_SPEC_BYTES

ROOT = Path(__file__).resolve().parents[1]


def archc_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, so that a hang fails the test instead of stalling the run."""
    return subprocess.run(
        [sys.executable, "-m", "archcompiler.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "ARCHC_DEBUG": ""},
    )


def one_line(err: SpecError | str) -> str:
    msg = str(err).rstrip("\n")
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# --- files that are not regular files ----------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_before_reading() -> None:
    r = archc_cli("check", "/dev/zero", timeout=30)
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) == "/dev/zero: is a device, not a spec file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    r = archc_cli("check", fifo, timeout=30)  # opening a FIFO for reading blocks until a writer comes
    assert r.returncode == 2, r.stderr
    assert one_line(r.stderr) == f"{fifo}: is a FIFO (named pipe), not a spec file"


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        archc.load(tmp_path)
    assert one_line(info.value) == f"{tmp_path}: is a directory, not a spec file"


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:  # sparse: no disk is used
        fh.truncate(MAX_SPEC_BYTES + 1)
    with pytest.raises(SpecError) as info:
        archc.load(big)
    assert (
        one_line(info.value)
        == f"{big}: is {MAX_SPEC_BYTES + 1:,} bytes; a spec file may have at most {MAX_SPEC_BYTES:,}"
    )
    ok = tmp_path / "ok.yaml"
    ok.write_bytes(b"#" * (MAX_SPEC_BYTES - 1) + b"\n")  # exactly the limit: read, and found empty
    with pytest.raises(SpecError, match="the spec is empty"):
        archc.load(ok)


# --- file contents -----------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x7f"], ids=repr)
def test_control_character_is_one_located_line(tmp_path: Path, char: str) -> None:
    spec = tmp_path / "ctl.yaml"
    spec.write_text(f"archc: 1\nname: ab{char}cd\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        archc.load(spec)
    assert one_line(info.value) == f"{spec}:2:9: not valid YAML: control character U+{ord(char):04X} is not allowed"


DEEP = 5000  # far past Python's recursion limit of 1,000 frames (PyYAML's composer uses ~3 per level)


@pytest.mark.parametrize(
    ("layers", "line", "col"),
    [
        ("[" * DEEP + "]" * DEEP, 4, 9 + MAX_DEPTH),  # flow sequences: level 1 is at column 9
        # in mappings the first node too deep is the key of the deepest allowed mapping
        ("{a: " * DEEP + "1" + "}" * DEEP, 4, 10 + 4 * (MAX_DEPTH - 1)),  # flow mappings
        ("\n" + "".join(" " * (i + 1) + "k:\n" for i in range(1000)), 4 + MAX_DEPTH, 1 + MAX_DEPTH),  # block mappings
        ("\n" + "".join(" " * (i + 1) + "-\n" for i in range(1000)), 5 + MAX_DEPTH, 2 + MAX_DEPTH),  # block sequences
        ("\n  " + "- " * DEEP + "1", 5, 3 + 2 * MAX_DEPTH),  # compact block sequences on one line
    ],
    ids=["flow-seq", "flow-map", "block-map", "block-seq", "compact-seq"],
)
def test_deep_nesting_is_refused_before_recursion(tmp_path: Path, layers: str, line: int, col: int) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text(f"archc: 1\nname: t\ninput: {{size: 32}}\nlayers: {layers}\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        archc.load(spec)
    assert one_line(info.value) == f"{spec}:{line}:{col}: nesting is deeper than {MAX_DEPTH} levels"


def test_nesting_at_the_limit_is_accepted_by_the_reader() -> None:
    # 64 levels read fine (and then fail the schema, not the reader)
    text = "archc: 1\nname: t\ninput: {size: 32}\nlayers: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    with pytest.raises(SpecError) as info:
        archc.load_text(text, "ok.yaml")
    assert "nesting" not in str(info.value)


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        ("9" * 4301, False),  # beyond Python's int-string conversion limit
        ("9223372036854775807", True),  # 2**63 - 1
        ("9223372036854775808", False),
        ("-9223372036854775808", True),
        ("-9223372036854775809", False),
        ("0" * 50 + "7", True),  # leading zeros do not count
        ("0x7fffffffffffffff", True),
        ("0x8000000000000000", False),
        ("0o777777777777777777777", True),
        ("0o1000000000000000000000", False),
    ],
)
def test_integers_are_bounded(literal: str, ok: bool) -> None:
    from archcompiler.source import parse_text

    text = f"n: {literal}\n"
    if ok:
        want = int(literal, 0) if literal[:2] in ("0x", "0o") else int(literal)
        assert parse_text(text, "n.yaml").data["n"] == want
        return
    with pytest.raises(SpecError) as info:
        parse_text(text, "n.yaml")
    assert one_line(info.value).startswith("n.yaml:1:4: n: integer out of range (more than 64 bits; got ")


def test_many_values_are_refused_while_composing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 500,000 values fit in 1 MiB; each composed node costs about a kilobyte, so they are counted
    # while composing and refused at MAX_VALUES + 1, before the whole tree is built (the limit is
    # lowered here to keep the test fast: PyYAML scans about 20,000 values a second)
    monkeypatch.setattr(source, "MAX_VALUES", 1000)
    spec = tmp_path / "flat.yaml"
    spec.write_text("x: [" + "0," * 5000 + "]\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        archc.load(spec)
    # the root mapping, the key x and the list are three nodes: the 1,001st is the 998th zero
    assert one_line(info.value) == f"{spec}:1:{5 + 2 * 997}: the spec has more than 1,000 values"
