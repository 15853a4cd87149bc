"""Code generation every backend shares (framework-free): a neutral description of layer
calls, the handler Protocol, one block-folding algorithm, and the Jinja2/ruff plumbing.

A backend's handler turns an IR node into :class:`Call` s (data: class spelling, literal
arguments, layer name, inputs). The backend's builder instantiates them; its emitter renders
them, after :func:`fold` has grouped them into repeated blocks. Folding decides blocks and
block kinds on IR information alone (names, ops, categorical attributes, wiring), so every
backend emits the same block functions and the same tables for one spec; a backend renders
single calls and owns its templates, nothing more (docs/DESIGN.md, "codegen/").
"""

from __future__ import annotations

import dataclasses
import keyword
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import jinja2

from . import ir
from .ops import same_padding
from .registry import BackendError, UnsupportedOpError


def ruff_format(source: str) -> str:
    """Format generated source with ruff when it is installed (line length 120, as the repo).

    The emitters' templates already write formatted code (their tests check ruff changes
    nothing), so the output does not depend on whether ruff is present.
    """
    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    if ruff is None:
        return source
    res = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "120", "--stdin-filename", "model.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise BackendError(f"generated code does not format: {res.stderr.strip()}")
    return res.stdout


NUMBER = re.compile(r"\d+")
"""The numbers in a layer name (``conv_dw_3_bn`` -> 3): what varies between block instances."""

RESERVED = frozenset(
    {"nn", "torch", "F", "keras", "layers", "ops", "x", "block", "args", "name", "inputs", "outputs"}
    | {"tensors", "previous", "entry", "layer", "values", "self", "build_model", "Entry", "OrderedDict"}
)
"""Names some backend's emitted code uses itself; no block function or parameter takes one.
One set for all backends, so that the function names (chosen here) are the same in each."""


def literal(value: Any) -> str:
    """Python source for a literal argument (ints, floats, strings, bools, None, tuples).

    Anything else is refused: spec values reach generated code only as literals."""
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise TypeError(f"not a literal layer argument: {value!r}")


