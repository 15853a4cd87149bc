"""Lowering, stage 2: flat layers (:mod:`.expand`) -> the frozen graph IR, via the op registry.

In order, each layer's inputs are resolved, its op definition turns the spec fields into
attributes (:meth:`~archcompiler.ops.Node.attributes_from_spec`: defaults, the width rule,
explicit padding) and infers the output shape. Errors carry the span of the spec entry that
caused them (the layer, or for a layer inside a block the call that instantiated it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from archcompiler import ir
from archcompiler.language.fields import LayerBase
from archcompiler.language.limits import MAX_ACTIVATIONS, MAX_GRAPH_DEPTH, MAX_PARAMETERS
from archcompiler.language.loading import LoadedSpec
from archcompiler.language.source import did_you_mean
from archcompiler.lowering.expand import Entry, context
from archcompiler.ops import NODE_FOR_LAYER, LowerContext, OpError, arity_error

__all__ = ["context", "infer", "live"]


def infer(loaded: LoadedSpec, entries: list[Entry], width: float, size: tuple[int, int]) -> ir.Graph:
    """The IR graph of ``entries`` at width multiplier ``width`` and input ``size`` (H, W)."""
    spec = loaded.spec
    graph = _Growing(entries, context(loaded, width), _input_node(loaded, size))
    for k, entry in enumerate(entries):
        graph.add(k, entry)
    output = graph.read(spec.output) if spec.output else graph.nodes[-1].name
    if output not in graph.by_name:
        raise loaded.source.error(("output",), f"unknown layer {output!r}{did_you_mean(output, list(graph.by_name))}")
    r = spec.rounding
    return ir.Graph(
        name=spec.name,
        nodes=live(graph.nodes, (output,)),
        outputs=(output,),
        width=width,
        resolution=size,
        description=spec.description,
        source=loaded.file,
        rounding=r.mode + (f"({r.divisor})" if r.mode == "make_divisible" else ""),
        checkpoints=dict(spec.checkpoints),
    )


def live(nodes: Sequence[ir.Node], outputs: Sequence[str]) -> tuple[ir.Node, ...]:
    """The nodes some of ``outputs`` depend on, in order: layers after an earlier ``output:``
    (or after the last feature map asked for, or a branch nothing reads) are left out, so
    costs, builds and saved files have no dead layers and every backend builds the same graph.

    ``nodes`` are in topological order (as lowering makes them and a Graph keeps them), so one
    backward pass finds them: a node is needed when a needed node after it reads it."""
    needed = set(outputs)
    kept = []
    for n in reversed(nodes):
        if n.name in needed:
            kept.append(n)
            needed.update(n.inputs)
    kept.reverse()
    return tuple(kept)


def _input_node(loaded: LoadedSpec, size: tuple[int, int]) -> ir.Input:
    spec = loaded.spec
    line, col = loaded.source.locate(("input",))
    return ir.Input(
        name=spec.input.name,
        inputs=(),
        shape=(size[0], size[1], spec.input.channels),
        span=ir.Span(loaded.file, line or 1, col or 1, "input"),
    )


@dataclass
class _Growing:
    """The graph made so far, node by node, and the running totals its limits watch."""

    entries: list[Entry]
    ctx: LowerContext
    first: ir.Input
    nodes: list[ir.Node] = field(default_factory=list)
    by_name: dict[str, ir.Node] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    """A layer whose ``when:`` is false does not exist: a reference to it reads what would
    have flowed through it, its input (a layer of several inputs: the layer before it, so the
    chain and a block's input survive a dropped residual)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Absent layers no one value flows through (several inputs, or an input that is not an
    earlier layer) -> why: an ``inputs:`` that names one is an error (reading it as a block's
    ``_input``, the chain's value, is not)."""
    previous: str = ""
    parameters: int = 0
    activations: int = 0
    depth: dict[str, int] = field(default_factory=dict)
    """Layers on the longest path from the input (ir.Graph.depth)."""

    def __post_init__(self) -> None:
        self.nodes.append(self.first)
        self.by_name[self.first.name] = self.first
        self.depth[self.first.name] = 0
        self.previous = self.first.name

    def read(self, name: str) -> str:
        """The layer a reference to ``name`` reads (the one before it when it is absent)."""
        return self.absent.get(name, name)

    def named(self, name: str, entry: Entry) -> str:
        """What ``entry`` reads when its ``inputs:`` names ``name``."""
        if name in self.unreadable and name != entry.block_input:
            raise entry.error(
                f"reads {name!r}, which its when: leaves out here; {self.unreadable[name]}, so no one value"
                " flows through it (guard this layer alike, or name what it reads)"
            )
        return self.read(name)

    def add(self, k: int, entry: Entry) -> None:
        """The node of ``entries[k]``, unless its ``when:`` leaves it out."""
        default = self.read(entry.follows) if entry.follows else self.previous
        if entry.skipped:
            self._skip(entry, default)
            return
        names = (default,) if entry.inputs is None else tuple(self.named(n, entry) for n in entry.inputs)
        self._check_reads(k, entry, names)
        if not names:  # 'inputs: []': every op reads at least one input
            raise entry.error("reads no input ('inputs' is empty)")
        shapes = tuple(self.by_name[n].shape for n in names)
        layer = self._layer(entry, shapes)
        if layer is None:
            self._leave_out(entry.name, names, default)
            return
        node = _node(entry, layer, names, shapes, self.ctx)
        self._count(entry, node, shapes)
        self.nodes.append(node)
        self.by_name[node.name] = node
        self.absent.pop(node.name, None)  # an alternative of the same name was left out before it
        self.unreadable.pop(node.name, None)
        self.previous = node.name

    def _skip(self, entry: Entry, default: str) -> None:
        """A layer its ``when:`` left out at expansion, its inputs unchecked: left out alike
        (an input that is no earlier layer only makes it unreadable); nothing when a layer of
        its name exists (an alternative to it)."""
        if entry.name in self.by_name:
            return
        names = (default,) if entry.inputs is None else tuple(self.read(n) for n in entry.inputs)
        unknown = [n for n in names if n not in self.by_name]
        self._leave_out(entry.name, names, default, f"its input {unknown[0]!r} is no earlier layer" if unknown else "")

    def _leave_out(self, name: str, names: tuple[str, ...], default: str, problem: str = "") -> None:
        """``name`` does not exist: reading it reads its one input; else (several inputs, or
        ``problem``) the chain goes on from the layer before it, and naming it is an error."""
        if len(names) == 1 and not problem:
            self.absent[name] = self.previous = names[0]
            return
        self.absent[name] = self.previous = default
        self.unreadable[name] = problem or f"it reads {len(names)} inputs"

    def _check_reads(self, k: int, entry: Entry, names: tuple[str, ...]) -> None:
        """Every layer ``entry`` reads comes before it."""
        for ref in names:
            if ref in self.by_name:
                continue
            if ref == entry.name:
                raise entry.error(f"reads itself ({ref!r}): a cycle")
            later = {e.name for e in self.entries[k + 1 :]}
            if ref in later:
                raise entry.error(f"reads {ref!r}, which comes later: a cycle (a layer may only read earlier layers)")
            raise entry.error(f"reads unknown layer {ref!r}{did_you_mean(ref, list(self.by_name))}")

    def _layer(self, entry: Entry, shapes: tuple[ir.Shape, ...]) -> LayerBase | None:
        """The entry's op layer; expressions that read the input shape (``$in``, ``$block_in``)
        evaluate here. None when its ``when:`` is false."""
        if entry.pending is None:
            return entry.layer
        block = self.by_name.get(self.read(entry.block_input)) if entry.block_input else None
        return entry.resolve(shapes[0], block.shape if block is not None else None)

    def _count(self, entry: Entry, node: ir.Node, shapes: tuple[ir.Shape, ...]) -> None:
        """Add ``node`` to the totals and depth the limits watch (language.limits)."""
        c = node.cost(shapes)
        self.parameters += c.weights + c.bias + c.bn_affine + c.bn_stats
        self.activations += node.numel
        if self.parameters > MAX_PARAMETERS or self.activations > MAX_ACTIVATIONS:
            what = "weights" if self.parameters > MAX_PARAMETERS else "activation values per example"
            limit = MAX_PARAMETERS if self.parameters > MAX_PARAMETERS else MAX_ACTIVATIONS
            raise entry.error(f"the network reaches more than {limit:,} {what} here (a limit: check sizes and filters)")
        level = self.depth[node.name] = 1 + max(self.depth[n] for n in node.inputs)
        if level > MAX_GRAPH_DEPTH:
            raise entry.error(
                f"the graph is more than {MAX_GRAPH_DEPTH:,} layers deep here (the longest path from the input;"
                " a limit: frameworks walk a graph recursively)"
            )


def _node(
    entry: Entry, layer: LayerBase, names: tuple[str, ...], shapes: tuple[ir.Shape, ...], ctx: LowerContext
) -> ir.Node:
    """One IR node from its op definition: attributes from the spec, then the shape rule."""
    node_type = NODE_FOR_LAYER[type(layer)]
    problem = arity_error(layer.op, node_type.arity, len(names))  # type: ignore[attr-defined]
    if problem:
        raise entry.error(problem)
    try:
        attributes = node_type.attributes_from_spec(layer, ctx, shapes)
        node = node_type(name=entry.name, inputs=names, shape=(), span=entry.span, **attributes)
        # The shape rule reads the attributes, so the node is made first; nothing else has
        # seen it yet, so its shape can be set in place.
        object.__setattr__(node, "shape", node.infer_shape(shapes))
    except OpError as exc:
        raise entry.error(str(exc)) from None
    return node
