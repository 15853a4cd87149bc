"""The torch backend's per-op handler table: one entry per IR op, shared by builder and emitter.

Each handler turns an IR node into a :class:`~archcompiler.kit.calls.Call`, the module
constructor call as data (class spelling + literal arguments). The builder instantiates it
(:meth:`Handler.instantiate`); the emitter renders it. Because both read the same call, the
generated code and the instantiated model cannot drift apart (docs/DESIGN.md, style 2).

A node the handler cannot reproduce *exactly* raises :class:`UnsupportedOpError`; nothing is
approximated (docs/DESIGN.md, style 4).

What is torch's own about an op lives on its handler too: the names of its tensors inside the
module (:attr:`Handler.weight_names`) and the module classes torch.nn lacks that it uses
(:attr:`Handler.classes`, copied into emitted code like layers.py's).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from archcompiler.backends.torch import layers
from torch import nn

from archcompiler import ir
from archcompiler.kit.calls import Call, make_call
from archcompiler.kit.registry import BackendError, UnsupportedOpError, check_kinds, handler_table

BACKEND = "torch"


def _pair(v: tuple[int, int]) -> int | tuple[int, int]:
    """(3, 3) -> 3: what a person would write; torch accepts either."""
    return v[0] if v[0] == v[1] else tuple(v)


def torch_momentum(decay: float) -> float:
    """torch's BatchNorm ``momentum`` is the weight of the *new* batch: 1 - Keras' decay.

    Rounded to 12 significant digits so that 1 - 0.99 reads 0.01 rather than the binary
    artefact 0.010000000000000009 (a 1e-17 difference, far below float32 resolution).
    """
    return float(f"{1.0 - decay:.12g}")


Layer = Callable[..., nn.Module]
"""A module class, or a layers.py class whose ``__new__`` returns a stock module (BiasedBatchNorm)."""


def spelling(cls: Layer) -> str:
    """How emitted code spells a layer: ``nn.Conv2d``, or the bare name of a class whose
    definition the emitted code copies (layers.py's, or one a handler lists in ``classes``)."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    if cls.__module__ == "torch" or cls.__module__.startswith("torch."):
        raise BackendError(f"torch: emitted code can only use torch.nn classes and copied ones, not {cls!r}")
    return cls.__name__


LAYERS: Mapping[str, Layer] = {
    name: c for name, c in vars(layers).items() if isinstance(c, type) and c.__module__ == layers.__name__
}
"""layers.py's classes by name: what emitted code copies besides the handlers' own classes."""


def copied_classes(handlers: Mapping[str, Any] | None = None) -> dict[str, Layer]:
    """Classes emitted code defines itself, by name: layers.py's and those the ``handlers``
    list in ``classes`` (a plug-in's own modules); a name two of them use is an error."""
    out: dict[str, Layer] = dict(LAYERS)
    for handler in (handlers or {}).values():
        for cls in getattr(handler, "classes", ()):
            if out.setdefault(cls.__name__, cls) is not cls:
                other = out[cls.__name__]
                raise BackendError(f"torch: two module classes are named {cls.__name__!r}: {cls!r} and {other!r}")
    return out


def resolve(cls: str, classes: Mapping[str, Layer] = LAYERS) -> Layer:
    """The class a call spells (the inverse of :func:`spelling`): ``nn.<name>``, or a bare name
    in ``classes`` (default: layers.py's; see :func:`copied_classes`)."""
    owner, _, attr = cls.rpartition(".")
    found = getattr(nn, attr, None) if owner == "nn" else classes.get(attr) if owner == "" else None
    is_module = isinstance(found, type) and issubclass(found, nn.Module)
    is_factory = owner == "" and attr in layers.FACTORIES
    if not (is_module or is_factory):
        raise BackendError(f"torch: no module class {cls!r} in torch.nn, layers.py or a handler's classes")
    return found  # type: ignore[return-value]


@functools.cache
def positional_names(cls: Layer) -> tuple[str, ...]:
    """The constructor's own names of its positional parameters (block parameters take them);
    a subclass taking ``*args`` names them as its base class does, a layers.FACTORIES class
    as its ``__new__`` does."""
    for klass in cls.__mro__:
        init = klass.__new__ if klass.__name__ in layers.FACTORIES else klass.__init__
        params = [
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "cls")
        ]
        if params:
            return tuple(params)
    return ()