def template_environment(folder: Path) -> jinja2.Environment:
    """Jinja2 for Python source: StrictUndefined (a missing variable is an error, not empty
    text) and no HTML escaping, since every spec value goes in through ``literal()``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pyrepr"] = repr
    env.filters["literal"] = literal
    return env


def identifier(text: str, what: str) -> str:
    """``text`` when it is an ASCII, non-keyword identifier; else a BackendError naming it."""
    if not (text.isascii() and text.isidentifier()) or keyword.iskeyword(text):
        raise BackendError(f"{what} {text!r} is not a valid Python identifier")
    return text


def unique(name: str, taken: set[str], reserved: frozenset[str] = frozenset()) -> str:
    """A fresh identifier from ``name``: never a keyword, a reserved name or one already taken."""
    ok = name.isidentifier() and not keyword.iskeyword(name) and name not in reserved
    base = name if ok else f"{name}_"
    if not base.isidentifier():
        base = "param"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def name_expr(name: str, number_params: Mapping[int, str], quote: Callable[[str], str] = literal) -> str:
    """``conv_dw_3_bn`` with its number 0 a parameter -> ``f"conv_dw_{index}_bn"`` (names are
    validated identifiers, so nothing needs escaping); a fixed name -> ``quote(name)``."""
    pieces, digits = NUMBER.split(name), NUMBER.findall(name)
    out = pieces[0]
    for j, d in enumerate(digits):
        out += ("{" + number_params[j] + "}" if j in number_params else d) + pieces[j + 1]
    return f'f"{out}"' if number_params else quote(name)


def type_annotation(values: Sequence[Any]) -> str:
    """The annotation of a block parameter, from the values its table column holds."""
    kinds = {type(v) for v in values}
    if kinds == {int}:
        return "int"
    if kinds in ({float}, {int, float}):
        return "float"
    if kinds == {bool}:
        return "bool"
    if kinds == {str}:
        return "str"
    if kinds == {tuple}:
        return "tuple[int, ...]"
    if kinds == {int, tuple}:
        return "int | tuple[int, ...]"
    return "object"


# -- the neutral call description ----------------------------------------------------------

Slot = int | str
"""A constructor argument: its position, or its keyword."""


@dataclass(frozen=True)
class Call:
    """One layer constructor applied to earlier layers' outputs, as plain data.

    A backend's builder instantiates it, its emitter prints it; both read the same literals,
    so generated code and built model cannot drift apart (docs/DESIGN.md, style 2).
    """

    cls: str
    """How emitted source spells the class: ``nn.Conv2d``, ``PaddedConv2d``, ``layers.Conv2D``."""
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments in a fixed order, values plain literals."""
    name: str = ""
    """The layer name; the call that gives a node's output is named after the node."""
    inputs: tuple[str, ...] = ()
    """Names of the layers (or graph inputs) it reads."""
    node: str = ""
    """The IR node it belongs to (a helper pad layer belongs to its conv)."""
    arg_names: tuple[str, ...] = ()
    """Readable names of the positional parameters (block parameters are named after them)."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """The class's defaults of keywords in ``kwargs``. Handlers give every keyword they may
    set, so two instances of one block compare equal in shape (a stride-1 and a stride-2 conv
    both carry ``stride``); a keyword at its default is left out of the source unless it
    varies within a block kind."""

    def __post_init__(self) -> None:
        for value in (*self.args, *(v for _, v in self.kwargs), *(v for _, v in self.defaults)):
            literal(value)  # TypeError now, not when the source is rendered

    def slots(self) -> list[tuple[Slot, Any]]:
        """Every argument as (position or keyword, value), in call order."""
        return [*enumerate(self.args), *self.kwargs]

    def slot_name(self, slot: Slot) -> str:
        if isinstance(slot, str):
            return slot
        return self.arg_names[slot] if slot < len(self.arg_names) else f"arg{slot}"

    def shape(self) -> tuple[Any, ...]:
        """What must agree between instances of a block for one source line to build them all."""
        return (NUMBER.sub("#", self.name), self.cls, len(self.args), tuple(k for k, _ in self.kwargs))

    def is_default(self, key: str, value: Any) -> bool:
        default = dict(self.defaults)
        return key in default and default[key] == value and type(default[key]) is type(value)

    def arguments(self, overrides: Mapping[Slot, str] | None = None) -> list[str]:
        """The argument list as source; ``overrides`` replace literals by expressions."""
        over = overrides or {}
        parts = [over.get(i, literal(a)) for i, a in enumerate(self.args)]
        parts += [f"{k}={over.get(k, literal(v))}" for k, v in self.kwargs if k in over or not self.is_default(k, v)]
        return parts


def make_call(
    cls: str,
    node: ir.Node,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    arg_names: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    name: str | None = None,
    inputs: Sequence[str] | None = None,
) -> Call:
    """A call for ``node``, named after it and reading its inputs unless told otherwise."""
    given = dict(kwargs or {})
    return Call(
        cls,
        tuple(args),
        tuple(given.items()),
        node.name if name is None else name,
        tuple(node.inputs if inputs is None else inputs),
        node.name,
        tuple(arg_names),
        tuple((k, v) for k, v in (defaults or {}).items() if k in given),
    )


class OpHandler(Protocol):
    """One IR op in one backend: the node as layer calls (an empty list: no layer, e.g. an input).

    ``describe`` gives the natural calls for this node. ``describe_general`` gives calls of a
    form that also fits every other node with the same op, categorical attributes and padding
    style (see :func:`structure_key`) -- e.g. torch's PaddedConv2d with an explicit pad
    instead of ``nn.Conv2d(padding=1)`` -- so that a block kind stays one function. Both raise
    UnsupportedOpError for what the backend cannot express exactly.
    """

    @property
    def op(self) -> str: ...

    def describe(self, node: ir.Node, graph: ir.Graph) -> Sequence[Call]: ...

    def describe_general(self, node: ir.Node, graph: ir.Graph) -> Sequence[Call]: ...


H = TypeVar("H", bound=OpHandler)


@dataclass(frozen=True)
class Described(Generic[H]):
    """A node, the handler that describes it and its calls (the builders iterate these)."""

    node: ir.Node
    handler: H
    calls: tuple[Call, ...]


def describe_graph(graph: ir.Graph, handlers: Mapping[str, H], backend: str) -> list[Described[H]]:
    """Every node's calls, in topological order, through ``handlers`` (the backend instance's
    table). Raises UnsupportedOpError at the first node no handler can express."""
    out: list[Described[H]] = []
    names: set[str] = set()
    for node in graph.nodes:
        handler = handlers.get(node.op)
        if handler is None:
            raise UnsupportedOpError(backend, node)
        calls = tuple(handler.describe(node, graph))
        if calls and calls[-1].name != node.name:
            raise BackendError(
                f"{backend}: the {node.op!r} handler's last call for {node.name!r} is not named after it"
            )
        for call in calls:
            if call.name in names:
                raise BackendError(f"{backend}: two layers named {call.name!r}")
            names.add(call.name)
        out.append(Described(node, handler, calls))
    return out


# -- block parameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class BlockParams:
    """How the columns of a repeated block's table become the block function's parameters."""

    params: list[str]
    """Parameter names in signature order: block numbers, then scalars, then tuples."""
    param_of: dict[str, str]
    """Column id -> parameter (columns with equal values share one parameter)."""
    column_of: dict[str, str]
    """Parameter -> the first column feeding it."""
    number_params: dict[int, str]
    """Position of a number in the layer names -> the parameter it becomes."""

    def rows(self, values: Mapping[str, Sequence[Any]], count: int) -> list[tuple[Any, ...]]:
        return [tuple(values[self.column_of[p]][k] for p in self.params) for k in range(count)]


def block_params(
    columns: Sequence[tuple[str, str]], values: Mapping[str, Sequence[Any]], n_numbers: int, reserved: frozenset[str]
) -> BlockParams:
    """Turn varying table columns into parameters.

    ``columns`` are (column id, preferred name); ids ``n0, n1, ...`` are the numbers in the
    layer names. A column constant over all instances is no parameter; columns with equal
    values share one (a block's in and out channels of a stride-1 block stay apart only when
    they differ somewhere).
    """
    taken: set[str] = set()
    by_values: dict[str, str] = {}
    param_of: dict[str, str] = {}
    varying_numbers = sum(1 for j in range(n_numbers) if len(set(values[f"n{j}"])) > 1)
    for cid, preferred in columns:
        seq = values[cid]
        if len({repr(v) for v in seq}) == 1:
            continue
        key = repr(seq)
        if key not in by_values:
            if preferred == "index" and varying_numbers > 1:
                preferred = f"index_{cid[1:]}"
            by_values[key] = unique(preferred, taken, reserved)
        param_of[cid] = by_values[key]
    params = list(dict.fromkeys(param_of.values()))
    column_of = {pn: cid for cid, pn in reversed(param_of.items())}
    numbers = {param_of[f"n{j}"] for j in range(n_numbers) if f"n{j}" in param_of}
    # Block numbers first, then scalars (channel counts), then tuples (paddings): a table row
    # then reads like the paper's (index, in, out, ...).
    params.sort(key=lambda n: 0 if n in numbers else 2 if isinstance(values[column_of[n]][0], tuple) else 1)
    number_params = {j: param_of[f"n{j}"] for j in range(n_numbers) if f"n{j}" in param_of}
    return BlockParams(params, param_of, column_of, number_params)


# -- folding -------------------------------------------------------------------------------


def padding_style(node: ir.Node, graph: ir.Graph) -> str | None:
    """A windowed op's padding as a category: "valid" (none), "same" (TensorFlow SAME for this
    input) or "explicit". Frameworks with a native SAME (Keras, ONNX SAME_UPPER) spell the
    three differently, so it is part of a block's structure; the pad sizes are not."""
    pad, kernel, stride = (getattr(node, a, None) for a in ("padding", "kernel", "stride"))
    if pad is None or kernel is None or stride is None:
        return None
    if not any(pad):
        return "valid"
    dilation = getattr(node, "dilation", (1, 1))
    h, w = graph[node.inputs[0]].shape[:2]
    same = (*same_padding(h, kernel[0], stride[0], dilation[0]), *same_padding(w, kernel[1], stride[1], dilation[1]))
    return "same" if tuple(pad) == same else "explicit"


