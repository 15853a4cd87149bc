"""The Keras backend's per-op table: IR node -> Keras layer calls.

One table drives both the builder and the emitter, so they cannot drift (docs/DESIGN.md, style 2):
a handler first *describes* a node as a list of :class:`LayerCall` (Keras class, positional
and keyword arguments as plain literals, layer name, input layer names); then

* its build part turns a call into a live ``keras.layers.Layer`` (``build_layer``);
* its emit part turns the same call into the Python source that constructs that layer
  (``emit_layer``).

Only what both parts share lives in the description, and every argument is a literal, so
the emitted constructor and the instantiated one are the same call. Keras is imported only by
``build_layer``: describing and emitting need no framework.

An op, or an attribute value, that Keras cannot express exactly raises UnsupportedOpError;
nothing is approximated (docs/DESIGN.md, style 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...ir import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalPool,
    Graph,
    Node,
    Pad4,
    Pool2D,
    Softmax,
    ZeroPad2D,
)
from ...registry import UnsupportedOpError

BACKEND = "keras"

UNBIASED_BN = "UnbiasedBatchNormalization"
"""Name of archc's BatchNormalization subclass (see ``bn.py``); not in ``keras.layers``."""


@dataclass(frozen=True)
class LayerCall:
    """One Keras layer applied to earlier layers' outputs: what is built *and* what is emitted."""

    cls: str
    """Class in ``keras.layers`` ("Input" for ``keras.Input``, or :data:`UNBIASED_BN`)."""
    name: str
    inputs: tuple[str, ...]
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    node: str = ""
    """The IR node this call belongs to (a helper pad layer belongs to its conv)."""


def literal(value: Any) -> str:
    """Python source for a literal argument (ints, floats, strings, bools, None, tuples)."""
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise TypeError(f"not a literal layer argument: {value!r}")


