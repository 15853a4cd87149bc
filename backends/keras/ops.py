"""The Keras backend's per-op table: IR node -> Keras layer calls.

One table drives both the builder and the emitter, so they cannot drift (docs/DESIGN.md, style 2):
a handler *describes* a node as :class:`~archcompiler.kit.calls.Call` s (how the class is
spelled in source, positional and keyword arguments as plain literals, layer name, input
layer names); the builder instantiates a call (:meth:`Handler.instantiate`), the emitter
renders the same call. Every argument is a literal, so the emitted constructor and the
instantiated one are the same call. Keras is imported only by ``instantiate``: describing and
emitting need no framework.

An op, or an attribute value, that Keras cannot express exactly raises UnsupportedOpError;
nothing is approximated (docs/DESIGN.md, style 4). Keras' variable names are the canonical
names, so a handler declares none; a layer class keras.layers lacks is named, with its module,
in the handler's ``classes`` (emitted code copies its source).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from archcompiler.ir.graph import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    DropPath,
    Flatten,
    GlobalPool,
    Graph,
    LayerScale,
    MobileMQA,
    Node,
    Pad4,
    Pool2D,
    Rescaling,
    Softmax,
    ZeroPad2D,
)
from archcompiler.kit.calls import Call, make_call, padding_style
from archcompiler.kit.registry import BackendError, UnsupportedOpError, check_kinds, handler_table

BACKEND = "keras"

UNBIASED_BN = "UnbiasedBatchNormalization"
"""Name of archc's BatchNormalization subclass (see ``bn.py``); not in ``keras.layers``.
Emitted code defines it itself, so it is spelled without a module."""

CUSTOM_CLASSES: Mapping[str, str] = {
    UNBIASED_BN: f"{__package__}.bn",
    "SubsampledConv2D": f"{__package__}.subsample",
    "SubsampledDepthwiseConv2D": f"{__package__}.subsample",
    "MobileMQA": f"{__package__}.attention",
    "LayerScale": f"{__package__}.channelwise",
}
"""archc's own Keras layer classes -> the module defining each. Calls spell them without a
module; the emitter copies their source into generated code."""


def copied_classes(handlers: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Layer classes emitted code defines itself -> their modules: :data:`CUSTOM_CLASSES` and
    those the ``handlers`` name in ``classes`` (a plug-in's); a name two modules use is an error."""
    out = dict(CUSTOM_CLASSES)
    for handler in (handlers or {}).values():
        for name, module in getattr(handler, "classes", {}).items():
            if out.setdefault(name, module) != module:
                raise BackendError(f"keras: two layer classes are named {name!r} (in {module} and {out[name]})")
    return out


def resolve(cls: str, classes: Mapping[str, str] = CUSTOM_CLASSES) -> Any:
    """The Keras class (or ``keras.Input``) a call spells: ``layers.Conv2D``, ``keras.Input``,
    or a bare name in ``classes`` (name -> module: :data:`UNBIASED_BN`, a plug-in's class)."""
    from archcompiler.backends.keras._framework import keras

    if cls == "keras.Input":
        return keras.Input
    if cls in classes:
        import importlib

        return getattr(importlib.import_module(classes[cls]), cls)
    owner, _, attr = cls.partition(".")
    found = getattr(keras.layers, attr, None) if owner == "layers" else None
    if found is None:
        raise BackendError(f"keras: no layer class {cls!r}")
    return found


def _pair_or_int(p: tuple[int, int]) -> int | tuple[int, int]:
    """Keras accepts ``3`` for ``(3, 3)``; the shorter form reads like hand-written code."""
    return p[0] if p[0] == p[1] else p


def unique_name(graph: Graph, base: str) -> str:
    """``base`` unless an IR node has it; then ``base_2``, ``base_3``... A helper is named
    after its node (``<node>_pad``), and node names are unique, so helpers cannot collide."""
    name, k = base, 1
    while name in graph:
        k += 1
        name = f"{base}_{k}"
    return name