def structure_key(node: ir.Node, graph: ir.Graph) -> tuple[Any, ...]:
    """What every instance of a block kind shares at one position: the op, its categorical
    attributes (strings and flags: an activation's kind, BatchNorm's variance update, a bias),
    the ranks it reads and writes, and its padding style. Numbers (channels, strides, pads,
    epsilons) may differ and become block parameters in every backend."""
    attrs = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if f.name not in ("name", "inputs", "shape", "span") and (value is None or isinstance(value, str | bool)):
            attrs.append((f.name, value))
    ranks = (len(node.shape), tuple(len(graph[i].shape) for i in node.inputs))
    return (node.op, tuple(attrs), ranks, padding_style(node, graph))


@dataclass(frozen=True)
class Site:
    """One call where the emitted code writes it: the expressions a backend renders."""

    call: Call
    name: str
    """The layer name as an expression: a literal, or an f-string inside a block function."""
    overrides: Mapping[Slot, str]
    """Arguments that are block parameters: slot -> parameter name."""
    reads: tuple[str, ...] | None
    """Expressions naming what it reads; None: the output of the layer written just before."""
    keep: bool
    """Some later layer reads its output by name (a branch, a skip), or it is the output."""

    def arguments(self) -> list[str]:
        return self.call.arguments(self.overrides)


