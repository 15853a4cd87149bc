"""Outputs never destroy anything but archc's own previous output (issue 19).

Names are checked with full-string matching (no ``$`` before a trailing newline); every file
archc writes refuses a target that is not a regular file or is one of the command's inputs;
the build manifest never names a file archc did not write; staging left by a killed build is
removed by the next one; concurrent builds into one folder publish one build each; the
default build folder names the backend.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import archcompiler as a
import archcompiler.api
import archcompiler.weights
from archcompiler import files as fsutil
from archcompiler.files import (
    LOCK,
    MANIFEST,
    STAGING_PREFIX,
    TEMP_PREFIX,
    OutputError,
    atomic_write,
    check_name,
    folder_lock,
    publish,
    read_manifest,
    staging,
)
from archcompiler.tools.cli import main

TINY = """\
archc: 1
name: tiny
input: {size: 8}
classes: 4
layers:
  - {op: conv, filters: 8, kernel: 3, name: conv1}
  - {op: batchnorm}
  - {op: activation}
  - {op: global_avg_pool}
  - {op: dense, units: $classes}
"""


def one_line(text: str) -> bool:
    return text.count("\n") == 1 and text.endswith("\n") and "\r" not in text and "Traceback" not in text


# -- names ------------------------------------------------------------------------------------

NAMED: dict[str, Any] = {
    "name": "tiny",
    "input": {"size": 8, "name": "image"},
    "classes": 4,
    "blocks": {
        "unit": {
            "params": {"f": 8, "tag": "b"},
            "layers": [{"op": "conv", "filters": "$f", "kernel": 3, "name": "{tag}_conv"}],
        }
    },
    "layers": [
        {"op": "conv", "filters": 8, "kernel": 3, "name": "conv1"},
        {"block": "unit", "f": 8, "name": "u"},
        {"op": "activation", "name": "act", "inputs": ["conv1"]},
        {"op": "global_avg_pool", "name": "pool_{index}"},
    ],
    "output": "pool_1",
}
"""A spec with a name in every field that takes one (compiles as it is)."""

KEY = object()
"""In a field path: the last key itself is the name (a block's, a parameter's)."""

NAME_FIELDS: dict[str, tuple[Any, ...]] = {
    "spec name": ("name",),
    "layer name": ("layers", 0, "name"),
    "inputs": ("layers", 2, "inputs", 0),
    "block name": ("blocks", "unit", KEY),
    "block call": ("layers", 1, "block"),
    "block call name": ("layers", 1, "name"),
    "block parameter name": ("blocks", "unit", "params", "f", KEY),
    "block argument name": ("layers", 1, "f", KEY),
    "block argument in a name": ("layers", 1, "tag"),
    "input name": ("input", "name"),
    "output": ("output",),
    "name template": ("layers", 3, "name"),
    "template in a block": ("blocks", "unit", "layers", 0, "name"),
}
BAD_ENDINGS = {"newline": "\n", "CR": "\r", "NUL": "\x00", "slash": "/x", "backslash": "\\x"}


def spoiled(field: tuple[Any, ...], bad: str) -> dict[str, Any]:
    """NAMED with ``bad`` appended to the name at ``field``."""
    spec = copy.deepcopy(NAMED)
    *head, last = field
    if last is KEY:
        *head, last = head
        node = spec
        for k in head:
            node = node[k]
        node[last + bad] = node.pop(last)
    else:
        node = spec
        for k in head:
            node = node[k]
        given = node[last] if isinstance(node, list) or last in node else "b"  # an argument not given yet
        node[last] = given + bad
    return spec


def test_the_named_spec_compiles() -> None:
    assert a.compile(NAMED).graph.name == "tiny"


@pytest.mark.parametrize("bad", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
@pytest.mark.parametrize("field", NAME_FIELDS.values(), ids=NAME_FIELDS.keys())
def test_every_name_field_refuses_what_is_not_an_identifier(field: tuple[Any, ...], bad: str) -> None:
    """'notes\\n' passed re.match(r'...$') and became a file name; each is a located one-liner."""
    with pytest.raises(a.SpecError) as exc:
        a.compile(spoiled(field, bad))
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message and "\x00" not in message
    assert message.startswith("<dict>: ") and (repr(bad)[1:-1] in message or "has no parameter" in message)


@pytest.mark.parametrize("bad", BAD_ENDINGS.values(), ids=BAD_ENDINGS.keys())
def test_api_outputs_refuse_what_names_no_layer(bad: str) -> None:
    with pytest.raises(a.SpecError, match="--outputs: no layer named"):
        a.compile(NAMED, outputs=["conv1" + bad])


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        ("name", "name: tiny", 'name: "tiny\\n"'),
        ("layers[0].name", "name: conv1", 'name: "conv1\\r"'),
        ("layers[0].name", "name: conv1", 'name: "conv1\\0"'),
        ("input.name", "input: {size: 8}", 'input: {size: 8, name: "x/y"}'),
    ],
)
def test_cli_refuses_bad_names_in_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, old: str, new: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY.replace(old, new))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith(f"{spec}:") and f": {field}: expected" in err, err


@pytest.mark.parametrize("bad", ["\n", "\r", "\x00", "/x"], ids=["newline", "CR", "NUL", "slash"])
def test_cli_outputs_refuse_what_names_no_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY)
    assert main(["check", str(spec), "--outputs", "conv1" + bad]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and err.startswith(f"{spec}: --outputs: no layer named 'conv1{repr(bad)[1:-1]}'"), err


# -- targets that are not archc's to replace -----------------------------------------------------


def make_special(path: Path, kind: str) -> None:
    """A non-regular file at ``path``: a character device, a FIFO, a socket, a folder, or a
    symbolic link to a FIFO."""
    if kind == "device":
        try:  # a second /dev/null (1, 3): root may make one (this is exactly the reported bug)
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))
        finally:
            sock.close()
    elif kind == "folder":
        path.mkdir()
    elif kind == "link to a fifo":
        os.mkfifo(path.with_name("real_fifo"))
        path.symlink_to("real_fifo")


KINDS = ["device", "fifo", "socket", "folder", "link to a fifo"]
TYPES = {"device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "folder": stat.S_ISDIR}


def still_special(path: Path, kind: str) -> bool:
    if kind == "link to a fifo":
        return path.is_symlink() and stat.S_ISFIFO(os.stat(path).st_mode)
    return TYPES[kind](os.lstat(path).st_mode)


def write_spec(folder: Path, name: str = "spec.yaml", text: str = TINY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / name
    spec.write_text(text)
    return spec


def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model build fail the test: a refused target must be found before one."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built a model before refusing the target")

    monkeypatch.setattr(a.Compiled, "_build", fail)


COMMANDS: dict[str, tuple[str, list[str]]] = {
    # command -> (the target's name in OUT, argv after SPEC; OUT is the folder, FILE the target)
    "summary -o": ("page.html", ["summary", "SPEC", "--format", "html", "-o", "FILE"]),
    "sweep --plot": ("grid.svg", ["sweep", "SPEC", "--plot", "FILE"]),
    "generate -o": ("tiny_1_8_torch.py", ["generate", "SPEC", "--backend", "torch", "-o", "OUT"]),
    "build torch": ("tiny.pt", ["build", "SPEC", "--backend", "torch", "-o", "OUT"]),
    "build torch, its source": ("tiny.py", ["build", "SPEC", "--backend", "torch", "-o", "OUT"]),
    "build onnx": ("tiny.onnx", ["build", "SPEC", "--backend", "onnx", "-o", "OUT"]),
    "build, the weights": ("tiny.weights.npz", ["build", "SPEC", "--backend", "onnx", "-o", "OUT"]),
}


FRAMEWORK_OF = {"generate": "torch", "torch": "torch", "onnx": "onnx", "weights": "onnx"}  # as needs() says
COMMAND_PARAMS = [
    pytest.param(c, marks=[getattr(pytest.mark, m) for w, m in FRAMEWORK_OF.items() if w in c]) for c in COMMANDS
]


def argv_for(command: str, spec: Path, out: Path) -> list[str]:
    name, argv = COMMANDS[command]
    where = {"SPEC": str(spec), "OUT": str(out), "FILE": str(out / name)}
    return [where.get(x, x) for x in argv]


def needs(command: str) -> None:
    if "torch" in command or "generate" in command:
        pytest.importorskip("torch")
    if "onnx" in command or "weights" in command:
        pytest.importorskip("onnx")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMAND_PARAMS)
def test_every_write_refuses_a_target_that_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, kind: str
) -> None:
    """`summary -o /dev/full` replaced the device with an HTML file (exit 0); so would every
    other write. Now: one line, exit 2, before any model is built, the target untouched."""
    needs(command)
    spec, out = write_spec(tmp_path / "specs"), tmp_path / "out"
    out.mkdir()
    target = out / COMMANDS[command][0]
    make_special(target, kind)
    no_build(monkeypatch)
    assert main(argv_for(command, spec, out)) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) and "not a regular file" in captured.err, captured.err
    assert captured.out == "" and still_special(target, kind)


@pytest.mark.parametrize("command", COMMAND_PARAMS)
def test_every_write_refuses_to_replace_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A spec saved as tiny.py, built with -o its own folder, was replaced by the generated
    tiny.py. The spec is caught under its own name, a hard link and a symbolic link."""
    needs(command)
    name = COMMANDS[command][0]
    no_build(monkeypatch)
    for how, link in (("itself", None), ("hard_link", os.link), ("symbolic_link", os.symlink)):
        folder = tmp_path / how
        if link is None:
            spec = write_spec(folder, name)
        else:
            spec = write_spec(tmp_path / f"{how}_spec")
            folder.mkdir()
            link(spec, folder / name)
        assert main(argv_for(command, spec, folder)) == 2
        err = capsys.readouterr().err
        assert one_line(err) and "is a file this command reads" in err, (how, err)
        assert spec.read_text() == TINY


