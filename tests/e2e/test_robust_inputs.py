"""Hostile inputs end in one located line and exit status 2: never a hang, a traceback or a memory blow-up.

Spec files here; weights files further down. Cases a plain file can express also live in the
invalid-spec corpus (tests/invalid/); these are the ones that need a special file or a size.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import archcompiler as archc
from archcompiler import SpecError
from archcompiler import weights as W
from archcompiler.kit.registry import read_weights
from archcompiler.language import source
from archcompiler.language.source import MAX_DEPTH, MAX_SPEC_BYTES

ROOT = Path(__file__).resolve().parents[2]


def archc_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, so that a hang fails the test instead of stalling the run."""
    return subprocess.run(
        [sys.executable, "-m", "archcompiler.tools.cli", *map(str, args)],
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
    from archcompiler.language.source import parse_text

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


# --- weights files -----------------------------------------------------------------------
# Each bad file is built from a real one (weights.save(weights.init(graph))) and must fail in
# registry.read_weights -- the entry point of `archc build --weights` -- with one WeightError line
# naming the file and, where there is one, the tensor.

SPEC = ROOT / "specs" / "mobilenet.yaml"


@pytest.fixture(scope="module")
def graph() -> archc.Graph:
    return archc.lower(archc.load(SPEC), width=0.25, resolution=32)


@pytest.fixture(scope="module")
def good(graph: archc.Graph) -> dict[str, np.ndarray]:
    return W.init(graph)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_npz(path: Path, tensors: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in tensors.items():
            zf.writestr(f"{name}.npy", data)
    return path


def replaced(good: dict[str, np.ndarray], name: str, value: np.ndarray) -> dict[str, bytes]:
    return {k: npy_bytes(value if k == name else v) for k, v in good.items()}


def safetensors_file(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def flip_data_byte(npz: Path, member: str) -> Path:
    """Flip one bit inside a member's array data (a stored member: its bytes are in the file)."""
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo(member)
    raw = bytearray(npz.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 5] ^= 0x01
    out = npz.with_name("crc.npz")
    out.write_bytes(bytes(raw))
    return out


G = "conv1_bn.gamma"
BAD_NPZ: dict[str, tuple[Callable[[Path, dict[str, np.ndarray]], Path], str]] = {
    "truncated": (
        lambda d, w: (d / "t.npz").write_bytes((d / "good.npz").read_bytes()[:50_000]) and d / "t.npz",
        r"cannot read weights \(File is not a zip file\)",
    ),
    "empty": (lambda d, w: (d / "e.npz").write_bytes(b"") or d / "e.npz", r"cannot read weights \(the file is empty\)"),
    "crc": (
        lambda d, w: flip_data_byte(d / "good.npz", "conv_dw_1.kernel.npy"),
        r"tensor 'conv_dw_1\.kernel': cannot read weights \(Bad CRC-32 for file 'conv_dw_1\.kernel\.npy'\)",
    ),
    "npy-renamed": (
        lambda d, w: (d / "x.npz").write_bytes(npy_bytes(w["conv1.kernel"])) and d / "x.npz",
        r"cannot read weights \(a single \.npy array, not an \.npz archive of named tensors\)",
    ),
    "strings": (
        lambda d, w: write_npz(d / "s.npz", replaced(w, G, np.array(["a"] * 8))),
        rf"tensor '{G}' has dtype <U1, expected one of float16, float32, float64",
    ),
    "objects": (  # written by hand: np.save would pickle it; np.load(allow_pickle=True) would run it
        lambda d, w: write_npz(
            d / "o.npz", {**replaced(w, G, w[G]), G: npy_header((8,), "|O") + pickle.dumps(list(range(8)))}
        ),
        rf"tensor '{G}' has dtype object, expected",
    ),
    "int8": (lambda d, w: write_npz(d / "i.npz", replaced(w, G, np.ones(8, np.int8))), rf"'{G}' has dtype int8"),
    "bool": (lambda d, w: write_npz(d / "b.npz", replaced(w, G, np.ones(8, bool))), rf"'{G}' has dtype bool"),
    "complex": (
        lambda d, w: write_npz(d / "c.npz", replaced(w, G, np.ones(8, np.complex64))),
        rf"'{G}' has dtype complex64",
    ),
    "nan": (
        lambda d, w: write_npz(d / "n.npz", replaced(w, G, np.r_[np.ones(3), np.nan, np.ones(4)].astype("f4"))),
        rf"tensor '{G}' has 1 non-finite values \(NaN or infinity\), the first at index \(3,\): nan",
    ),
    "inf": (
        lambda d, w: write_npz(d / "inf.npz", replaced(w, "conv1.kernel", np.full((3, 3, 3, 8), -np.inf, "f4"))),
        r"tensor 'conv1\.kernel' has 216 non-finite values \(NaN or infinity\), the first at index \(0, 0, 0, 0\): -in",
    ),
    "negative-variance": (
        lambda d, w: write_npz(d / "v.npz", replaced(w, "conv1_bn.moving_variance", -np.ones(8, "f4"))),
        r"tensor 'conv1_bn\.moving_variance' has negative values \(min -1\); a variance cannot be negative",
    ),
    "claims-3.6TiB": (  # the header alone: refused by shape, nothing allocated
        lambda d, w: write_npz(d / "h.npz", {**replaced(w, G, w[G]), G: npy_header((1 << 20, 1 << 20, 1))}),
        rf"tensor '{G}' has shape \(1048576, 1048576, 1\), expected \(8,\)",
    ),
    "size-not-header": (  # right header, more data than it needs
        lambda d, w: write_npz(d / "z.npz", {**replaced(w, G, w[G]), G: npy_bytes(w[G]) + bytes(64)}),
        rf"tensor '{G}': the archive declares 224 bytes, its \.npy header 160",
    ),
    "missing": (
        lambda d, w: write_npz(d / "m.npz", {k: npy_bytes(v) for k, v in w.items() if k != G}),
        rf"missing tensor '{G}' \(shape \(8,\)\)",
    ),
    "duplicate": (
        lambda d, w: write_npz(d / "d.npz", replaced(w, G, w[G])) and _append_member(d / "d.npz", G, w[G]),
        rf"tensor '{G}' appears more than once",
    ),
    "not-npy-member": (
        lambda d, w: _append_member(write_npz(d / "p.npz", replaced(w, G, w[G])), "evil.pkl", w[G], suffix=""),
        r"member 'evil\.pkl' is not an \.npy array",
    ),
}


def _append_member(npz: Path, name: str, arr: np.ndarray, suffix: str = ".npy") -> Path:
    warns = pytest.warns(UserWarning, match="Duplicate name") if suffix else contextlib.nullcontext()
    with warns, zipfile.ZipFile(npz, "a") as zf:
        zf.writestr(name + suffix, npy_bytes(arr))
    return npz


@pytest.mark.parametrize("case", BAD_NPZ, ids=str)
def test_bad_npz_is_one_weight_error(
    case: str, graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path
) -> None:
    W.save(good, tmp_path / "good.npz")
    make, pattern = BAD_NPZ[case]
    bad = make(tmp_path, good)
    with pytest.raises(W.WeightError) as info:
        read_weights(bad, graph)
    msg = one_line(str(info.value))
    assert msg.startswith(f"{bad}: "), msg
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"


def test_good_files_still_load(graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path) -> None:
    for suffix in (".npz", ".safetensors"):
        back = read_weights(W.save(good, tmp_path / f"w{suffix}"), graph)
        assert list(back) == list(good) and all(np.array_equal(back[k], good[k]) for k in good)
        assert all(v.flags.writeable and v.dtype == np.float32 for v in back.values())
    # float16 and float64, big-endian and Fortran order are all valid .npy: read as such
    odd = {k: v.astype(">f8") for k, v in good.items()}
    odd["conv1.kernel"] = np.asfortranarray(good["conv1.kernel"].astype("f2"))
    back = read_weights(write_npz(tmp_path / "odd.npz", {k: npy_bytes(v) for k, v in odd.items()}), graph)
    assert back["conv1.kernel"].dtype == np.float16 and back[G].dtype == np.float64
    assert np.array_equal(back["conv1.kernel"], odd["conv1.kernel"]) and np.array_equal(back[G], good[G])
    # compressed archives (np.savez_compressed) too
    np.savez_compressed(tmp_path / "c.npz", **good)
    assert np.array_equal(read_weights(tmp_path / "c.npz", graph)[G], good[G])


def test_zip_bomb_fails_before_inflating(
    graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50 MB zero-filled member, compressed to about 50 KB: refused from the zip directory and
    the .npy header, with under 1 MB ever decompressed."""
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in good.items():
            if name != G:
                zf.writestr(f"{name}.npy", npy_bytes(arr))
        with zf.open(f"{G}.npy", "w", force_zip64=True) as fh:  # the right header, then 50 MB
            fh.write(npy_header((8,)))
            for _ in range(50):
                fh.write(bytes(1 << 20))
    assert bomb.stat().st_size < 2_000_000
    inflated = 0
    original = zipfile.ZipExtFile.read

    def counting_read(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        nonlocal inflated
        data = original(self, n)
        inflated += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    for g in (graph, None):  # with or without a graph to compare with
        with pytest.raises(W.WeightError, match=rf"tensor '{G}': the archive declares 52,428,928 bytes"):
            W.load(bomb, g)
    assert inflated < 1_000_000, inflated
    # an extra member is refused by its name alone, before it is opened
    with zipfile.ZipFile(bomb, "a") as zf, zf.open("zz.npy", "w", force_zip64=True) as fh:
        fh.write(bytes(1 << 20))
    inflated = 0
    with pytest.raises(W.WeightError, match=r"unexpected tensor 'zz'"):
        read_weights(bomb, graph)
    assert inflated == 0


def test_oversized_weights_file_is_refused_by_size(graph: archc.Graph, tmp_path: Path) -> None:
    big = tmp_path / "big.npz"
    with open(big, "wb") as fh:  # sparse
        fh.truncate(100 << 20)
    with pytest.raises(
        W.WeightError, match=r"big\.npz: is 104,857,600 bytes, more than the [\d,]+ its tensors can take"
    ):
        read_weights(big, graph)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_fifo_and_directory_are_refused(graph: archc.Graph, tmp_path: Path, suffix: str) -> None:
    fifo = tmp_path / f"w{suffix}"
    os.mkfifo(fifo)
    folder = tmp_path / f"dir{suffix}"
    folder.mkdir()
    for p, kind in ((fifo, "a FIFO (named pipe)"), (folder, "a directory")):
        with pytest.raises(W.WeightError) as info:
            read_weights(p, graph)
        assert one_line(str(info.value)) == f"{p}: is {kind}, not a weights file"


def _st_entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


BAD_SAFETENSORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (lambda d: (d / "e.safetensors").write_bytes(b"") or d / "e.safetensors", r"is 0 bytes, too short"),
    "huge-length": (
        lambda d: (d / "l.safetensors").write_bytes(b"\xff" * 16) and d / "l.safetensors",
        r"not a safetensors file \(header length 18,446,744,073,709,551,615",
    ),
    "length-past-end": (
        lambda d: safetensors_file(d / "p.safetensors", b"{}", length=100),
        r"not a safetensors file \(header length 100; the file has 2 bytes after it",
    ),
    "not-json": (
        lambda d: safetensors_file(d / "j.safetensors", b"{not json}"),
        r"not a safetensors file \(the header is not JSON",
    ),
    "deep-json": (  # json.loads recurses: RecursionError, not a crash
        lambda d: safetensors_file(d / "r.safetensors", b"[" * 100_000 + b"]" * 100_000),
        r"not a safetensors file \(the JSON header is nested too deeply\)",
    ),
    "json-list": (lambda d: safetensors_file(d / "a.safetensors", [1, 2]), r"the header is not a JSON object"),
    "malformed-entry": (
        lambda d: safetensors_file(d / "m.safetensors", {"x": {"dtype": "F32", "shape": [-1]}}),
        r"tensor 'x': malformed header entry",
    ),
    "duplicate-name": (
        lambda d: safetensors_file(d / "d.safetensors", b'{"x": {}, "x": {}}'),
        r"the safetensors header names a tensor twice",
    ),
}


@pytest.mark.parametrize("case", BAD_SAFETENSORS, ids=str)
def test_bad_safetensors_is_one_weight_error(case: str, graph: archc.Graph, tmp_path: Path) -> None:
    make, pattern = BAD_SAFETENSORS[case]
    bad = make(tmp_path)
    for g in (graph, None):
        with pytest.raises(W.WeightError) as info:
            W.load(bad, g)
        msg = one_line(str(info.value))
        assert msg.startswith(f"{bad}: ") and re.search(pattern, msg), msg


def _safetensors_with(good: dict[str, np.ndarray], tmp: Path, name: str, **change: object) -> Path:
    """The good file's header with one entry changed (its data left as is)."""
    raw = W.save(good, tmp / "good.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header[name].update(change)
    return safetensors_file(tmp / "bad.safetensors", header, raw[8 + n :])


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"dtype": "I8"}, rf"tensor '{G}' has dtype I8, expected one of F16, F32, F64"),
        ({"dtype": "BOOL"}, rf"tensor '{G}' has dtype BOOL"),
        ({"shape": [1 << 40]}, rf"tensor '{G}' has shape \(1099511627776,\), expected \(8,\)"),
        ({"data_offsets": [0, 32]}, r"tensor 'conv1\.kernel': data_offsets \[0, 864\] should be \[32, 896\]"),
        ({"data_offsets": [0, 1 << 62]}, rf"tensor '{G}': data_offsets \[0, 4611686018427387904\] should be"),
    ],
    ids=["int8", "bool", "claims-4TiB", "overlap", "huge-offset"],
)
def test_bad_safetensors_entries(
    graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path, change: dict[str, object], pattern: str
) -> None:
    bad = _safetensors_with(good, tmp_path, G, **change)
    with pytest.raises(W.WeightError) as info:
        read_weights(bad, graph)
    assert re.search(pattern, one_line(str(info.value))), str(info.value)


def test_truncated_and_padded_safetensors(graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path) -> None:
    raw = W.save(good, tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(W.WeightError, match=r"t\.safetensors: the tensors take [\d,]+ bytes .*\(truncated\)"):
        read_weights(tmp_path / "t.safetensors", graph)
    (tmp_path / "x.safetensors").write_bytes(raw + b"\0" * 8)
    with pytest.raises(W.WeightError, match=r"\(trailing bytes\)"):
        read_weights(tmp_path / "x.safetensors", graph)
    nan = dict(good, **{G: np.full(8, np.nan, np.float32)})
    W.save(dict(good), tmp_path / "n.safetensors")
    raw = (tmp_path / "n.safetensors").read_bytes().replace(good[G].tobytes(), nan[G].tobytes())
    (tmp_path / "n.safetensors").write_bytes(raw)
    with pytest.raises(W.WeightError, match=rf"tensor '{G}' has 8 non-finite values"):
        read_weights(tmp_path / "n.safetensors", graph)


def test_safetensors_needs_no_package(
    graph: archc.Graph, good: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    back = read_weights(W.save(good, tmp_path / "w.safetensors"), graph)
    assert all(np.array_equal(back[k], good[k]) for k in good)


def test_safetensors_agrees_with_the_package(good: dict[str, np.ndarray], tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    ours = W.save(good, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(ours))
    assert all(np.array_equal(theirs[k], good[k]) for k in good)
    st.save_file(good, str(tmp_path / "theirs.safetensors"), metadata={"format": "np"})
    back = W.load(tmp_path / "theirs.safetensors")
    assert set(back) == set(good) and all(np.array_equal(back[k], good[k]) for k in good)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (np.ones(8, np.int32), r"has dtype int32"),
        (np.array([1, np.inf] * 4, np.float64), r"has 4 non-finite values"),
        (np.linspace(-1, 1, 8).astype(np.float32), None),  # gamma may be negative; a variance may not
    ],
)
def test_check_holds_dicts_to_the_same_rules(
    graph: archc.Graph, good: dict[str, np.ndarray], values: np.ndarray, pattern: str | None
) -> None:
    w = {**good, G: values}
    if pattern is None:
        W.check(graph, w)
        with pytest.raises(W.WeightError, match=r"'conv1_bn\.moving_variance' has negative values \(min -1\)"):
            W.check(graph, {**good, "conv1_bn.moving_variance": values})
        return
    with pytest.raises(W.WeightError, match=rf"weights: tensor '{G}' {pattern}"):
        W.check(graph, w)


def test_save_refuses_what_load_would_refuse(good: dict[str, np.ndarray], tmp_path: Path) -> None:
    for bad in (np.ones(8, np.int8), np.array([None] * 8, dtype=object), np.full(8, np.nan, np.float32)):
        with pytest.raises(W.WeightError, match=rf"tensor '{G}'"):
            W.save({**good, G: bad}, tmp_path / "w.npz")
    assert list(tmp_path.iterdir()) == []


def test_non_keras_h5_is_one_weight_error(graph: archc.Graph, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    cases: dict[str, tuple[Callable[[Any], None], str]] = {
        "plain": (
            lambda f: f.create_dataset("data", data=np.arange(10)),
            r"not a Keras weights file \(no layer names\)",
        ),
        "listed-not-there": (
            lambda f: f.attrs.__setitem__("layer_names", [b"conv1"]),
            r"layer 'conv1' is listed in layer_names but has no group",
        ),
        "layers-not-a-group": (
            lambda f: f.create_dataset("layers", data=np.arange(3)),
            r"not a Keras weights file \('layers' is not a group\)",
        ),
        "strings": (
            lambda f: (
                f.create_group("layers/c/vars").attrs.__setitem__("name", "conv1"),
                f.create_dataset("layers/c/vars/0", data=np.array([b"abc"])),
            ),
            r"tensor 'conv1\.kernel' has dtype \|S3, expected",
        ),
        "huge-shape": (  # a 1 TiB chunked dataset costs no disk until written: refused by shape, never read
            lambda f: (
                f.create_group("layers/c/vars").attrs.__setitem__("name", "conv1"),
                f.create_dataset("layers/c/vars/0", shape=(1 << 38,), dtype="f4", chunks=(1 << 16,)),
            ),
            r"tensor 'conv1\.kernel' has shape \(274877906944,\), expected \(3, 3, 3, 8\)",
        ),
    }
    for case, (fill, pattern) in cases.items():
        path = tmp_path / f"{case}.h5"
        with h5py.File(path, "w") as f:
            fill(f)
        with pytest.raises(W.WeightError) as info:
            read_weights(path, graph)
        msg = one_line(str(info.value))
        assert msg.startswith(f"{path}: ") and re.search(pattern, msg), f"{case}: {msg}"


@pytest.mark.torch
@pytest.mark.parametrize("case", ["crc", "nan", "claims-3.6TiB", "npy-renamed"])
def test_build_with_bad_weights_exits_2_and_writes_nothing(
    case: str, good: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from archcompiler.tools.cli import main

    W.save(good, tmp_path / "good.npz")
    bad = BAD_NPZ[case][0](tmp_path, good)
    out = tmp_path / "out"
    argv = ["build", str(SPEC), "--backend", "torch", "--width", "0.25", "--resolution", "32"]
    assert main([*argv, "--weights", str(bad), "-o", str(out)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"{SPEC}: {bad}: ") and re.search(BAD_NPZ[case][1], err), err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good.npz", bad.name])