@dataclass
class Kind:
    """A repeated block: one function in the emitted code, one table row per instance."""

    function: str
    params: list[tuple[str, str]]
    """(name, type annotation), in signature order."""
    sites: list[Site]
    doc: str
    rows: list[tuple[Any, ...]]


@dataclass
class Section:
    """A stretch of the model: single layers, or a table of block instances."""

    sites: list[Site] = field(default_factory=list)
    rows: list[tuple[Kind, tuple[Any, ...]]] = field(default_factory=list)
    table: str = ""


@dataclass
class Structure:
    """What an emitter renders: the input layers, block kinds, and the model's sections."""

    inputs: list[Call]
    kinds: list[Kind]
    sections: list[Section]
    chain: bool
    """Every layer reads the one before it and the last is the output (no name lookups needed)."""

    def sites(self) -> Iterator[Site]:
        for kind in self.kinds:
            yield from kind.sites
        for section in self.sections:
            yield from section.sites

    def classes(self) -> list[str]:
        """Class spellings the emitted code uses, in order of first use."""
        return list(dict.fromkeys([*(c.cls for c in self.inputs), *(s.call.cls for s in self.sites())]))


def _numbers(name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in NUMBER.findall(name))


def _group_key(node: ir.Node) -> tuple[str | None, tuple[int, ...]]:
    return (node.span.path if node.span else None, _numbers(node.name))


def _externals(group: Sequence[ir.Node], prev: Mapping[str, str]) -> list[str]:
    """Names outside the group that its explicitly wired nodes read, in order of first use."""
    inside = {n.name for n in group}
    names: list[str] = []
    for node in group:
        if node.inputs != (prev[node.name],):
            names.extend(i for i in node.inputs if i not in inside and i not in names)
    return names


def _signature(group: Sequence[ir.Node], graph: ir.Graph, prev: Mapping[str, str]) -> tuple[Any, ...]:
    """The kind of a block instance, from the IR alone: every backend computes the same."""
    pos = {n.name: p for p, n in enumerate(group)}
    ext = _externals(group, prev)
    wiring = tuple(
        None
        if n.inputs == (prev[n.name],)
        else tuple(("internal", pos[i]) if i in pos else ("external", ext.index(i)) for i in n.inputs)
        for n in group
    )
    nodes = tuple((NUMBER.sub("#", n.name), structure_key(n, graph)) for n in group)
    return (nodes, wiring)


def _foldable(group: Sequence[ir.Node]) -> bool:
    """Two or more layers whose names carry numbers written plainly (``3``, not ``03``), so
    that an f-string of the block's number gives every instance's names back."""
    digits = NUMBER.findall(group[0].name)
    return len(group) >= 2 and bool(digits) and all(d == str(int(d)) for n in group for d in NUMBER.findall(n.name))


def _reads_previous(described: Sequence[tuple[ir.Node, Sequence[Call]]], previous: str) -> list[bool]:
    """Per call: does it read exactly the output written just before it? A node's value is
    named after the node, so after a node (even one without calls, an input) that is it."""
    out = []
    for node, calls in described:
        for call in calls:
            out.append(call.inputs == (previous,))
            previous = call.name
        previous = node.name
    return out


