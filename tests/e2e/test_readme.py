"""The README is true: its snippets run, its transcripts match, its paths exist.

Everything runs as a user would, in subprocesses, in a scratch copy of the repo's ``specs/``
(so nothing is written into the clone): each ``python`` snippet after the ``archc build``
commands its section gives before it, each ``$ archc ...`` transcript compared with the output
the README shows (``...`` skips lines, a trailing ``  # comment`` is an annotation).
Framework-free transcripts are fast; what builds or runs a model is in the slow tier.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
BUILD_CMD = re.compile(r"(?:^\$ |`)(archc build [^`\n]+)", re.M)
FRAMEWORK_CMDS = ("archc build", "archc parity", "archc generate")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    before: str
    """README text from the start of the block's section (## heading) up to the block."""
    line: int

    @property
    def id(self) -> str:
        return f"line{self.line}"


def _blocks() -> list[Block]:
    out = []
    for m in FENCE.finditer(README):
        section_start = README.rfind("\n## ", 0, m.start()) + 1
        line = README.count("\n", 0, m.start()) + 1
        out.append(Block(m.group(1), m.group(2), README[section_start : m.start()], line))
    return out


BLOCKS = _blocks()
SNIPPETS = [b for b in BLOCKS if b.lang == "python"]
TRANSCRIPTS = [b for b in BLOCKS if b.lang == "" and b.text.startswith("$ ")]
PYCON = [b for b in BLOCKS if b.lang == "pycon"]


class Workspace:
    """A scratch folder that looks like the repo root to a user's command; commands run once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(ROOT / "specs", root / "specs")
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.done: dict[str, subprocess.CompletedProcess[str]] = {}

    def sh(self, cmd: str) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in bash as a terminal shows it: stderr interleaved into stdout."""
        if cmd not in self.done:
            self.done[cmd] = subprocess.run(
                ["bash", "-c", cmd],
                cwd=self.root,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=600,
            )
        return self.done[cmd]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"))


def _expected(lines: list[str]) -> list[str]:
    """The output as shown, minus annotations and the blank line that separates commands."""
    out = [re.sub(r"\s{2,}# .*$", "", ln).rstrip() for ln in lines]
    while out and not out[-1]:
        out.pop()
    return out


def _matches(actual: list[str], expected: list[str]) -> bool:
    """``expected`` with ``...`` lines standing for one or more skipped lines."""
    chunks: list[list[str]] = [[]]
    for ln in expected:
        if ln == "...":
            chunks.append([])
        else:
            chunks[-1].append(ln)
    if len(chunks) == 1:
        return actual == chunks[0]
    first, *middle, last = chunks
    if actual[: len(first)] != first or (last and actual[-len(last) :] != last):
        return False
    pos, end = len(first) + 1, len(actual) - len(last)
    for chunk in middle:
        found = next((i for i in range(pos, end - len(chunk) + 1) if actual[i : i + len(chunk)] == chunk), None)
        if found is None:
            return False
        pos = found + len(chunk) + 1
    return pos <= end


def _parse_transcript(text: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for ln in text.rstrip("\n").split("\n"):
        if ln.startswith("$ "):
            steps.append((ln[2:], []))
        else:
            steps[-1][1].append(ln)
    return steps


def test_readme_has_what_this_test_checks() -> None:
    """Guard against a regex that silently finds nothing: the README's own content, counted."""
    assert len(SNIPPETS) == 3 and len(TRANSCRIPTS) >= 3 and len(PYCON) >= 2
    assert any("archc build specs/mobilenet.yaml --backend torch" in b.text for b in TRANSCRIPTS)


def test_make_build_runs_the_readmes_main_command() -> None:
    """`make build` is the README's `archc build` command, so its snippets find the files."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^build:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert recipe.group(1).strip() == "$(BIN)/archc build specs/mobilenet.yaml --backend torch"
    assert "make build   # set up, then: archc build specs/mobilenet.yaml --backend torch" in README


def _paths() -> list[str]:
    """Repo paths the README names in backticks (build/ and .venv/ are made by `make`; the snippets check build/)."""
    found = set()
    for token in re.findall(r"`([^`\s]+)`", README):
        looks_like_path = re.fullmatch(r"[\w.*/-]*[a-z][\w.*/-]*", token) and "/" in token
        if looks_like_path and not token.startswith(("build/", ".venv/", "http", "-")):
            found.add(token)
    return sorted(found)


@pytest.mark.parametrize("path", _paths())
def test_paths_in_readme_exist(path: str) -> None:
    assert list(ROOT.glob(path)), f"README names {path!r}, which is not in the repo"


def _named_tests() -> list[str]:
    """``tests/x.py::test_name`` references in the README (``::test_name`` alone continues the
    last file named), as the Guarantees section cites its tests."""
    found, last = [], None
    for file, name in re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)`", README):
        last = file or last
        assert last is not None, f"::{name} names no file before it"
        found.append(f"{last}::{name}")
    return found


@pytest.mark.parametrize("ref", _named_tests())
def test_tests_named_in_readme_exist(ref: str) -> None:
    file, _, name = ref.partition("::")
    text = (ROOT / file).read_text(encoding="utf-8")
    assert re.search(rf"^def {name}\(", text, re.M), f"README cites {ref}, which is not a test"


def test_named_tests_found() -> None:
    refs = _named_tests()
    assert len(refs) >= 20 and "tests/e2e/test_output_safety.py::test_default_build_folders_name_the_backend" in refs


def test_paths_found() -> None:
    assert {"docs/NUMBERS.md", "specs/mobilenet.yaml", "requirements/dev.txt"} <= set(_paths())


def _tier(cmds: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] if any(c in cmds for c in FRAMEWORK_CMDS) else []


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=_tier(b.text)) for b in TRANSCRIPTS])
def test_transcript(block: Block, workspace: Workspace) -> None:
    for cmd, shown in _parse_transcript(block.text):
        target = workspace.root / cmd[4:] if cmd.startswith("cat ") else None
        if target is not None and not target.exists():  # the README shows a file's contents: make it
            target.write_text("\n".join(shown) + "\n", encoding="utf-8")
            continue
        proc = workspace.sh(cmd)
        actual = [ln.rstrip() for ln in proc.stdout.rstrip("\n").split("\n")]
        if not shown:
            assert proc.returncode == 0, f"README line {block.line}: $ {cmd}\n{proc.stdout[-3000:]}"
            continue
        assert _matches(actual, _expected(shown)), f"README line {block.line}: $ {cmd}\n" + "\n".join(actual)


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in SNIPPETS])
def test_python_snippet(block: Block, workspace: Workspace) -> None:
    """Each snippet as written, after the `archc build` commands its section gives before it."""
    for cmd in BUILD_CMD.findall(block.before):
        proc = workspace.sh(cmd)
        assert proc.returncode == 0, f"README line {block.line}: {cmd}: {proc.stdout[-3000:]}"
    proc = subprocess.run(
        [sys.executable, "-c", block.text],
        cwd=workspace.root,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"README line {block.line}:\n{block.text}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in PYCON])
def test_pycon_session(block: Block, workspace: Workspace) -> None:
    """Each ``>>>`` session as doctest replays it (``...`` matches anything, a trailing
    ``# comment`` on a ``>>>`` line is Python's own), in the scratch copy of the repo."""
    runner = (
        "import doctest, sys\n"
        "test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, 'README', 'README.md', 0)\n"
        "r = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)\n"
        "r.run(test)\n"
        "sys.exit(1 if r.failures or not r.tries else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", runner],
        input=block.text,
        cwd=workspace.root,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"README line {block.line}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
