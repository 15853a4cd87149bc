"""The Python API's surface (archcompiler/api.py): every public object prints in a few hundred
characters, ``net.summary()`` is ``archc summary``'s table, and notebooks get an HTML table."""

from __future__ import annotations

import dataclasses
import html
import inspect
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import SPEC, run

import archcompiler as a
from archcompiler import weights as W
from archcompiler.analysis.optimize import optimize
from archcompiler.api import Built
from archcompiler.lowering.features import Outputs, levels
from archcompiler.lowering.heads import Head
from archcompiler.parity.report import NodeDiff, ParityReport, TrainDiff, TrainingReport

REPR_LIMIT = 400
"""'A few hundred characters': what fits on a few lines of a terminal or a notebook cell."""


class _HugeRepr:
    """A framework model stand-in: its own repr is as long as a torch MobileNet's."""

    def __repr__(self) -> str:
        return "Sequential(\n" + "  (conv): Conv2d(3, 32, kernel_size=(3, 3))\n" * 500 + ")"


def _training_report(graph: a.Graph) -> TrainingReport:
    diffs = tuple(
        TrainDiff(step, f"{n.name}.kernel", n.name, "parameter", 1e-12, 1.0, 1e-9, "keras", True)
        for step in (1, 2, 3)
        for n in graph.nodes
        if n.op == "conv2d"
    )
    return TrainingReport(graph, ("torch", "keras"), "float64", 3, 2, 0.01, 0, diffs, "torch in float64", ())


def _parity_report(graph: a.Graph) -> ParityReport:
    diffs = tuple(
        NodeDiff(n.name, n.op, 1e-6, 0.86, True, 1e-6, 1e-5, "keras", ("tflite",) if "bn" in n.name else ())
        for n in graph.nodes
    )
    return ParityReport(
        graph, ("torch", "keras", "tflite"), 0.0, 0.0, diffs, graph.logits, training=_training_report(graph)
    )


def _roots() -> list[Any]:
    """What a user of the API gets hold of for MobileNet, without building in a framework (a
    framework's results are made here with the dataclasses the API returns)."""
    net = a.compile(SPEC)
    features = a.compile(SPEC, features=True)
    weights = W.training_init(net.graph)
    built = Built(
        net.graph, "torch", _HugeRepr(), (Path("build/m/mobilenet_v1.pt"),), net.cost("torch"), net.cost().macs
    )
    return [
        net,
        features,
        *(net.cost(c) for c in a.CONVENTIONS),
        net.cost().by_category(),
        a.sweep(SPEC, [1.0, 0.5], [224, 160]),
        a.fit(SPEC, max_macs=150_000_000),
        weights,
        W.specs(net.graph),
        optimize(net.graph, weights),
        built,
        _parity_report(net.graph),
        Head(0, "avg"),
        Outputs(None, True),
        levels(net.graph),
    ]