def _pair_or_int(p: tuple[int, int]) -> int | tuple[int, int]:
    """Keras accepts ``3`` for ``(3, 3)``; the shorter form reads like hand-written code."""
    return p[0] if p[0] == p[1] else p


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """The (before, after) padding TensorFlow's "SAME" applies: output ceil(n/s), extra after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def unique_name(graph: Graph, base: str, taken: set[str]) -> str:
    """``base`` unless an IR node (or an earlier helper) has it; then ``base_2``, ``base_3``..."""
    name, k = base, 1
    while name in graph or name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class Handler:
    """Describe one IR op as Keras layer calls; build or emit each call."""

    op: ClassVar[str]

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        """The Keras layer calls equivalent to ``node``. ``taken`` collects helper names."""
        raise NotImplementedError

    # -- build part ----------------------------------------------------------------------
    def build_layer(self, call: LayerCall) -> Any:
        """A live Keras layer for ``call`` (instantiated from the same literals as emitted)."""
        from ._framework import keras

        cls = getattr(keras.layers, call.cls)
        return cls(*call.args, **dict(call.kwargs), name=call.name)

    # -- emit part -----------------------------------------------------------------------
    def emit_layer(
        self, call: LayerCall, name_expr: str | None = None, overrides: Mapping[int | str, str] | None = None
    ) -> str:
        """Source constructing the layer, e.g. ``layers.ReLU(6.0, name="conv1_relu")``.

        Inside a block function, ``name_expr`` replaces the name literal (an f-string) and
        ``overrides`` replace argument literals (by position or keyword) with parameter names.
        """
        over = overrides or {}
        parts = [over.get(i, literal(a)) for i, a in enumerate(call.args)]
        parts += [f"{k}={over.get(k, literal(v))}" for k, v in call.kwargs]
        parts.append(f"name={name_expr or literal(call.name)}")
        return f"layers.{call.cls}({', '.join(parts)})"


def _one(node: Node, cls: str, *args: Any, **kwargs: Any) -> list[LayerCall]:
    return [LayerCall(cls, node.name, node.inputs, tuple(args), tuple(kwargs.items()), node.name)]


class InputHandler(Handler):
    op = "input"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        return [LayerCall("Input", node.name, (), (), (("shape", tuple(node.shape)),), node.name)]

    def build_layer(self, call: LayerCall) -> Any:
        from ._framework import keras

        return keras.Input(shape=dict(call.kwargs)["shape"], name=call.name)

    def emit_layer(
        self, call: LayerCall, name_expr: str | None = None, overrides: Mapping[int | str, str] | None = None
    ) -> str:
        shape = (overrides or {}).get("shape", literal(dict(call.kwargs)["shape"]))
        return f"keras.Input(shape={shape}, name={name_expr or literal(call.name)})"


class _WindowedConvHandler(Handler):
    """Shared padding logic of Conv2D and DepthwiseConv2D.

    The IR's explicit pads become ``padding="valid"`` when zero, ``"same"`` when they equal
    TensorFlow SAME for this input, kernel, stride and dilation, and otherwise an explicit
    ``ZeroPadding2D`` (named ``<node>_pad``) followed by a valid conv: exact, and it adds no
    weights, so canonical weights are unaffected.
    """

    def padding(self, node: Conv2D | DepthwiseConv2D, graph: Graph, taken: set[str]) -> tuple[str, list[LayerCall]]:
        if node.stride != (1, 1) and node.dilation != (1, 1):
            # Keras rejects strides > 1 together with dilation_rate > 1.
            raise UnsupportedOpError(BACKEND, node, f"stride {node.stride} with dilation {node.dilation}")
        if any(p < 0 for p in node.padding):
            raise UnsupportedOpError(BACKEND, node, f"negative padding {node.padding}")
        if node.padding == (0, 0, 0, 0):
            return "valid", []
        h, w = graph[node.inputs[0]].shape[:2]
        same = (
            *tf_same_padding(h, node.kernel[0], node.stride[0], node.dilation[0]),
            *tf_same_padding(w, node.kernel[1], node.stride[1], node.dilation[1]),
        )
        if node.padding == same:
            return "same", []
        pad_name = unique_name(graph, f"{node.name}_pad", taken)
        pad = _zero_padding_arg(node.padding)
        return "valid", [LayerCall("ZeroPadding2D", pad_name, node.inputs, (pad,), (), node.name)]


def _zero_padding_arg(p: Pad4) -> tuple[tuple[int, int], tuple[int, int]]:
    top, bottom, left, right = p
    return ((top, bottom), (left, right))


class Conv2DHandler(_WindowedConvHandler):
    op = "conv2d"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Conv2D)
        padding, pre = self.padding(node, graph, taken)
        kwargs: dict[str, Any] = {}
        if node.stride != (1, 1):
            kwargs["strides"] = _pair_or_int(node.stride)
        if padding != "valid":
            kwargs["padding"] = padding
        if node.dilation != (1, 1):
            kwargs["dilation_rate"] = _pair_or_int(node.dilation)
        if node.groups != 1:
            kwargs["groups"] = node.groups
        kwargs["use_bias"] = node.use_bias
        inputs = (pre[-1].name,) if pre else node.inputs
        conv = LayerCall(
            "Conv2D", node.name, inputs, (node.filters, _pair_or_int(node.kernel)), tuple(kwargs.items()), node.name
        )
        return [*pre, conv]


class DepthwiseConv2DHandler(_WindowedConvHandler):
    op = "depthwise_conv2d"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, DepthwiseConv2D)
        padding, pre = self.padding(node, graph, taken)
        kwargs: dict[str, Any] = {}
        if node.stride != (1, 1):
            kwargs["strides"] = _pair_or_int(node.stride)
        if padding != "valid":
            kwargs["padding"] = padding
        if node.multiplier != 1:
            kwargs["depth_multiplier"] = node.multiplier
        if node.dilation != (1, 1):
            kwargs["dilation_rate"] = _pair_or_int(node.dilation)
        kwargs["use_bias"] = node.use_bias
        inputs = (pre[-1].name,) if pre else node.inputs
        conv = LayerCall(
            "DepthwiseConv2D", node.name, inputs, (_pair_or_int(node.kernel),), tuple(kwargs.items()), node.name
        )
        return [*pre, conv]


class BatchNormHandler(Handler):
    """Keras BatchNormalization: ``momentum`` is the IR's decay (moving = m*moving + (1-m)*batch).

    Keras updates the moving variance with the *biased* batch variance; when the IR asks for
    the unbiased one (PyTorch's convention) the layer is archc's UnbiasedBatchNormalization,
    which differs only in that update.
    """

    op = "batchnorm"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, BatchNorm)
        kwargs: dict[str, Any] = {"momentum": node.decay, "epsilon": node.epsilon}
        if not node.center:
            kwargs["center"] = False
        if not node.scale:
            kwargs["scale"] = False
        cls = "BatchNormalization" if node.variance_update == "biased" else UNBIASED_BN
        return _one(node, cls, **kwargs)

    def build_layer(self, call: LayerCall) -> Any:
        if call.cls == UNBIASED_BN:
            from .bn import UnbiasedBatchNormalization

            return UnbiasedBatchNormalization(**dict(call.kwargs), name=call.name)
        return super().build_layer(call)

    def emit_layer(
        self, call: LayerCall, name_expr: str | None = None, overrides: Mapping[int | str, str] | None = None
    ) -> str:
        src = super().emit_layer(call, name_expr, overrides)
        # The emitted module defines the subclass itself (templates/unbiased_bn.py.j2).
        return src.replace(f"layers.{UNBIASED_BN}(", f"{UNBIASED_BN}(", 1)


class ActivationHandler(Handler):
    """Activations by the formulas PyTorch uses too, so both backends compute the same thing.

    Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6`` (Keras 2's was ``0.2 x + 0.5``) and
    ``hard_silu`` is ``x * hard_sigmoid(x)``: PyTorch's Hardsigmoid and Hardswish.
    """

    op = "activation"
    KINDS: ClassVar[dict[str, str]] = {
        "sigmoid": "sigmoid",
        "tanh": "tanh",
        "hard_sigmoid": "hard_sigmoid",
        "hard_swish": "hard_silu",
        "swish": "silu",
    }

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Activation)
        if node.kind == "relu":
            return _one(node, "ReLU")
        if node.kind == "relu6":
            return _one(node, "ReLU", 6.0)  # as keras.applications: layers.ReLU(6.0)
        if node.kind not in self.KINDS:
            raise UnsupportedOpError(BACKEND, node, f"activation {node.kind!r}")
        return _one(node, "Activation", self.KINDS[node.kind])


class ZeroPad2DHandler(Handler):
    op = "zero_pad2d"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, ZeroPad2D)
        if any(p < 0 for p in node.padding):
            raise UnsupportedOpError(BACKEND, node, f"negative padding {node.padding}")
        return _one(node, "ZeroPadding2D", _zero_padding_arg(node.padding))


class Pool2DHandler(Handler):
    op = "pool2d"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Pool2D)
        cls = "AveragePooling2D" if node.kind == "avg" else "MaxPooling2D"
        return _one(node, cls, _pair_or_int(node.kernel), _pair_or_int(node.stride))


class GlobalPoolHandler(Handler):
    op = "global_pool"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, GlobalPool)
        cls = "GlobalAveragePooling2D" if node.kind == "avg" else "GlobalMaxPooling2D"
        return _one(node, cls, keepdims=True) if node.keepdims else _one(node, cls)


class FlattenHandler(Handler):
    """Keras flattens (H, W, C) in that order, which is the IR's order."""

    op = "flatten"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Flatten)
        return _one(node, "Flatten")


class DenseHandler(Handler):
    op = "dense"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Dense)
        if graph[node.inputs[0]].shape != (node.in_features,):
            raise UnsupportedOpError(BACKEND, node, f"dense on a {graph[node.inputs[0]].shape} input (flatten first)")
        return _one(node, "Dense", node.units) if node.use_bias else _one(node, "Dense", node.units, use_bias=False)