def _unify(items: Sequence[Described[H]], graph: ir.Graph, backend: str) -> list[tuple[Call, ...]]:
    """One call form for a position of a block kind: the natural calls when all instances
    agree in shape, else every handler's general form (which must then agree)."""
    forms = [d.calls for d in items]
    for attempt in range(2):
        shapes = [tuple(c.shape() for c in f) for f in forms]
        if all(s == shapes[0] for s in shapes):
            return forms
        if attempt == 0:
            forms = [tuple(d.handler.describe_general(d.node, graph)) for d in items]
    first, other = items[0].node.name, next(d.node.name for d, s in zip(items, shapes, strict=True) if s != shapes[0])
    raise BackendError(
        f"backend {backend!r}: the {items[0].node.op!r} handler describes {first!r} and {other!r}, "
        "the same layer of one repeated block, with differently shaped calls even in general form"
    )


class _Folder(Generic[H]):
    """The state of one :func:`fold`: the graph's calls and who reads what by name."""

    def __init__(self, graph: ir.Graph, handlers: Mapping[str, H], backend: str, reserved: frozenset[str]) -> None:
        self.graph, self.backend, self.reserved = graph, backend, reserved
        self.described = describe_graph(graph, handlers, backend)
        self.by_node = {d.node.name: d for d in self.described}
        order = graph.nodes
        self.prev = {n.name: order[i - 1].name for i, n in enumerate(order) if i}
        flags = _reads_previous([(d.node, d.calls) for d in self.described], "")
        calls = [c for d in self.described for c in d.calls]
        self.implicit = {c.name for c, f in zip(calls, flags, strict=True) if f}
        self.named = {i for c in calls if c.name not in self.implicit for i in c.inputs}
        if calls and graph.output != calls[-1].name:
            self.named.add(graph.output)

    def single(self, call: Call) -> Site:
        reads = None if call.name in self.implicit else tuple(literal(i) for i in call.inputs)
        return Site(call, literal(call.name), {}, reads, call.name in self.named)

    def kind(self, function: str, instances: Sequence[Sequence[ir.Node]]) -> Kind:
        first = instances[0]
        forms = [
            _unify([self.by_node[g[p].name] for g in instances], self.graph, self.backend) for p in range(len(first))
        ]
        flat = [[c for p in range(len(first)) for c in forms[p][k]] for k in range(len(instances))]
        numbers = [_numbers(g[0].name) for g in instances]
        externals = [_externals(g, self.prev) for g in instances]
        columns: list[tuple[str, str]] = []  # (column id, preferred parameter name)
        values: dict[str, list[Any]] = {}
        for j in range(len(numbers[0])):
            columns.append((f"n{j}", "index"))
            values[f"n{j}"] = [nums[j] for nums in numbers]
        for k in range(len(externals[0])):
            columns.append((f"x{k}", "source"))
            values[f"x{k}"] = [ext[k] for ext in externals]
        for q, call in enumerate(flat[0]):
            for slot, _ in call.slots():
                columns.append((f"{q}:{slot}", call.slot_name(slot)))
                values[f"{q}:{slot}"] = [dict(calls[q].slots())[slot] for calls in flat]
        bp = block_params(columns, values, len(numbers[0]), self.reserved)
        wiring = [self._wiring(g, calls, ext) for g, calls, ext in zip(instances, flat, externals, strict=True)]
        if any(w != wiring[0] for w in wiring):
            raise BackendError(f"backend {self.backend!r}: instances of block {function} are wired differently")
        sites = []
        for q, call in enumerate(flat[0]):
            for calls, nums in zip(flat, numbers, strict=True):
                self._check_name(call.name, calls[q].name, bp.number_params, nums)
            reads = None
            if wiring[0][q] is not None:
                reads = tuple(
                    name_expr(flat[0][i].name, bp.number_params)
                    if where == "internal"
                    else bp.param_of.get(f"x{i}", literal(externals[0][i]))
                    for where, i in wiring[0][q]
                )
            overrides = {slot: bp.param_of[f"{q}:{slot}"] for slot, _ in call.slots() if f"{q}:{slot}" in bp.param_of}
            keep = any(calls[q].name in self.named for calls in flat)
            sites.append(Site(call, name_expr(call.name, bp.number_params), overrides, reads, keep))
        pattern = ", ".join(NUMBER.sub("#", n.name) for n in first)
        doc = textwrap.fill(
            f"One repeated block of {len(first)} layers: {pattern} (# = the block's number).",
            width=96,
            subsequent_indent="    ",
        )
        params = [(p, type_annotation(values[bp.column_of[p]])) for p in bp.params]
        return Kind(function, params, sites, doc, bp.rows(values, len(instances)))

    def _wiring(
        self, group: Sequence[ir.Node], calls: Sequence[Call], externals: Sequence[str]
    ) -> tuple[tuple[tuple[str, int], ...] | None, ...]:
        """Per call of an instance: None when it reads the output just before it, else where
        each input comes from: ("internal", call position) or ("external", k)."""
        described = [(n, [c for c in calls if c.node == n.name]) for n in group]
        flags = _reads_previous(described, self.prev[group[0].name])
        pos = {c.name: q for q, c in enumerate(calls)}
        out: list[tuple[tuple[str, int], ...] | None] = []
        for call, flag in zip(calls, flags, strict=True):
            if flag:
                out.append(None)
                continue
            refs = []
            for i in call.inputs:
                if i in pos:
                    refs.append(("internal", pos[i]))
                elif i in externals:
                    refs.append(("external", externals.index(i)))
                else:
                    raise BackendError(
                        f"backend {self.backend!r}: layer {call.name!r} reads {i!r}, not an input of its node"
                    )
            out.append(tuple(refs))
        return tuple(out)

    def _check_name(self, template: str, name: str, number_params: Mapping[int, str], numbers: Sequence[int]) -> None:
        """The block function names this instance's layer as the handler did."""
        digits = NUMBER.findall(template)
        want = [str(numbers[j]) if j in number_params else d for j, d in enumerate(digits)]
        pieces = NUMBER.split(template)
        expected = pieces[0] + "".join(w + p for w, p in zip(want, pieces[1:], strict=True))
        if expected != name:
            raise BackendError(f"backend {self.backend!r}: layer {name!r} does not follow its block's names")


