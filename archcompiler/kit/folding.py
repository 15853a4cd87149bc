"""Block folding for the emitters (framework-free): the graph's calls as single layers and
tables of repeated blocks, one function per block kind.

Folding decides blocks and block kinds on IR information alone (names, ops, categorical
attributes, wiring), so every backend emits the same block functions and the same tables for
one spec; a backend renders single calls (:class:`Site`) and owns its templates, nothing more
(docs/DESIGN.md, "codegen/").
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from archcompiler import ir
from archcompiler.kit.calls import NUMBER, Call, Described, H, Slot, describe_graph, padding_style
from archcompiler.kit.pysource import RESERVED, literal, type_annotation, unique
from archcompiler.kit.registry import BackendError


def name_expr(name: str, number_params: Mapping[int, str], quote: Callable[[str], str] = literal) -> str:
    """``conv_dw_3_bn`` with its number 0 a parameter -> ``f"conv_dw_{index}_bn"`` (names are
    validated identifiers, so nothing needs escaping); a fixed name -> ``quote(name)``."""
    pieces, digits = NUMBER.split(name), NUMBER.findall(name)
    out = pieces[0]
    for j, d in enumerate(digits):
        out += ("{" + number_params[j] + "}" if j in number_params else d) + pieces[j + 1]
    return f'f"{out}"' if number_params else quote(name)


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


def _numbers(name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in NUMBER.findall(name))


def _group_key(node: ir.Node) -> tuple[Any, ...]:
    """Nodes of one block instance (the spec says which, Span.block/instance); other nodes by
    their spec entry and the numbers in their names."""
    span = node.span
    if span is not None and span.block is not None:
        return ("block", span.path, span.block, span.instance)
    return (span.path if span else None, _numbers(node.name))


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


def _unify(items: Sequence[Described[H]], graph: ir.Graph, backend: str, names: bool = True) -> list[tuple[Call, ...]]:
    """One call form for a position of a block kind: the natural calls when all instances
    agree in shape, else every handler's general form (which must then agree). ``names``:
    the name patterns must agree too (else the caller names the calls itself)."""
    forms = [d.calls for d in items]
    for attempt in range(2):
        shapes = [tuple(c.shape()[0 if names else 1 :] for c in f) for f in forms]
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

    def block_kind(self, function: str, block: str, instances: Sequence[Sequence[ir.Node]]) -> Kind:
        """One kind for every instance of one spec block (Span.block), however its ``when:``
        guards and categorical parameters made them differ: a layer some instances lack runs
        under a flag parameter, a layer whose category differs (relu or hard_swish) under a
        choice on a string parameter, and what else differs is a parameter as in :meth:`kind`.
        Raises BackendError when the instances' names or wiring do not fit one function."""
        count = len(instances)
        node_at = [{n.span.member: n for n in g if n.span is not None} for g in instances]
        members = sorted({m for at in node_at for m in at})
        if any(len(at) != len(g) for at, g in zip(node_at, instances, strict=True)):
            raise BackendError(f"block {block!r}: two layers of one instance at one place")
        # positions[p] = (member, [(label, {instance: calls})]): one entry per variant
        positions: list[list[tuple[str | None, dict[int, tuple[Call, ...]]]]] = []
        label_names: dict[int, str] = {}
        for p, m in enumerate(members):
            present = [k for k in range(count) if m in node_at[k]]
            by_category: dict[tuple[Any, ...], list[int]] = {}
            for k in present:
                key = structure_key(node_at[k][m], self.graph)
                by_category.setdefault(key[:3], []).append(k)
            groups: list[tuple[tuple[Any, ...], list[int], list[tuple[Call, ...]]]] = []
            for cat, ks in by_category.items():
                try:
                    items = [self.by_node[node_at[k][m].name] for k in ks]
                    groups.append((cat, ks, _unify(items, self.graph, self.backend, names=False)))
                except BackendError:  # e.g. "same" and "valid" padding no one call form covers
                    styles: dict[Any, list[int]] = {}
                    for k in ks:
                        styles.setdefault(structure_key(node_at[k][m], self.graph), []).append(k)
                    for key, sub in styles.items():
                        items = [self.by_node[node_at[k][m].name] for k in sub]
                        groups.append((key, sub, _unify(items, self.graph, self.backend, names=False)))
            if len(groups) == 1:
                positions.append([(None, dict(zip(groups[0][1], groups[0][2], strict=True)))])
                continue
            name, labels = _labels([g[0] for g in groups])
            label_names[p] = name
            positions.append(
                [(lab, dict(zip(ks, forms, strict=True))) for lab, (_, ks, forms) in zip(labels, groups, strict=True)]
            )

        # every call of an instance, in order: (position, variant, j) -> call
        sites_of: list[dict[tuple[int, int, int], Call]] = []
        for k in range(count):
            at: dict[tuple[int, int, int], Call] = {}
            for p, variants in enumerate(positions):
                for v, (_, forms) in enumerate(variants):
                    for j, call in enumerate(forms.get(k, ())):
                        at[(p, v, j)] = call
            sites_of.append(at)
        keys = list(dict.fromkeys(key for at in sites_of for key in at))
        keys.sort()

        columns: dict[str, tuple[str, list[Any], int]] = {}  # id -> (preferred name, values, order)
        pieces = self._names(block, keys, sites_of, columns)
        inputs = [self.prev[g[0].name] for g in instances]
        wiring: dict[tuple[int, int, int], Any] = {}
        for k, g in enumerate(instances):
            at = sites_of[k]
            described = [(n, [c for key, c in at.items() if c.node == n.name]) for n in g]
            flags = iter(_reads_previous(described, inputs[k]))
            where = {c.name: key for key, c in at.items()}
            for key in sorted(at):
                call = at[key]
                refs: Any = None
                if not next(flags):
                    refs = []
                    for i, name in enumerate(call.inputs):
                        if name in where:
                            refs.append(("internal", where[name][0], where[name][2]))
                        elif name == inputs[k]:
                            refs.append(("input",))
                            columns.setdefault("src", ("source", [_HOLE] * count, 1))[1][k] = name
                        else:
                            refs.append(("external", i))
                            cid = f"x{key}.{i}"
                            columns.setdefault(cid, ("source", [_HOLE] * count, 1))[1][k] = name
                    refs = tuple(refs)
                if wiring.setdefault(key, refs) != refs:
                    raise BackendError(f"backend {self.backend!r}: instances of block {block!r} are wired differently")
        for p, variants in enumerate(positions):
            if p in label_names:
                values = [_HOLE] * count
                for lab, forms in variants:
                    for k in forms:
                        values[k] = lab
                columns[f"label{p}"] = (label_names[p], values, 4)
        flags_of: dict[int, str] = {}
        patterns: dict[tuple[bool, ...], list[int]] = {}
        for p, variants in enumerate(positions):
            pattern = tuple(any(k in forms for _, forms in variants) for k in range(count))
            if not all(pattern):
                patterns.setdefault(pattern, []).append(p)
        for pattern, ps in patterns.items():
            cid = f"has{ps[0]}"
            flags_of.update({p: cid for p in ps})
            stems = [self._rest(pieces[(p, 0, 0)]) for p in ps if (p, 0, 0) in pieces]
            columns[cid] = (_common_words(stems) or "has_layers", list(pattern), 5)
        for key in keys:
            calls = [sites_of[k].get(key) for k in range(count)]
            first = next(c for c in calls if c is not None)
            for slot, value in first.slots():
                order = 3 if isinstance(value, tuple) else 2
                values = [dict(c.slots())[slot] if c is not None else _HOLE for c in calls]
                name = first.slot_name(slot)
                if key[0] in flags_of:  # an argument of a guarded layer: expand_filters, not filters_2
                    name = f"{columns[flags_of[key[0]]][0]}_{name}"
                columns[f"{key}:{slot}"] = (name, values, order)
        param_of, params = _parameters(columns, self.reserved)

        def expr(parts: Sequence[str | tuple[str]]) -> str:
            text, fstring = "", False
            for part in parts:
                if isinstance(part, tuple):
                    cid = part[0]
                    if cid in param_of:
                        text, fstring = text + "{" + param_of[cid] + "}", True
                    else:
                        text += str(next(v for v in columns[cid][1] if v is not _HOLE))
                else:
                    text += part
            return f'f"{text}"' if fstring else literal(text)

        built: dict[tuple[int, int, int], Site] = {}
        for key in keys:
            calls = [sites_of[k].get(key) for k in range(count)]
            first = next(c for c in calls if c is not None)
            reads = None
            if wiring[key] is not None:
                reads = tuple(
                    self._read(ref, key, pieces, positions, label_names, param_of, columns, expr) for ref in wiring[key]
                )
            overrides = {slot: param_of[f"{key}:{slot}"] for slot, _ in first.slots() if f"{key}:{slot}" in param_of}
            keep = any(c is not None and c.name in self.named for c in calls)
            built[key] = Site(first, expr(pieces[key]), overrides, reads, keep)

        body: list[Statement] = []
        current: tuple[str | None, list[Statement]] | None = None
        for p, variants in enumerate(positions):
            if len(variants) == 1:
                stmts: list[Statement] = [built[key] for key in keys if key[0] == p]
            else:
                label = param_of.get(f"label{p}")
                if label is None:
                    raise BackendError(f"block {block!r}: a choice without a parameter")
                # if/else on the spec's own value ("relu", "hard_swish"), each branch the natural
                # constructor call: what one writes by hand, and it holds for any layer whose
                # category varies (its calls, arguments and name may differ per branch), where a
                # class-lookup table would fit only one-call layers with the same arguments
                cases: list[tuple[str | None, list[Statement]]] = []
                for v, (lab, _) in enumerate(variants):
                    cond = None if v == len(variants) - 1 else f"{label} == {literal(lab)}"
                    cases.append((cond, [built[key] for key in keys if key[:2] == (p, v)]))
                stmts = [Branch(cases)]
            flag = param_of.get(flags_of[p]) if p in flags_of else None
            if flag is None:
                body.extend(stmts)
                current = None
            elif current is not None and current[0] == flag:
                current[1].extend(stmts)
            else:
                current = (flag, list(stmts))
                body.append(Branch([current]))

        def pattern(parts: Sequence[str | tuple[str]]) -> str:
            return "".join(
                x if isinstance(x, str) else "#" if x[0].startswith("n") else "{" + x[0] + "}" for x in parts
            )

        layers = list(dict.fromkeys(pattern(pieces[key]) for key in keys))
        numbered = " (# = the block's number)" if any("#" in x for x in layers) else ""
        listed = ", ".join(layers) if len(layers) <= 8 else f"{layers[0]}, ..., {layers[-1]}"
        guarded = "" if all(isinstance(s, Site) for s in body) else " A layer some instances lack runs under its flag."
        doc = textwrap.fill(
            f"One {block!r} block of the spec, {len(layers)} layers: {listed}{numbered}.{guarded}",
            width=96,
            subsequent_indent="    ",
        )
        cells = [columns[cid][1] for cid in params.values()]
        rows = [tuple(None if c[k] is _HOLE else c[k] for c in cells) for k in range(count)]
        annotated = [(name, _annotation(columns[cid][1])) for name, cid in params.items()]
        return Kind(function, annotated, [built[key] for key in keys], doc, rows, body)

    @staticmethod
    def _rest(parts: Sequence[str | tuple[str]]) -> str:
        return "".join(p for p in parts if isinstance(p, str)).strip("_") or "layer"

    def _names(
        self,
        block: str,
        keys: Sequence[tuple[int, int, int]],
        sites_of: Sequence[Mapping[tuple[int, int, int], Call]],
        columns: dict[str, tuple[str, list[Any], int]],
    ) -> dict[tuple[int, int, int], list[str | tuple[str]]]:
        """Each call's name as pieces (text, or (column id,) for a parameter). The numbers in
        the names (``conv_dw_3_bn``: the block's number) when every instance's names carry
        them alike, else a name prefix per instance (``expanded_conv_3_``; V3's first block,
        ``expanded_conv_``, has no number)."""
        count = len(sites_of)
        firsts = [at[min(at)].name for at in sites_of]
        numbers = [_numbers(n) for n in firsts]
        out: dict[tuple[int, int, int], list[str | tuple[str]]] = {}
        if numbers[0] and all(len(n) == len(numbers[0]) for n in numbers):
            width = len(numbers[0])
            ok = True
            for key in keys:
                names = {k: sites_of[k][key].name for k in range(count) if key in sites_of[k]}
                templates = set()
                for k, name in names.items():
                    digits = NUMBER.findall(name)
                    if len(digits) < width or any(digits[j] != str(numbers[k][j]) for j in range(width)):
                        ok = False
                        break
                    templates.add(NUMBER.sub("#", name))
                if not ok or len(templates) != 1:
                    ok = False
                    break
                name = next(iter(names.values()))
                split, digits = NUMBER.split(name), NUMBER.findall(name)
                parts: list[str | tuple[str]] = [split[0]]
                for j, d in enumerate(digits):
                    parts += [(f"n{j}",) if j < width else d, split[j + 1]]
                out[key] = parts
            if ok:
                for j in range(width):
                    columns[f"n{j}"] = ("index", [n[j] for n in numbers], 0)
                return out
        prefixes = []
        for at in sites_of:
            common = _common_prefix([c.name for c in at.values()])
            prefixes.append(common[: common.rfind("_") + 1])
        for key in keys:
            rests = {sites_of[k][key].name[len(prefixes[k]) :] for k in range(count) if key in sites_of[k]}
            if len(rests) != 1:
                raise BackendError(f"block {block!r}: the names of its instances differ beyond a prefix")
            out[key] = [("prefix",), rests.pop()]
        columns["prefix"] = ("prefix", prefixes, 0)
        return out

    def _read(
        self,
        ref: tuple[Any, ...],
        key: tuple[int, int, int],
        pieces: Mapping[tuple[int, int, int], list[str | tuple[str]]],
        positions: Sequence[Sequence[tuple[str | None, Mapping[int, tuple[Call, ...]]]]],
        label_names: Mapping[int, str],
        param_of: Mapping[str, str],
        columns: Mapping[str, tuple[str, list[Any], int]],
        expr: Callable[[Sequence[str | tuple[str]]], str],
    ) -> str:
        """The expression naming what a site reads: a layer of the block, its input or another."""
        if ref[0] == "input":
            return param_of.get("src") or literal(next(v for v in columns["src"][1] if v is not _HOLE))
        if ref[0] == "external":
            cid = f"x{key}.{ref[1]}"
            return param_of.get(cid) or literal(next(v for v in columns[cid][1] if v is not _HOLE))
        _, p, j = ref
        variants = positions[p]
        readers = set(positions[key[0]][key[1]][1])
        used = [v for v, (_, forms) in enumerate(variants) if readers & set(forms)]
        if len(used) == 1:
            return expr(pieces[(p, used[0], j)])
        # a layer whose name depends on the choice (depthwise_relu / depthwise_hard_swish): the
        # common part of its names, then the choice's value
        label = f"label{p}"
        first = pieces[(p, used[0], j)]
        stems = set()
        for v in used:
            raw, value = "".join(x for x in pieces[(p, v, j)][1:] if isinstance(x, str)), str(variants[v][0])
            stems.add(raw[: len(raw) - len(value)] if raw.endswith(value) else None)
        stem = stems.pop() if len(stems) == 1 else None
        if stem is None or not isinstance(first[0], tuple) or label not in param_of:
            raise BackendError("a block layer reads a layer whose name depends on a choice")
        return expr([first[0], stem, (label,)])

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