def module_call(
    cls: Layer,
    node: ir.Node,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    inputs: Sequence[str] | None = None,
) -> Call:
    """The call constructing ``cls`` for ``node`` (named after the node unless a helper's ``name``)."""
    return make_call(
        spelling(cls), node, args, kwargs, arg_names=positional_names(cls), defaults=defaults, name=name, inputs=inputs
    )


def unique_name(graph: ir.Graph, base: str) -> str:
    """``base`` unless an IR node has it; then ``base_2``, ``base_3``... A helper layer is named
    after its node (``<node>_pad``), as in the Keras backend, so helpers cannot collide."""
    name, k = base, 1
    while name in graph:
        k += 1
        name = f"{base}_{k}"
    return name


class Handler:
    """Describe one IR op as the module constructor call building it; subclasses implement
    :meth:`describe`. The builder instantiates the call, the emitter renders it."""

    op: ClassVar[str]
    weight_names: ClassVar[Mapping[str, str]] = {}
    """Canonical param (``kernel``) -> the tensor's name inside the node's module (``weight``):
    the state_dict key is ``<node>.<name>``. Every param the op's ``weights()`` gives must be
    here; a missing one is an error naming it, never a guess."""
    classes: ClassVar[tuple[type[nn.Module], ...]] = ()
    """Module classes outside torch.nn and layers.py that :meth:`describe` uses (a plug-in's):
    calls spell them by bare name and emitted code copies their source, so each must be
    self-contained (only ``torch``, ``nn`` and ``F`` in its body)."""

    def describe(self, node: Any, graph: ir.Graph) -> Sequence[Call]:
        """One call per node (named after it), none for the graph input."""
        raise NotImplementedError

    def describe_general(self, node: Any, graph: ir.Graph) -> Sequence[Call]:
        return self.describe(node, graph)

    def instantiate(self, call: Call) -> nn.Module:
        classes = copied_classes({self.op: self}) if self.classes else LAYERS
        return resolve(call.cls, classes)(*call.args, **dict(call.kwargs))


def _rank(graph: ir.Graph, node: ir.Node, i: int = 0) -> int:
    return len(graph[node.inputs[i]].shape)


def _require_image(node: ir.Node, graph: ir.Graph) -> None:
    if _rank(graph, node) != 3:
        raise UnsupportedOpError(BACKEND, node, f"input of rank {_rank(graph, node)}, expected (H, W, C)")


CONV_DEFAULTS: Mapping[str, Any] = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
"""nn.Conv2d's defaults of the keywords the conv handlers set (``bias`` is always written)."""


def _conv(
    node: ir.Conv2D | ir.DepthwiseConv2D, graph: ir.Graph, in_ch: int, out_ch: int, groups: int, general: bool
) -> list[Call]:
    """Stock layers only: nn.Conv2d with ``padding=`` when the IR's pad is symmetric; else
    nn.ZeroPad2d (named ``<node>_pad``) with the asymmetric part, e.g. TF "same" with an even
    total pad (extra pixel at bottom/right), then nn.Conv2d with the symmetric rest. The
    general form (every instance of a block alike) always has the nn.ZeroPad2d, of nothing
    where the pad is symmetric: the emitted module leaves such a pad out (it would copy the
    tensor), so it runs the layers the built model runs. The conv keeps the node's name, so
    state_dict keys stay ``<node>.weight``."""
    top, bottom, left, right = node.padding
    sym_h, sym_w = min(top, bottom), min(left, right)
    rest = (left - sym_w, right - sym_w, top - sym_h, bottom - sym_h)  # nn.ZeroPad2d order
    kwargs: dict[str, Any] = {
        "stride": _pair(node.stride),
        "padding": _pair((sym_h, sym_w)),
        "dilation": _pair(node.dilation),
        "groups": groups,
        "bias": node.use_bias,
    }
    args = (in_ch, out_ch, _pair(node.kernel))
    if not general and not any(rest):
        return [module_call(nn.Conv2d, node, args, kwargs, CONV_DEFAULTS)]
    pad = module_call(nn.ZeroPad2d, node, (rest,), name=unique_name(graph, f"{node.name}_pad"))
    return [pad, module_call(nn.Conv2d, node, args, kwargs, CONV_DEFAULTS, inputs=(pad.name,))]