class Handler:
    """Describe one IR op as Keras layer calls; subclasses implement :meth:`describe`."""

    op: ClassVar[str]
    classes: ClassVar[Mapping[str, str]] = {}
    """Layer classes outside keras.layers that :meth:`describe` spells by bare name -> the
    module defining each (a plug-in's; imported only to build). Emitted code copies their
    source, so each uses only ``keras``, ``layers`` and ``ops`` (keras.ops)."""

    def describe(self, node: Any, graph: Graph) -> Sequence[Call]:
        """The Keras layer calls equivalent to ``node``; the last is named after it."""
        raise NotImplementedError

    def describe_general(self, node: Any, graph: Graph) -> Sequence[Call]:
        return self.describe(node, graph)

    def instantiate(self, call: Call) -> Any:
        """A live Keras layer (or input tensor) from the same literals as emitted."""
        classes = copied_classes({self.op: self}) if self.classes else CUSTOM_CLASSES
        return resolve(call.cls, classes)(*call.args, **dict(call.kwargs), name=call.name)


def layer_call(cls: str, node: Node, *args: Any, **kwargs: Any) -> Call:
    """``keras.layers.<cls>`` for ``node`` (see :func:`~archcompiler.kit.calls.make_call`): handlers
    state Keras' names of the positional arguments (``arg_names``, block parameters take them)
    and Keras' keyword defaults (``defaults``)."""
    return make_call(f"layers.{cls}", node, *args, **kwargs)


class InputHandler(Handler):
    op = "input"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        return [make_call("keras.Input", node, (), {"shape": tuple(node.shape)})]


CONV_DEFAULTS: Mapping[str, Any] = {
    "strides": 1,
    "padding": "valid",
    "dilation_rate": 1,
    "groups": 1,
    "depth_multiplier": 1,
    "use_bias": True,
}
"""Keras' defaults of the keyword arguments of Conv2D and DepthwiseConv2D."""


class _WindowedConvHandler(Handler):
    """Shared padding logic of Conv2D and DepthwiseConv2D.

    The IR's explicit pads become ``padding="valid"`` when zero, ``"same"`` when they equal
    TensorFlow SAME for this input, kernel, stride and dilation, and otherwise an explicit
    ``ZeroPadding2D`` (named ``<node>_pad``) followed by a valid conv: exact, and it adds no
    weights, so canonical weights are unaffected.
    """

    def padding(self, node: Conv2D | DepthwiseConv2D, graph: Graph) -> tuple[str, list[Call]]:
        style = padding_style(node, graph)
        if style == "same" and _subsampled(node, graph):
            style = "explicit"  # SAME of the strided conv, applied before the stride-1 conv
        if style in ("valid", "same"):
            return str(style), []
        name = unique_name(graph, f"{node.name}_pad")
        pad = layer_call("ZeroPadding2D", node, (_zero_padding_arg(node.padding),), arg_names=("padding",), name=name)
        return "valid", [pad]

    def conv(
        self, node: Conv2D | DepthwiseConv2D, graph: Graph, cls: str, args: tuple[Any, ...], **kw: Any
    ) -> list[Call]:
        """The conv call (after its pad layer, if any); ``kw``: the op's own keywords."""
        padding, pre = self.padding(node, graph)
        kwargs = {
            "strides": _pair_or_int(node.stride),
            "padding": padding,
            **kw,
            "dilation_rate": _pair_or_int(node.dilation),
            "use_bias": node.use_bias,
        }
        if _subsampled(node, graph):
            # a stride Keras refuses or TensorFlow miscomputes: stride 1, then subsample (exact)
            cls = f"Subsampled{cls}"
            kwargs["strides"] = 1
            kwargs["subsample"] = tuple(node.stride)
        else:
            cls = f"layers.{cls}"
        inputs = (pre[-1].name,) if pre else node.inputs
        names = ("filters", "kernel_size") if len(args) == 2 else ("kernel_size",)
        conv = make_call(cls, node, args, kwargs, arg_names=names, defaults=CONV_DEFAULTS, inputs=inputs)
        return [*pre, conv]


