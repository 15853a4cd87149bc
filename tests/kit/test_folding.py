"""One folding algorithm for every emitter: torch and Keras code of one spec define the same
block functions, in the same order, and tables with the same rows.

The emitted modules are read with ``ast`` (not by matching strings). The expected blocks come
from the spec files themselves: each ``{block: ...}`` entry (times its ``repeat``) is one
instance, numbered 1, 2, ... in order, and instances of one spec block are one kind.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
from pathlib import Path

import pytest
import yaml

import archcompiler as a
from archcompiler import ir
from archcompiler.kit import calls, folding
from archcompiler.kit.registry import BackendError

ROOT = Path(__file__).resolve().parents[2]
SPECS = [ROOT / "specs/mobilenet.yaml", ROOT / "specs/mobilenet_keras.yaml", ROOT / "tests/specs/tiny_resnet.yaml"]
FAMILY = [ROOT / f"specs/{name}.yaml" for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")]


def _count(text: object, args: dict[str, object]) -> int:
    """A ``repeat`` of the spec files: a number or ``$n - 1`` (a stage's repeated blocks)."""
    if isinstance(text, int):
        return text
    name, minus = str(text).replace(" ", "").lstrip("$").split("-")
    return int(args[name]) - int(minus)  # type: ignore[call-overload]


def spec_instances(path: Path) -> list[tuple[int, str]]:
    """(block number, spec block name) of every block instance, read from the YAML: a block
    with layers of its own is an instance per call (and repeat); a block of calls only (V2's
    stage) is its calls'."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    blocks = spec.get("blocks", {})

    def walk(entry: dict, args: dict[str, object]) -> list[str]:
        block = blocks[entry["block"]]
        reps = _count(entry.get("repeat", 1), args)
        if any("block" not in layer for layer in block["layers"]):
            return [entry["block"]] * reps
        inner = {**block.get("params", {}), **{k: v for k, v in entry.items() if k != "block"}}
        return [name for _ in range(reps) for layer in block["layers"] for name in walk(layer, inner)]

    names = [name for entry in spec["layers"] if "block" in entry for name in walk(entry, {})]
    return list(enumerate(names, 1))


def keras_prefixes(path: Path) -> list[str]:
    """The name prefix of each inverted-residual block in keras.applications: V2 names block 0
    ``expanded_conv`` and block i ``block_i``; V3 names them ``expanded_conv`` and
    ``expanded_conv_i`` (keras/src/applications/mobilenet_v2.py, mobilenet_v3.py)."""
    count = len(spec_instances(path))
    rest = "block_{}_" if path.stem == "mobilenet_v2" else "expanded_conv_{}_"
    return ["expanded_conv_", *(rest.format(i) for i in range(1, count))]


def blocks(source: str) -> tuple[list[str], list[list[tuple[str, object]]]]:
    """(module-level function names, per BLOCKS table its rows as (function, first argument))."""
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name != "build_model"]
    tables = []
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id.startswith("BLOCKS"):
            assert isinstance(node.value, ast.Tuple)
            rows = []
            for row in node.value.elts:
                assert isinstance(row, ast.Tuple) and isinstance(row.elts[0], ast.Name)
                rows.append((row.elts[0].id, ast.literal_eval(row.elts[1])))
            tables.append(rows)
    return functions, tables


@pytest.fixture(scope="module")
def backends():
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (before tensorflow: the other order can crash; docs/DESIGN.md)
    from archcompiler.kit.registry import get_backend

    pytest.importorskip("torch")
    pytest.importorskip("keras")
    return get_backend("torch"), get_backend("keras")


@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.parametrize("path", SPECS + FAMILY, ids=[p.stem for p in SPECS + FAMILY])
@pytest.mark.parametrize(("width", "resolution"), [(1.0, 224), (0.5, 199)])
def test_torch_and_keras_fold_the_same_blocks(backends, path: Path, width: float, resolution: int) -> None:
    graph = a.lower(a.load(path), width=width, resolution=resolution if "mobilenet" in path.stem else None)
    torch_functions, torch_tables = blocks(backends[0].emit(graph))
    keras_functions, keras_tables = blocks(backends[1].emit(graph))
    assert torch_functions == keras_functions
    assert torch_tables == keras_tables
    # ... and both are the spec's blocks: every instance a row, numbered as in the spec, one
    # function per spec block (a stride-2 separable block is not a kind of its own).
    rows = [row for table in torch_tables for row in table]
    instances = spec_instances(path)
    if path in FAMILY:
        # V2/V3: one table, the block's layer-name prefix first (their first block has no number)
        assert len(torch_tables) == 1
        assert [prefix for _, prefix in rows] == keras_prefixes(path)
    else:
        assert [index for _, index in rows] == [index for index, _ in instances]
    function_of = dict(zip([block for _, block in instances], [f for f, _ in rows], strict=True))
    assert [f for f, _ in rows] == [function_of[block] for _, block in instances]
    assert len(set(function_of.values())) == len(function_of)
    assert sorted(torch_functions) == sorted(set(function_of.values()))


@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_a_block_folds_alike_found_by_its_spec_block_or_by_its_structure(backends, path: Path) -> None:
    """One algorithm folds every kind, however its instances were found: through their spec
    block (Span.block), or, in a graph without spans (an IR built by hand), as runs of nodes
    with one structure. Both give the same functions' parameters, in the same order, and the
    same rows (torch's V1 block once named its pad tuple ``padding`` and its conv's pad
    ``padding_2`` one way, the other way round the other)."""
    # Without spans, nodes group by the numbers in their names: V1's stem is renamed so that
    # it does not share block 1's number (conv1, conv_dw_1).
    text = path.read_text(encoding="utf-8").replace("conv1", "stem")
    graph = a.lower(a.load_text(text, str(path)), width=0.5, resolution=160 if "mobilenet" in path.stem else None)
    bare = dataclasses.replace(graph, nodes=tuple(dataclasses.replace(n, span=None) for n in graph.nodes))
    for backend in backends:
        by_block = folding.fold(graph, backend.handlers, backend.name)
        by_structure = folding.fold(bare, backend.handlers, backend.name)
        assert by_block.kinds and len(by_block.kinds) == len(by_structure.kinds)
        for spec_kind, structure_kind in zip(by_block.kinds, by_structure.kinds, strict=True):
            assert spec_kind.params == structure_kind.params, backend.name
            assert spec_kind.rows == structure_kind.rows, backend.name
            assert [s.arguments() for s in spec_kind.sites] == [s.arguments() for s in structure_kind.sites]


def test_structure_key_is_categorical() -> None:
    """Numbers may vary within a kind, categories may not; SAME padding is a category."""
    image = ir.Input(name="x", inputs=(), shape=(8, 8, 4))
    conv = ir.Conv2D(
        name="c",
        inputs=("x",),
        shape=(8, 8, 4),
        in_channels=4,
        filters=4,
        kernel=(3, 3),
        stride=(1, 1),
        padding=(1,) * 4,
    )
    graph = ir.Graph(name="g", nodes=(image, conv), outputs=("c",), width=1.0, resolution=(8, 8))
    key = folding.structure_key(conv, graph)
    wider = dataclasses.replace(conv, filters=8, shape=(8, 8, 8))
    strided = dataclasses.replace(conv, stride=(2, 2), padding=(0, 1, 0, 1), shape=(4, 4, 4))
    biased = dataclasses.replace(conv, use_bias=True)
    explicit = dataclasses.replace(conv, padding=(2, 0, 1, 1))
    assert folding.structure_key(wider, graph) == key
    # TF SAME at stride 2 on 8 pixels pads (0, 1): same style as stride 1's (1, 1) (tf.nn.conv2d docs)
    assert folding.structure_key(strided, graph) == key
    assert folding.structure_key(biased, graph) != key
    assert folding.structure_key(explicit, graph) != key


class FakeHandler:
    """A framework-free handler: a conv is ``Strided`` when strided, else ``Plain``; its
    general form is ``Plain`` (or, with ``general=False``, the same as its natural form)."""

    def __init__(self, op: str, general: bool = True) -> None:
        self.op, self.general = op, general

    def describe(self, node: ir.Node, graph: ir.Graph, natural: bool = True) -> list[calls.Call]:
        if node.op == "input":
            return []
        stride = getattr(node, "stride", None)
        if stride is None:
            return [calls.make_call(node.op, node)]
        cls = "Strided" if natural and stride != (1, 1) else "Plain"
        return [calls.make_call(cls, node, (), {"stride": stride[0]}, defaults={"stride": 1})]

    def describe_general(self, node: ir.Node, graph: ir.Graph) -> list[calls.Call]:
        return self.describe(node, graph, natural=not self.general)


def test_fold_uses_the_general_form_when_instances_differ() -> None:
    """MobileNet's stride-1 and stride-2 blocks are one spec block, so one kind, even for a
    backend whose natural calls differ between them: the general form is used, the stride a
    parameter."""
    graph = a.lower(a.load(ROOT / "specs/mobilenet.yaml"))
    handlers = {op: FakeHandler(op) for op in ir.IR_OPS}
    structure = folding.fold(graph, handlers, "fake")
    assert len(structure.kinds) == 1
    (kind,) = structure.kinds
    assert kind.sites[0].call.cls == "Plain"  # conv_dw_#: the one layer that differs
    assert [p for p, _ in kind.params] == ["index", "stride"]
    assert [row for _, row in structure.sections[1].rows] == [
        (i, 2 if i in (2, 4, 6, 12) else 1)
        for i in range(1, 14)  # Table 1's s2 rows
    ]
    conv1 = structure.sections[0].sites[0]
    assert conv1.call.cls == "Strided" and conv1.arguments() == ["stride=2"]  # single layers stay natural


def test_fold_names_a_handler_without_a_general_form() -> None:
    graph = a.lower(a.load(ROOT / "specs/mobilenet.yaml"))
    handlers = {op: FakeHandler(op, general=False) for op in ir.IR_OPS}
    with pytest.raises(BackendError, match=r"'depthwise_conv2d' handler describes 'conv_dw_1' and 'conv_dw_2'"):
        folding.fold(graph, handlers, "fake")


@pytest.mark.parametrize("path", FAMILY[1:], ids=[p.stem for p in FAMILY[1:]])
def test_guarded_layers_are_flags_and_the_activation_a_choice(path: Path) -> None:
    """V3's one block definition is one function: each instance's flags say what its spec
    entry asks for (an expansion conv when expansion != 1, a pad when stride is 2, a
    squeeze-excite when se is set) and its activation is the entry's ``act``."""
    graph = a.lower(a.load(path))
    handlers = {op: FakeHandler(op) for op in ir.IR_OPS}
    structure = folding.fold(graph, handlers, "fake")
    (kind,) = structure.kinds
    assert kind.function == "inverted_residual_block" and not kind.plain
    names = [p for p, _ in kind.params]
    rows = [dict(zip(names, row, strict=True)) for row in kind.rows]
    entries = [e for e in yaml.safe_load(path.read_text(encoding="utf-8"))["layers"] if "block" in e]
    assert [r["expand"] for r in rows] == [e["expansion"] != 1 for e in entries]
    assert [r["depthwise_pad"] for r in rows] == [e["stride"] == 2 for e in entries]
    assert [r["squeeze_excite"] for r in rows] == [bool(e.get("se")) for e in entries]
    assert [r["activation"] for r in rows] == [e.get("act", "hard_swish") for e in entries]
    source = "\n".join(kind.lines(lambda site: [f"{site.name}"]))
    for flag in ("expand", "depthwise_pad", "squeeze_excite", "add"):
        assert f"if {flag}:" in source
    assert "if activation == " in source and "else:" in source


GENERATED = sorted((ROOT / "generated").glob("*_keras.py"))
"""One backend's modules: both fold the same blocks (test_torch_and_keras_fold_the_same_blocks)."""


@pytest.mark.parametrize("path", GENERATED, ids=[p.stem for p in GENERATED])
def test_every_generated_module_has_one_function_per_block_kind(path: Path) -> None:
    """The committed modules (read, not run): one function per spec block that has two or more
    instances in the graph, and no other block function, whatever the layer names look like
    (Keras' block2a, block2b of EfficientNetV2 once made seven near-copies)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        n.targets[0].id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Name)
        and n.targets[0].id.isupper()
        and n.targets[0].id in ("SPEC_SOURCE", "WIDTH", "RESOLUTION", "SPEC_NAME")
    }
    spec = (path.parent / constants["SPEC_SOURCE"]).resolve()
    variant = constants["SPEC_NAME"].removeprefix(yaml.safe_load(spec.read_text(encoding="utf-8"))["name"]).strip("_")
    graph = a.lower(
        a.load(spec), width=constants["WIDTH"], resolution=tuple(constants["RESOLUTION"]), variant=variant or None
    )
    instances: dict[str, set[int | None]] = {}
    for node in graph.nodes:
        if node.span is not None and node.span.block is not None:
            instances.setdefault(node.span.block, set()).add(node.span.instance)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_block")}
    assert functions == {f"{block}_block" for block, seen in instances.items() if len(seen) >= 2}


def test_keras_lettered_blocks_are_one_kind() -> None:
    """Keras names EfficientNetV2's blocks by stage and letter (block2a, block2b): the letter
    is an index like the number, so every mbconv instance is a row of one kind, (stage, letter)
    its first columns: Keras' B0 table has 1, 2, 2, 3, 5 and 8 blocks per stage."""
    graph = a.lower(a.load(ROOT / "specs/efficientnet_v2.yaml"))
    structure = folding.fold(graph, {op: FakeHandler(op) for op in ir.IR_OPS}, "fake")
    (kind,) = structure.kinds
    assert kind.function == "mbconv_block" and [p for p, _ in kind.params][:2] == ["index", "letter"]
    repeats = (1, 2, 2, 3, 5, 8)
    assert [row[:2] for row in kind.rows] == [(s, "abcdefgh"[j]) for s, n in enumerate(repeats, 1) for j in range(n)]
    assert 'f"block{index}{letter}_project_conv"' in [site.name for site in kind.sites]