class InputHandler(Handler):
    op = "input"

    def describe(self, node: ir.Input, graph: ir.Graph) -> list[Call]:
        if len(node.shape) not in (1, 3):
            raise UnsupportedOpError(BACKEND, node, f"input shape {node.shape}")
        return []


CONV_WEIGHTS: Mapping[str, str] = {"kernel": "weight", "bias": "bias"}
"""nn.Conv2d's and nn.Linear's names of the canonical kernel and bias."""


class Conv2DHandler(Handler):
    op = "conv2d"
    weight_names = CONV_WEIGHTS

    def describe(self, node: ir.Conv2D, graph: ir.Graph, general: bool = False) -> list[Call]:
        _require_image(node, graph)
        return _conv(node, graph, node.in_channels, node.filters, node.groups, general)

    def describe_general(self, node: ir.Conv2D, graph: ir.Graph) -> list[Call]:
        return self.describe(node, graph, general=True)


class DepthwiseConv2DHandler(Handler):
    """Depthwise = grouped conv with groups=C and C*M outputs; output channel c*M + m is
    filter m of input channel c, the order of Keras' (kh, kw, C, M) kernel reshaped."""

    op = "depthwise_conv2d"
    weight_names = CONV_WEIGHTS

    def describe(self, node: ir.DepthwiseConv2D, graph: ir.Graph, general: bool = False) -> list[Call]:
        _require_image(node, graph)
        return _conv(node, graph, node.in_channels, node.in_channels * node.multiplier, node.in_channels, general)

    def describe_general(self, node: ir.DepthwiseConv2D, graph: ir.Graph) -> list[Call]:
        return self.describe(node, graph, general=True)


class BatchNormHandler(Handler):
    """Stock nn.BatchNorm2d / 1d; a "biased" moving variance (Keras) adds a training-mode
    forward hook (layers.BiasedBatchNorm), so the module's type stays stock either way."""

    op = "batchnorm"
    weight_names: ClassVar[Mapping[str, str]] = {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }

    def describe(self, node: ir.BatchNorm, graph: ir.Graph) -> list[Call]:
        if node.center != node.scale:
            # torch's affine flag covers gamma and beta together; freezing one of them would
            # change the parameter count and the weight names, so refuse instead.
            raise UnsupportedOpError(BACKEND, node, f"center={node.center} with scale={node.scale}")
        rank = _rank(graph, node)
        if rank not in (1, 3):
            raise UnsupportedOpError(BACKEND, node, f"input of rank {rank}")
        kwargs = {"eps": node.epsilon, "momentum": torch_momentum(node.decay), "affine": node.center}
        if node.variance_update == "biased":
            kwargs = {"dims": 2 if rank == 3 else 1, **kwargs}
            return [module_call(layers.BiasedBatchNorm, node, (node.channels,), kwargs, {"dims": 2, "affine": True})]
        cls = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
        return [module_call(cls, node, (node.channels,), kwargs, {"affine": True})]


_READERS: dict[int, tuple[weakref.ref[ir.Graph], dict[str, int]]] = {}


def readers(graph: ir.Graph) -> dict[str, int]:
    """``graph.reader_counts()``, cached per graph, as every activation of a graph asks."""
    hit = _READERS.get(id(graph))
    if hit is not None and hit[0]() is graph:
        return hit[1]
    count = graph.reader_counts()
    if len(_READERS) > 64:
        _READERS.clear()
    _READERS[id(graph)] = (weakref.ref(graph), count)
    return count


def overwritable(node: ir.Node, graph: ir.Graph) -> bool:
    """Whether ``node`` may overwrite its one input: nothing else reads that value, and the op
    that made it says its output may be overwritten (``Node.overwritable``: a fresh tensor no
    backward pass needs; never the graph input, the caller's tensor, nor zero_pad2d, whose pad
    of nothing the emitter drops, so that its output would be its input)."""
    if len(node.inputs) != 1:
        return False
    src = graph[node.inputs[0]]
    return src.overwritable and readers(graph).get(src.name, 0) == 1