def _subsampled(node: Conv2D | DepthwiseConv2D, graph: Graph) -> bool:
    """Strides Keras cannot run in one layer: with a dilation (any conv), or unequal in height
    and width for a depthwise conv (TensorFlow's depthwise kernel needs equal strides); and the
    strides TensorFlow 2.21's oneDNN convolution gets wrong: a Conv2D on one input channel with
    height stride 1 and a wider width stride, making one output column, returns garbage for a
    batch of more than one (tests/backends/test_keras_strided_dilated.py)."""
    if node.stride == (1, 1):
        return False
    unequal = isinstance(node, DepthwiseConv2D) and node.stride[0] != node.stride[1]
    one_column = (
        isinstance(node, Conv2D) and node.stride[0] == 1 and node.shape[1] == 1 and graph[node.inputs[0]].shape[-1] == 1
    )
    return node.dilation != (1, 1) or unequal or one_column


def _zero_padding_arg(p: Pad4) -> tuple[tuple[int, int], tuple[int, int]]:
    top, bottom, left, right = p
    return ((top, bottom), (left, right))


class Conv2DHandler(_WindowedConvHandler):
    op = "conv2d"

    def describe(self, node: Conv2D, graph: Graph) -> list[Call]:
        return self.conv(node, graph, "Conv2D", (node.filters, _pair_or_int(node.kernel)), groups=node.groups)


class DepthwiseConv2DHandler(_WindowedConvHandler):
    op = "depthwise_conv2d"

    def describe(self, node: DepthwiseConv2D, graph: Graph) -> list[Call]:
        kernel = _pair_or_int(node.kernel)
        return self.conv(node, graph, "DepthwiseConv2D", (kernel,), depth_multiplier=node.multiplier)


class BatchNormHandler(Handler):
    """Keras BatchNormalization: ``momentum`` is the IR's decay (moving = m*moving + (1-m)*batch).

    Keras updates the moving variance with the *biased* batch variance; when the IR asks for
    the unbiased one (PyTorch's convention) the layer is archc's UnbiasedBatchNormalization,
    which differs only in that update.
    """

    op = "batchnorm"

    def describe(self, node: BatchNorm, graph: Graph) -> list[Call]:
        kwargs = {"momentum": node.decay, "epsilon": node.epsilon, "center": node.center, "scale": node.scale}
        cls = "layers.BatchNormalization" if node.variance_update == "biased" else UNBIASED_BN
        return [make_call(cls, node, (), kwargs, defaults={"center": True, "scale": True})]


class ActivationHandler(Handler):
    """Activations by the formulas PyTorch uses too, so both backends compute the same thing.

    Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6`` (Keras 2's was ``0.2 x + 0.5``) and
    ``hard_silu`` is ``x * hard_sigmoid(x)``: PyTorch's Hardsigmoid and Hardswish.
    """

    op = "activation"
    KINDS: ClassVar[dict[str, tuple[str, tuple[Any, ...], tuple[str, ...]]]] = {
        "relu": ("ReLU", (), ()),
        "relu6": ("ReLU", (6.0,), ("max_value",)),  # as keras.applications
        "sigmoid": ("Activation", ("sigmoid",), ("activation",)),
        "tanh": ("Activation", ("tanh",), ("activation",)),
        "hard_sigmoid": ("Activation", ("hard_sigmoid",), ("activation",)),
        "hard_swish": ("Activation", ("hard_silu",), ("activation",)),
        "swish": ("Activation", ("silu",), ("activation",)),
        "gelu": ("Activation", ("gelu",), ("activation",)),  # keras.activations.gelu: approximate=False
    }
    """Kind -> (keras.layers class, positional arguments, their names)."""

    def describe(self, node: Activation, graph: Graph) -> list[Call]:
        if node.kind not in self.KINDS:
            raise UnsupportedOpError(BACKEND, node, f"activation {node.kind!r}")
        cls, args, names = self.KINDS[node.kind]
        return [layer_call(cls, node, args, arg_names=names)]

    def instantiate(self, call: Call) -> Any:
        """The layer; in a float64 model (parity's oracle) gelu computed with float64's
        1 / sqrt(2): TensorFlow's exact gelu casts that constant through float32 (``tf.cast`` of a
        Python float), 5e-9 off in float64. float32 models keep Keras' own gelu, which the TFLite
        converter fuses and a saved .keras file names."""
        from archcompiler.backends.keras._framework import keras

        layer = super().instantiate(call)
        if call.args == ("gelu",) and keras.config.floatx() == "float64":
            layer.activation = _float64_gelu
        return layer


