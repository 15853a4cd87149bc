"""The README and the docs pages are true: their snippets run, their transcripts match, their
paths exist.

Everything runs as a user would, in subprocesses, in a scratch copy of the repo's ``specs/``
and ``docs/examples/`` (so nothing is written into the clone): each ``python`` snippet after the
``archc build`` commands its section gives before it, each ``>>>`` session, each ``$ archc ...``
transcript compared with the output the page shows (``...`` skips lines, a trailing
``  # comment`` is an annotation). A block right after ``<!-- not run: why -->`` is shown, not
run (output that depends on the machine, a file from the internet). Framework-free
transcripts are fast; what builds or runs a model is in the slow tier.
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
from conftest import BACKEND_MARKS, MARKER_OF

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: (?P<why>[^\n]*?) -->\n\Z")
BUILD_CMD = re.compile(r"(?:^\$ |`)(archc build [^`\n]+)", re.M)
FRAMEWORK_CMDS = ("archc build", "archc parity", "archc generate")
TRANSCRIPT_LANGS = ("", "console", "text")


@dataclass(frozen=True)
class Block:
    page: str
    lang: str
    text: str
    before: str
    """The page's text from the start of the block's section (## heading) up to the block,
    without the blocks that are not run."""
    line: int
    runs: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    page = str(path.relative_to(ROOT))
    out, shown_only = [], []
    for m in FENCE.finditer(text):
        runs = NOT_RUN.search(text, 0, m.start()) is None
        if not runs:
            shown_only.append(m.group(0))
        section_start = text.rfind("\n## ", 0, m.start()) + 1
        before = text[section_start : m.start()]
        for block in shown_only:
            before = before.replace(block, "")
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(page, m.group(1), m.group(2), before, line, runs))
    return out


BLOCKS = [b for page in PAGES for b in _blocks(page)]
SNIPPETS = [b for b in BLOCKS if b.lang == "python" and b.runs]
TRANSCRIPTS = [b for b in BLOCKS if b.lang in TRANSCRIPT_LANGS and b.text.startswith("$ ") and b.runs]
PYCON = [b for b in BLOCKS if b.lang == "pycon" and b.runs]


class Workspace:
    """A scratch folder that looks like the repo root to a user's command; commands run once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(ROOT / "specs", root / "specs")
        shutil.copytree(ROOT / "docs" / "examples", root / "docs" / "examples")
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


def test_pages_have_what_this_test_checks() -> None:
    """Guard against a regex that silently finds nothing: the pages' own content, counted."""
    readme = [b for b in BLOCKS if b.page == "README.md"]
    assert len([b for b in readme if b in SNIPPETS]) == 5 and len([b for b in readme if b in PYCON]) == 1
    assert len([b for b in readme if b in TRANSCRIPTS]) >= 4
    assert any("archc build specs/mobilenet.yaml --backend torch" in b.text for b in TRANSCRIPTS)
    pages = {b.page for b in SNIPPETS + TRANSCRIPTS + PYCON}
    assert {"docs/spec.md", "docs/cli.md", "docs/python-api.md", "docs/deployment.md"} <= pages
    assert len(PAGES) >= 9


def test_blocks_not_run_say_why() -> None:
    shown = [b for b in BLOCKS if not b.runs]
    assert shown and all(b.lang in TRANSCRIPT_LANGS for b in shown)
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"<!-- not run:(.*?)-->\n(.?)", text):
            assert len(m.group(1).strip()) > 10 and m.group(2) == "`", f"{page.name}: {m.group(0)!r}"


