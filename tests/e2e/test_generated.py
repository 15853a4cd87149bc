"""generated/ holds the emitters' output for the shipped specs and must not go stale.

Each committed module records the spec, width and resolution it came from (its SPEC_SOURCE,
WIDTH and RESOLUTION constants); the test regenerates it from those and compares bytes.
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
    monkeypatch.chdir(ROOT)  # the modules record the spec path relative to the repository
    graph = a.lower(a.load(str(c["SPEC_SOURCE"])), width=float(c["WIDTH"]), resolution=tuple(c["RESOLUTION"]))
    fresh = get_backend(backend).emit(graph)
    assert fresh == path.read_text(encoding="utf-8"), f"{path.name} is stale: run `{UPDATE}` and commit the result"