def _public(obj: Any) -> list[Any]:
    """The values a user reaches from ``obj`` by a public attribute: dataclass and pydantic
    fields, properties, and the items of containers."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    out = []
    names = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
    names += list(getattr(type(obj), "model_fields", {}))
    names += [n for n, v in inspect.getmembers(type(obj)) if isinstance(v, property)]
    for name in dict.fromkeys(names):
        if name.startswith("_"):
            continue
        try:
            out.append(getattr(obj, name))
        except Exception:  # e.g. Graph.output of a multi-output graph: an error by design
            continue
    return out


def _ours(obj: Any) -> bool:
    return type(obj).__module__.startswith("archcompiler")


def test_every_public_object_has_a_short_repr() -> None:
    seen: dict[int, Any] = {}
    todo = _roots()
    types: set[str] = set()
    long: list[str] = []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, str | int | float | bool | bytes | Path) or obj is None:
            continue
        seen[id(obj)] = obj  # kept alive, so that an id is never reused during the walk
        if type(obj).__module__.startswith("numpy"):
            continue
        if _ours(obj):
            types.add(type(obj).__name__)
            text = repr(obj)
            if len(text) > REPR_LIMIT:
                long.append(f"{type(obj).__name__}: {len(text):,} characters: {text[:120]}...")
        todo.extend(_public(obj))
    assert not long, "\n".join(long)
    # the walk reached every kind of object the API hands out (so the bound is not vacuous)
    expected = {
        "Compiled", "Graph", "Input", "Conv2D", "DepthwiseConv2D", "BatchNorm", "Activation", "GlobalPool",
        "Dense", "Softmax", "CostReport", "NodeCost", "CategoryCost", "Sweep", "FitRow", "LoadedSpec", "Spec",
        "Source", "BlockDef", "InputSpec", "Weights", "TensorSpec", "Optimized", "Built", "ParityReport",
        "NodeDiff", "TrainingReport", "TrainDiff", "Head", "Outputs", "Level",
    }  # fmt: skip
    assert expected <= types, sorted(expected - types)


def test_reprs_say_what_the_object_is() -> None:
    """The short reprs name the model and its key figures (the paper's: 4,209,088 params and
    568,740,352 Mult-Adds for MobileNet 1.0-224, docs/NUMBERS.md)."""
    net = a.compile(SPEC)
    assert repr(net.graph) == "<Graph mobilenet_v1: 85 nodes, input 224x224x3 -> 1000, width 1, resolution 224x224>"
    assert repr(net.cost()) == (
        "<CostReport mobilenet_v1, convention paper: 4,209,088 params, 568,740,352 MACs over 85 nodes>"
    )
    assert repr(net).startswith(f"<Compiled {SPEC!r} as <Graph mobilenet_v1: 85 nodes")


# -- net.summary() and notebooks ---------------------------------------------------------------


def test_summary_is_what_archc_summary_prints(capsys: pytest.CaptureFixture[str]) -> None:
    net = a.compile(SPEC, width=0.5, resolution=160)
    for convention, fmt in (("paper", "table"), ("keras", "markdown"), ("torch", "csv")):
        code, out, _ = run(capsys, "summary", SPEC, "--width", "0.5", "--resolution", "160",
                           "--convention", convention, "--format", fmt)  # fmt: skip
        assert code == 0
        assert net.summary(convention, fmt) == out.rstrip("\n")


def test_summary_names_its_convention_and_the_frameworks_counts() -> None:
    """The default counts the paper's way (4,209,088 params for MobileNet 1.0, Table 1); the
    title says so and how to get the frameworks' counts, which it then gives (4,231,976 for
    torch's model.parameters(), 4,253,864 for Keras' count_params(): docs/NUMBERS.md)."""
    net = a.compile(SPEC)
    paper = net.summary().splitlines()
    assert paper[1] == (
        "convention paper (conv, depthwise and dense weights; --convention torch for model.parameters(), "
        "keras for count_params())"
    )
    assert "total: 4,209,088 params" in net.summary()
    assert "model.parameters()" in net.summary("torch").splitlines()[1]
    assert "total: 4,231,976 params" in net.summary("torch")
    assert "count_params()" in net.summary("keras").splitlines()[1]
    assert "total: 4,253,864 params (4,231,976 trainable, 21,888 non-trainable)" in net.summary("keras")


def test_summary_refuses_an_unknown_format_naming_it() -> None:
    with pytest.raises(a.SpecError, match="format: expected one of 'table', 'json', 'csv', 'markdown'"):
        a.compile(SPEC).summary(format="html")


class _Cells(HTMLParser):
    """Every table cell's text, and every tag, of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_notebooks_show_an_html_table_with_every_spec_text_escaped(tmp_path: Path) -> None:
    """A spec file named like markup shows as text, not as tags."""
    file = tmp_path / "<i>tiny&amp;.yaml"
    file.write_text(
        "name: tiny\ninput: {size: 32}\nlayers:\n  - {op: conv, name: c1, filters: 8, kernel: 3, stride: 2}\n"
    )
    net = a.compile(file)
    for page in (net._repr_html_(), net.cost()._repr_html_()):
        parser = _Cells()
        parser.feed(page)
        assert "i" not in parser.tags and "<i>tiny" not in page and html.escape(str(file)) in page
        assert parser.tags.count("table") == 2
        # the conv's row: 3*3*3*8 = 216 weights, 16*16*216 = 55,296 multiply-adds
        assert ["c1", "conv2d", "16x16x8", "216", "55,296", "100.00%"] in _rows_of(parser.cells, 6)
    html_page = a.compile(SPEC)._repr_html_()
    assert html.escape("convention paper (conv, depthwise and dense weights;") in html_page


def _rows_of(cells: list[str], width: int) -> list[list[str]]:
    return [cells[i : i + width] for i in range(0, len(cells) - width + 1)]
