"""A plug-in subclass of a built-in backend that replaces one handler changes both what the
backend builds and what it emits: builder and emitter read the backend *instance's* table.

The plug-ins are installed the way a third-party package would be: a module plus dist-info
declaring them in the ``archcompiler.backends`` entry-point group.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import archcompiler as a
from archcompiler.kit.registry import UnsupportedOpError, get_backend

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
from archcompiler.kit.registry import UnsupportedOpError


def torch_backends():
    from torch import nn

    from archcompiler.backends.torch import TorchBackend
    from archcompiler.backends.torch.ops import ActivationHandler, SoftmaxHandler, module_call

    class Relu6Activation(ActivationHandler):
        """Every relu becomes a relu6."""

        def describe(self, node, graph):
            if node.kind == "relu":
                return [module_call(nn.ReLU6, node)]
            return super().describe(node, graph)

    class RefusedSoftmax(SoftmaxHandler):
        def describe(self, node, graph):
            raise UnsupportedOpError("torch_strict", node, "refused by the plug-in")

    class TorchRelu6(TorchBackend):
        name = "torch_relu6"
        handlers = {**TorchBackend.handlers, "activation": Relu6Activation()}

    class TorchStrict(TorchBackend):
        name = "torch_strict"
        handlers = {**TorchBackend.handlers, "softmax": RefusedSoftmax()}

    return TorchRelu6, TorchStrict


def keras_backends():
    from archcompiler.backends.keras import KerasBackend
    from archcompiler.backends.keras.ops import ActivationHandler, SoftmaxHandler, layer_call

    class Relu6Activation(ActivationHandler):
        def describe(self, node, graph):
            if node.kind == "relu":
                return [layer_call("ReLU", node, (6.0,), arg_names=("max_value",))]
            return super().describe(node, graph)

    class RefusedSoftmax(SoftmaxHandler):
        def describe(self, node, graph):
            raise UnsupportedOpError("keras_strict", node, "refused by the plug-in")

    class KerasRelu6(KerasBackend):
        name = "keras_relu6"
        handlers = {**KerasBackend.handlers, "activation": Relu6Activation()}

    class KerasStrict(KerasBackend):
        name = "keras_strict"
        handlers = {**KerasBackend.handlers, "softmax": RefusedSoftmax()}

    return KerasRelu6, KerasStrict


def __getattr__(name):
    table = {"TorchRelu6": (torch_backends, 0), "TorchStrict": (torch_backends, 1)}
    table |= {"KerasRelu6": (keras_backends, 0), "KerasStrict": (keras_backends, 1)}
    make, i = table[name]
    return make()[i]
'''

ENTRY_POINTS = {
    "torch_relu6": "TorchRelu6",
    "torch_strict": "TorchStrict",
    "keras_relu6": "KerasRelu6",
    "keras_strict": "KerasStrict",
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "archc_override.py").write_text(PLUGIN)
    dist = tmp_path / "archc_override-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: archc-override\nVersion: 0.1\n")
    lines = "".join(f"{name} = archc_override:{cls}\n" for name, cls in ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text(f"[archcompiler.backends]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "archc_override", raising=False)
    found = {ep.name for ep in metadata.entry_points(group="archcompiler.backends")}
    assert set(ENTRY_POINTS) <= found


def graph():
    return a.lower(a.load(ROOT / "tests/specs/tiny_resnet.yaml"))


def relu_calls(source: str) -> list[tuple[str, list[object]]]:
    """(class attribute, literal positional args) of every ``*.ReLU*(...)`` call in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("ReLU"):
            out.append((node.func.attr, [ast.literal_eval(arg) for arg in node.args]))
    return out


