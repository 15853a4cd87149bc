"""Lowering: a validated spec -> the frozen graph IR.

Two phases, so that a reference to a layer that comes later can be told apart from a typo:

1. *expand*: block calls and repeats become a flat list of concrete layers, ``$param``
   references are filled in (and the result validated again), names are templated and
   checked for duplicates;
2. *infer*: in order, each layer's inputs are resolved and its output shape, explicit
   padding and resolved channel count computed.

Every semantic error is a :class:`SpecError` at the spec entry that caused it: the layer, or
for a layer inside a block the call that instantiated it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import ir
from .loading import LoadedSpec, _message
from .source import SpecError, did_you_mean, format_path, short_repr
from .spec import (
    OP_LAYERS,
    REF_RE,
    ActivationLayer,
    AddLayer,
    BatchNormLayer,
    BlockCall,
    ConvLayer,
    DenseLayer,
    DepthwiseConvLayer,
    DropoutLayer,
    FlattenLayer,
    GlobalPoolLayer,
    LayerBase,
    MultiplyLayer,
    PoolLayer,
    Ref,
    SoftmaxLayer,
    Spec,
    ZeroPadLayer,
)

BLOCK_INPUT = "_input"
"""Inside a block, ``inputs: [_input]`` names the input of the block instance (for residuals)."""

WIDTH_RANGE = (0.0, 4.0)
RESOLUTION_RANGE = (0.0, 4.0)
MAX_SIZE = 8192
MAX_LAYERS = 100_000
"""Most layers a spec may expand to: a typo such as ``repeat: 1000000000`` fails at once
instead of keeping the checker busy for hours (lowering runs about 100k layers a second)."""


@dataclass(frozen=True)
class _Entry:
    name: str
    layer: LayerBase
    inputs: tuple[str, ...] | None
    span: ir.Span
    context: str  # e.g. " (block 'separable' #3, blocks.separable.layers[0])"


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10%.

    This is the rule of the TF-Slim MobileNetV2 code that Keras' V2/V3 and timm copy.
    """
    m = divisor if min_value is None else min_value
    new = max(m, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def round_width(filters: int, width: float, mode: str, divisor: int, min_value: int | None) -> int:
    """Channels after the width multiplier under the spec's rounding rule."""
    if mode == "truncate":
        # Keras' MobileNet v1: int(filters * alpha), no rounding to a multiple.
        return max(1 if min_value is None else min_value, int(filters * width))
    return make_divisible(filters * width, divisor, min_value)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME: output ceil(n/s); an odd total puts the extra pixel after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class _Lowerer:
    def __init__(self, loaded: LoadedSpec, width: float, size: tuple[int, int]) -> None:
        self.loaded = loaded
        self.spec: Spec = loaded.spec
        self.source = loaded.source
        self.width = width
        self.size = size
        self.nodes: list[ir.Node] = []
        self.by_name: dict[str, ir.Node] = {}

    # -- helpers -------------------------------------------------------------------------
    def span(self, path: tuple[str | int, ...]) -> ir.Span:
        line, col = self.source.locate(path)
        return ir.Span(self.source.file, line or 1, col or 1, format_path(path))

    def err(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> SpecError:
        return self.source.error(path, message, key=key)

    def fail(self, entry: _Entry, message: str) -> SpecError:
        return SpecError(
            f"{entry.name}: {message}{entry.context}",
            file=entry.span.file,
            line=entry.span.line,
            col=entry.span.col,
            path=entry.span.path,
        )

    # -- phase 1: expand -----------------------------------------------------------------
    def expand(self) -> list[_Entry]:
        entries: list[_Entry] = []
        seen: dict[str, _Entry] = {}
        op_counts: Counter[str] = Counter()
        block_index = 0
        globals_ = {"classes": self.spec.classes}

        def add(entry: _Entry) -> None:
            if len(entries) >= MAX_LAYERS:
                raise self.fail(entry, f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat')")
            if entry.name in seen or entry.name == self.spec.input.name:
                first = seen.get(entry.name)
                where = f" (first at line {first.span.line})" if first else " (the input's name)"
                raise self.fail(entry, f"duplicate layer name {entry.name!r}{where}")
            seen[entry.name] = entry
            entries.append(entry)

        for i, layer in enumerate(self.spec.layers):
            path: tuple[str | int, ...] = ("layers", i)
            if isinstance(layer, BlockCall):
                block = self.spec.blocks.get(layer.block)
                if block is None:
                    known = ", ".join(self.spec.blocks) or "none defined"
                    raise self.err(
                        (*path, "block"),
                        f"unknown block {layer.block!r}{did_you_mean(layer.block, self.spec.blocks)} (blocks: {known})",
                    )
                args = dict(layer.model_extra or {})
                for arg in args:
                    if arg not in block.params:
                        raise self.err(
                            (*path, arg),
                            f"block {layer.block!r} has no parameter {arg!r}{did_you_mean(arg, block.params)}"
                            f" (parameters: {', '.join(block.params) or 'none'})",
                            key=True,
                        )
                values: dict[str, Any] = dict(globals_)
                origin: dict[str, tuple[str | int, ...]] = {}
                for p, default in block.params.items():
                    if p in args:
                        values[p], origin[p] = args[p], (*path, p)
                    elif default is None:
                        raise self.err(path, f"block {layer.block!r} needs parameter {p!r}")
                    else:
                        values[p], origin[p] = default, ("blocks", layer.block, "params", p)
                    values[p] = self.resolve_global(values[p], globals_, origin[p])
                call_span = self.span(path)
                for _ in range(layer.repeat):
                    block_index += 1
                    prefix = (layer.name or f"{layer.block}{{index}}").replace("{index}", str(block_index))
                    block_input = entries[-1].name if entries else self.spec.input.name
                    if layer.inputs and _ == 0:
                        if len(layer.inputs) != 1:
                            raise self.err((*path, "inputs"), "a block call reads exactly one input")
                        block_input = layer.inputs[0].replace("{index}", str(block_index))
                    local_counts: Counter[str] = Counter()
                    for j, blayer in enumerate(block.layers):
                        bpath = ("blocks", layer.block, "layers", j)
                        resolved = self.substitute(blayer, values, origin, bpath, path)
                        for _r in range(resolved.repeat):
                            if resolved.name:
                                name = resolved.name.replace("{index}", str(block_index))
                            else:
                                local_counts[resolved.op] += 1  # type: ignore[attr-defined]
                                k = local_counts[resolved.op]  # type: ignore[attr-defined]
                                name = f"{prefix}_{resolved.op}" + (f"_{k}" if k > 1 else "")  # type: ignore[attr-defined]
                            inputs = None
                            if resolved.inputs is not None:
                                inputs = tuple(
                                    block_input if x == BLOCK_INPUT else x.replace("{index}", str(block_index))
                                    for x in resolved.inputs
                                )
                            elif j == 0 and _r == 0:
                                inputs = (block_input,)
                            ctx = f" (in block {layer.block!r} instance {block_index}, {format_path(bpath)})"
                            add(_Entry(name, resolved, inputs, call_span, ctx))
            else:
                if layer.inputs and BLOCK_INPUT in layer.inputs:
                    raise self.err((*path, "inputs"), f"{BLOCK_INPUT!r} is only meaningful inside a block")
                resolved = self.substitute(layer, globals_, {}, path, path)
                for r in range(layer.repeat):
                    op = resolved.op  # type: ignore[attr-defined]
                    if resolved.name:
                        name = resolved.name.replace("{index}", str(r + 1))
                    else:
                        op_counts[op] += 1
                        name = f"{op}_{op_counts[op]}"
                    inputs = None
                    if resolved.inputs is not None and r == 0:
                        inputs = tuple(x.replace("{index}", str(r + 1)) for x in resolved.inputs)
                    add(_Entry(name, resolved, inputs, self.span(path), ""))
        return entries

    def resolve_global(self, value: Any, globals_: dict[str, Any], where: tuple[str | int, ...]) -> Any:
        """A block argument or parameter default written as ``$classes`` takes the spec's value.

        Without this, the text '$classes' reached shape inference as if it were a number.
        """
        if not (isinstance(value, str) and REF_RE.match(value)):
            return value
        name = value[1:]
        if name not in globals_:
            available = ", ".join("$" + k for k in globals_)
            raise self.err(
                where,
                f"unknown parameter {value!r}{did_you_mean(name, globals_)} (arguments may refer to {available})",
            )
        if globals_[name] is None:
            raise self.err(where, f"{value!r} is used but the spec does not set {name!r}")
        return globals_[name]

    def substitute(
        self,
        layer: LayerBase,
        values: dict[str, Any],
        origin: dict[str, tuple[str | int, ...]],
        layer_path: tuple[str | int, ...],
        call_path: tuple[str | int, ...],
    ) -> LayerBase:
        """Fill ``$param`` references and validate the result as a concrete op layer."""
        raw = layer.model_dump(exclude_unset=True)
        used: dict[str, str] = {}

        def sub(field: str, v: Any) -> Any:
            if isinstance(v, Ref):
                p = v.param
                if p not in values:
                    raise self.err(
                        (*layer_path, field),
                        f"unknown parameter {str(v)!r}{did_you_mean(p, values)} (available: "
                        + ", ".join("$" + k for k in values)
                        + ")",
                    )
                if values[p] is None:
                    raise self.err((*layer_path, field), f"{str(v)!r} is used but the spec does not set {p!r}")
                used[field] = p
                return values[p]
            if isinstance(v, tuple):
                return tuple(sub(field, x) for x in v)
            return v

        if not any(
            isinstance(v, Ref) or (isinstance(v, tuple) and any(isinstance(x, Ref) for x in v)) for v in raw.values()
        ):
            return layer
        filled = {k: sub(k, v) for k, v in raw.items()}
        try:
            return OP_LAYERS[filled["op"]].model_validate(filled)
        except ValidationError as exc:
            e = exc.errors(include_url=False)[0]
            field = str(e["loc"][0]) if e["loc"] else ""
            p = used.get(field)
            where = origin.get(p, call_path) if p else (*layer_path, field)
            suffix = f" (from ${p}, used by {format_path((*layer_path, field))})" if p else ""
            e = dict(e)
            e["loc"] = (field,)
            raise self.err(where, f"{_message(e)}{suffix}") from None

    # -- phase 2: infer ------------------------------------------------------------------
    def run(self) -> ir.Graph:
        entries = self.expand()
        order = {e.name: k for k, e in enumerate(entries)}
        inp = self.spec.input
        h, w = self.size
        self.add(ir.Input(name=inp.name, inputs=(), shape=(h, w, inp.channels), span=self.span(("input",))))
        prev = inp.name
        for k, entry in enumerate(entries):
            names = entry.inputs if entry.inputs is not None else (prev,)
            for ref in names:
                if ref not in self.by_name:
                    if ref == entry.name:
                        raise self.fail(entry, f"reads itself ({ref!r}): a cycle")
                    if ref in order and order[ref] > k:
                        raise self.fail(
                            entry, f"reads {ref!r}, which comes later: a cycle (a layer may only read earlier layers)"
                        )
                    raise self.fail(entry, f"reads unknown layer {ref!r}{did_you_mean(ref, list(self.by_name))}")
            node = self.infer(entry, names)
            self.add(node)
            prev = node.name
        output = self.spec.output or prev
        if output not in self.by_name:
            raise self.err(("output",), f"unknown layer {output!r}{did_you_mean(output, list(self.by_name))}")
        r = self.spec.rounding
        rounding = f"{r.mode}" + (f"({r.divisor})" if r.mode == "make_divisible" else "")
        return ir.Graph(
            name=self.spec.name,
            nodes=tuple(self.nodes),
            output=output,
            width=self.width,
            resolution=self.size,
            description=self.spec.description,
            source=self.source.file,
            rounding=rounding,
        )

    def add(self, node: ir.Node) -> None:
        self.nodes.append(node)
        self.by_name[node.name] = node

    def infer(self, entry: _Entry, names: tuple[str, ...]) -> ir.Node:
        layer = entry.layer
        shapes = [self.by_name[n].shape for n in names]
        handler = _INFER.get(type(layer))
        if handler is None:  # pragma: no cover - every op layer has a handler (tested)
            raise self.fail(entry, f"no lowering for {type(layer).__name__}")
        multi = isinstance(layer, AddLayer | MultiplyLayer)
        if not multi and len(names) != 1:
            raise self.fail(entry, f"{layer.op} reads exactly one input (got {len(names)})")  # type: ignore[attr-defined]
        common = {"name": entry.name, "inputs": names, "span": entry.span}
        return handler(self, entry, layer, shapes, common)

    # per-op shape inference --------------------------------------------------------------
    def image(self, entry: _Entry, shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
        if len(shape) != 3:
            raise self.fail(entry, f"{what} needs an image input (H x W x C), got {_hw(shape)}")
        return shape  # type: ignore[return-value]

    def pad(self, entry: _Entry, padding: Any, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int]) -> ir.Pad4:
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            t, b = same_padding(hw[0], k[0], s[0])
            left, r = same_padding(hw[1], k[1], s[1])
            return (t, b, left, r)
        if isinstance(padding, int):
            return (padding,) * 4  # type: ignore[return-value]
        return tuple(padding)  # type: ignore[return-value]

    def window(
        self,
        entry: _Entry,
        what: str,
        shape: tuple[int, int, int],
        k: tuple[int, int],
        s: tuple[int, int],
        p: ir.Pad4,
        d: tuple[int, int] = (1, 1),
    ) -> tuple[int, int]:
        h, w, c = shape
        keff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        ph, pw = h + p[0] + p[1], w + p[2] + p[3]
        if keff[0] > ph or keff[1] > pw:
            padded = f" ({ph}x{pw} after padding)" if (ph, pw) != (h, w) else ""
            raise self.fail(entry, f"{what} {keff[0]}x{keff[1]} is larger than its input {h}x{w}x{c}{padded}")
        oh, ow = (ph - keff[0]) // s[0] + 1, (pw - keff[1]) // s[1] + 1
        return oh, ow

    def defaults_pad(self, layer: Any) -> Any:
        return layer.padding if layer.padding is not None else self.spec.defaults.padding

    def conv(self, entry: _Entry, layer: ConvLayer, shapes: list, common: dict) -> ir.Node:
        h, w, c = self.image(entry, shapes[0], "conv")
        filters = int(layer.filters)
        if layer.scale_width:
            r = self.spec.rounding
            filters = round_width(filters, self.width, r.mode, r.divisor, r.min)
        k, s, d = _pair(layer.kernel), _pair(layer.stride), _pair(layer.dilation)
        groups = int(layer.groups)
        if c % groups or filters % groups:
            raise self.fail(entry, f"groups={groups} must divide the input channels {c} and filters {filters}")
        keff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        p = self.pad(entry, self.defaults_pad(layer), (h, w), keff, s)
        oh, ow = self.window(entry, "kernel", (h, w, c), k, s, p, d)
        bias = self.spec.defaults.bias if layer.bias is None else layer.bias
        return ir.Conv2D(
            **common,
            shape=(oh, ow, filters),
            in_channels=c,
            filters=filters,
            kernel=k,
            stride=s,
            padding=p,
            dilation=d,
            groups=groups,
            use_bias=bias,
        )

    def depthwise(self, entry: _Entry, layer: DepthwiseConvLayer, shapes: list, common: dict) -> ir.Node:
        h, w, c = self.image(entry, shapes[0], "depthwise_conv")
        k, s, d = _pair(layer.kernel), _pair(layer.stride), _pair(layer.dilation)
        keff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        p = self.pad(entry, self.defaults_pad(layer), (h, w), keff, s)
        oh, ow = self.window(entry, "kernel", (h, w, c), k, s, p, d)
        m = int(layer.multiplier)
        bias = self.spec.defaults.bias if layer.bias is None else layer.bias
        return ir.DepthwiseConv2D(
            **common,
            shape=(oh, ow, c * m),
            in_channels=c,
            multiplier=m,
            kernel=k,
            stride=s,
            padding=p,
            dilation=d,
            use_bias=bias,
        )

    def batchnorm(self, entry: _Entry, layer: BatchNormLayer, shapes: list, common: dict) -> ir.Node:
        d = self.spec.defaults.batchnorm
        return ir.BatchNorm(
            **common,
            shape=shapes[0],
            channels=shapes[0][-1],
            epsilon=layer.epsilon if layer.epsilon is not None else d.epsilon,
            decay=layer.decay if layer.decay is not None else d.decay,
            variance_update=layer.variance_update or d.variance_update,
        )

    def activation(self, entry: _Entry, layer: ActivationLayer, shapes: list, common: dict) -> ir.Node:
        return ir.Activation(**common, shape=shapes[0], kind=layer.kind or self.spec.defaults.activation)

    def zero_pad(self, entry: _Entry, layer: ZeroPadLayer, shapes: list, common: dict) -> ir.Node:
        h, w, c = self.image(entry, shapes[0], "zero_pad")
        if layer.padding in ("same", "valid"):
            raise self.fail(entry, "zero_pad needs explicit padding (an integer or per-side amounts)")
        p = self.pad(entry, layer.padding, (h, w), (1, 1), (1, 1))
        return ir.ZeroPad2D(**common, shape=(h + p[0] + p[1], w + p[2] + p[3], c), padding=p)

    def pool(self, entry: _Entry, layer: PoolLayer, shapes: list, common: dict) -> ir.Node:
        h, w, c = self.image(entry, shapes[0], layer.op)
        k = _pair(layer.pool)
        s = _pair(layer.stride) if layer.stride is not None else k
        oh, ow = self.window(entry, "pool", (h, w, c), k, s, (0, 0, 0, 0))
        return ir.Pool2D(
            **common, shape=(oh, ow, c), kind="avg" if layer.op == "avg_pool" else "max", kernel=k, stride=s
        )

    def global_pool(self, entry: _Entry, layer: GlobalPoolLayer, shapes: list, common: dict) -> ir.Node:
        c = self.image(entry, shapes[0], layer.op)[2]
        shape = (1, 1, c) if layer.keepdims else (c,)
        kind = "avg" if layer.op == "global_avg_pool" else "max"
        return ir.GlobalPool(**common, shape=shape, kind=kind, keepdims=layer.keepdims)

    def flatten(self, entry: _Entry, layer: FlattenLayer, shapes: list, common: dict) -> ir.Node:
        return ir.Flatten(**common, shape=(math.prod(shapes[0]),))

    def dense(self, entry: _Entry, layer: DenseLayer, shapes: list, common: dict) -> ir.Node:
        if len(shapes[0]) != 1:
            raise self.fail(
                entry, f"dense needs a flat input, got {_hw(shapes[0])} (add global_avg_pool or flatten first)"
            )
        units = int(layer.units)
        if layer.scale_width:
            r = self.spec.rounding
            units = round_width(units, self.width, r.mode, r.divisor, r.min)
        return ir.Dense(**common, shape=(units,), in_features=shapes[0][0], units=units, use_bias=layer.bias)

    def dropout(self, entry: _Entry, layer: DropoutLayer, shapes: list, common: dict) -> ir.Node:
        return ir.Dropout(**common, shape=shapes[0], rate=float(layer.rate))

    def softmax(self, entry: _Entry, layer: SoftmaxLayer, shapes: list, common: dict) -> ir.Node:
        return ir.Softmax(**common, shape=shapes[0])

    def add_op(self, entry: _Entry, layer: AddLayer, shapes: list, common: dict) -> ir.Node:
        if len(shapes) < 2:
            raise self.fail(entry, "add needs at least two inputs")
        if len(set(shapes)) != 1:
            raise self.fail(entry, "add needs inputs of one shape, got " + ", ".join(_hw(s) for s in shapes))
        return ir.Add(**common, shape=shapes[0])

    def multiply(self, entry: _Entry, layer: MultiplyLayer, shapes: list, common: dict) -> ir.Node:
        if len(shapes) != 2:
            raise self.fail(entry, "multiply needs exactly two inputs")
        a, b = shapes
        big, small = (a, b) if math.prod(a) >= math.prod(b) else (b, a)
        ok = a == b or (len(big) == 3 and small == (1, 1, big[2]))
        if not ok:
            raise self.fail(
                entry, f"multiply needs equal shapes or (H, W, C) with (1, 1, C), got {_hw(a)} and {_hw(b)}"
            )
        return ir.Multiply(**common, shape=big)


_INFER: dict[type, Callable[..., ir.Node]] = {
    ConvLayer: _Lowerer.conv,
    DepthwiseConvLayer: _Lowerer.depthwise,
    BatchNormLayer: _Lowerer.batchnorm,
    ActivationLayer: _Lowerer.activation,
    ZeroPadLayer: _Lowerer.zero_pad,
    PoolLayer: _Lowerer.pool,
    GlobalPoolLayer: _Lowerer.global_pool,
    FlattenLayer: _Lowerer.flatten,
    DenseLayer: _Lowerer.dense,
    DropoutLayer: _Lowerer.dropout,
    SoftmaxLayer: _Lowerer.softmax,
    AddLayer: _Lowerer.add_op,
    MultiplyLayer: _Lowerer.multiply,
}


def _override_error(loaded: LoadedSpec, field: str, message: str, value: Any) -> SpecError:
    line, col = loaded.source.locate((field,)) if field in loaded.source.data else (1, 1)
    return SpecError(f"{message} (got {short_repr(value)})", file=loaded.file, line=line, col=col, path=field)


def resolve_size(loaded: LoadedSpec, resolution: float | int | tuple[int, int] | None) -> tuple[int, int]:
    """Input (H, W): an int or pair is a size in pixels, a float the multiplier rho."""
    spec = loaded.spec
    base = spec.input.size if isinstance(spec.input.size, tuple) else (spec.input.size, spec.input.size)
    if resolution is None:
        rho = spec.resolution
    elif isinstance(resolution, bool):
        raise _override_error(loaded, "resolution", "expected a multiplier or a size in pixels", resolution)
    elif isinstance(resolution, int):
        if not 1 <= resolution <= MAX_SIZE:
            raise _override_error(loaded, "resolution", f"expected a size from 1 to {MAX_SIZE} pixels", resolution)
        return (resolution, resolution)
    elif isinstance(resolution, tuple):
        if len(resolution) != 2 or not all(isinstance(x, int) and 1 <= x <= MAX_SIZE for x in resolution):
            raise _override_error(
                loaded, "resolution", f"expected (height, width) from 1 to {MAX_SIZE} pixels", resolution
            )
        return resolution
    else:
        rho = float(resolution)
        lo, hi = RESOLUTION_RANGE
        if not (lo < rho <= hi) or math.isnan(rho):
            raise _override_error(loaded, "resolution", f"expected a multiplier in ({lo:g}, {hi:g}]", resolution)
    h, w = round(base[0] * rho), round(base[1] * rho)
    if h < 1 or w < 1:
        raise _override_error(loaded, "resolution", f"the input collapses to {h}x{w}", rho)
    return (h, w)


def lower(
    loaded: LoadedSpec,
    *,
    width: float | None = None,
    resolution: float | int | tuple[int, int] | None = None,
) -> ir.Graph:
    """Lower a loaded spec to the IR, optionally overriding alpha and rho (or the input size)."""
    alpha = loaded.spec.width if width is None else width
    lo, hi = WIDTH_RANGE
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or math.isnan(alpha) or not lo < alpha <= hi:
        raise _override_error(loaded, "width", f"expected a width multiplier in ({lo:g}, {hi:g}]", alpha)
    size = resolve_size(loaded, resolution)
    return _Lowerer(loaded, float(alpha), size).run()
