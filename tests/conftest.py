"""Test-wide configuration: framework markers that select what they say, and a guard that proves it.

A test that needs a framework carries its marker (``torch``, ``keras``, ``onnx``, ``tflite``):
by hand (``pytestmark`` or a decorator), or here, from a fixture it requests (FIXTURE_MARKS) or
a parameter that names a backend (``"torch"``, ``"tflite"``...). The guard installed here then
holds every test to its markers: importing a framework while collecting, or while running a test
not marked for it, fails that test with the marker to add; so does a process the test starts
(archc in a subprocess) that imports one (guard/sitecustomize.py reports it). In this process it
sees first imports only, so the tests that need no framework run first (then ONNX, torch,
TensorFlow; in each xdist worker too): every one of them runs before any framework is loaded,
and ``pytest -m "not torch"`` never loads torch. tests/test_markers.py checks all of this.

Framework-free test modules therefore stay framework-free at collection; backend test modules
bind frameworks through :func:`helpers.framework`, which imports on first use.

Two more process-wide rules: torch is imported before TensorFlow (the other order can crash;
docs/DESIGN.md), and hypothesis uses the ``archc`` profile (tests/e2e/test_properties.py).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import itertools
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

# marker -> the top-level modules it stands for
FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision"),
    "keras": ("tensorflow", "keras", "tf_keras"),
    "onnx": ("onnx", "onnxruntime"),
    "tflite": ("ai_edge_litert", "tflite_runtime"),
}
MARKER_OF = {module: marker for marker, modules in FRAMEWORKS.items() for module in modules}
# backend name -> the markers a test that runs it needs (TFLite converts archc's Keras build)
BACKEND_MARKS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "keras": ("keras",),
    "onnx": ("onnx",),
    "tflite": ("tflite", "keras"),
}
# shared fixtures that hand a test a framework's backend, by name
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "torch_backend": ("torch",),
    "keras_backend": ("keras",),
    "onnx_backend": ("onnx",),
    "tflite_backend": ("tflite", "keras"),
}


def framework_marks(item: pytest.Item) -> set[str]:
    """The framework markers ``item`` carries (its own, its class's and its module's)."""
    return {m.name for m in item.iter_markers() if m.name in FRAMEWORKS}


def _test_line(root: Path) -> str:
    """Where the import came from: the innermost line of a test module (or "")."""
    here = Path(__file__).parent
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path.is_relative_to(here) and path.name not in ("conftest.py", "helpers.py"):
            return f" (at {path.relative_to(root) if path.is_relative_to(root) else path}:{frame.lineno})"
    return ""


class _Refused(importlib.abc.Loader):
    """Stands in for a framework's loader where importing it breaks the rule: fails the test."""

    def __init__(self, message: str) -> None:
        self.message = message

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # pytest's Failed is a BaseException: no `except ImportError` (importorskip, a backend's
        # "is it installed" probe) can turn the broken rule into a skip or a silent fallback
        pytest.fail(self.message, pytrace=False)


class FrameworkGuard(importlib.abc.MetaPathFinder):
    """Refuses a framework import that the running test (or collection) did not declare; loads
    torch before TensorFlow. Only first imports pass through a finder, hence the test order."""

    def __init__(self) -> None:
        self.allowed: set[str] | None = None  # None: not inside a test or collection (no rule)
        self.doing = ""
        self.root = Path.cwd()  # pytest's rootdir, once configured

    @contextlib.contextmanager
    def active(self, doing: str, allowed: set[str]) -> Iterator[None]:
        saved = self.allowed, self.doing
        self.allowed, self.doing = allowed, doing
        try:
            yield
        finally:
            self.allowed, self.doing = saved

    def may_import(self, marker: str) -> bool:
        return self.allowed is None or marker in self.allowed

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in ("tensorflow", "keras") and "torch" not in sys.modules and self.may_import("keras"):
            with self.active("", set(FRAMEWORKS)), contextlib.suppress(ImportError):
                importlib.import_module("torch")  # torch first, whoever asks for TensorFlow
        marker = MARKER_OF.get(fullname)
        if marker is None or self.may_import(marker):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None  # not installed: the import fails as usual (a probe answers "missing")
        where = _test_line(self.root)
        message = (
            f"{self.doing} imports {fullname}{where}: mark it @pytest.mark.{marker}"
            if self.doing.startswith("test")
            else f"{self.doing} imports {fullname}{where}: bind it with helpers.framework() or import it in the test"
        )
        spec.loader = _Refused(message)
        return spec


