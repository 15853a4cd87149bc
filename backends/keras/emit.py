"""IR graph -> one standalone Keras source file (Jinja2), the same model build() makes.

Every layer constructor comes from the handler table's emit part applied to the very
``LayerCall`` descriptions the builder instantiates (ops.py), so the generated model has the
builder's layer names, classes, arguments and weight shapes.

Repeated blocks are found generically (not MobileNet-specific): consecutive layer calls from
one spec entry whose names carry the same numbers (``conv_dw_3``, ``conv_dw_3_bn``, ...) form
a block instance; instances with the same structure (name pattern, class, which arguments
are given) form a *kind*, emitted as one function; the arguments that differ between
instances become its parameters and each instance a row of a layer table, so the model
function loops over the table instead of unrolling dozens of lines. Only a chain (each layer
reads the previous one) is folded into blocks; a graph with branches is written layer by
layer with named tensors.

Injection safety: spec-controlled strings reach the code only as ``repr()`` literals or as
names checked to be ASCII identifiers (inside f-strings too); the free-text description is
only ever a ``repr()`` constant, never docstring text.
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...codegen import NUMBER, block_params, name_expr, ruff_format, template_environment, type_annotation, unique
from ...cost import cost
from ...ir import Graph
from ...registry import BackendError
from .ops import UNBIASED_BN, LayerCall, describe, handler_for, literal

TEMPLATES = Path(__file__).parent / "templates"
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./-]{1,200}")
RESERVED = frozenset({"keras", "layers", "ops", "x", "block", "args", "inputs", "outputs", "tensors", "name"})
"""Names the generated code uses itself; a block parameter or function never takes one."""

ARG_NAMES: dict[str, tuple[str, ...]] = {
    "Conv2D": ("filters", "kernel_size"),
    "DepthwiseConv2D": ("kernel_size",),
    "ZeroPadding2D": ("padding",),
    "Dense": ("units",),
    "Dropout": ("rate",),
    "ReLU": ("max_value",),
    "Activation": ("activation",),
    "AveragePooling2D": ("pool_size", "strides"),
    "MaxPooling2D": ("pool_size", "strides"),
}
"""Keras' names for the positional arguments the handlers use (block parameters take them)."""

_CONV_DEFAULTS = {"strides": 1, "padding": "valid", "dilation_rate": 1, "use_bias": True}
KWARG_DEFAULTS: dict[str, dict[str, Any]] = {
    "Conv2D": {**_CONV_DEFAULTS, "groups": 1},
    "DepthwiseConv2D": {**_CONV_DEFAULTS, "depth_multiplier": 1},
    "BatchNormalization": {"center": True, "scale": True},
    UNBIASED_BN: {"center": True, "scale": True},
    "GlobalAveragePooling2D": {"keepdims": False},
    "GlobalMaxPooling2D": {"keepdims": False},
    "Dense": {"use_bias": True},
}
"""Keras' defaults of the keyword arguments handlers leave out when default. Block instances
are compared with these filled in, so a stride-1 and a stride-2 block are one kind."""


def _with_defaults(call: LayerCall) -> LayerCall:
    """``call`` with omitted default keyword arguments made explicit, in a canonical order."""
    defaults = KWARG_DEFAULTS.get(call.cls, {})
    given = dict(call.kwargs)
    order = [*defaults, *(k for k in given if k not in defaults)]
    return replace(call, kwargs=tuple((k, given.get(k, defaults.get(k))) for k in order))


def _is_default(call: LayerCall, key: str, value: Any) -> bool:
    default = KWARG_DEFAULTS.get(call.cls, {})
    return key in default and default[key] == value and type(default[key]) is type(value)


def _identifier(text: str, what: str) -> str:
    if not (text.isascii() and text.isidentifier()) or keyword.iskeyword(text):
        raise BackendError(f"{what} {text!r} is not a valid Python identifier")
    return text


@dataclass
class Kind:
    """A repeated block: one function in the generated code."""

    function: str
    params: list[tuple[str, str]]
    """(name, type annotation)."""
    lines: list[str]
    """One constructor call per layer, parameters substituted."""
    doc: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Section:
    """A stretch of the model: single layers (source lines) or a table of block instances."""

    lines: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    table: str = ""