@pytest.mark.torch
def test_a_spec_saved_as_py_built_into_its_own_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case, from the spec's folder: archc build tiny.py -o ."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    Path("tiny.py").write_text(TINY)
    assert main(["build", "tiny.py", "--backend", "torch", "-o", "."]) == 2
    assert capsys.readouterr().err == "tiny.py: tiny.py: is a file this command reads; write the output elsewhere\n"
    assert Path("tiny.py").read_text() == TINY and sorted(os.listdir()) == ["tiny.py"]


@pytest.mark.onnx
def test_the_weights_file_is_never_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    spec, out = write_spec(tmp_path), tmp_path / "out"
    net = a.compile(spec)
    w = a.weights.init(net.graph, seed=3)
    a.weights.save(w, out / "tiny.weights.npz")
    before = (out / "tiny.weights.npz").read_bytes()
    no_build(monkeypatch)
    argv = ["build", str(spec), "--backend", "onnx", "--weights", str(out / "tiny.weights.npz"), "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "tiny.weights.npz: is a file this command reads" in err, err
    assert (out / "tiny.weights.npz").read_bytes() == before
    with pytest.raises(a.api.OutputError, match="is a file this command reads"):
        net.build_to("onnx", out, weights=out / "tiny.weights.npz")


@pytest.mark.parametrize(
    "argv",
    [
        ["summary", "SPEC", "--format", "html", "-o", ""],
        ["sweep", "SPEC", "--plot", ""],
        ["build", "SPEC", "--backend", "onnx", "-o", ""],
        ["generate", "SPEC", "--backend", "torch", "-o", ""],
        ["summary", "SPEC", "--format", "html", "-o", "page\n.html"],
        ["build", "SPEC", "--backend", "onnx", "-o", "out\n"],
    ],
    ids=["summary", "sweep", "build", "generate", "summary newline", "build newline"],
)
def test_an_empty_or_multiline_output_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """-o '' wrote into the current folder."""
    needs(" ".join(argv))
    spec = write_spec(tmp_path / "specs")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    no_build(monkeypatch)
    assert main([str(spec) if x == "SPEC" else x for x in argv]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and ("an empty name" in err or "control character" in err or "expected a .png" in err), err
    assert os.listdir(work) == []


def test_the_portable_weights_writer_refuses_special_targets(tmp_path: Path) -> None:
    graph = a.compile(TINY).graph
    fifo = tmp_path / "w.npz"
    os.mkfifo(fifo)
    with pytest.raises(a.api.OutputError, match="FIFO"):
        a.weights.save(a.weights.init(graph), fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_the_target_is_checked_again_right_before_the_rename(tmp_path: Path) -> None:
    """Checked up front is not enough: the target may become a FIFO while the file is written."""
    target = tmp_path / "page.html"

    def write(tmp: str) -> None:
        Path(tmp).write_text("page")
        os.mkfifo(target)  # appears while archc writes

    with pytest.raises(OutputError, match="FIFO"):
        atomic_write(target, write)
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and os.listdir(tmp_path) == ["page.html"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\nb", "a\rb", "a\x00b", ".hidden", "x" * 256])
def test_publish_refuses_names_that_are_not_plain_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match="plain single-line file names"):
        check_name(name)
    assert check_name("model.weights.npz") == "model.weights.npz"


# -- the manifest: archc replaces and removes only what it wrote ------------------------------------


def stage(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Publish ``files`` into ``out`` as one build."""
    with staging(out) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        return publish(tmp, out)


def content(folder: Path) -> dict[str, bytes]:
    """The folder's files without archc's bookkeeping."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in (MANIFEST, LOCK)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_manifest_records_name_size_and_hash(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stage(out, {"m.pt": b"model", "m.py": b"source"})
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted((f["name"], f["size"], f["sha256"]) for f in manifest["files"]) == [
        ("m.pt", 5, sha(b"model")),
        ("m.py", 6, sha(b"source")),
    ]


def test_a_users_file_named_in_an_old_or_forged_manifest_survives(tmp_path: Path) -> None:
    """The issue: name 'notes\\n' made the file 'notes\\n.onnx', the manifest was read back with
    .split(), and the next build deleted the user's unrelated file 'notes'."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes").write_text("the user's notes")
    (out / MANIFEST).write_text("notes\n.onnx\nnotes\n")  # what the old build wrote
    stage(out, {"m.onnx": b"model"})
    assert content(out) == {"notes": b"the user's notes", "m.onnx": b"model"}
    forged = {"files": [{"name": "notes", "size": 3, "sha256": sha(b"xyz")}]}  # not what notes holds
    (out / MANIFEST).write_text(json.dumps(forged))
    stage(out, {"m.onnx": b"model"})
    assert content(out)["notes"] == b"the user's notes"


@pytest.mark.parametrize(
    "manifest",
    [
        b"\x00\xff garbage",
        b"[1, 2, 3]",
        b'{"files": "m.pt"}',
        b'{"files": [{"name": "../victim", "size": 6, "sha256": "SHA"}]}',
        b'{"files": [{"name": "sub/victim", "size": 6, "sha256": "SHA"}]}',
        b'{"files": [{"name": "victim\\n", "size": 6, "sha256": "SHA"}]}',
        b'{"files": [{"name": "victim", "size": "6", "sha256": "SHA"}]}',
        b'{"files": [{"name": "victim", "size": 6, "sha256": "not a hash"}]}',
    ],
)
def test_a_corrupt_or_hand_edited_manifest_is_ignored_safely(tmp_path: Path, manifest: bytes) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for victim in (tmp_path / "victim", out / "sub" / "victim", out / "victim\n", out / "victim"):
        victim.write_bytes(b"victim")
    (out / MANIFEST).write_bytes(manifest.replace(b"SHA", sha(b"victim").encode()))
    stage(out, {"m.pt": b"model"})
    assert (tmp_path / "victim").read_bytes() == b"victim"
    for victim in (out / "sub" / "victim", out / "victim\n", out / "victim"):
        assert victim.read_bytes() == b"victim"
    assert read_manifest(out) == {"m.pt": {(5, sha(b"model"))}}


def test_a_file_the_user_changed_is_never_replaced(tmp_path: Path) -> None:
    """Chosen: the build refuses in one line (the edited file and the previous build stay);
    a file that is not archc's previous output is never overwritten."""
    out = tmp_path / "out"
    stage(out, {"m.pt": b"model 1", "m.py": b"source 1"})
    (out / "m.py").write_bytes(b"source 1, edited by hand")
    with pytest.raises(OutputError, match=r"m\.py: not what archc last wrote there"):
        stage(out, {"m.pt": b"model 2", "m.py": b"source 2"})
    assert content(out) == {"m.pt": b"model 1", "m.py": b"source 1, edited by hand"}
    (out / "m.py").unlink()  # moved away: now the build goes through
    stage(out, {"m.pt": b"model 2", "m.py": b"source 2"})
    assert content(out) == {"m.pt": b"model 2", "m.py": b"source 2"}


def test_a_file_not_written_by_archc_is_never_replaced_unless_identical(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.pt").write_bytes(b"the user's m.pt")
    with pytest.raises(OutputError, match="not what archc last wrote there"):
        stage(out, {"m.pt": b"model"})
    (out / "m.pt").write_bytes(b"model")  # identical to what the build writes: nothing is lost
    stage(out, {"m.pt": b"model"})
    assert read_manifest(out) == {"m.pt": {(5, sha(b"model"))}}


def test_files_the_new_build_no_longer_writes_go_only_if_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stage(out, {"m.pt": b"model", "m.pt2": b"program", "m.json": b"{}"})
    (out / "m.json").write_bytes(b'{"edited": true}')
    stage(out, {"m.pt": b"model 2"})  # writes neither m.pt2 nor m.json
    assert content(out) == {"m.pt": b"model 2", "m.json": b'{"edited": true}'}
    assert read_manifest(out) == {"m.pt": {(7, sha(b"model 2"))}}


def test_a_publish_cut_off_between_renames_leaves_a_folder_the_next_build_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL cannot be blocked: while the renames run, the manifest lists both builds' files,
    so whichever of them a killed publish left is still recognised as archc's."""
    out = tmp_path / "out"
    stage(out, {"a.pt": b"a 1", "b.pt": b"b 1"})
    real = os.replace
    calls = []

    def dies_after_the_first_file(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if calls.count("b.pt"):
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", dies_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        stage(out, {"a.pt": b"a 2", "b.pt": b"b 2"})
    monkeypatch.setattr(os, "replace", real)
    assert content(out) == {"a.pt": b"a 2", "b.pt": b"b 1"}  # half published
    stage(out, {"a.pt": b"a 3", "b.pt": b"b 3"})
    assert content(out) == {"a.pt": b"a 3", "b.pt": b"b 3"}


# -- leftovers of killed builds ---------------------------------------------------------------------

KILLED = """
import os, signal, sys
from pathlib import Path
from archcompiler.files import atomic_write, staging
out = Path(sys.argv[1])
if sys.argv[2] == "staging":
    with staging(out) as tmp:
        (tmp / "m.pt").write_bytes(b"x" * 100000)
        os.kill(os.getpid(), signal.SIGKILL)
else:
    def write(tmp):
        Path(tmp).write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(out / "m.py", write, suffix=".py")
"""

HOLDS = """
import sys
from pathlib import Path
from archcompiler.files import staging
with staging(Path(sys.argv[1])) as tmp:
    print(tmp.name, flush=True)
    sys.stdin.readline()
"""


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith((STAGING_PREFIX, TEMP_PREFIX)))


def test_staging_left_by_a_killed_build_is_removed_by_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After kill -9 mid-build, .archc-staging-* (8 MB for MobileNet) stayed forever."""
    out = tmp_path / "out"
    stage(out, {"m.pt": b"model"})
    for what in ("staging", "atomic_write"):
        proc = subprocess.run([sys.executable, "-c", KILLED, str(out), what], capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(leftovers(out)) == 2  # one staging folder, one temporary file
    monkeypatch.setattr(fsutil, "STALE_TEMP_AGE", 0.0)  # a temporary file's writer had 60 s to lock it
    stage(out, {"m.pt": b"model 2"})
    assert leftovers(out) == [] and content(out) == {"m.pt": b"model 2"}


def test_a_live_builds_staging_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLDS, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None
        theirs = other.stdout.readline().strip()
        assert theirs.startswith(STAGING_PREFIX)
        stage(out, {"m.pt": b"model"})
        assert leftovers(out) == [theirs]
    finally:
        other.communicate("\n", timeout=60)
    assert leftovers(out) == []


def test_a_live_temporary_file_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "STALE_TEMP_AGE", 0.0)
    seen = []

    def write(tmp: str) -> None:
        Path(tmp).write_text("model")
        stage(tmp_path, {"other.pt": b"other"})  # another build into the folder, meanwhile
        seen.extend(leftovers(tmp_path))

    atomic_write(tmp_path / "m.py", write, suffix=".py")
    assert len(seen) == 1 and seen[0].startswith(f"{TEMP_PREFIX}m.py.")
    assert (tmp_path / "m.py").read_text() == "model" and leftovers(tmp_path) == []


# -- concurrent builds into one folder ------------------------------------------------------------


def test_concurrent_publishes_into_one_folder_are_serialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three builds at once left a mixed folder (.pt of one width, .py of another). Two
    publishes run side by side here, each rename slowed down: the folder ends up as one of
    the two builds, never a mix, and the manifest describes exactly its files."""
    out = tmp_path / "out"
    stage(out, {"m.pt": b"old", "m.pt2": b"old program"})
    real = os.replace

    def slow(src: Any, dst: Any) -> None:
        time.sleep(0.02)
        real(src, dst)

    monkeypatch.setattr(os, "replace", slow)
    builds = {"A": {"m.pt": b"A model", "m.py": b"A source"}, "B": {"m.pt": b"B model", "m.onnx": b"B"}}
    errors: list[BaseException] = []

    def run(files: dict[str, bytes]) -> None:
        try:
            stage(out, files)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(files,)) for files in builds.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert content(out) in list(builds.values())
    assert read_manifest(out) == {n: {(len(b), sha(b))} for n, b in content(out).items()}


@pytest.mark.onnx
def test_a_build_waiting_too_long_for_the_folder_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    spec, out = write_spec(tmp_path), tmp_path / "out"
    monkeypatch.setattr(fsutil, "LOCK_TIMEOUT", 0.3)
    with folder_lock(out):  # another build holds the folder (flock: per open file, so also here)
        assert main(["build", str(spec), "--backend", "onnx", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "another archc build is writing into it (waited 0.3 s" in err, err
    assert content(out) == {}


CONCURRENT = ["0.5", "1", "2"]


def published_one_build(out: Path) -> int:
    """The width (conv1's filters) of the one build ``out`` holds; fails on a mix."""
    onnx = pytest.importorskip("onnx")
    assert read_manifest(out) == {n: {(len(b), sha(b))} for n, b in content(out).items()}
    assert sorted(content(out)) == ["tiny.onnx", "tiny.weights.npz"] and leftovers(out) == []
    kernel = np.load(out / "tiny.weights.npz")["conv1.kernel"]
    model = onnx.load(out / "tiny.onnx")
    conv = next(t for t in model.graph.initializer if t.name.startswith("conv1") and len(t.dims) == 4)
    assert kernel.shape[-1] == conv.dims[0]
    return int(conv.dims[0])


def concurrent_builds(tmp_path: Path, rounds: int) -> None:
    pytest.importorskip("onnx")
    spec, out = write_spec(tmp_path), tmp_path / "out"
    archc = str(Path(sys.executable).with_name("archc"))
    widths = set()
    for _ in range(rounds):
        procs = [
            subprocess.Popen(
                [archc, "build", str(spec), "--backend", "onnx", "--width", w, "-q", "-o", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in CONCURRENT
        ]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        widths.add(published_one_build(out))
    assert widths <= {4, 8, 16}


@pytest.mark.slow
@pytest.mark.onnx
def test_three_concurrent_builds_publish_one_build(tmp_path: Path) -> None:
    concurrent_builds(tmp_path, rounds=1)


@pytest.mark.slow
@pytest.mark.onnx
def test_three_concurrent_builds_publish_one_build_every_time(tmp_path: Path) -> None:
    concurrent_builds(tmp_path, rounds=25)


# -- default folders ----------------------------------------------------------------------------

README_ORDER = [  # the README's order: torch into the default folder, then another backend, ...
    (["build", "SPEC", "--backend", "torch"], "build/tiny_1_8_torch", ["tiny.pt", "tiny.py", "tiny.weights.npz"]),
    (["build", "SPEC", "--backend", "BACKEND"], "build/tiny_1_8_BACKEND", ["FILE", "tiny.weights.npz"]),
    (
        ["build", "SPEC", "--backend", "torch", "--width", "0.5"],
        "build/tiny_0_5_8_torch",
        ["tiny.pt", "tiny.py", "tiny.weights.npz"],
    ),
    (
        ["build", "SPEC", "--backend", "torch", "--optimize"],
        "build/tiny_1_8_optimized_torch",
        ["tiny_optimized.json", "tiny_optimized.pt", "tiny_optimized.py", "tiny_optimized.weights.npz"],
    ),
    (["generate", "SPEC", "--backend", "torch"], "generated", ["tiny_1_8_torch.py"]),
]


def follow_the_readme(tmp_path: Path, backend: str, suffix: str, run: Any) -> None:
    """Every command of README_ORDER in a fresh folder; after all of them, every build's files
    are still in place (a build of one backend deleted the other's .pt and .py)."""
    spec = write_spec(tmp_path / "specs")
    expected = {}
    for argv, folder, names in README_ORDER:
        fill = {"SPEC": str(spec), "BACKEND": backend}
        assert run([fill.get(x, x) for x in argv]) == 0
        folder = folder.replace("BACKEND", backend)
        expected[folder] = sorted(n.replace("FILE", f"tiny{suffix}") for n in names)
    for folder, names in expected.items():
        assert sorted(content(tmp_path / folder)) == names, folder


@pytest.mark.torch
def test_default_build_folders_name_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    follow_the_readme(tmp_path, "onnx", ".onnx", main)
    assert a.compile(TINY).default_output_dir("onnx") == Path("build/tiny_1_8_onnx")
    assert a.compile(TINY).default_output_dir("torch", optimize=True) == Path("build/tiny_1_8_optimized_torch")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
def test_default_build_folders_name_the_backend_keras(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    archc = str(Path(sys.executable).with_name("archc"))

    def run(argv: list[str]) -> int:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run([archc, *argv], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return 0

    follow_the_readme(tmp_path, "keras", ".keras", run)
