"""Find repeated blocks in an IR graph so the emitter can write one function and a layer table.

Generic, not MobileNet-specific: nodes are grouped into block instances (consecutive nodes
from the same spec entry whose names carry the same numbers, e.g. ``conv_dw_3``,
``conv_dw_3_bn``), instances with the same structure (name pattern, layer class, which
arguments are given) form a *kind*, and the arguments that differ between instances become
the kind's parameters (one parameter per distinct column of values, named after the
constructor argument it feeds). Everything else is emitted as a single layer.

Wiring: a layer that reads the layer just before it (the common case) is written as the bare
module; any other layer as ``(module, (names it reads))``, with names inside a block written
relative to the block (``f"res{index}_bn_b"``) and names outside it passed in as parameters,
so a residual block is still one function and one table row per instance.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from archcompiler import ir
from archcompiler.codegen import NUMBER, block_params, name_expr, unique

from .ops import Handler, Layer, Slot

RESERVED = frozenset({"nn", "torch", "F", "OrderedDict", "layers", "block", "args", "name", "inputs"})
"""Names the emitted code uses itself; a parameter or function never takes one of them."""


@dataclass
class Kind:
    """A repeated block: one function in the emitted code."""

    function: str
    params: list[str]
    layers: list[tuple[str, str]]
    """(key expression, constructor expression) per layer, in order."""
    doc: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Section:
    """A stretch of the model: single layers, or a table of block instances."""

    singles: list[tuple[str, str]] = field(default_factory=list)
    rows: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    table: str = ""


@dataclass
class Structure:
    kinds: list[Kind]
    sections: list[Section]
    classes: list[type]
    """Layer classes used (from layers.py or torch.nn)."""


def _group_key(node: ir.Node) -> tuple[str | None, tuple[int, ...]]:
    return (node.span.path if node.span else None, tuple(int(d) for d in NUMBER.findall(node.name)))


Ref = tuple[str, int]
"""Where a block layer's input comes from: ("internal", layer position) or ("external", k)."""


def _wiring(group: list[tuple[ir.Node, Layer]], prev_of: Mapping[str, str]) -> tuple[tuple[Ref, ...] | None, ...]:
    """Per layer: None when it reads the layer just before it, else its inputs as block refs."""
    pos = {n.name: p for p, (n, _) in enumerate(group)}
    externals = _externals(group, prev_of)
    out: list[tuple[Ref, ...] | None] = []
    for node, _ in group:
        if node.inputs == (prev_of[node.name],):
            out.append(None)
        else:
            out.append(
                tuple(("internal", pos[i]) if i in pos else ("external", externals.index(i)) for i in node.inputs)
            )
    return tuple(out)


def _externals(group: list[tuple[ir.Node, Layer]], prev_of: Mapping[str, str]) -> list[str]:
    """Names outside the group that its explicitly wired layers read, in order of first use."""
    inside = {n.name for n, _ in group}
    names: list[str] = []
    for node, _ in group:
        if node.inputs != (prev_of[node.name],):
            names.extend(i for i in node.inputs if i not in inside and i not in names)
    return names


def _signature(group: list[tuple[ir.Node, Layer]], prev_of: Mapping[str, str]) -> tuple[Any, ...]:
    layers = tuple(
        (NUMBER.sub("#", n.name), layer.qualname, len(layer.args), tuple(layer.kwargs)) for n, layer in group
    )
    return (layers, _wiring(group, prev_of))


def _entry(src: str, refs: list[str] | None) -> str:
    """A layer entry: the bare module, or ``(module, (inputs...))`` when explicitly wired."""
    if refs is None:
        return src
    inputs = f"({refs[0]},)" if len(refs) == 1 else f"({', '.join(refs)})"
    return f"({src}, {inputs})"