def _group_key(call: LayerCall, graph: Graph) -> tuple[str | None, tuple[int, ...]]:
    span = graph[call.node].span
    return (span.path if span else None, tuple(int(d) for d in NUMBER.findall(call.name)))


def _slots(call: LayerCall) -> list[tuple[int | str, Any]]:
    return [*enumerate(call.args), *call.kwargs]


def _signature(group: list[LayerCall]) -> tuple[Any, ...]:
    return tuple((NUMBER.sub("#", c.name), c.cls, len(c.args), tuple(k for k, _ in c.kwargs)) for c in group)


def _make_kind(function: str, instances: list[list[LayerCall]], graph: Graph) -> Kind:
    first = instances[0]
    n_numbers = len(_group_key(first[0], graph)[1])
    columns: list[tuple[str, str]] = []  # (column id, preferred parameter name)
    values: dict[str, list[Any]] = {}
    for j in range(n_numbers):
        columns.append((f"n{j}", "index"))
        values[f"n{j}"] = [_group_key(inst[0], graph)[1][j] for inst in instances]
    for p, call in enumerate(first):
        names = ARG_NAMES.get(call.cls, ())
        for slot, _ in _slots(call):
            cid = f"{p}:{slot}"
            preferred = slot if isinstance(slot, str) else (names[slot] if slot < len(names) else f"arg{slot}")
            columns.append((cid, preferred))
            values[cid] = [dict(_slots(inst[p]))[slot] for inst in instances]
    bp = block_params(columns, values, n_numbers, RESERVED)
    param_of, number_params = bp.param_of, bp.number_params
    lines = []
    for p, full in enumerate(first):
        # A keyword left at its default in every instance reads better left out.
        kept = tuple((k, v) for k, v in full.kwargs if f"{p}:{k}" in param_of or not _is_default(full, k, v))
        call = replace(full, kwargs=kept)
        overrides = {slot: param_of[f"{p}:{slot}"] for slot, _ in _slots(call) if f"{p}:{slot}" in param_of}
        src = handler_for(call, graph).emit_layer(call, name_expr(call.name, number_params, literal), overrides)
        lines.append(f"x = {src}(x)")
    pattern = ", ".join(NUMBER.sub("#", c.name) for c in first)
    doc = textwrap.fill(
        f"One repeated block of {len(first)} layers: {pattern} (# = the block's number).",
        width=96,
        subsequent_indent="    ",
    )
    kind = Kind(function, [(n, type_annotation(values[bp.column_of[n]])) for n in bp.params], lines, doc)
    kind.rows = bp.rows(values, len(instances))
    return kind


def _is_chain(graph: Graph, calls: list[LayerCall]) -> bool:
    return (
        len(graph.inputs) == 1
        and calls[0].cls == "Input"
        and all(c.inputs == (calls[i].name,) for i, c in enumerate(calls[1:]))
        and calls[-1].name == graph.output
    )


def _chain_sections(graph: Graph, calls: list[LayerCall]) -> tuple[list[Kind], list[Section]]:
    groups: list[list[LayerCall]] = []
    for call in calls[1:]:
        if groups and _group_key(groups[-1][-1], graph) == _group_key(call, graph):
            groups[-1].append(call)
        else:
            groups.append([call])
    by_sig: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if len(g) >= 2 and _group_key(g[0], graph)[1]:
            by_sig.setdefault(_signature([_with_defaults(c) for c in g]), []).append(i)
    kinds: list[Kind] = []
    kind_of: dict[int, tuple[Kind, int]] = {}
    taken: set[str] = set()
    for idxs in by_sig.values():
        if len(idxs) < 2:
            continue
        stem = re.sub(r"_+", "_", NUMBER.sub("", groups[idxs[0]][0].name)).strip("_") or "layer"
        instances = [[_with_defaults(c) for c in groups[i]] for i in idxs]
        kind = _make_kind(unique(f"_{stem}_block", taken, RESERVED), instances, graph)
        kinds.append(kind)
        kind_of.update({i: (kind, row) for row, i in enumerate(idxs)})
    kinds.sort(key=lambda k: min(i for i, (kk, _) in kind_of.items() if kk is k))
    sections: list[Section] = []
    for i, g in enumerate(groups):
        if i in kind_of:
            kind, row = kind_of[i]
            if not sections or not sections[-1].table:
                sections.append(Section(table="?"))
            sections[-1].rows.append(", ".join([kind.function, *(literal(v) for v in kind.rows[row])]))
        else:
            if not sections or sections[-1].table:
                sections.append(Section())
            sections[-1].lines.extend(f"x = {handler_for(c, graph).emit_layer(c)}(x)" for c in g)
    tables = [s for s in sections if s.table]
    for k, s in enumerate(tables, 1):
        s.table = "BLOCKS" if len(tables) == 1 else f"BLOCKS_{k}"
    return kinds, sections


