"""The torch backend's per-op handler table: one entry per IR op, shared by builder and emitter.

Each handler turns an IR node into a :class:`Layer`, a constructor call described as data
(class + arguments). The builder instantiates it (:meth:`Layer.instantiate`); the emitter
prints it (:meth:`Layer.source`). Because both read the same ``Layer``, the generated code
and the instantiated model cannot drift apart (docs/DESIGN.md, style 2).

A node the handler cannot reproduce *exactly* raises :class:`UnsupportedOpError`; nothing is
approximated (docs/DESIGN.md, style 4).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from archcompiler import ir
from archcompiler.registry import UnsupportedOpError

from . import layers

BACKEND = "torch"

Slot = tuple[str, int | str]
"""One constructor argument: ("arg", position) or ("kw", keyword)."""


def _pair(v: tuple[int, int]) -> int | tuple[int, int]:
    """(3, 3) -> 3: what a person would write; torch accepts either."""
    return v[0] if v[0] == v[1] else tuple(v)


def torch_momentum(decay: float) -> float:
    """torch's BatchNorm ``momentum`` is the weight of the *new* batch: 1 - Keras' decay.

    Rounded to 12 significant digits so that 1 - 0.99 reads 0.01 rather than the binary
    artefact 0.010000000000000009 (a 1e-17 difference, far below float32 resolution).
    """
    return float(f"{1.0 - decay:.12g}")


@dataclass(frozen=True)
class Layer:
    """A module constructor call as data: ``cls(*args, **kwargs)``."""

    cls: type[nn.Module]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def qualname(self) -> str:
        """How emitted code spells the class: ``nn.Conv2d`` or a class copied from layers.py."""
        if self.cls.__module__ == layers.__name__:
            return self.cls.__name__
        assert getattr(nn, self.cls.__name__, None) is self.cls, self.cls
        return f"nn.{self.cls.__name__}"

    def instantiate(self) -> nn.Module:
        return self.cls(*self.args, **self.kwargs)

    def slots(self) -> list[tuple[Slot, Any]]:
        """Every argument as ((kind, position or keyword), value), in call order."""
        return [(("arg", i), v) for i, v in enumerate(self.args)] + [(("kw", k), v) for k, v in self.kwargs.items()]

    def slot_name(self, slot: Slot) -> str:
        """A readable parameter name for an argument: the constructor's own name for it."""
        kind, key = slot
        if kind == "kw":
            return str(key)
        for klass in self.cls.__mro__:
            params = [
                p.name
                for p in inspect.signature(klass.__init__).parameters.values()
                if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
            ]
            if params:
                return params[int(key)]
        return f"arg{key}"

    def source(self, overrides: Mapping[Slot, str] | None = None) -> str:
        """The constructor call as code; ``overrides`` replace literals by expressions (names)."""
        over = overrides or {}
        parts = []
        for slot, value in self.slots():
            text = over.get(slot, repr(value))
            parts.append(text if slot[0] == "arg" else f"{slot[1]}={text}")
        return f"{self.qualname}({', '.join(parts)})"


class Handler:
    """Build part and emit part of one IR op. Subclasses implement :meth:`layer`."""

    op: ClassVar[str]

    def layer(self, node: Any, graph: ir.Graph) -> Layer | None:
        """The module for ``node``, or None when the node needs no module (the input)."""
        raise NotImplementedError

    def build(self, node: ir.Node, graph: ir.Graph) -> nn.Module | None:
        spec = self.layer(node, graph)
        return None if spec is None else spec.instantiate()

    def emit(self, node: ir.Node, graph: ir.Graph) -> str | None:
        spec = self.layer(node, graph)
        return None if spec is None else spec.source()


def _rank(graph: ir.Graph, node: ir.Node, i: int = 0) -> int:
    return len(graph[node.inputs[i]].shape)


