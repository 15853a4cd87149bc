"""The Python API's surface (archcompiler/api.py): every public object prints in a few hundred
characters, ``net.summary()`` is ``archc summary``'s table, and notebooks get an HTML table."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from helpers import SPEC

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
