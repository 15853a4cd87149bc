"""backends/torch/names.py is framework-free (so ``archc check`` can refuse a clashing layer
name before torch loads); it must still list every public attribute a layer could shadow."""

from __future__ import annotations

from pathlib import Path

import pytest
from archcompiler.backends.torch.names import RESERVED
from helpers import framework

import archcompiler as a
from archcompiler.kit.registry import get_backend

nn = framework("torch.nn")

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", [ROOT / "specs" / "mobilenet.yaml", ROOT / "tests" / "specs" / "tiny_resnet.yaml"])
def test_reserved_names_cover_every_attribute_a_layer_could_shadow(spec: Path) -> None:
    """A chain and a DAG (their generated classes differ: the DAG keeps a wiring table)."""
    backend = get_backend("torch")
    g = a.lower(a.load(spec), width=0.25, resolution=32)
    model = backend.build(g)
    layers = {n.name for n in g.nodes}
    public = {n for n in dir(nn.Module) if not n.startswith("_")} | {"training"}
    built = {k for k in (*vars(model), *dir(type(model))) if not k.startswith("_")} - layers
    namespace: dict[str, object] = {"__name__": "generated_model"}
    exec(compile(backend.emit(g), "generated_model", "exec"), namespace)  # archc's own output
    defined = [
        v
        for v in namespace.values()
        if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == "generated_model"
    ]
    cls = defined[-1]  # the model class comes after the helper layers it uses
    generated = {k for k in (*vars(cls()), *dir(cls)) if not k.startswith("_")} - layers
    missing = (public | built | generated) - RESERVED
    assert not missing, f"add to backends/torch/names.py: {sorted(missing)}"


def test_a_reserved_name_is_refused_by_check_and_by_the_backend() -> None:
    from archcompiler import ir
    from archcompiler.kit.registry import BackendError

    text = "archc: 1\nname: t\ninput: {size: 8}\nlayers:\n  - {op: activation, kind: relu, name: steps}\n"
    with pytest.raises(a.SpecError, match="'steps' is reserved"):
        a.compile(a.load_text(text))
    # A hand-built graph skips the spec check; the backend still refuses it by name.
    x = ir.Input(name="x", inputs=(), shape=(8, 8, 3))
    steps = ir.Activation(name="steps", inputs=("x",), shape=(8, 8, 3), kind="relu")
    graph = ir.Graph(name="t", nodes=(x, steps), outputs=("steps",), width=1.0, resolution=(8, 8))
    with pytest.raises(BackendError, match="'steps' is reserved in the torch backend"):
        get_backend("torch").build(graph)