def _graph_section(graph: Graph, calls: list[LayerCall]) -> Section:
    """A graph with branches: every layer's output is kept by name in ``tensors``."""
    lines = []
    for call in calls:
        src = handler_for(call, graph).emit_layer(call)
        if call.cls == "Input":
            lines.append(f"tensors[{literal(call.name)}] = {src}")
            continue
        args = [f"tensors[{literal(n)}]" for n in call.inputs]
        arg = args[0] if len(args) == 1 else f"[{', '.join(args)}]"
        lines.append(f"tensors[{literal(call.name)}] = {src}({arg})")
    return Section(lines=lines)


def _unbiased_bn_source() -> str:
    """The exact class the builder uses (bn.py), copied by ast: one implementation for both."""
    path = Path(__file__).with_name("bn.py")
    text = path.read_text(encoding="utf8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef) and node.name == UNBIASED_BN:
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            return "\n".join(text.splitlines()[start - 1 : node.end_lineno])
    raise BackendError(f"{path}: class {UNBIASED_BN} not found")  # pragma: no cover


def render(graph: Graph) -> str:
    """The template's output, before formatting."""
    calls = describe(graph)  # UnsupportedOpError for what Keras cannot express
    for call in calls:
        _identifier(call.name, "layer name")
    _identifier(graph.name, "spec name")
    if len(graph.inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(graph.inputs)} inputs; generated Keras code supports one")
    chain = _is_chain(graph, calls)
    kinds, sections = _chain_sections(graph, calls) if chain else ([], [_graph_section(graph, calls)])
    keras_cost, paper = cost(graph, "keras"), cost(graph, "paper")
    context = {
        "graph_name": graph.name,
        "source_doc": f"the spec file {graph.source}"
        if _SAFE_PATH.fullmatch(graph.source or "")
        else "a spec (see SPEC_SOURCE)",
        "constants": [
            ("SPEC_NAME", repr(graph.name)),
            ("SPEC_SOURCE", repr(graph.source)),
            ("SPEC_DESCRIPTION", repr(graph.description)),
            ("WIDTH", repr(graph.width)),
            ("RESOLUTION", repr(tuple(int(r) for r in graph.resolution))),
        ],
        "width": repr(float(graph.width)),
        "height": int(graph.resolution[0]),
        "width_px": int(graph.resolution[1]),
        "input_shape": ", ".join(str(int(d)) for d in graph.input_shape),
        "params": f"{keras_cost.params:,}",
        "trainable": f"{keras_cost.trainable:,}",
        "non_trainable": f"{keras_cost.non_trainable:,}",
        "macs": f"{paper.macs:,}",
        "unbiased_bn": _unbiased_bn_source() if any(c.cls == UNBIASED_BN for c in calls) else "",
        "kinds": kinds,
        "sections": sections,
        "chain": chain,
        "input_line": handler_for(calls[0], graph).emit_layer(calls[0]) if chain else "",
        "input_repr": literal(graph.inputs[0].name),
        "output_repr": literal(graph.output),
    }
    return template_environment(TEMPLATES).get_template("module.py.j2").render(**context)


def emit_module(graph: Graph) -> str:
    """Formatted source of a module whose ``build_model()`` returns the model for ``graph``."""
    return ruff_format(render(graph))