_HOLE: Any = type("Hole", (), {"__repr__": lambda self: "<no layer>"})()
"""A table cell of an instance that lacks the layer (None in its row)."""


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


def _parameters(
    columns: Mapping[str, tuple[str, list[Any], int]], reserved: frozenset[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Column id -> parameter, and parameter -> its column, in signature order. A column
    constant where its layer exists is no parameter; a column that agrees with an earlier
    parameter wherever it has a value shares it (the expansion conv's filters are the
    depthwise conv's channels)."""
    taken: set[str] = set()
    param_of: dict[str, str] = {}
    params: dict[str, str] = {}
    varying_numbers = sum(1 for cid, (_, v, _) in columns.items() if cid.startswith("n") and len(set(v)) > 1)
    for cid, (preferred, values, order) in sorted(columns.items(), key=lambda c: (c[1][2], c[1][1].count(_HOLE))):
        defined = [(k, v) for k, v in enumerate(values) if v is not _HOLE]
        if len({(type(v), repr(v)) for _, v in defined}) <= 1:
            continue
        for name, other in params.items():
            theirs = columns[other]
            if (theirs[2] >= 4) == (order >= 4) and all(
                theirs[1][k] is not _HOLE and _same(theirs[1][k], v) for k, v in defined
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


def fold(graph: ir.Graph, handlers: Mapping[str, H], backend: str, reserved: frozenset[str] = RESERVED) -> Structure:
    """The graph's calls as single layers and tables of repeated blocks.

    Nodes group into block instances: the nodes one instance of a spec block made (Span.block
    and Span.instance; a nested block's layers belong to the instance that called it), else
    consecutive nodes of one spec entry whose names carry the same numbers. Every instance of
    one spec block is one kind, written as one function (:meth:`_Folder.block_kind`: guarded
    layers under flags, categories under a choice); when they do not fit one function, and for
    layers outside blocks, instances with one signature (name pattern, :func:`structure_key`
    of each node, wiring) form a kind. What differs between instances (numbers or a prefix in
    names, arguments, names read from outside, flags) becomes parameters, one table row per
    instance. Which kinds and rows there are depends on the IR alone; only the calls depend on
    the backend.
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
    kinds: list[tuple[int, Kind]] = []
    kind_of: dict[int, tuple[Kind, int]] = {}
    taken: set[str] = set()
    # A kind is a spec block: its instances, whatever their guards left out (Span.block) ...
    by_block: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if g[0].span is not None and g[0].span.block is not None:
            by_block.setdefault(g[0].span.block, []).append(i)
    for block, idxs in by_block.items():
        if len(idxs) < 2:
            continue
        name = unique(f"{block}_block", taken, reserved)
        try:
            kind = folder.block_kind(name, block, [groups[i] for i in idxs])
        except BackendError:
            taken.discard(name)  # not one function: its instances fold by structure below
            continue
        kinds.append((idxs[0], kind))
        kind_of.update({i: (kind, row) for row, i in enumerate(idxs)})
    # ... else instances with one structure (name pattern, categories, wiring)
    by_sig: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if i not in kind_of and _foldable(g):
            by_sig.setdefault(_signature(g, graph, folder.prev), []).append(i)
    for idxs in by_sig.values():
        if len(idxs) < 2:
            continue
        stem = re.sub(r"_+", "_", NUMBER.sub("", groups[idxs[0]][0].name)).strip("_") or "layer"
        kind = folder.kind(unique(f"{stem}_block", taken, reserved), [groups[i] for i in idxs])
        kinds.append((idxs[0], kind))
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
        and graph.outputs == (order[-1].name,)
    )
    input_calls = [c for d in folder.described if d.node.name in inputs for c in d.calls]
    return Structure(input_calls, [k for _, k in sorted(kinds, key=lambda ik: ik[0])], sections, chain)