class ActivationHandler(Handler):
    """Keras 3 and torch agree on every kind listed (hard_sigmoid is relu6(x + 3) / 6 in both;
    Keras 2's 0.2x + 0.5 is *not* what the IR means).

    In place (``inplace=True``) where :func:`overwritable`: like torchvision's models, and
    measured at batch 16 one fresh buffer per layer fewer is 7% of a MobileNet forward (mostly
    page faults). GraphModule.forward_nodes copies a value it returns before such a layer."""

    op = "activation"
    CLASSES: ClassVar[dict[str, type[nn.Module]]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "hard_sigmoid": layers.ExactHardsigmoid,  # nn.Hardsigmoid, its float64 gradient exact
        "hard_swish": nn.Hardswish,
        "swish": nn.SiLU,
        "gelu": nn.GELU,  # approximate="none": the exact erf form
    }

    def describe(self, node: ir.Activation, graph: ir.Graph) -> list[Call]:
        if node.kind not in self.CLASSES:
            raise UnsupportedOpError(BACKEND, node, f"activation {node.kind!r}")
        cls = self.CLASSES[node.kind]
        if "inplace" not in positional_names(cls):
            return [module_call(cls, node)]
        return [module_call(cls, node, (), {"inplace": overwritable(node, graph)}, {"inplace": False})]


class ZeroPad2DHandler(Handler):
    op = "zero_pad2d"

    def describe(self, node: ir.ZeroPad2D, graph: ir.Graph) -> list[Call]:
        _require_image(node, graph)
        top, bottom, left, right = node.padding
        return [module_call(nn.ZeroPad2d, node, ((left, right, top, bottom),))]


class Pool2DHandler(Handler):
    """Unpadded windows, floor division of the output size: torch's ceil_mode=False default."""

    op = "pool2d"

    def describe(self, node: ir.Pool2D, graph: ir.Graph) -> list[Call]:
        _require_image(node, graph)
        cls = nn.MaxPool2d if node.kind == "max" else nn.AvgPool2d
        return [module_call(cls, node, (_pair(node.kernel),), {"stride": _pair(node.stride)})]


class GlobalPoolHandler(Handler):
    """nn.AdaptiveAvgPool2d(1) / nn.AdaptiveMaxPool2d(1), then nn.Flatten unless keepdims (the
    pool is then a helper, ``<node>_pool``): stock modules that fvcore, thop and ptflops count."""

    op = "global_pool"

    def describe(self, node: ir.GlobalPool, graph: ir.Graph) -> list[Call]:
        _require_image(node, graph)
        cls = nn.AdaptiveMaxPool2d if node.kind == "max" else nn.AdaptiveAvgPool2d
        if node.keepdims:
            return [module_call(cls, node, (1,))]
        pool = module_call(cls, node, (1,), name=unique_name(graph, f"{node.name}_pool"))
        return [pool, module_call(nn.Flatten, node, inputs=(pool.name,))]


class FlattenHandler(Handler):
    """nn.Flatten when the (H, W, C) order equals torch's (C, H, W) (H = W = 1, or C = 1);
    else layers.FlattenHWC, which permutes first so dense weights stay Keras'."""

    op = "flatten"

    def describe(self, node: ir.Flatten, graph: ir.Graph) -> list[Call]:
        shape = graph[node.inputs[0]].shape
        if len(shape) != 3 or shape[0] * shape[1] == 1 or shape[2] == 1:
            return [module_call(nn.Flatten, node)]
        return [module_call(layers.FlattenHWC, node)]


class DenseHandler(Handler):
    op = "dense"
    weight_names = CONV_WEIGHTS

    def describe(self, node: ir.Dense, graph: ir.Graph) -> list[Call]:
        if _rank(graph, node) != 1:
            # Keras applies Dense to the last axis of an image; nn.Linear on NCHW would not.
            raise UnsupportedOpError(BACKEND, node, "dense on a non-flat input")
        args = (node.in_features, node.units)
        return [module_call(nn.Linear, node, args, {"bias": node.use_bias}, {"bias": True})]


class DropoutHandler(Handler):
    op = "dropout"

    def describe(self, node: ir.Dropout, graph: ir.Graph) -> list[Call]:
        return [module_call(nn.Dropout, node, (node.rate,))]


class DropPathHandler(Handler):
    op = "drop_path"

    def describe(self, node: ir.DropPath, graph: ir.Graph) -> list[Call]:
        return [module_call(layers.DropPath, node, (node.rate,))]