@pytest.mark.torch
def test_torch_plugin_handler_changes_build_and_emit(plugins: None) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    g = graph()
    stock, plugin = get_backend("torch"), get_backend("torch_relu6")
    assert type(stock.build(g).get_submodule("stem_relu")) is nn.ReLU
    model = plugin.build(g)
    assert type(model.get_submodule("stem_relu")) is nn.ReLU6
    plugin.verify(g, model)
    source = plugin.emit(g)
    assert {cls for cls, _ in relu_calls(source)} == {"ReLU6"}
    assert {cls for cls, _ in relu_calls(stock.emit(g))} == {"ReLU"}
    namespace: dict[str, object] = {"__name__": "generated_model"}
    exec(compile(source, "tiny_resnet_relu6.py", "exec"), namespace)
    emitted = namespace["TinyResnet"]().eval()
    assert type(emitted.get_submodule("res2_out")) is nn.ReLU6
    x = torch.full((1, 16, 4, 4), 10.0)
    assert float(emitted.get_submodule("stem_relu")(x).max()) == 6.0  # relu6 clips at 6 (Howard et al. 2017)


@pytest.mark.keras
def test_keras_plugin_handler_changes_build_and_emit(plugins: None) -> None:
    pytest.importorskip("keras")
    g = graph()
    stock, plugin = get_backend("keras"), get_backend("keras_relu6")
    assert stock.build(g).get_layer("stem_relu").max_value is None
    model = plugin.build(g)
    assert float(model.get_layer("stem_relu").max_value) == 6.0
    plugin.verify(g, model)
    assert relu_calls(stock.emit(g)) and all(args == [] for _, args in relu_calls(stock.emit(g)))
    source = plugin.emit(g)
    assert relu_calls(source) and all(args == [6.0] for _, args in relu_calls(source))
    namespace: dict[str, object] = {"__name__": "generated_model"}
    exec(compile(source, "tiny_resnet_relu6.py", "exec"), namespace)
    emitted = namespace["build_model"]()
    out = emitted.get_layer("stem_relu")(np.full((1, 4, 4, 16), 10.0, dtype="float32"))
    assert float(np.max(out)) == 6.0


@pytest.mark.parametrize(
    "name",
    [pytest.param("torch_strict", marks=pytest.mark.torch), pytest.param("keras_strict", marks=pytest.mark.keras)],
)
def test_plugin_handler_refusing_an_op_fails_build_and_emit(plugins: None, name: str) -> None:
    pytest.importorskip(name.split("_")[0])
    backend = get_backend(name)
    with pytest.raises(UnsupportedOpError, match=r"softmax \(refused by the plug-in\) at node 'probs'"):
        backend.build(graph())
    with pytest.raises(UnsupportedOpError, match=r"softmax \(refused by the plug-in\) at node 'probs'"):
        backend.emit(graph())


def test_a_handler_class_outside_keras_layers_must_be_listed_to_be_emitted(tmp_path: Path) -> None:
    # emitted code defines such a class itself, from the module its handler names in
    # ``classes``; an unlisted one would be a NameError in the generated file, so it is refused
    from archcompiler.backends.keras import KerasBackend
    from archcompiler.backends.keras.ops import SoftmaxHandler

    from archcompiler.kit.calls import make_call
    from archcompiler.kit.registry import BackendError

    (tmp_path / "archc_gate_layers.py").write_text(
        "from archcompiler.backends.keras._framework import keras\n\n\n"
        "class Gate(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return keras.ops.softmax(x)\n"
    )

    class GateSoftmax(SoftmaxHandler):
        def describe(self, node, graph):
            return [make_call("Gate", node)]

    class Listed(GateSoftmax):
        classes: ClassVar[dict[str, str]] = {"Gate": "archc_gate_layers"}

    sys.path.insert(0, str(tmp_path))
    try:
        unlisted = type("KerasGate", (KerasBackend,), {"handlers": {**KerasBackend.handlers, "softmax": GateSoftmax()}})
        with pytest.raises(BackendError, match="no handler lists class 'Gate' in classes"):
            unlisted().emit(graph())
        listed = type("KerasGate", (KerasBackend,), {"handlers": {**KerasBackend.handlers, "softmax": Listed()}})
        source = listed().emit(graph())
    finally:
        sys.path.remove(str(tmp_path))
    assert "class Gate(keras.layers.Layer):" in source and 'Gate(name="probs")' in source
    compile(source, "tiny_resnet_gate.py", "exec")