GUARD = FrameworkGuard()
sys.meta_path.insert(0, GUARD)

# xdist workers share the cores: one native thread each (set before any framework loads; the
# processes a test starts inherit it), not two workers each spinning a thread per core
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1):
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_variable, "1")


def pytest_configure(config: pytest.Config) -> None:
    GUARD.root = config.rootpath


def _backends_named(value: object) -> list[str]:
    """Backends a parameter names: itself (``"torch"``), or as archc arguments (``--backend onnx``)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return []
    names: list[str] = []
    for option, argument in itertools.pairwise(value):
        if option in ("--backend", "--backends", "--latency"):
            names += argument.split(",")
    return names + [v.partition("=")[2] for v in value if v.startswith("--backend=")]


def _marks_from_parameters(item: pytest.Item) -> set[str]:
    callspec = getattr(item, "callspec", None)
    values = callspec.params.values() if callspec is not None else ()
    return {m for v in values for name in _backends_named(v) for m in BACKEND_MARKS.get(name, ())}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks from fixtures and backend-name parameters, then framework-free tests first (then ONNX,
    torch, TensorFlow), so that the guard sees each test's first framework import. ``make test``
    runs with ``--dist loadfile``: a module's tests share one worker, which computes a module
    fixture (a built model, a converted file) once. (pytest-xdist 3.8's ``loadgroup`` does not
    group under pytest 9, whose node ids it can no longer suffix.)"""
    for item in items:
        needed = _marks_from_parameters(item)
        for fixture in getattr(item, "fixturenames", ()):
            needed.update(FIXTURE_MARKS.get(fixture, ()))
        for marker in sorted(needed - framework_marks(item)):
            item.add_marker(marker)
    order = ("onnx", "torch", "keras", "tflite")  # ONNX tests often check against torch: first
    items.sort(key=lambda item: max((order.index(m) + 1 for m in framework_marks(item)), default=0))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    """A test module's code runs here (when pytest first asks for its tests): no framework."""
    if not isinstance(collector, pytest.Module):
        return (yield)
    with GUARD.active(f"collecting {collector.nodeid}", set()):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    with GUARD.active(f"test {item.nodeid}", framework_marks(item)), _children_watched(item):
        return (yield)


CHILD_GUARD = Path(__file__).parent / "guard"  # its sitecustomize.py reports what a child imported


@contextlib.contextmanager
def _children_watched(item: pytest.Item) -> Iterator[None]:
    """The processes ``item`` starts (with the environment it inherits) report the framework
    modules they imported that ``item`` is not marked for, in a log read after the test's call."""
    allowed = framework_marks(item)
    refused = [m for marker, modules in FRAMEWORKS.items() if marker not in allowed for m in modules]
    fd, log = tempfile.mkstemp(prefix="archc-guard-", suffix=".log")
    os.close(fd)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "ARCHC_TEST_REFUSED", "ARCHC_TEST_GUARD_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_GUARD), saved["PYTHONPATH"]]))
    os.environ["ARCHC_TEST_REFUSED"] = ",".join(refused)
    os.environ["ARCHC_TEST_GUARD_LOG"] = log
    item.stash[_CHILD_LOG] = log
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.unlink(log)


_CHILD_LOG = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    result = yield
    log = Path(item.stash[_CHILD_LOG])
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    if lines:
        modules, command = lines[0].split("\t", 1)
        markers = sorted({MARKER_OF[m] for line in lines for m in line.split("\t")[0].split(",")})
        pytest.fail(
            f"a process this test started imported {modules} ({command}): mark it "
            + " ".join(f"@pytest.mark.{m}" for m in markers),
            pytrace=False,
        )
    return result


try:
    from hypothesis import settings
except ImportError:  # hypothesis is a dev dependency; without it the property tests skip
    pass
else:
    # No example database: it would write .hypothesis/ into the checkout, and CI starts fresh
    # anyway; print_blob makes a failure found in CI reproducible with @reproduce_failure.
    settings.register_profile("archc", database=None, deadline=None, print_blob=True)
    settings.load_profile("archc")