def _require_image(node: ir.Node, graph: ir.Graph) -> None:
    if _rank(graph, node) != 3:
        raise UnsupportedOpError(BACKEND, node, f"input of rank {_rank(graph, node)}, expected (H, W, C)")


def _conv(node: ir.Conv2D | ir.DepthwiseConv2D, in_ch: int, out_ch: int, groups: int) -> Layer:
    _require_positive(node, node.padding)
    top, bottom, left, right = node.padding
    kwargs: dict[str, Any] = {}
    if node.stride != (1, 1):
        kwargs["stride"] = _pair(node.stride)
    # A strided conv with padding gets PaddedConv2d even when this size happens to pad
    # symmetrically: TF "same" pads depend on the input size, and one class for all sizes keeps
    # repeated blocks structurally identical (one emitted block function, pad a parameter).
    symmetric = top == bottom and left == right and not (node.stride != (1, 1) and any(node.padding))
    if symmetric and (top or left):
        kwargs["padding"] = _pair((top, left))
    if node.dilation != (1, 1):
        kwargs["dilation"] = _pair(node.dilation)
    if groups != 1:
        kwargs["groups"] = groups
    kwargs["bias"] = node.use_bias
    if not symmetric:
        # e.g. TF "same" with an even total pad: extra pixel at bottom/right, reproduced exactly.
        kwargs["pad"] = tuple(node.padding)
        return Layer(layers.PaddedConv2d, (in_ch, out_ch, _pair(node.kernel)), kwargs)
    return Layer(nn.Conv2d, (in_ch, out_ch, _pair(node.kernel)), kwargs)


def _require_positive(node: ir.Node, pad: tuple[int, ...]) -> None:
    if any(p < 0 for p in pad):
        raise UnsupportedOpError(BACKEND, node, f"negative padding {pad}")


class InputHandler(Handler):
    op = "input"

    def layer(self, node: ir.Input, graph: ir.Graph) -> None:
        if len(node.shape) not in (1, 3):
            raise UnsupportedOpError(BACKEND, node, f"input shape {node.shape}")
        return None


class Conv2DHandler(Handler):
    op = "conv2d"

    def layer(self, node: ir.Conv2D, graph: ir.Graph) -> Layer:
        _require_image(node, graph)
        return _conv(node, node.in_channels, node.filters, node.groups)


class DepthwiseConv2DHandler(Handler):
    """Depthwise = grouped conv with groups=C and C*M outputs; output channel c*M + m is
    filter m of input channel c, the order of Keras' (kh, kw, C, M) kernel reshaped."""

    op = "depthwise_conv2d"

    def layer(self, node: ir.DepthwiseConv2D, graph: ir.Graph) -> Layer:
        _require_image(node, graph)
        return _conv(node, node.in_channels, node.in_channels * node.multiplier, node.in_channels)


class BatchNormHandler(Handler):
    """torch BatchNorm, or the layers.py subclass when the moving variance is biased (Keras).

    The subclass is used only when needed so that an "unbiased" spec builds stock torch code.
    """

    op = "batchnorm"

    def layer(self, node: ir.BatchNorm, graph: ir.Graph) -> Layer:
        if node.center != node.scale:
            # torch's affine flag covers gamma and beta together; freezing one of them would
            # change the parameter count and the weight names, so refuse instead.
            raise UnsupportedOpError(BACKEND, node, f"center={node.center} with scale={node.scale}")
        rank = _rank(graph, node)
        if rank not in (1, 3):
            raise UnsupportedOpError(BACKEND, node, f"input of rank {rank}")
        biased = node.variance_update == "biased"
        if rank == 3:
            cls = layers.BatchNorm2d if biased else nn.BatchNorm2d
        else:
            cls = layers.BatchNorm1d if biased else nn.BatchNorm1d
        kwargs: dict[str, Any] = {"eps": node.epsilon, "momentum": torch_momentum(node.decay)}
        if not node.center:
            kwargs["affine"] = False
        return Layer(cls, (node.channels,), kwargs)