def _float64_gelu(x: Any) -> Any:
    """x * (1 + erf(x / sqrt(2))) / 2 with float64 constants (see ActivationHandler.instantiate)."""
    import numpy as np
    from archcompiler.backends.keras._framework import keras

    return x * (1.0 + keras.ops.erf(x * np.float64(np.sqrt(0.5)))) * np.float64(0.5)


class ZeroPad2DHandler(Handler):
    op = "zero_pad2d"

    def describe(self, node: ZeroPad2D, graph: Graph) -> list[Call]:
        return [layer_call("ZeroPadding2D", node, (_zero_padding_arg(node.padding),), arg_names=("padding",))]


class Pool2DHandler(Handler):
    op = "pool2d"

    def describe(self, node: Pool2D, graph: Graph) -> list[Call]:
        cls = "AveragePooling2D" if node.kind == "avg" else "MaxPooling2D"
        args = (_pair_or_int(node.kernel), _pair_or_int(node.stride))
        return [layer_call(cls, node, args, arg_names=("pool_size", "strides"))]


class GlobalPoolHandler(Handler):
    op = "global_pool"

    def describe(self, node: GlobalPool, graph: Graph) -> list[Call]:
        cls = "GlobalAveragePooling2D" if node.kind == "avg" else "GlobalMaxPooling2D"
        return [layer_call(cls, node, (), {"keepdims": node.keepdims}, defaults={"keepdims": False})]


class FlattenHandler(Handler):
    """Keras flattens (H, W, C) in that order, which is the IR's order."""

    op = "flatten"

    def describe(self, node: Flatten, graph: Graph) -> list[Call]:
        return [layer_call("Flatten", node)]


class DenseHandler(Handler):
    op = "dense"

    def describe(self, node: Dense, graph: Graph) -> list[Call]:
        if graph[node.inputs[0]].shape != (node.in_features,):
            raise UnsupportedOpError(BACKEND, node, f"dense on a {graph[node.inputs[0]].shape} input (flatten first)")
        kwargs, defaults = {"use_bias": node.use_bias}, {"use_bias": True}
        return [layer_call("Dense", node, (node.units,), kwargs, arg_names=("units",), defaults=defaults)]


class DropoutHandler(Handler):
    op = "dropout"

    def describe(self, node: Dropout, graph: Graph) -> list[Call]:
        return [layer_call("Dropout", node, (node.rate,), arg_names=("rate",))]


class DropPathHandler(Handler):
    """Keras applications' stochastic depth: ``Dropout`` with one mask value per example
    (``noise_shape`` (None, 1, 1, 1) on an image), kept examples scaled by 1 / (1 - rate)."""

    op = "drop_path"

    def describe(self, node: DropPath, graph: Graph) -> list[Call]:
        noise = (None, *(1 for _ in node.shape))
        return [layer_call("Dropout", node, (node.rate,), {"noise_shape": noise}, arg_names=("rate",))]


class LayerScaleHandler(Handler):
    """archc's LayerScale layer (channelwise.py): ``x * gamma`` on the last axis."""

    op = "layer_scale"

    def describe(self, node: LayerScale, graph: Graph) -> list[Call]:
        args = (node.channels,)
        kwargs, defaults = {"init": node.init}, {"init": 1e-5}
        return [make_call("LayerScale", node, args, kwargs, arg_names=("channels",), defaults=defaults)]