def _make_kind(function: str, instances: list[list[tuple[ir.Node, Layer]]], prev_of: Mapping[str, str]) -> Kind:
    first = instances[0]
    columns: list[tuple[str, Any, str]] = []  # (column id, slot or number position, preferred name)
    values: dict[str, list[Any]] = {}
    n_numbers = len(_group_key(first[0][0])[1])
    for j in range(n_numbers):
        cid = f"n{j}"
        columns.append((cid, j, "index"))
        values[cid] = [_group_key(inst[0][0])[1][j] for inst in instances]
    externals = [_externals(inst, prev_of) for inst in instances]
    for k in range(len(externals[0])):
        cid = f"x{k}"
        columns.append((cid, k, "source"))
        values[cid] = [ext[k] for ext in externals]
    for p, (_, layer) in enumerate(first):
        for slot, _ in layer.slots():
            cid = f"{p}:{slot}"
            columns.append((cid, (p, slot), layer.slot_name(slot)))
            values[cid] = [dict(inst[p][1].slots())[slot] for inst in instances]
    bp = block_params([(cid, pref) for cid, _, pref in columns], values, n_numbers, RESERVED)
    params, param_of, number_params = bp.params, bp.param_of, bp.number_params
    wiring = _wiring(first, prev_of)
    layers_src = []
    for p, (node, layer) in enumerate(first):
        overrides: dict[Slot, str] = {
            slot: param_of[f"{p}:{slot}"] for slot, _ in layer.slots() if f"{p}:{slot}" in param_of
        }
        refs = None
        if wiring[p] is not None:
            refs = [
                name_expr(first[k][0].name, number_params)
                if where == "internal"
                else param_of.get(f"x{k}", repr(externals[0][k]))
                for where, k in wiring[p]
            ]
        layers_src.append((name_expr(node.name, number_params), _entry(layer.source(overrides), refs)))
    pattern = ", ".join(NUMBER.sub("#", n.name) for n, _ in first)
    doc = textwrap.fill(
        f"One repeated block of {len(first)} layers: {pattern} (# = the block's number).",
        width=100,
        subsequent_indent="    ",
    )
    kind = Kind(function, params, layers_src, doc=doc)
    kind.rows = bp.rows(values, len(instances))
    return kind


def analyse(graph: ir.Graph, handlers: Mapping[str, Handler]) -> Structure:
    """Group the graph's layers into single layers and tables of repeated blocks."""
    pairs: list[tuple[ir.Node, Layer]] = []
    for node in graph.nodes:
        layer = handlers[node.op].layer(node, graph) if node.op in handlers else None
        if layer is not None:
            pairs.append((node, layer))
    prev_of = {n.name: graph.nodes[i - 1].name for i, n in enumerate(graph.nodes) if i}
    groups: list[list[tuple[ir.Node, Layer]]] = []
    for node, layer in pairs:
        if groups and _group_key(groups[-1][-1][0]) == _group_key(node):
            groups[-1].append((node, layer))
        else:
            groups.append([(node, layer)])
    by_sig: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if len(g) >= 2:
            by_sig.setdefault(_signature(g, prev_of), []).append(i)
    kinds: list[Kind] = []
    kind_of: dict[int, tuple[Kind, int]] = {}
    taken: set[str] = set()
    for idxs in by_sig.values():
        if len(idxs) < 2:
            continue
        first = groups[idxs[0]]
        stem = re.sub(r"_+", "_", NUMBER.sub("", first[0][0].name)).strip("_") or "block"
        if f"{stem}_block" in taken:
            # Same first layer as another kind: tell them apart by a constant stride, if any.
            strides = [layer.kwargs["stride"] for _, layer in first if "stride" in layer.kwargs]
            if strides and all(s == strides[0] for s in strides) and isinstance(strides[0], int):
                stem = f"{stem}_s{strides[0]}"
        kind = _make_kind(unique(f"{stem}_block", taken, RESERVED), [groups[i] for i in idxs], prev_of)
        kinds.append(kind)
        for row_no, i in enumerate(idxs):
            kind_of[i] = (kind, row_no)
    kinds.sort(key=lambda k: min(i for i, (kk, _) in kind_of.items() if kk is k))
    sections: list[Section] = []
    for i, g in enumerate(groups):
        if i in kind_of:
            kind, row_no = kind_of[i]
            if not sections or not sections[-1].table:
                sections.append(Section(table="?"))
            sections[-1].rows.append((kind.function, kind.rows[row_no]))
        else:
            if not sections or sections[-1].table:
                sections.append(Section())
            for n, layer in g:
                refs = None if n.inputs == (prev_of[n.name],) else [repr(i) for i in n.inputs]
                sections[-1].singles.append((n.name, _entry(layer.source(), refs)))
    tables = [s for s in sections if s.table]
    for k, s in enumerate(tables, 1):
        s.table = "BLOCKS" if len(tables) == 1 else f"BLOCKS_{k}"
    classes: list[type] = []
    for _, layer in pairs:
        if layer.cls not in classes:
            classes.append(layer.cls)
    return Structure(kinds, sections, classes)