def fold(graph: ir.Graph, handlers: Mapping[str, H], backend: str, reserved: frozenset[str] = RESERVED) -> Structure:
    """The graph's calls as single layers and tables of repeated blocks.

    Nodes group into block instances (consecutive nodes of one spec entry whose names carry
    the same numbers: ``conv_dw_3``, ``conv_dw_3_bn``); instances with one signature (name
    pattern, :func:`structure_key` of each node, wiring) form a kind, written as one function;
    what differs between instances (numbers in names, arguments, names read from outside)
    becomes its parameters, one table row per instance. Only the calls depend on the backend.
    """
    folder = _Folder(graph, handlers, backend, reserved)
    inputs = {n.name for n in graph.inputs}
    groups: list[list[ir.Node]] = []
    for node in graph.nodes:
        if node.name in inputs:
            continue
        if groups and _group_key(groups[-1][-1]) == _group_key(node):
            groups[-1].append(node)
        else:
            groups.append([node])
    by_sig: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if _foldable(g):
            by_sig.setdefault(_signature(g, graph, folder.prev), []).append(i)
    kinds: list[Kind] = []
    kind_of: dict[int, tuple[Kind, int]] = {}
    taken: set[str] = set()
    for idxs in by_sig.values():
        if len(idxs) < 2:
            continue
        stem = re.sub(r"_+", "_", NUMBER.sub("", groups[idxs[0]][0].name)).strip("_") or "layer"
        kind = folder.kind(unique(f"{stem}_block", taken, reserved), [groups[i] for i in idxs])
        kinds.append(kind)
        kind_of.update({i: (kind, row) for row, i in enumerate(idxs)})
    sections: list[Section] = []
    for i, g in enumerate(groups):
        if i in kind_of:
            kind, row = kind_of[i]
            if not sections or not sections[-1].table:
                sections.append(Section(table="?"))
            sections[-1].rows.append((kind, kind.rows[row]))
        else:
            if not sections or sections[-1].table:
                sections.append(Section())
            sections[-1].sites.extend(folder.single(c) for n in g for c in folder.by_node[n.name].calls)
    tables = [s for s in sections if s.table]
    for k, s in enumerate(tables, 1):
        s.table = "BLOCKS" if len(tables) == 1 else f"BLOCKS_{k}"
    order = graph.nodes
    chain = (
        len(inputs) == 1
        and order[0].name in inputs
        and all(n.inputs == (order[i].name,) for i, n in enumerate(order[1:]))
        and graph.output == order[-1].name
    )
    input_calls = [c for d in folder.described if d.node.name in inputs for c in d.calls]
    return Structure(input_calls, kinds, sections, chain)