class ActivationHandler(Handler):
    """Keras 3 and torch agree on every kind listed (hard_sigmoid is relu6(x + 3) / 6 in both;
    Keras 2's 0.2x + 0.5 is *not* what the IR means)."""

    op = "activation"
    CLASSES: ClassVar[dict[str, type[nn.Module]]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "hard_sigmoid": nn.Hardsigmoid,
        "hard_swish": nn.Hardswish,
        "swish": nn.SiLU,
    }

    def layer(self, node: ir.Activation, graph: ir.Graph) -> Layer:
        if node.kind not in self.CLASSES:
            raise UnsupportedOpError(BACKEND, node, f"activation {node.kind!r}")
        return Layer(self.CLASSES[node.kind])


class ZeroPad2DHandler(Handler):
    op = "zero_pad2d"

    def layer(self, node: ir.ZeroPad2D, graph: ir.Graph) -> Layer:
        _require_image(node, graph)
        _require_positive(node, node.padding)
        top, bottom, left, right = node.padding
        return Layer(nn.ZeroPad2d, ((left, right, top, bottom),))


class Pool2DHandler(Handler):
    """Unpadded windows, floor division of the output size: torch's ceil_mode=False default."""

    op = "pool2d"

    def layer(self, node: ir.Pool2D, graph: ir.Graph) -> Layer:
        _require_image(node, graph)
        cls = nn.MaxPool2d if node.kind == "max" else nn.AvgPool2d
        return Layer(cls, (_pair(node.kernel),), {"stride": _pair(node.stride)})


class GlobalPoolHandler(Handler):
    op = "global_pool"

    def layer(self, node: ir.GlobalPool, graph: ir.Graph) -> Layer:
        _require_image(node, graph)
        kwargs: dict[str, Any] = {"kind": node.kind}
        if node.keepdims:
            kwargs["keepdims"] = True
        return Layer(layers.GlobalPool, (), kwargs)


class FlattenHandler(Handler):
    op = "flatten"

    def layer(self, node: ir.Flatten, graph: ir.Graph) -> Layer:
        return Layer(layers.FlattenHWC)


class DenseHandler(Handler):
    op = "dense"

    def layer(self, node: ir.Dense, graph: ir.Graph) -> Layer:
        if _rank(graph, node) != 1:
            # Keras applies Dense to the last axis of an image; nn.Linear on NCHW would not.
            raise UnsupportedOpError(BACKEND, node, "dense on a non-flat input")
        kwargs = {} if node.use_bias else {"bias": False}
        return Layer(nn.Linear, (node.in_features, node.units), kwargs)


class DropoutHandler(Handler):
    op = "dropout"

    def layer(self, node: ir.Dropout, graph: ir.Graph) -> Layer:
        return Layer(nn.Dropout, (node.rate,))


class SoftmaxHandler(Handler):
    """Softmax over channels: dim 1 in both (N, C) and (N, C, H, W)."""

    op = "softmax"

    def layer(self, node: ir.Softmax, graph: ir.Graph) -> Layer:
        return Layer(nn.Softmax, (), {"dim": 1})


def _require_same_rank(node: ir.Node, graph: ir.Graph) -> None:
    """A channels-last (C,) broadcasts over (H, W, C); in NCHW it would not, so refuse it."""
    ranks = {len(graph[i].shape) for i in node.inputs}
    if len(ranks) != 1:
        raise UnsupportedOpError(BACKEND, node, "inputs of different ranks")


class AddHandler(Handler):
    op = "add"

    def layer(self, node: ir.Add, graph: ir.Graph) -> Layer:
        _require_same_rank(node, graph)
        return Layer(layers.Add)


class MultiplyHandler(Handler):
    op = "multiply"

    def layer(self, node: ir.Multiply, graph: ir.Graph) -> Layer:
        _require_same_rank(node, graph)
        return Layer(layers.Multiply)


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
"""IR op -> handler: the one table the builder and the emitter both read."""
