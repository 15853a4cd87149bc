"""The framework markers select what they say: tests/conftest.py's guard against the imports.

One pytest run in a subprocess, on a scratch suite that uses this suite's conftest.py and
helpers.py, so that no framework is loaded there before a scratch test asks for it (the guard
sees first imports only). The scratch tests ask for torch; none of them gets to load it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from conftest import FRAMEWORKS

TESTS = Path(__file__).resolve().parent
PYPROJECT = tomllib.loads((TESTS.parent / "pyproject.toml").read_text(encoding="utf-8"))
MARKERS = PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]

SCRATCH = {
    "test_eager.py": """
        import torch  # noqa: F401  (refused: collecting imports no framework)
        """,
    "test_lazy.py": """
        import pytest
        from helpers import framework

        torch = framework("torch")  # bound, not imported

        FRAMEWORKS = {"torch", "keras", "onnx", "tflite"}

        def marks(request):
            return {m.name for m in request.node.iter_markers()} & FRAMEWORKS

        @pytest.fixture
        def torch_backend():
            return None

        @pytest.mark.parametrize("name", ["torch", "keras", "tflite", "numpy"])
        def test_marked_by_parameter(name, request):
            want = {"torch": {"torch"}, "keras": {"keras"}, "tflite": {"tflite", "keras"}}
            assert marks(request) == want.get(name, set())

        def test_marked_by_fixture(torch_backend, request):
            assert marks(request) == {"torch"}

        def test_plain(request):
            assert marks(request) == set()
        """,
    "test_use.py": """
        import sys
        from importlib.util import find_spec

        import pytest

        def test_unmarked_import():
            import torch  # noqa: F401

        def test_unmarked_import_swallowed():
            try:
                import torch  # noqa: F401
            except ImportError:
                pass  # a probe cannot turn the broken rule into a fallback

        def test_unmarked_importorskip():
            pytest.importorskip("torch")  # nor into a skip

        def test_unmarked_probe():
            find_spec("torch")  # what backends/tflite asks before importing: answers, imports nothing
            assert "torch" not in sys.modules
        """,
    "test_child.py": """
        import subprocess
        import sys
        from importlib.util import find_spec

        import pytest

        def test_unmarked_child():
            if find_spec("ai_edge_litert") is None:
                pytest.skip("LiteRT is not installed")
            subprocess.run([sys.executable, "-c", "import ai_edge_litert"], check=True)
        """,
}


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("scratch")
    (root / "guard").mkdir()
    for name in ("conftest.py", "helpers.py", "guard/sitecustomize.py"):
        (root / name).write_text((TESTS / name).read_text(encoding="utf-8"), encoding="utf-8")
    for name, text in SCRATCH.items():
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    markers = "".join(f"    {m}\n" for m in MARKERS)
    (root / "pytest.ini").write_text(f"[pytest]\naddopts = --strict-markers\nmarkers =\n{markers}")
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:xdist"]
    argv.append("--continue-on-collection-errors")
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


def test_every_framework_marker_is_declared() -> None:
    declared = {m.partition(":")[0] for m in MARKERS}
    assert set(FRAMEWORKS) <= declared


def test_collecting_a_module_that_imports_a_framework_fails(scratch_run: str) -> None:
    assert "ERROR test_eager.py" in scratch_run
    assert "collecting test_eager.py imports torch (at test_eager.py:2)" in scratch_run


def test_a_test_importing_a_framework_it_is_not_marked_for_fails(scratch_run: str) -> None:
    for test, line in (("import", 8), ("import_swallowed", 12), ("importorskip", 17)):
        assert f"test_use.py::test_unmarked_{test} FAILED" in scratch_run
        want = (
            f"test test_use.py::test_unmarked_{test} imports torch (at test_use.py:{line}): mark it @pytest.mark.torch"
        )
        assert want in scratch_run
    assert "test_use.py::test_unmarked_probe PASSED" in scratch_run


def test_a_process_a_test_starts_is_held_to_the_tests_markers(scratch_run: str) -> None:
    assert "test_child.py::test_unmarked_child FAILED" in scratch_run
    why = "a process this test started imported ai_edge_litert ("
    assert why in scratch_run and " -c import ai_edge_litert): mark it @pytest.mark.tflite" in scratch_run


def test_markers_come_from_parameters_and_fixtures(scratch_run: str) -> None:
    assert "4 failed, 7 passed, 1 error" in scratch_run


def test_framework_free_tests_run_first(scratch_run: str) -> None:
    ran = [line.split(" ")[0] for line in scratch_run.splitlines() if line.endswith("]") and "::" in line]
    framework_free = {"test_lazy.py::test_marked_by_parameter[numpy]", "test_lazy.py::test_plain"}
    framework_free |= {n for n in ran if n.startswith(("test_use.py", "test_child.py"))}
    assert set(ran[: len(framework_free)]) == framework_free, ran
