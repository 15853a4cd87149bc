"""Backend lookup: built-ins by name, plug-ins through the entry-point group, clear errors."""

from __future__ import annotations

import sys
import typing
from importlib import metadata
from pathlib import Path

import pytest

import archcompiler as a
from archcompiler import ir
from archcompiler.kit import registry
from archcompiler.kit.registry import Backend, BackendError, UnsupportedOpError

ROOT = Path(__file__).resolve().parents[2]

FAKE_MODULE = '''
from archcompiler.kit.registry import Backend


class EchoBackend(Backend):
    """A stand-in framework: a 'model' is the list of node names."""

    name = "echo"
    handlers = {"input": None, "conv2d": None}

    def build(self, graph):
        self.check_supported(graph)
        return [n.name for n in graph.nodes]

    def verify(self, graph, model):
        assert model == [n.name for n in graph.nodes]

    def get_weights(self, graph, model):
        return {}

    def set_weights(self, graph, model, weights):
        pass

    def run(self, graph, model, x, outputs=None):
        return {}
'''


@pytest.fixture(params=["archcompiler.kit.registry", "archcompiler.registry"])
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Install a plug-in the way a third-party package would: a module plus dist-info
    declaring it in the ``archcompiler.backends`` entry-point group. Written against the
    registry's home and against the old ``archcompiler.registry`` (the shim plug-ins still use)."""
    (tmp_path / "archc_echo.py").write_text(FAKE_MODULE.replace("archcompiler.kit.registry", request.param))
    dist = tmp_path / "archc_echo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: archc-echo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[archcompiler.backends]\necho = archc_echo:EchoBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "archc_echo", raising=False)
    assert any(ep.name == "echo" for ep in metadata.entry_points(group="archcompiler.backends"))


def _graph(text: str) -> ir.Graph:
    return a.lower(a.load_text(text))


CONV_ONLY = "name: t\ninput: {size: 8}\nlayers:\n  - {op: conv, filters: 4, kernel: 3}\n"


def test_plugin_backend_found_and_used(fake_plugin: None) -> None:
    assert "echo" in registry.available()
    backend = registry.get_backend("echo")
    assert isinstance(backend, Backend)
    g = _graph(CONV_ONLY)
    assert backend.build(g) == ["input", "conv_1"]


def test_plugin_unsupported_op_is_named(fake_plugin: None) -> None:
    g = _graph(CONV_ONLY + "  - {op: activation}\n")
    with pytest.raises(UnsupportedOpError, match=r"'echo' cannot express activation at node 'activation_1'"):
        registry.get_backend("echo").build(g)


def test_unknown_backend_lists_available() -> None:
    with pytest.raises(BackendError) as info:
        registry.get_backend("kears")
    msg = str(info.value)
    assert "did you mean 'keras'" in msg and "available: keras, onnx, tflite, torch" in msg


def test_builtin_backends_are_listed_without_importing_them() -> None:
    before = set(sys.modules)
    names = registry.available()
    assert {"torch", "keras"} <= set(names)
    assert not any(m.startswith("archcompiler.backends.") for m in set(sys.modules) - before)


def test_non_backend_plugin_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "archc_bogus.py").write_text("class NotABackend:\n    pass\n")
    dist = tmp_path / "archc_bogus-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: archc-bogus\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[archcompiler.backends]\nbogus = archc_bogus:NotABackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendError, match="is not an archcompiler Backend"):
        registry.get_backend("bogus")


def test_read_weights_rejects_unknown_format(tmp_path: Path) -> None:
    g = _graph(CONV_ONLY)
    p = tmp_path / "w.pkl"
    p.write_bytes(b"x")
    from archcompiler.weights import WeightError

    with pytest.raises(WeightError, match=r"unknown weights format '\.pkl'"):
        registry.read_weights(p, g)


# -- handler tables: every built-in op, then the plug-in ops' handlers ----------------------


def _install_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, lines: str) -> None:
    """A dist-info on the path whose ``archcompiler.handlers.<backend>`` group holds ``lines``."""
    (tmp_path / "archc_handlers.py").write_text("class ReluHandler:\n    op = 'activation'\n")
    dist = tmp_path / "archc_handlers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: archc-handlers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{registry.HANDLER_GROUP}.{backend}]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_handler_table_must_cover_every_built_in_op() -> None:
    builtin = {op: object() for op in ir.BUILTIN_OPS}
    assert registry.handler_table("mine", builtin) == builtin
    with pytest.raises(TypeError, match=r"backend .mine. has no handler for the built-in op\(s\) concat, dense"):
        registry.handler_table("mine", {op: h for op, h in builtin.items() if op not in ("dense", "concat")})


def test_a_plugin_handler_may_not_replace_a_built_in_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_handlers(tmp_path, monkeypatch, "mine", "softmax = archc_handlers:ReluHandler\n")
    with pytest.raises(TypeError, match="op 'softmax' has a handler already; replace one in a Backend subclass"):
        registry.handler_table("mine", {op: object() for op in ir.BUILTIN_OPS})


def test_a_plugin_handler_needs_its_op_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_handlers(tmp_path, monkeypatch, "mine", "clip = archc_handlers:ReluHandler\n")
    with pytest.raises(TypeError, match=r"plug-in handler 'clip' of backend 'mine' .*no op 'clip' is registered"):
        registry.handler_table("mine", {op: object() for op in ir.BUILTIN_OPS})


def test_a_table_of_activation_kinds_must_have_every_kind() -> None:
    kinds = {k: None for k in typing.get_args(ir.ActivationKind)}
    registry.check_kinds("mine", kinds)
    with pytest.raises(TypeError, match=r"backend 'mine': activation kinds missing \['swish'\], unknown \['elu'\]"):
        registry.check_kinds("mine", {**{k: v for k, v in kinds.items() if k != "swish"}, "elu": None})