def test_make_build_runs_the_readmes_main_command() -> None:
    """`make build` is the README's `archc build` command, so its snippets find the files."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^build:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert recipe.group(1).strip() == "$(BIN)/archc build specs/mobilenet.yaml --backend torch"
    assert "make build   # set up, then: archc build specs/mobilenet.yaml --backend torch" in README


def _paths() -> list[str]:
    """Repo paths the pages name in backticks (build/ and .venv/ are made by `make`; the snippets check build/)."""
    found = set()
    for page in PAGES:
        for token in re.findall(r"`([^`\s]+)`", page.read_text(encoding="utf-8")):
            looks_like_path = re.fullmatch(r"[\w.*/-]*[a-z][\w.*/-]*", token) and "/" in token
            if looks_like_path and not token.startswith(("build/", ".venv/", "http", "-", "site/")):
                found.add(token)
    return sorted(found)


@pytest.mark.parametrize("path", _paths())
def test_paths_in_readme_exist(path: str) -> None:
    assert list(ROOT.glob(path)), f"a page names {path!r}, which is not in the repo"


def test_links_in_readme_point_at_pages() -> None:
    """The README's links are to docs pages (the site's home page is the README, and mkdocs
    checks links between pages, anchors included)."""
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for link in links:
        target = link.split("#")[0]
        assert target.startswith("docs/") and (ROOT / target).is_file(), link


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
    assert {"docs/examples/every-op.yaml", "specs/mobilenet.yaml", "requirements/dev.txt"} <= set(_paths())


def _tier(cmds: str) -> list[pytest.MarkDecorator]:
    """Slow when a command builds or runs a model, marked for the frameworks its backends load
    (a command without ``--backend``: the default's)."""
    if not any(c in cmds for c in FRAMEWORK_CMDS):
        return []
    named = [n for m in re.finditer(r"--backends? ([\w,]+)", cmds) for n in m.group(1).split(",")] or [
        "torch",
        *(["keras"] if "archc parity" in cmds else []),  # parity's default: torch,keras
    ]
    marks = sorted({m for n in named for m in BACKEND_MARKS.get(n.removesuffix("-int8"), ())})
    return [pytest.mark.slow, *(getattr(pytest.mark, m) for m in marks)]


def _snippet_marks(block: Block) -> list[pytest.MarkDecorator]:
    """The framework markers of a snippet run in a child process: the frameworks it imports,
    the backends it names in quotes (``net.build("onnx")``; an int8 runtime's report also runs
    torch) and those of the ``archc build``
    commands its section runs first."""
    imports = {m for n, m in MARKER_OF.items() if re.search(rf"^\s*(import|from) {n}\b", block.text, re.M)}
    marks = set(imports)
    names = re.findall(r"[\"'](torch|keras|onnx|tflite)(-int8)?[\"']", block.text)
    marks |= {m for n, _ in names for m in BACKEND_MARKS[n]}
    marks |= {"torch" for _, int8 in names if int8}  # the int8 report's float reference runs in torch
    marks |= {d.name for cmd in BUILD_CMD.findall(block.before) for d in _tier(cmd)} - {"slow"}
    return [getattr(pytest.mark, m) for m in sorted(marks)]


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
            assert proc.returncode == 0, f"{block.id}: $ {cmd}\n{proc.stdout[-3000:]}"
            continue
        assert _matches(actual, _expected(shown)), f"{block.id}: $ {cmd}\n" + "\n".join(actual)


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=_snippet_marks(b)) for b in SNIPPETS])
def test_python_snippet(block: Block, workspace: Workspace) -> None:
    """Each snippet as written, after the `archc build` commands its section gives before it."""
    for cmd in BUILD_CMD.findall(block.before):
        proc = workspace.sh(cmd)
        assert proc.returncode == 0, f"{block.id}: {cmd}: {proc.stdout[-3000:]}"
    proc = subprocess.run(
        [sys.executable, "-c", block.text],
        cwd=workspace.root,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{block.id}:\n{block.text}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=_snippet_marks(b)) for b in PYCON])
def test_pycon_session(block: Block, workspace: Workspace) -> None:
    """Each ``>>>`` session as doctest replays it (``...`` matches anything, a trailing
    ``# comment`` on a ``>>>`` line is Python's own), in the scratch copy of the repo."""
    runner = (
        "import doctest, sys\n"
        "test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, 'page', 'page.md', 0)\n"
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
    assert proc.returncode == 0, f"{block.id}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
