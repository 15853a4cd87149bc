"""The graph IR: frozen, explicit, framework-neutral.

Everything a backend needs is resolved here, so that no backend ever has to re-derive a
shape, a padding or a channel count (docs/DESIGN.md, style 3: shape inference exists once).

Conventions fixed by the IR (backends translate, never reinterpret):

* Shapes exclude the batch axis and are channels-last: an image is ``(H, W, C)``, a vector
  ``(C,)``. The paper writes feature maps as ``D_F x D_F x M``; so do we.
* Padding is explicit per side ``(top, bottom, left, right)``. TensorFlow's ``"same"`` with an
  even total puts the extra pixel at the bottom/right; a torch ``padding=1`` would not, which
  is why "same" never survives lowering.
* BatchNorm carries ``epsilon``, the moving-average ``decay`` (Keras' ``momentum``; torch's
  ``momentum`` is ``1 - decay``) and whether the moving variance is updated with the biased
  (Keras) or unbiased (torch) batch variance.
* Flattening is in ``(H, W, C)`` order, so a dense layer after a flatten has the same weight
  matrix in every backend (a channels-first backend transposes before flattening).

Nodes name their inputs, so the graph is a DAG: a residual ``add`` or a squeeze-excite
``multiply`` is just a node with two inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Pad4 = tuple[int, int, int, int]
"""Explicit padding: (top, bottom, left, right)."""

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Span:
    """Where in the spec a node came from, so lowering errors can point at it."""

    file: str
    line: int
    col: int
    path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}"


@dataclass(frozen=True, kw_only=True)
class Node:
    """One IR operation. Subclasses add the op's resolved attributes."""

    op: ClassVar[str] = "node"
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        """Output elements per example (the activation count of this node)."""
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, kw_only=True)
class Input(Node):
    op: ClassVar[str] = "input"


@dataclass(frozen=True, kw_only=True)
class Conv2D(Node):
    """A full (or grouped) convolution. Kernel layout is canonical (kh, kw, in/groups, out)."""

    op: ClassVar[str] = "conv2d"
    in_channels: int
    filters: int
    kernel: Pair
    stride: Pair
    padding: Pad4
    dilation: Pair = (1, 1)
    groups: int = 1
    use_bias: bool = False


@dataclass(frozen=True, kw_only=True)
class DepthwiseConv2D(Node):
    """Depthwise convolution: one kh x kw filter per input channel (times ``multiplier``)."""

    op: ClassVar[str] = "depthwise_conv2d"
    in_channels: int
    multiplier: int
    kernel: Pair
    stride: Pair
    padding: Pad4
    dilation: Pair = (1, 1)
    use_bias: bool = False


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Node):
    """Batch normalisation over the channel axis, every convention spelled out."""

    op: ClassVar[str] = "batchnorm"
    channels: int
    epsilon: float
    decay: float
    """moving = decay * moving + (1 - decay) * batch. Keras momentum; torch uses 1 - decay."""
    variance_update: Literal["biased", "unbiased"]
    """Which batch variance updates the moving variance in training (Keras biased, torch unbiased)."""
    center: bool = True
    scale: bool = True


ActivationKind = Literal["relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish"]


@dataclass(frozen=True, kw_only=True)
class Activation(Node):
    op: ClassVar[str] = "activation"
    kind: ActivationKind


@dataclass(frozen=True, kw_only=True)
class ZeroPad2D(Node):
    op: ClassVar[str] = "zero_pad2d"
    padding: Pad4


@dataclass(frozen=True, kw_only=True)
class Pool2D(Node):
    """Windowed pooling. Padding is always zero here: frameworks disagree on padded averages."""

    op: ClassVar[str] = "pool2d"
    kind: Literal["avg", "max"]
    kernel: Pair
    stride: Pair


@dataclass(frozen=True, kw_only=True)
class GlobalPool(Node):
    op: ClassVar[str] = "global_pool"
    kind: Literal["avg", "max"]
    keepdims: bool = False


@dataclass(frozen=True, kw_only=True)
class Flatten(Node):
    """Flatten in (H, W, C) order (see the module docstring)."""

    op: ClassVar[str] = "flatten"


@dataclass(frozen=True, kw_only=True)
class Dense(Node):
    """Fully connected layer. Kernel layout is canonical (in, out)."""

    op: ClassVar[str] = "dense"
    in_features: int
    units: int
    use_bias: bool = True


@dataclass(frozen=True, kw_only=True)
class Dropout(Node):
    """Identity at inference; kept so layer lists and names match the reference models."""

    op: ClassVar[str] = "dropout"
    rate: float


@dataclass(frozen=True, kw_only=True)
class Softmax(Node):
    op: ClassVar[str] = "softmax"


@dataclass(frozen=True, kw_only=True)
class Add(Node):
    """Element-wise sum of inputs of one shape (a residual connection)."""

    op: ClassVar[str] = "add"


@dataclass(frozen=True, kw_only=True)
class Multiply(Node):
    """Element-wise product; a (1, 1, C) input broadcasts over (H, W, C) (squeeze-excite)."""

    op: ClassVar[str] = "multiply"


NODE_TYPES: tuple[type[Node], ...] = (
    Input,
    Conv2D,
    DepthwiseConv2D,
    BatchNorm,
    Activation,
    ZeroPad2D,
    Pool2D,
    GlobalPool,
    Flatten,
    Dense,
    Dropout,
    Softmax,
    Add,
    Multiply,
)
"""Every IR op. Backends must cover each of these or name the ones they refuse."""

IR_OPS: frozenset[str] = frozenset(t.op for t in NODE_TYPES)


@dataclass(frozen=True)
class Graph:
    """A lowered network: nodes in topological order, plus what it was lowered from."""

    name: str
    nodes: tuple[Node, ...]
    output: str
    width: float
    resolution: tuple[int, int]
    description: str = ""
    source: str = ""
    rounding: str = ""
    _index: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.name: n for n in self.nodes})

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def inputs(self) -> tuple[Input, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Input))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self[self.output].shape

    @property
    def logits(self) -> str:
        """The node whose output is the logits: the input of a final softmax, else the output.
        Training losses and parity's logit tolerance are taken there."""
        out = self[self.output]
        return out.inputs[0] if isinstance(out, Softmax) else out.name

    def consumers(self, name: str) -> tuple[Node, ...]:
        """Nodes that read ``name``: used by backends that fuse or by parity reports."""
        return tuple(n for n in self.nodes if name in n.inputs)
