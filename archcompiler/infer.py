"""Lowering, stage 2: flat layers (:mod:`.expand`) -> the frozen graph IR, via the op registry.

In order, each layer's inputs are resolved, its op definition turns the spec fields into
attributes (:meth:`~archcompiler.ops.Node.attributes_from_spec`: defaults, the width rule,
explicit padding) and infers the output shape. Errors carry the span of the spec entry that
caused them (the layer, or for a layer inside a block the call that instantiated it).
"""

from __future__ import annotations

from . import ir
from .expand import Entry
from .limits import MAX_ACTIVATIONS, MAX_PARAMETERS
from .loading import LoadedSpec
from .ops import NODE_FOR_LAYER, LowerContext, OpError, arity_error
from .source import did_you_mean


def context(loaded: LoadedSpec, width: float) -> LowerContext:
    spec = loaded.spec
    d, r = spec.defaults, spec.rounding
    return LowerContext(
        width=width,
        rounding=r.mode,
        divisor=r.divisor,
        min_channels=r.min,
        padding=d.padding,
        bias=d.bias,
        activation=d.activation,
        bn_epsilon=d.batchnorm.epsilon,
        bn_decay=d.batchnorm.decay,
        bn_variance_update=d.batchnorm.variance_update,
    )


def infer(loaded: LoadedSpec, entries: list[Entry], width: float, size: tuple[int, int]) -> ir.Graph:
    """The IR graph of ``entries`` at width multiplier ``width`` and input ``size`` (H, W)."""
    spec = loaded.spec
    ctx = context(loaded, width)
    order = {e.name: k for k, e in enumerate(entries)}
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
    for k, entry in enumerate(entries):
        names = entry.inputs if entry.inputs is not None else (nodes[-1].name,)
        for ref in names:
            if ref not in by_name:
                if ref == entry.name:
                    raise entry.error(f"reads itself ({ref!r}): a cycle")
                if ref in order and order[ref] > k:
                    raise entry.error(
                        f"reads {ref!r}, which comes later: a cycle (a layer may only read earlier layers)"
                    )
                raise entry.error(f"reads unknown layer {ref!r}{did_you_mean(ref, list(by_name))}")
        shapes = tuple(by_name[n].shape for n in names)
        node = _node(entry, names, shapes, ctx)
        c = node.cost(shapes)
        parameters += c.weights + c.bias + c.bn_affine + c.bn_stats
        activations += node.numel
        if parameters > MAX_PARAMETERS or activations > MAX_ACTIVATIONS:
            what = "weights" if parameters > MAX_PARAMETERS else "activation values per example"
            limit = MAX_PARAMETERS if parameters > MAX_PARAMETERS else MAX_ACTIVATIONS
            raise entry.error(f"the network reaches more than {limit:,} {what} here (a limit: check sizes and filters)")
        nodes.append(node)
        by_name[node.name] = node
    output = spec.output or nodes[-1].name
    if output not in by_name:
        raise loaded.source.error(("output",), f"unknown layer {output!r}{did_you_mean(output, list(by_name))}")
    r = spec.rounding
    return ir.Graph(
        name=spec.name,
        nodes=tuple(nodes),
        output=output,
        width=width,
        resolution=size,
        description=spec.description,
        source=loaded.file,
        rounding=r.mode + (f"({r.divisor})" if r.mode == "make_divisible" else ""),
    )


def _node(entry: Entry, names: tuple[str, ...], shapes: tuple[ir.Shape, ...], ctx: LowerContext) -> ir.Node:
    """One IR node from its op definition: attributes from the spec, then the shape rule."""
    layer = entry.layer
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
        return node
    except OpError as exc:
        raise entry.error(str(exc)) from None
