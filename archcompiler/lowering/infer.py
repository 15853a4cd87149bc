"""Lowering, stage 2: flat layers (:mod:`.expand`) -> the frozen graph IR, via the op registry.

In order, each layer's inputs are resolved, its op definition turns the spec fields into
attributes (:meth:`~archcompiler.ops.Node.attributes_from_spec`: defaults, the width rule,
explicit padding) and infers the output shape. Errors carry the span of the spec entry that
caused them (the layer, or for a layer inside a block the call that instantiated it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archcompiler import ir
from archcompiler.language.fields import LayerBase
from archcompiler.language.limits import MAX_ACTIVATIONS, MAX_GRAPH_DEPTH, MAX_PARAMETERS
from archcompiler.language.loading import LoadedSpec
from archcompiler.language.source import did_you_mean
from archcompiler.lowering.expand import Entry, context
from archcompiler.ops import NODE_FOR_LAYER, NODE_TYPES, LowerContext, OpError, arity_error


def infer(loaded: LoadedSpec, entries: list[Entry], width: float, size: tuple[int, int]) -> ir.Graph:
    """The IR graph of ``entries`` at width multiplier ``width`` and input ``size`` (H, W)."""
    spec = loaded.spec
    ctx = context(loaded, width)
    line, col = loaded.source.locate(("input",))
    first = ir.Input(
        name=spec.input.name,
        inputs=(),
        shape=(size[0], size[1], spec.input.channels),
        span=ir.Span(loaded.file, line or 1, col or 1, "input"),
    )
    nodes: list[ir.Node] = [first]
    by_name: dict[str, ir.Node] = {first.name: first}
    parameters = activations = 0
    depth = {first.name: 0}  # layers on the longest path from the input (ir.Graph.depth)
    # A layer whose `when:` is false does not exist: a reference to it reads the layer before it
    # (so the chain and a block's input survive a dropped layer).
    absent: dict[str, str] = {}
    previous = first.name
    memo = _memo(ctx)
    for k, entry in enumerate(entries):
        default = absent.get(entry.follows, entry.follows) if entry.follows else previous
        inputs = entry.inputs
        if inputs is None:
            names: tuple[str, ...] = (default,)
        else:
            names = tuple([absent.get(n, n) for n in inputs]) if absent else inputs
        for ref in names:
            if ref not in by_name:
                if ref == entry.name:
                    raise entry.error(f"reads itself ({ref!r}): a cycle")
                order = {e.name: i for i, e in enumerate(entries)}
                if ref in order and order[ref] > k:
                    raise entry.error(
                        f"reads {ref!r}, which comes later: a cycle (a layer may only read earlier layers)"
                    )
                raise entry.error(f"reads unknown layer {ref!r}{did_you_mean(ref, list(by_name))}")
        shapes = (by_name[names[0]].shape,) if len(names) == 1 else tuple([by_name[n].shape for n in names])
        if not shapes:  # 'inputs: []': every op reads at least one input
            raise entry.error("reads no input ('inputs' is empty)")
        if entry.pending is None:
            layer = entry.layer
        else:  # expressions that read the input shape ($in, $block_in) evaluate here
            b = entry.block_input
            block = by_name.get(absent.get(b, b)) if b else None
            layer = entry.resolve(shapes[0], block.shape if block is not None else None)
        if layer is None:
            absent[entry.name] = previous = default
            continue
        known = memo.get((id(layer), shapes))
        if known is None:
            node, params, numel = _node(entry, layer, names, shapes, ctx, memo)
        else:
            # a copy of the node made from this layer on these shapes, with its own name, inputs
            # and span (:func:`_node`); as many inputs as that node's, so its arity is right
            node = object.__new__(known[0])
            fields = node.__dict__
            fields.update(known[1])
            fields["name"], fields["inputs"], fields["span"] = entry.name, names, entry.span
            params, numel = known[2], known[3]
        parameters += params
        activations += numel
        if parameters > MAX_PARAMETERS or activations > MAX_ACTIVATIONS:
            what = "weights" if parameters > MAX_PARAMETERS else "activation values per example"
            limit = MAX_PARAMETERS if parameters > MAX_PARAMETERS else MAX_ACTIVATIONS
            raise entry.error(f"the network reaches more than {limit:,} {what} here (a limit: check sizes and filters)")
        level = depth[node.name] = 1 + max([depth[n] for n in names])
        if level > MAX_GRAPH_DEPTH:
            raise entry.error(
                f"the graph is more than {MAX_GRAPH_DEPTH:,} layers deep here (the longest path from the input;"
                " a limit: frameworks walk a graph recursively)"
            )
        nodes.append(node)
        by_name[node.name] = node
        previous = node.name
    output = absent.get(spec.output, spec.output) if spec.output else nodes[-1].name
    if output not in by_name:
        raise loaded.source.error(("output",), f"unknown layer {output!r}{did_you_mean(output, list(by_name))}")
    r = spec.rounding
    # every node's shape was just computed by its own shape rule (or remembered from the same
    # rule on the same layer and input shapes): the graph checks everything else
    return ir.Graph._lowered(
        name=spec.name,
        nodes=live(nodes, (output,)),
        outputs=(output,),
        width=width,
        resolution=size,
        description=spec.description,
        source=loaded.file,
        rounding=r.mode + (f"({r.divisor})" if r.mode == "make_divisible" else ""),
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


_COPYABLE = frozenset(t for t in NODE_TYPES if not hasattr(t, "__post_init__") and not hasattr(t, "__slots__"))
"""Node types whose fields are exactly their ``__dict__`` (copied for a remembered node)."""

_Key = tuple[int, tuple[ir.Shape, ...]]
_Known = tuple[type[ir.Node], dict[str, Any], int, int, LayerBase]
"""The type and fields (name, inputs and span aside) of the first node made from a layer on some
input shapes, its parameter count and ``numel``, and the layer (kept alive, so that its id
stays its own)."""

_NODES: dict[tuple[tuple[Any, ...], tuple[type, ...]], dict[_Key, _Known]] = {}
"""A LowerContext (:func:`_memo`) -> (id(layer), input shapes) -> what :func:`_node` made of them."""
_NODES_MAX = 2048


def _memo(ctx: LowerContext) -> dict[_Key, _Known]:
    """The nodes remembered under ``ctx``: keyed by its values and their types, which tells
    apart values that compare equal but make different attributes (``1`` and ``1.0``). (A
    context holds no ``-0.0``: widths, epsilons and decays are positive.)"""
    values = tuple(vars(ctx).values())
    key = (values, tuple(map(type, values)))
    memo = _NODES.get(key)
    if memo is None or len(memo) >= _NODES_MAX:
        if len(_NODES) >= 16:  # at most 16 x _NODES_MAX nodes remembered
            _NODES.clear()
        memo = _NODES[key] = {}
    return memo


def _node(
    entry: Entry,
    layer: LayerBase,
    names: tuple[str, ...],
    shapes: tuple[ir.Shape, ...],
    ctx: LowerContext,
    memo: dict[_Key, _Known],
) -> tuple[ir.Node, int, int]:
    """One IR node from its op definition: attributes from the spec, then the shape rule; and
    its parameter count and output size (for the limits).

    Expansion shares one validated layer between equal layers (a repeated block's, and the
    same layer in the next lowering: expand._validated), so ``memo`` remembers the node made
    from a layer under one context on given input shapes: its attributes, shape and counts
    are each a function of the layer, the context and the shapes alone, so :func:`infer`
    copies it for the next such layer and only the name, inputs and span differ. The node
    types are frozen dataclasses without __post_init__, so their fields are their __dict__
    (a copy is 3x cheaper than calling __init__, which sets each through object.__setattr__)."""
    node_type = NODE_FOR_LAYER[type(layer)]
    problem = arity_error(layer.op, node_type.arity, len(names))  # type: ignore[attr-defined]
    if problem:
        raise entry.error(problem)
    try:
        attributes = node_type.attributes_from_spec(layer, ctx, shapes)
        node = node_type(name=entry.name, inputs=names, shape=(), span=entry.span, **attributes)
        # The shape rule needs the attributes, so the node is made first; nothing else has seen
        # it yet, so setting its shape here is safe (and 3x cheaper than dataclasses.replace).
        object.__setattr__(node, "shape", node.infer_shape(shapes))
    except OpError as exc:
        raise entry.error(str(exc)) from None
    c = node.cost(shapes)
    params = c.weights + c.bias + c.bn_affine + c.bn_stats
    numel = node.numel
    if node_type in _COPYABLE:
        fields = {k: v for k, v in node.__dict__.items() if k not in ("name", "inputs", "span")}
        memo[(id(layer), shapes)] = (node_type, fields, params, numel, layer)
    return node, params, numel
