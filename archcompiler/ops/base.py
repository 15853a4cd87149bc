"""What every op definition is made of: the IR node base class and the pieces it returns.

An op is one frozen dataclass (a subclass of :class:`Node`) that holds, in one place
(ONNX's OpSchema, TVM's op registry):

* its resolved **attributes** (dataclass fields) and **arity** (``arity``);
* **lowering** from the spec: ``spec_layers`` (the pydantic models users write) and
  :meth:`Node.attributes_from_spec` (spec fields + defaults + width rule -> attributes);
* **shape inference** on attributes alone (:meth:`Node.infer_shape`), used by lowering and
  by :class:`~archcompiler.ir.Graph`, which re-checks every node on construction;
* **canonical weights** (:meth:`Node.weights`: names, shapes, layouts, initialisation);
* **cost** (:meth:`Node.cost`: convention-free counts every convention is derived from);
* its **category** (the paper's Table 2 grouping);
* its **parity bound** (:meth:`Node.parity_bound`: how float32 rounding grows through it, which
  :mod:`archcompiler.parity.inference` judges every backend by);
* what its output allows (:attr:`Node.overwritable`: whether a following in-place op may
  overwrite it).

:meth:`Node.infer_shape` and :meth:`Node.parity_bound` have no default: registering an op
without them fails at import (:func:`archcompiler.ops.registry.check_definition`), so no op is
judged by a guess.

Nothing here imports a framework (numpy only inside :meth:`Node.parity_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import numpy as np

    from archcompiler.language.fields import LayerBase

Shape = tuple[int, ...]
"""Per-example shape, channels-last: (H, W, C) for an image, (C,) for a vector."""
Pad4 = tuple[int, int, int, int]
"""Explicit padding: (top, bottom, left, right)."""
Pair = tuple[int, int]


class OpError(ValueError):
    """A node whose attributes do not fit its inputs. The message has no location: lowering
    adds the spec entry's, Graph the node's name."""


@dataclass(frozen=True)
class Span:
    """Where in the spec a node came from, so lowering errors can point at it, and which
    block instance made it, so emitters fold a block's layers back into one function."""

    file: str
    line: int
    col: int
    path: str
    block: str | None = None
    """The numbered spec block whose instance made the layer (a nested block's layers belong
    to the instance that called it: squeeze-excite inside a V3 block)."""
    instance: int | None = None
    """That instance's number ('{index}')."""
    member: tuple[int, ...] = ()
    """The layer's place in the block definition: (layer index, repeat) per nesting level, so
    the same layer of two instances has the same member even when guards drop others."""
    stage: tuple[int, int] | None = None
    """(stage, position in the stage) of that instance, where the layer table numbers stages
    (``starts_stage:``): what checkpoint names read (archcompiler.checkpoints)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}"


@dataclass(frozen=True)
class RawCost:
    """Convention-free counts of one node, from which every convention is derived (cost.py)."""

    weights: int = 0
    bias: int = 0
    bn_affine: int = 0
    bn_stats: int = 0
    macs: int = 0
    bn_ops: int = 0
    pool_ops: int = 0
    counters: int = 0
    """Bookkeeping scalars a framework keeps beside the weights (Keras Normalization's
    ``count``): counted by the keras convention only, as count_params() counts them."""


Layout = Literal["conv_kernel", "depthwise_kernel", "dense_kernel", "vector"]
"""How a canonical tensor is laid out (archcompiler.ir.layouts converts each to channels-first)."""
Init = Literal["he", "bias", "gamma", "beta", "moving_mean", "moving_variance"]
"""How weights.init (parity's probe) fills a tensor (non-trivial BN statistics, so parity
cannot pass by luck)."""
Fill = Literal["normal_fan_out", "uniform_fan_out", "zeros", "ones", "constant"]
"""How weights.training_init (what a build starts from) fills a tensor: the TensorFlow
reference MnasNet/EfficientNet scheme (timm's ``_init_weight_goog``). ``normal_fan_out``:
normal(0, sqrt(2 / fan_out)) (conv kernels); ``uniform_fan_out``: uniform(-r, r) with
r = 1 / sqrt(fan_out) (dense kernels); ``zeros`` and ``ones``: constants (biases, BatchNorm);
``constant``: ``WeightSpec.value`` everywhere (layer scale's 1e-5)."""


@dataclass(frozen=True)
class WeightSpec:
    """One canonical tensor of a node (``<node>.<param>``), in Keras' channels-last layout."""

    param: str
    shape: Shape
    layout: Layout = "vector"
    init: Init = "bias"
    fan_in: int = 0
    """For ``init="he"``: the inputs each output sums over."""
    trainable: bool = True
    fill: Fill = "zeros"
    fan_out: int = 0
    """For the ``*_fan_out`` fills: the outputs each input reaches (a conv's kh * kw * out /
    groups, a dense layer's units)."""
    value: float | tuple[float, ...] = 0.0
    """For ``fill="constant"``: the value, or one per element of a (C,) tensor."""


@dataclass(frozen=True)
class ParityBound:
    """How float32 rounding can grow through one node: what parity's judge needs of an op
    (:mod:`archcompiler.parity.inference` has the bound this feeds, and why)."""

    lipschitz: tuple[float, ...]
    """Per input: the op's Lipschitz constant in the max norm with respect to that input (how
    much an error already in the input can grow through the node)."""
    reductions: int = 0
    """Length of the node's longest sum (a conv's fan-in, a global pool's H*W): a float32 sum
    of n terms rounds by at most about n * u of its magnitude, whatever the order."""
    constant: float = 0.0
    """Magnitude of the node's constant terms (a bias, BatchNorm's shift), added to the
    magnitude its own rounding is judged at."""
    clamped: bool = False
    """Whether the node rounds only inside a bounded range (relu6, hard_sigmoid) or a mean
    (global average): its own rounding is then judged at ``constant + max|output|``, not at
    the (possibly huge) input's magnitude."""
    rounding: float | None = None
    """For an op made of several stages (``mobile_mqa``): its own rounding, in units of u,
    summed over the stages, each stage's (16 + its sum's length) * its magnitude times the
    gain from it to the output. The judge then takes u * (rounding + max|output|) as the
    node's own rounding in place of (16 + n) * u * M, which for a chain of stages would
    multiply the longest sum by the largest magnitude of any stage."""

    @classmethod
    def exact(cls, inputs: int) -> ParityBound:
        """An op that moves values without arithmetic (pad, flatten, concat): each input's
        error passes through unchanged, nothing new is rounded."""
        return cls((1.0,) * inputs)


def absmax(a: np.ndarray) -> float:
    """max |a| (0 for an empty array); infinity if ``a`` holds NaN, so that a magnitude, and the
    bound made from it, is never NaN."""
    import numpy as np

    m = float(np.abs(a).max(initial=0.0))
    return float("inf") if m != m else m


def abs64(a: np.ndarray) -> np.ndarray:
    """|a| in float64 (a parity bound is computed in float64 whatever the weights' dtype)."""
    import numpy as np

    return np.abs(np.asarray(a, dtype=np.float64))


@dataclass(frozen=True)
class LowerContext:
    """What lowering knows besides the layer itself: the spec's defaults and width rule."""

    width: float
    rounding: str
    divisor: int
    min_channels: int | None
    padding: Any
    bias: bool
    activation: str
    bn_epsilon: float
    bn_decay: float
    bn_variance_update: str

    def round_channels(self, channels: int) -> int:
        """Channels after the width multiplier, under the spec's rounding rule."""
        if self.rounding == "truncate":
            # Keras' MobileNet v1: int(filters * alpha), no rounding to a multiple.
            return max(1 if self.min_channels is None else self.min_channels, int(channels * self.width))
        return make_divisible(channels * self.width, self.divisor, self.min_channels)

    def pads(self, padding: Any, hw: Pair, kernel: Pair, stride: Pair) -> Pad4:
        """A spec padding (``same``, ``valid``, N, per side; None = the default) made explicit."""
        if padding is None:
            padding = self.padding
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            return (*same_padding(hw[0], kernel[0], stride[0]), *same_padding(hw[1], kernel[1], stride[1]))
        if isinstance(padding, int):
            return (padding,) * 4  # type: ignore[return-value]
        return tuple(padding)  # type: ignore[return-value]


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10%.

    This is the rule of the TF-Slim MobileNetV2 code that Keras' V2/V3 and timm copy.
    """
    m = divisor if min_value is None else min_value
    new = max(m, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME: output ceil(n/s); an odd total puts the extra pixel after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def pair(v: Any) -> Pair:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def dims(shape: Shape) -> str:
    """(16, 16, 8) -> '16x16x8', as error messages write shapes."""
    return "x".join(str(d) for d in shape)


def image(shape: Shape, what: str) -> tuple[int, int, int]:
    """The (H, W, C) of an image input, or an OpError naming the op."""
    if len(shape) != 3:
        raise OpError(f"{what} needs an image input (H x W x C), got {dims(shape)}")
    return shape  # type: ignore[return-value]


def check_padding(pads: Pad4) -> None:
    """Four non-negative amounts (top, bottom, left, right): backends may rely on it."""
    if len(pads) != 4 or any(p < 0 for p in pads):
        raise OpError(f"negative padding {pads}: expected four non-negative amounts (top, bottom, left, right)")


def window(what: str, shape: Shape, kernel: Pair, stride: Pair, pads: Pad4, dilation: Pair = (1, 1)) -> Pair:
    """Output (H, W) of a sliding window, or an OpError when the window does not fit."""
    h, w, c = shape
    keff = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    ph, pw = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if keff[0] > ph or keff[1] > pw:
        padded = f" ({ph}x{pw} after padding)" if (ph, pw) != (h, w) else ""
        raise OpError(f"{what} {keff[0]}x{keff[1]} is larger than its input {h}x{w}x{c}{padded}")
    return (ph - keff[0]) // stride[0] + 1, (pw - keff[1]) // stride[1] + 1


@dataclass(frozen=True, kw_only=True)
class Node:
    """One IR operation: subclasses add the op's resolved attributes and its rules."""

    op: ClassVar[str] = "node"
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    """Fewest and most inputs (None: no upper bound)."""
    spec_layers: ClassVar[tuple[type[LayerBase], ...]] = ()
    """The spec models that lower to this op (a spec op is written as its ``op:`` tag)."""

    name: str
    inputs: tuple[str, ...]
    shape: Shape
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        """Output elements per example (the activation count of this node)."""
        return math.prod(self.shape)

    @classmethod
    def attributes_from_spec(cls, layer: Any, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        """The op's attributes for a validated spec layer (defaults and the width rule applied)."""
        return {}

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        """This node's output shape from its input shapes and attributes, or OpError."""
        raise NotImplementedError(f"op {self.op!r} has no shape rule")

    def weights(self) -> tuple[WeightSpec, ...]:
        """Canonical tensors, in the framework's variable order (kernel, bias; gamma, beta, ...)."""
        return ()

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        """Convention-free counts of this node (none by default: an op without weights or
        arithmetic that any convention counts)."""
        return RawCost()

    @property
    def category(self) -> str:
        """Layer type as the paper's Table 2 groups them."""
        return self.op.replace("_", " ").title()

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """How float32 rounding grows through this node, from its canonical tensors ``params``
        (by param name: ``kernel``, ``bias``) and the float64 reference values of its
        ``inputs`` (each a batch, channels-last). Every op states it: there is no default, so
        no op is judged by a guess."""
        raise NotImplementedError(f"op {self.op!r} has no parity bound")

    random_in_training: ClassVar[bool] = False
    """Whether the op draws random numbers in training (dropout, drop path: each has a ``rate``).
    No two backends draw the same mask, so training parity sets the rate to 0 and says so."""

    overwritable: ClassVar[bool] = False
    """Whether an in-place op reading this node's output (an activation with torch's
    ``inplace=True``) may overwrite it: the op makes a fresh tensor (not a view of its input)
    and no op's backward pass needs its output. False, the safe answer, unless an op says so."""
