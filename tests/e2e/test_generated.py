"""generated/ holds the emitters' output for the shipped specs and must not go stale.

Each committed module records the spec, width and resolution it came from (its SPEC_SOURCE,
relative to the module's folder, WIDTH and RESOLUTION constants); the test regenerates it from
those and compares bytes. A generated module never names its spec by an absolute path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import archcompiler as a
from archcompiler.kit.registry import get_backend

ROOT = Path(__file__).resolve().parents[2]
GENERATED = sorted((ROOT / "generated").glob("*.py"))
UPDATE = "make generate"


def constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("SPEC_SOURCE", "WIDTH", "RESOLUTION"):
                out[name] = ast.literal_eval(node.value)
    return out


def test_required_modules_are_committed() -> None:
    names = {p.name for p in GENERATED}
    for backend in ("torch", "keras"):
        assert f"mobilenet_v1_1_224_{backend}.py" in names
        assert f"mobilenet_v1_0_5_160_{backend}.py" in names


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=getattr(pytest.mark, p.stem.rsplit("_", 1)[1])) for p in GENERATED]
)
def test_generated_is_up_to_date(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = path.stem.rsplit("_", 1)[1]
    c = constants(path)
    monkeypatch.chdir(path.parent)  # the modules record the spec path relative to their folder
    graph = a.lower(a.load(str(c["SPEC_SOURCE"])), width=float(c["WIDTH"]), resolution=tuple(c["RESOLUTION"]))
    fresh = get_backend(backend).emit(graph)
    assert fresh == path.read_text(encoding="utf-8"), f"{path.name} is stale: run `{UPDATE}` and commit the result"


def _spec_source(path: Path) -> str:
    return str(constants(path)["SPEC_SOURCE"])


@pytest.mark.torch
def test_generated_modules_name_the_spec_relative_to_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle is the file system: SPEC_SOURCE, read from the module's folder, is the spec
    that was compiled, however the spec was named (here by its absolute path)."""
    pytest.importorskip("torch")
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "mobilenet.yaml"
    spec.write_text((ROOT / "specs" / "mobilenet.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    net = a.compile(str(spec), width=0.25, resolution=96)
    for out in ("generated", "deep/er/models"):
        module = net.generate_to("torch", out)
        recorded = _spec_source(module)
        assert not Path(recorded).is_absolute() and (module.parent / recorded).samefile(spec), recorded
    built = net.build_to("torch", "build/m")
    assert len(repr(built)) <= 400 and repr(built).startswith("<Built mobilenet_v1 with torch: ")  # not the model's
    source = next(f for f in built.files if f.suffix == ".py")
    assert (source.parent / _spec_source(source)).samefile(spec)


@pytest.mark.torch
def test_without_a_folder_the_spec_is_named_by_its_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """generate() returns text with no folder to be relative to; an output folder outside the
    current one would need a path that climbs out of the project: the file name instead."""
    pytest.importorskip("torch")
    spec = str(ROOT / "specs" / "mobilenet.yaml")
    net = a.compile(spec, width=0.25, resolution=96)
    assert 'SPEC_SOURCE = "mobilenet.yaml"' in net.generate("torch")
    inside = tmp_path / "project"
    inside.mkdir()
    monkeypatch.chdir(inside)
    module = net.generate_to("torch", tmp_path / "elsewhere")  # the spec lies outside the current folder
    assert _spec_source(module) == "mobilenet.yaml"
    graph = a.lower(a.load(spec), width=0.25, resolution=96)  # an absolute source given to the emitter itself
    assert str(ROOT) not in get_backend("torch").emit(graph)