class LayerScaleHandler(Handler):
    op = "layer_scale"
    weight_names: ClassVar[Mapping[str, str]] = {"gamma": "gamma"}

    def describe(self, node: ir.LayerScale, graph: ir.Graph) -> list[Call]:
        return [module_call(layers.LayerScale, node, (node.channels,), {"init": node.init}, {"init": 1e-5})]


class NormalizationHandler(Handler):
    op = "normalization"
    weight_names: ClassVar[Mapping[str, str]] = {"mean": "mean", "variance": "variance"}

    def describe(self, node: ir.Normalization, graph: ir.Graph) -> list[Call]:
        return [module_call(layers.Normalization, node, (node.channels,))]


class SoftmaxHandler(Handler):
    """Softmax over channels: dim 1 in both (N, C) and (N, C, H, W)."""

    op = "softmax"

    def describe(self, node: ir.Softmax, graph: ir.Graph) -> list[Call]:
        return [module_call(nn.Softmax, node, (), {"dim": 1})]


def _require_same_rank(node: ir.Node, graph: ir.Graph) -> None:
    """A channels-last (C,) broadcasts over (H, W, C); in NCHW it would not, so refuse it."""
    ranks = {len(graph[i].shape) for i in node.inputs}
    if len(ranks) != 1:
        raise UnsupportedOpError(BACKEND, node, "inputs of different ranks")


class AddHandler(Handler):
    op = "add"

    def describe(self, node: ir.Add, graph: ir.Graph) -> list[Call]:
        _require_same_rank(node, graph)
        return [module_call(layers.Add, node)]


class MultiplyHandler(Handler):
    op = "multiply"

    def describe(self, node: ir.Multiply, graph: ir.Graph) -> list[Call]:
        _require_same_rank(node, graph)
        return [module_call(layers.Multiply, node)]


class ConcatHandler(Handler):
    """The IR concatenates channels-last (H, W, C) on C: channel dim 1 in torch's layout."""

    op = "concat"

    def describe(self, node: ir.Concat, graph: ir.Graph) -> list[Call]:
        return [module_call(layers.Concat, node)]


class RescalingHandler(Handler):
    op = "rescaling"

    def describe(self, node: ir.Rescaling, graph: ir.Graph) -> list[Call]:
        return [module_call(layers.Rescaling, node, (node.scale,), {"offset": node.offset}, {"offset": 0.0})]


class MobileMQAHandler(Handler):
    """layers.MobileMQA: timm's MultiQueryAttention2d's modules and names (so timm's weights
    load by their own keys), with the attention as explicit products torch's flop counter sees."""

    op = "mobile_mqa"
    weight_names: ClassVar[Mapping[str, str]] = {
        "query_kernel": "query.proj.weight",
        "output_kernel": "output.proj.weight",
        **{
            f"{path}_{param}": f"{path}.{name}"
            for path in ("key", "value")
            for param, name in (
                ("down_kernel", "down_conv.weight"),
                ("gamma", "norm.weight"),
                ("beta", "norm.bias"),
                ("moving_mean", "norm.running_mean"),
                ("moving_variance", "norm.running_var"),
                ("kernel", "proj.weight"),
            )
        },
    }
    DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "kv_stride": 1,
        "dw_kernel": 3,
        "padding": (1, 1, 1, 1),
        "eps": 1e-5,
        "momentum": 0.1,
        "biased_variance": False,
    }

    def describe(self, node: ir.MobileMQA, graph: ir.Graph) -> list[Call]:
        _require_image(node, graph)
        args = (node.in_channels, node.filters, node.heads, node.key_dim, node.value_dim)
        kwargs = {
            "kv_stride": node.kv_stride,
            "dw_kernel": node.dw_kernel,
            "padding": tuple(node.kv_padding),
            "eps": node.epsilon,
            "momentum": torch_momentum(node.decay),
            "biased_variance": node.variance_update == "biased",
        }
        return [module_call(layers.MobileMQA, node, args, kwargs, self.DEFAULTS)]


check_kinds(BACKEND, ActivationHandler.CLASSES)

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
"""IR op -> handler: the one table the builder and the emitter both read (the built-in ops,
then those plug-ins add: kit.registry.handler_table)."""