class NormalizationHandler(Handler):
    """keras.layers.Normalization over the last axis, built without mean and variance so that
    they are (non-trainable) weights, with its ``count``: keras.applications' EfficientNet layer."""

    op = "normalization"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        return [layer_call("Normalization", node, (), {"axis": -1}, defaults={"axis": -1})]


class SoftmaxHandler(Handler):
    """``Activation("softmax")`` over the last axis, as keras.applications' "predictions"."""

    op = "softmax"

    def describe(self, node: Softmax, graph: Graph) -> list[Call]:
        return [layer_call("Activation", node, ("softmax",), arg_names=("activation",))]


class AddHandler(Handler):
    op = "add"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        return [layer_call("Add", node)]


class MultiplyHandler(Handler):
    """Keras' Multiply broadcasts a (1, 1, C) input over (H, W, C), as the IR specifies."""

    op = "multiply"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        return [layer_call("Multiply", node)]


class ConcatHandler(Handler):
    """``Concatenate(axis=-1)``: the IR concatenates channels, the last axis in Keras too."""

    op = "concat"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        return [layer_call("Concatenate", node, (), {"axis": -1})]


class RescalingHandler(Handler):
    """``Rescaling(scale, offset)``: x * scale + offset, as keras.applications' MobileNetV3 input."""

    op = "rescaling"

    def describe(self, node: Node, graph: Graph) -> list[Call]:
        assert isinstance(node, Rescaling)
        kwargs = {"offset": node.offset}
        return [layer_call("Rescaling", node, (node.scale,), kwargs, arg_names=("scale",), defaults={"offset": 0.0})]

    def instantiate(self, call: Call) -> Any:
        """The layer, its constants held as float64 numpy scalars: TensorFlow casts a Python
        float through float32 first (``tf.cast(1 / 127.5, "float64")`` is float32's value), so a
        float64 model (parity's oracle) would compute with a float32 scale. float32 is unchanged."""
        import numpy as np

        layer = super().instantiate(call)
        layer.scale, layer.offset = np.float64(layer.scale), np.float64(layer.offset)
        return layer


class MobileMQAHandler(Handler):
    """archc's MobileMQA layer (backends/keras/attention.py): keras ops only, TFLite builtins."""

    op = "mobile_mqa"
    DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "kv_stride": 1,
        "dw_kernel": 3,
        "padding": ((1, 1), (1, 1)),
        "epsilon": 1e-5,
        "momentum": 0.9,
        "variance_update": "unbiased",
    }

    def describe(self, node: MobileMQA, graph: Graph) -> list[Call]:
        args = (node.filters, node.heads, node.key_dim, node.value_dim)
        kwargs = {
            "kv_stride": node.kv_stride,
            "dw_kernel": node.dw_kernel,
            "padding": _zero_padding_arg(node.kv_padding),
            "epsilon": node.epsilon,
            "momentum": node.decay,
            "variance_update": node.variance_update,
        }
        names = ("filters", "heads", "key_dim", "value_dim")
        return [make_call("MobileMQA", node, args, kwargs, arg_names=names, defaults=self.DEFAULTS)]


check_kinds(BACKEND, ActivationHandler.KINDS)

HANDLERS: Mapping[str, Handler] = handler_table(
    BACKEND,
    {
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
            DropPathHandler(),
            LayerScaleHandler(),
            NormalizationHandler(),
            SoftmaxHandler(),
            AddHandler(),
            MultiplyHandler(),
            ConcatHandler(),
            RescalingHandler(),
            MobileMQAHandler(),
        )
    },
)
"""IR op -> handler: the default table of KerasBackend (builder and emitter read the
backend instance's ``handlers``, so a subclass can replace entries): the built-in ops, then
those plug-ins add (kit.registry.handler_table)."""