class DropoutHandler(Handler):
    op = "dropout"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Dropout)
        return _one(node, "Dropout", node.rate)


class SoftmaxHandler(Handler):
    """``Activation("softmax")`` over the last axis, as keras.applications' "predictions"."""

    op = "softmax"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        assert isinstance(node, Softmax)
        return _one(node, "Activation", "softmax")


class AddHandler(Handler):
    op = "add"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        return _one(node, "Add")


class MultiplyHandler(Handler):
    """Keras' Multiply broadcasts a (1, 1, C) input over (H, W, C), as the IR specifies."""

    op = "multiply"

    def describe(self, node: Node, graph: Graph, taken: set[str]) -> list[LayerCall]:
        return _one(node, "Multiply")


HANDLERS: Mapping[str, Handler] = {
    h.op: h
    for h in (
        InputHandler(),
        Conv2DHandler(),
        DepthwiseConv2DHandler(),
        BatchNormHandler(),
        ActivationHandler(),
        ZeroPad2DHandler(),
        Pool2DHandler(),
        GlobalPoolHandler(),
        FlattenHandler(),
        DenseHandler(),
        DropoutHandler(),
        SoftmaxHandler(),
        AddHandler(),
        MultiplyHandler(),
    )
}
"""IR op -> handler: the single table read by build.py and emit.py."""


def describe(graph: Graph) -> list[LayerCall]:
    """Every Keras layer call of ``graph`` in topological order (builder and emitter share it)."""
    taken: set[str] = set()
    calls: list[LayerCall] = []
    for node in graph.nodes:
        handler = HANDLERS.get(node.op)
        if handler is None:
            raise UnsupportedOpError(BACKEND, node)
        calls.extend(handler.describe(node, graph, taken))
    return calls


def handler_for(call: LayerCall, graph: Graph) -> Handler:
    return HANDLERS[graph[call.node].op]
