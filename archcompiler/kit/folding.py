"""Block folding for the emitters (framework-free): the graph's calls as single layers and
tables of repeated blocks, one function per block kind.

Folding decides blocks and block kinds on IR information alone (names, ops, categorical
attributes, wiring), so every backend emits the same block functions and the same tables for
one spec; a backend renders single calls (:class:`Site`) and owns its templates, nothing more
(docs/DESIGN.md, style 2).

One algorithm makes every kind (:class:`_KindMaker`), whichever way its instances were found:
the instances of one spec block (Span.block), or, for layers outside blocks and for a block
whose instances do not fit one function, runs of nodes with one structure.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple

from archcompiler import ir
from archcompiler.kit.calls import NUMBER, Call, Described, H, Slot, describe_graph, padding_style
from archcompiler.kit.pysource import RESERVED, literal, type_annotation, unique
from archcompiler.kit.registry import BackendError


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
class Branch:
    """``if cond: body`` (``elif`` for the next ones of a chain, ``else`` for a None cond)."""

    cases: list[tuple[str | None, list[Statement]]]


Statement = Site | Branch
"""One step of a block function: a layer, or layers under a condition on block parameters."""


@dataclass
class Kind:
    """A repeated block: one function in the emitted code, one table row per instance."""

    function: str
    params: list[tuple[str, str]]
    """(name, type annotation), in signature order."""
    sites: list[Site]
    doc: str
    rows: list[tuple[Any, ...]]
    body: list[Statement] = field(default_factory=list)
    """The sites with the conditions they run under (all of ``sites`` when none is guarded)."""

    def __post_init__(self) -> None:
        if not self.body:
            self.body = list(self.sites)

    @property
    def plain(self) -> bool:
        """No layer of the block is conditional: every instance has every layer."""
        return all(isinstance(s, Site) for s in self.body)

    def lines(self, render: Callable[[Site], list[str]]) -> list[str]:
        """The function body as source lines (4-space indents), each site through ``render``."""
        out: list[str] = []
        _lines(self.body, render, "", out)
        return out


def _lines(body: Sequence[Statement], render: Callable[[Site], list[str]], indent: str, out: list[str]) -> None:
    for stmt in body:
        if isinstance(stmt, Site):
            out.extend(indent + line for line in render(stmt))
            continue
        for k, (cond, inner) in enumerate(stmt.cases):
            head = "else:" if cond is None else f"{'if' if k == 0 else 'elif'} {cond}:"
            out.append(indent + head)
            _lines(inner, render, indent + "    ", out)


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


# -- grouping nodes into block instances ---------------------------------------------------


def _index(token: str) -> int | str:
    """One index of a name as a table value: a number, or a letter (Keras' ``block2b``: 2, "b")."""
    return int(token) if token.isdigit() else token


def _numbers(name: str) -> tuple[int | str, ...]:
    return tuple(_index(d) for d in NUMBER.findall(name))


def _group_key(node: ir.Node) -> tuple[Any, ...]:
    """Nodes of one block instance (the spec says which, Span.block/instance); other nodes by
    their spec entry and the numbers in their names."""
    span = node.span
    if span is not None and span.block is not None:
        return ("block", span.path, span.block, span.instance)
    return (span.path if span else None, _numbers(node.name))


def _groups(graph: ir.Graph) -> list[list[ir.Node]]:
    """The graph's nodes (inputs aside) as runs of consecutive nodes with one group key."""
    inputs = {n.name for n in graph.inputs}
    groups: list[list[ir.Node]] = []
    for node in graph.nodes:
        if node.name in inputs:
            continue
        if groups and _group_key(groups[-1][-1]) == _group_key(node):
            groups[-1].append(node)
        else:
            groups.append([node])
    return groups


def _externals(group: Sequence[ir.Node], prev: Mapping[str, str]) -> list[str]:
    """Names outside the group that its explicitly wired nodes read, in order of first use."""
    inside = {n.name for n in group}
    names: list[str] = []
    for node in group:
        if node.inputs != (prev[node.name],):
            names.extend(i for i in node.inputs if i not in inside and i not in names)
    return names


def _signature(group: Sequence[ir.Node], graph: ir.Graph, prev: Mapping[str, str]) -> tuple[Any, ...]:
    """The structure of a run of nodes, from the IR alone: every backend computes the same."""
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
    """Two or more layers whose names carry indices written plainly (``3``, not ``03``), so
    that an f-string of the block's number (and letter) gives every instance's names back."""
    digits = NUMBER.findall(group[0].name)
    return len(group) >= 2 and bool(digits) and all(d == str(_index(d)) for n in group for d in NUMBER.findall(n.name))


def _block_instances(groups: Sequence[Sequence[ir.Node]]) -> dict[str, list[int]]:
    """Spec block -> the groups that are its instances, whatever their guards left out."""
    out: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if g[0].span is not None and g[0].span.block is not None:
            out.setdefault(g[0].span.block, []).append(i)
    return out


def _structure_instances(
    groups: Sequence[Sequence[ir.Node]], skip: Mapping[int, Any], graph: ir.Graph, prev: Mapping[str, str]
) -> list[list[int]]:
    """The groups not in ``skip`` that share one structure (name pattern, categories, wiring)."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if i not in skip and _foldable(g):
            out.setdefault(_signature(g, graph, prev), []).append(i)
    return list(out.values())


def _by_member(group: Sequence[ir.Node]) -> dict[tuple[int, ...], ir.Node]:
    """A spec block instance's nodes by their place in the block definition (Span.member)."""
    return {n.span.member: n for n in group if n.span is not None}


def _by_position(group: Sequence[ir.Node]) -> dict[tuple[int, ...], ir.Node]:
    """A run of nodes with one structure by position: each instance has every position."""
    return {(p,): n for p, n in enumerate(group)}


# -- the calls of a graph ------------------------------------------------------------------


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
    agree in shape (class, argument slots; names are checked by the caller), else every
    handler's general form, which must then agree."""
    forms = [d.calls for d in items]
    for attempt in range(2):
        shapes = [tuple(c.shape()[1:] for c in f) for f in forms]
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
        if calls:  # the outputs are read by name at the end, except a last layer's own (x)
            self.named.update(o for o in graph.outputs if o != calls[-1].name)

    def single(self, call: Call) -> Site:
        reads = None if call.name in self.implicit else tuple(literal(i) for i in call.inputs)
        return Site(call, literal(call.name), {}, reads, call.name in self.named)


# -- one block kind ------------------------------------------------------------------------

Key = tuple[int, int, int]
"""One call of a block kind: (position in the block, variant at that position, call of it)."""

Piece = str | tuple[str]
"""Part of a layer name: text, or ``(column id,)`` for a value of the block's table."""

NUMBERS, SOURCES, SCALARS, TUPLES, CHOICES, FLAGS = range(6)
"""Column groups, in the order their parameters appear in a block function's signature: a
table row then reads like the paper's (index, in, out, ..., paddings), choices and flags last."""


class _Column(NamedTuple):
    """One column of a block's table: a value per instance, which may become a parameter."""

    name: str
    """The parameter name it prefers (``index``, ``source``, ``filters``, ``expand``)."""
    values: list[Any]
    """Per instance; ``_HOLE`` where the instance lacks the layer."""
    order: int
    """Its group (NUMBERS ... FLAGS)."""


class _Variant(NamedTuple):
    """One category of a block position (relu or hard_swish): its label and calls."""

    label: str | None
    forms: dict[int, tuple[Call, ...]]
    """Instance -> its calls at this position, for the instances in this category."""


_HOLE: Any = type("Hole", (), {"__repr__": lambda self: "<no layer>"})()
"""A table cell of an instance that lacks the layer (None in its row)."""


class _KindMaker:
    """Folds the instances of one block kind into a :class:`Kind`: the one algorithm.

    Each instance maps members (its nodes' places in the block) to nodes. A member some
    instances lack runs under a flag parameter, a member whose category differs (relu or
    hard_swish) under a choice on a string parameter; what else differs between instances
    (numbers or a prefix in names, arguments, names read from outside) becomes a parameter,
    one table row per instance. Raises BackendError when the instances' names or wiring do
    not fit one function.
    """

    positions: list[list[_Variant]]
    """Per member of the block, in definition order: its variants."""
    label_names: dict[int, str]
    """Position -> the parameter name of its choice (positions with several variants)."""
    sites_of: list[dict[Key, Call]]
    """Per instance: its calls by key."""
    keys: list[Key]
    """Every key some instance has, in order: the block function's layers."""
    pieces: dict[Key, list[Piece]]
    """Key -> the layer's name as pieces."""
    flags_of: dict[int, str]
    """Position -> the column of the flag it runs under (members some instances lack)."""

    def __init__(
        self,
        folder: _Folder[Any],
        function: str,
        block: str | None,
        groups: Sequence[Sequence[ir.Node]],
        node_at: Sequence[Mapping[tuple[int, ...], ir.Node]],
    ) -> None:
        self.folder, self.function, self.block = folder, function, block
        self.what = f"block {block or function!r}"
        self.groups, self.node_at, self.count = groups, node_at, len(groups)
        if any(len(at) != len(g) for at, g in zip(node_at, groups, strict=True)):
            raise BackendError(f"{self.what}: two layers of one instance at one place")
        self.inputs = [folder.prev[g[0].name] for g in groups]
        """What each instance reads first: the node before it."""
        self.columns: dict[str, _Column] = {}
        self.param_of: dict[str, str] = {}
        """Column id -> the parameter it feeds."""

    def make(self) -> Kind:
        self.positions, self.label_names = self._positions()
        self.sites_of = [self._calls_of(k) for k in range(self.count)]
        self.keys = sorted({key for at in self.sites_of for key in at})
        self.pieces = self._numbered_names() or self._prefixed_names()
        wiring = self._wiring()
        self._choice_columns()
        self.flags_of = self._flag_columns()
        self._argument_columns()
        self.param_of, params = _parameters(self.columns, self.folder.reserved)
        built = {key: self._site(key, wiring[key]) for key in self.keys}
        body = self._body(built)
        cells = [self.columns[cid].values for cid in params.values()]
        rows = [tuple(None if c[k] is _HOLE else c[k] for c in cells) for k in range(self.count)]
        annotated = [(name, _annotation(self.columns[cid].values)) for name, cid in params.items()]
        return Kind(self.function, annotated, [built[key] for key in self.keys], self._doc(body), rows, body)

    # positions and their variants

    def _positions(self) -> tuple[list[list[_Variant]], dict[int, str]]:
        """Per member of the block, its variants (one, or one per category), and the name of
        each choice's parameter by position."""
        positions: list[list[_Variant]] = []
        label_names: dict[int, str] = {}
        for p, member in enumerate(sorted({m for at in self.node_at for m in at})):
            groups = self._categories(member)
            if len(groups) == 1:
                positions.append([_Variant(None, dict(zip(groups[0][1], groups[0][2], strict=True)))])
                continue
            label_names[p], labels = _labels([g[0] for g in groups])
            positions.append(
                [
                    _Variant(lab, dict(zip(ks, forms, strict=True)))
                    for lab, (_, ks, forms) in zip(labels, groups, strict=True)
                ]
            )
        return positions, label_names

    def _categories(self, member: tuple[int, ...]) -> list[tuple[tuple[Any, ...], list[int], list[tuple[Call, ...]]]]:
        """The instances with this member, by category (op, categorical attributes, ranks),
        each with one call form; split by padding style too when no one form covers it."""
        graph = self.folder.graph
        present = [k for k in range(self.count) if member in self.node_at[k]]
        by_category: dict[tuple[Any, ...], list[int]] = {}
        for k in present:
            by_category.setdefault(structure_key(self.node_at[k][member], graph)[:3], []).append(k)
        groups = []
        for category, ks in by_category.items():
            try:
                groups.append((category, ks, self._unify(member, ks)))
            except BackendError:  # e.g. "same" and "valid" padding no one call form covers
                styles: dict[tuple[Any, ...], list[int]] = {}
                for k in ks:
                    styles.setdefault(structure_key(self.node_at[k][member], graph), []).append(k)
                groups.extend((key, sub, self._unify(member, sub)) for key, sub in styles.items())
        return groups

    def _unify(self, member: tuple[int, ...], ks: Sequence[int]) -> list[tuple[Call, ...]]:
        items = [self.folder.by_node[self.node_at[k][member].name] for k in ks]
        return _unify(items, self.folder.graph, self.folder.backend)

    def _calls_of(self, k: int) -> dict[Key, Call]:
        """Every call of instance ``k``, in order, by key."""
        return {
            (p, v, j): call
            for p, variants in enumerate(self.positions)
            for v, variant in enumerate(variants)
            for j, call in enumerate(variant.forms.get(k, ()))
        }

    # names

    def _numbered_names(self) -> dict[Key, list[Piece]] | None:
        """Each call's name as pieces, the indices in it (``conv_dw_3_bn``: the block's number;
        ``block2b_add``: the stage's number and the block's letter) a column, when every
        instance's names carry its indices alike; else None."""
        numbers = [_numbers(at[min(at)].name) for at in self.sites_of]
        width = len(numbers[0])
        if not width or any(len(n) != width for n in numbers):
            return None
        out: dict[Key, list[Piece]] = {}
        for key in self.keys:
            names = {k: at[key].name for k, at in enumerate(self.sites_of) if key in at}
            if not all(_carries(name, numbers[k]) for k, name in names.items()):
                return None
            if len({NUMBER.sub("#", name) for name in names.values()}) != 1:
                return None
            out[key] = _numbered_pieces(next(iter(names.values())), width)
        for j in range(width):
            values = [n[j] for n in numbers]
            self.columns[f"n{j}"] = _Column("index" if isinstance(values[0], int) else "letter", values, NUMBERS)
        return out

    def _prefixed_names(self) -> dict[Key, list[Piece]]:
        """Each call's name as a per-instance prefix (a column) and a fixed rest: V2's and V3's
        ``expanded_conv_`` then ``block_1_`` or ``expanded_conv_1_``."""
        prefixes = []
        for at in self.sites_of:
            common = _common_prefix([c.name for c in at.values()])
            prefixes.append(common[: common.rfind("_") + 1])
        out: dict[Key, list[Piece]] = {}
        for key in self.keys:
            rests = {at[key].name[len(prefixes[k]) :] for k, at in enumerate(self.sites_of) if key in at}
            if len(rests) != 1:
                raise BackendError(f"{self.what}: the names of its instances differ beyond a prefix")
            out[key] = [("prefix",), rests.pop()]
        self.columns["prefix"] = _Column("prefix", prefixes, NUMBERS)
        return out

    # wiring

    def _wiring(self) -> dict[Key, tuple[tuple[Any, ...], ...] | None]:
        """Per call: None when it reads the output just before it, else where each input
        comes from: ("internal", position, j), ("input",) or ("external", k). The names read
        from outside become columns."""
        wiring: dict[Key, tuple[tuple[Any, ...], ...] | None] = {}
        for k in range(self.count):
            for key, refs in self._instance_wiring(k).items():
                if wiring.setdefault(key, refs) != refs:
                    raise BackendError(
                        f"backend {self.folder.backend!r}: instances of {self.what} are wired differently"
                    )
        return wiring

    def _instance_wiring(self, k: int) -> dict[Key, tuple[tuple[Any, ...], ...] | None]:
        at = self.sites_of[k]
        described = [(n, [c for c in at.values() if c.node == n.name]) for n in self.groups[k]]
        flags = iter(_reads_previous(described, self.inputs[k]))
        where = {c.name: key for key, c in at.items()}
        out: dict[Key, tuple[tuple[Any, ...], ...] | None] = {}
        for key in sorted(at):
            implicit = next(flags)
            inputs = enumerate(at[key].inputs)
            out[key] = None if implicit else tuple(self._source(k, key, i, name, where) for i, name in inputs)
        return out

    def _source(self, k: int, key: Key, i: int, name: str, where: Mapping[str, Key]) -> tuple[Any, ...]:
        if name in where:
            return ("internal", where[name][0], where[name][2])
        if name == self.inputs[k]:
            self._cell("src", k, name)
            return ("input",)
        self._cell(f"x{key}.{i}", k, name)
        return ("external", i)

    def _cell(self, cid: str, k: int, value: Any) -> None:
        self.columns.setdefault(cid, _Column("source", [_HOLE] * self.count, SOURCES)).values[k] = value

    # the other columns: choices, flags, arguments

    def _choice_columns(self) -> None:
        for p, variants in enumerate(self.positions):
            if p in self.label_names:
                values = [_HOLE] * self.count
                for variant in variants:
                    for k in variant.forms:
                        values[k] = variant.label
                self.columns[f"label{p}"] = _Column(self.label_names[p], values, CHOICES)

    def _flag_columns(self) -> dict[int, str]:
        """One flag column per pattern of instances that have a member some lack, named after
        the common words of its layers' names (``squeeze_excite``); position -> its column."""
        patterns: dict[tuple[bool, ...], list[int]] = {}
        for p, variants in enumerate(self.positions):
            pattern = tuple(any(k in v.forms for v in variants) for k in range(self.count))
            if not all(pattern):
                patterns.setdefault(pattern, []).append(p)
        flags_of: dict[int, str] = {}
        # words every layer's name has say nothing of one flag (Keras' block{index}{letter}_)
        shared = _common_words([_rest(self.pieces[key]) for key in self.keys])
        for pattern, ps in patterns.items():
            cid = f"has{ps[0]}"
            flags_of.update({p: cid for p in ps})
            stems = [_rest(self.pieces[(p, 0, 0)])[len(shared) :].lstrip("_") for p in ps if (p, 0, 0) in self.pieces]
            self.columns[cid] = _Column(_common_words(stems) or "has_layers", list(pattern), FLAGS)
        return flags_of

    def _argument_columns(self) -> None:
        for key in self.keys:
            calls = [at.get(key) for at in self.sites_of]
            first = next(c for c in calls if c is not None)
            for slot, value in first.slots():
                values = [dict(c.slots())[slot] if c is not None else _HOLE for c in calls]
                name = first.slot_name(slot)
                if key[0] in self.flags_of:  # an argument of a guarded layer: expand_filters, not filters_2
                    name = f"{self.columns[self.flags_of[key[0]]].name}_{name}"
                self.columns[f"{key}:{slot}"] = _Column(name, values, TUPLES if isinstance(value, tuple) else SCALARS)

    # the function's source

    def _expr(self, parts: Sequence[Piece]) -> str:
        """A name as source: an f-string of parameters, or a literal when nothing varies."""
        text, fstring = "", False
        for part in parts:
            if isinstance(part, str):
                text += part
            elif part[0] in self.param_of:
                text, fstring = text + "{" + self.param_of[part[0]] + "}", True
            else:
                text += str(_defined(self.columns[part[0]].values))
        return f'f"{text}"' if fstring else literal(text)

    def _site(self, key: Key, wiring: tuple[tuple[Any, ...], ...] | None) -> Site:
        calls = [at.get(key) for at in self.sites_of]
        first = next(c for c in calls if c is not None)
        reads = None if wiring is None else tuple(self._read(ref, key) for ref in wiring)
        overrides = {s: self.param_of[f"{key}:{s}"] for s, _ in first.slots() if f"{key}:{s}" in self.param_of}
        keep = any(c is not None and c.name in self.folder.named for c in calls)
        return Site(first, self._expr(self.pieces[key]), overrides, reads, keep)

    def _read(self, ref: tuple[Any, ...], key: Key) -> str:
        """The expression naming what a site reads: a layer of the block, its input or another."""
        if ref[0] in ("input", "external"):
            cid = "src" if ref[0] == "input" else f"x{key}.{ref[1]}"
            return self.param_of.get(cid) or literal(_defined(self.columns[cid].values))
        _, p, j = ref
        readers = set(self.positions[key[0]][key[1]].forms)
        used = [v for v, variant in enumerate(self.positions[p]) if readers & set(variant.forms)]
        if len(used) == 1:
            return self._expr(self.pieces[(p, used[0], j)])
        return self._read_choice(p, j, used)

    def _read_choice(self, p: int, j: int, used: Sequence[int]) -> str:
        """A layer whose name depends on the choice (depthwise_relu / depthwise_hard_swish):
        the common part of its names, then the choice's value."""
        label = f"label{p}"
        first = self.pieces[(p, used[0], j)]
        stems = set()
        for v in used:
            raw = "".join(x for x in self.pieces[(p, v, j)][1:] if isinstance(x, str))
            value = str(self.positions[p][v].label)
            stems.add(raw[: len(raw) - len(value)] if raw.endswith(value) else None)
        stem = stems.pop() if len(stems) == 1 else None
        if stem is None or not isinstance(first[0], tuple) or label not in self.param_of:
            raise BackendError("a block layer reads a layer whose name depends on a choice")
        return self._expr([first[0], stem, (label,)])

    def _body(self, built: Mapping[Key, Site]) -> list[Statement]:
        """The sites in order, a member some instances lack under its flag (consecutive ones
        under one ``if``), a member with categories as an if/else on the choice."""
        body: list[Statement] = []
        current: tuple[str | None, list[Statement]] | None = None
        for p, variants in enumerate(self.positions):
            stmts = self._statements(p, variants, built)
            flag = self.param_of.get(self.flags_of[p]) if p in self.flags_of else None
            if flag is None:
                body.extend(stmts)
                current = None
            elif current is not None and current[0] == flag:
                current[1].extend(stmts)
            else:
                current = (flag, list(stmts))
                body.append(Branch([current]))
        return body

    def _statements(self, p: int, variants: Sequence[_Variant], built: Mapping[Key, Site]) -> list[Statement]:
        if len(variants) == 1:
            return [built[key] for key in self.keys if key[0] == p]
        label = self.param_of.get(f"label{p}")
        if label is None:
            raise BackendError(f"{self.what}: a choice without a parameter")
        # if/else on the spec's own value ("relu", "hard_swish"), each branch the natural
        # constructor call: what one writes by hand, and it holds for any layer whose
        # category varies (its calls, arguments and name may differ per branch), where a
        # class-lookup table would fit only one-call layers with the same arguments
        cases: list[tuple[str | None, list[Statement]]] = []
        for v, variant in enumerate(variants):
            cond = None if v == len(variants) - 1 else f"{label} == {literal(variant.label)}"
            cases.append((cond, [built[key] for key in self.keys if key[:2] == (p, v)]))
        return [Branch(cases)]

    def _doc(self, body: Sequence[Statement]) -> str:
        if self.block is None:
            pattern = ", ".join(NUMBER.sub("#", n.name) for n in self.groups[0])
            text = f"One repeated block of {len(self.groups[0])} layers: {pattern} (# = the block's number)."
        else:
            letters = {cid: self.param_of.get(cid, "") for cid, c in self.columns.items() if c.name == "letter"}
            layers = list(dict.fromkeys(_pattern(self.pieces[key], letters) for key in self.keys))
            numbered = " (# = the block's number)" if any("#" in x for x in layers) else ""
            listed = ", ".join(layers) if len(layers) <= 8 else f"{layers[0]}, ..., {layers[-1]}"
            guarded = (
                "" if all(isinstance(s, Site) for s in body) else " A layer some instances lack runs under its flag."
            )
            text = f"One {self.block!r} block of the spec, {len(layers)} layers: {listed}{numbered}.{guarded}"
        return textwrap.fill(text, width=96, subsequent_indent="    ")


def _carries(name: str, numbers: Sequence[int | str]) -> bool:
    """Whether ``name``'s first numbers are ``numbers``, written plainly."""
    digits = NUMBER.findall(name)
    return len(digits) >= len(numbers) and all(digits[j] == str(n) for j, n in enumerate(numbers))


def _numbered_pieces(name: str, width: int) -> list[Piece]:
    """``conv_dw_3_bn`` -> ["conv_dw_", ("n0",), "_bn"]: its first ``width`` numbers columns."""
    split, digits = NUMBER.split(name), NUMBER.findall(name)
    parts: list[Piece] = [split[0]]
    for j, d in enumerate(digits):
        parts += [(f"n{j}",) if j < width else d, split[j + 1]]
    return parts


def _pattern(parts: Sequence[Piece], letters: Mapping[str, str]) -> str:
    """A name for the docstring: ``conv_dw_#_bn``, ``{prefix}expand``, ``block#{letter}_add``
    (``letters``: a letter column -> its parameter, "" when constant)."""

    def piece(x: Piece) -> str:
        if isinstance(x, str):
            return x
        if x[0] in letters:
            return "{" + letters[x[0]] + "}" if letters[x[0]] else "?"
        return "#" if x[0].startswith("n") else "{" + x[0] + "}"

    return "".join(piece(x) for x in parts)


def _rest(parts: Sequence[Piece]) -> str:
    return "".join(p for p in parts if isinstance(p, str)).strip("_") or "layer"


def _defined(values: Sequence[Any]) -> Any:
    return next(v for v in values if v is not _HOLE)


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _common_words(texts: Sequence[str]) -> str:
    """The leading ``_``-separated words every text shares: a flag's name from its layers'."""
    if not texts:
        return ""
    words = [re.sub(r"\W", "_", t).split("_") for t in texts]
    out = []
    for column in zip(*words, strict=False):
        if len(set(column)) != 1 or not column[0]:
            break
        out.append(column[0])
    name = "_".join(out).lower()
    return name if name.isidentifier() else ""


def _labels(categories: Sequence[tuple[Any, ...]]) -> tuple[str, list[str]]:
    """The parameter name and values choosing between a layer's categories: the attribute that
    differs (an activation's kind: "relu", "hard_swish"), else the padding style."""
    attrs = [dict(c[1]) for c in categories]
    differ = [a for a in attrs[0] if len({repr(x.get(a)) for x in attrs}) > 1]
    if differ:
        labels = ["_".join(str(x.get(a)) for a in differ) for x in attrs]
        op = categories[0][0]
        name = op if differ == ["kind"] else "_".join(differ)
    else:
        labels, name = [str(c[3]) if len(c) > 3 else "" for c in categories], "padding"
    if len(set(labels)) != len(labels):
        labels = [f"{name}_{k}" for k in range(len(labels))]
    return name, labels


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _parameters(columns: Mapping[str, _Column], reserved: frozenset[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Column id -> parameter, and parameter -> its column, in signature order. A column
    constant where its layer exists is no parameter; a column that agrees with an earlier
    parameter wherever it has a value shares it (the expansion conv's filters are the
    depthwise conv's channels)."""
    taken: set[str] = set()
    param_of: dict[str, str] = {}
    params: dict[str, str] = {}
    varying_numbers = sum(1 for c in columns.values() if c.name == "index" and len(set(c.values)) > 1)
    for cid, (preferred, values, order) in sorted(
        columns.items(), key=lambda c: (c[1].order, c[1].values.count(_HOLE))
    ):
        defined = [(k, v) for k, v in enumerate(values) if v is not _HOLE]
        if len({(type(v), repr(v)) for _, v in defined}) <= 1:
            continue
        for name, other in params.items():
            theirs = columns[other]
            if (theirs.order >= CHOICES) == (order >= CHOICES) and all(
                theirs.values[k] is not _HOLE and _same(theirs.values[k], v) for k, v in defined
            ):
                param_of[cid] = name
                break
        else:
            if preferred == "index" and varying_numbers > 1:
                preferred = f"index_{cid[1:]}"
            name = unique(preferred, taken, reserved)
            param_of[cid] = name
            params[name] = cid
    return param_of, params


def _annotation(values: Sequence[Any]) -> str:
    defined = [v for v in values if v is not _HOLE]
    base = type_annotation(defined)
    return f"{base} | None" if len(defined) < len(values) else base


# -- the whole graph -----------------------------------------------------------------------


def fold(graph: ir.Graph, handlers: Mapping[str, H], backend: str, reserved: frozenset[str] = RESERVED) -> Structure:
    """The graph's calls as single layers and tables of repeated blocks.

    Nodes group into block instances: the nodes one instance of a spec block made (Span.block
    and Span.instance; a nested block's layers belong to the instance that called it), else
    consecutive nodes of one spec entry whose names carry the same numbers. Every instance of
    one spec block is one kind (guarded layers under flags, categories under a choice); when
    they do not fit one function, and for layers outside blocks, instances with one structure
    (name pattern, :func:`structure_key` of each node, wiring) form a kind. Both are folded by
    one algorithm (:class:`_KindMaker`). Which kinds and rows there are depends on the IR
    alone; only the calls depend on the backend.
    """
    folder = _Folder(graph, handlers, backend, reserved)
    groups = _groups(graph)
    kinds, kind_of = _kinds(folder, groups)
    sections = _sections(folder, groups, kind_of)
    inputs = {n.name for n in graph.inputs}
    input_calls = [c for d in folder.described if d.node.name in inputs for c in d.calls]
    return Structure(input_calls, kinds, sections, _is_chain(graph))


def _kinds(folder: _Folder[Any], groups: Sequence[Sequence[ir.Node]]) -> tuple[list[Kind], dict[int, tuple[Kind, int]]]:
    """The block kinds in order of first instance, and group -> (its kind, its row)."""
    kinds: list[tuple[int, Kind]] = []
    kind_of: dict[int, tuple[Kind, int]] = {}
    taken: set[str] = set()

    def add(idxs: Sequence[int], kind: Kind) -> None:
        kinds.append((idxs[0], kind))
        kind_of.update({i: (kind, row) for row, i in enumerate(idxs)})

    # A kind is a spec block: its instances, whatever their guards left out (Span.block) ...
    for block, idxs in _block_instances(groups).items():
        if len(idxs) < 2:
            continue
        name = unique(f"{block}_block", taken, folder.reserved)
        instances = [groups[i] for i in idxs]
        try:
            add(idxs, _KindMaker(folder, name, block, instances, [_by_member(g) for g in instances]).make())
        except BackendError:
            taken.discard(name)  # not one function: its instances fold by structure below
    # ... else instances with one structure (name pattern, categories, wiring)
    for idxs in _structure_instances(groups, kind_of, folder.graph, folder.prev):
        if len(idxs) < 2:
            continue
        stem = re.sub(r"_+", "_", NUMBER.sub("", groups[idxs[0]][0].name)).strip("_") or "layer"
        name = unique(f"{stem}_block", taken, folder.reserved)
        instances = [groups[i] for i in idxs]
        add(idxs, _KindMaker(folder, name, None, instances, [_by_position(g) for g in instances]).make())
    return [k for _, k in sorted(kinds, key=lambda ik: ik[0])], kind_of


def _sections(
    folder: _Folder[Any], groups: Sequence[Sequence[ir.Node]], kind_of: Mapping[int, tuple[Kind, int]]
) -> list[Section]:
    """The model in order: runs of single layers, and tables of block instances."""
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
    return sections


def _is_chain(graph: ir.Graph) -> bool:
    """Every node reads the one before it and the last is the output."""
    inputs = {n.name for n in graph.inputs}
    order = graph.nodes
    return (
        len(inputs) == 1
        and order[0].name in inputs
        and all(n.inputs == (order[i].name,) for i, n in enumerate(order[1:]))
        and graph.outputs == (order[-1].name,)
    )
