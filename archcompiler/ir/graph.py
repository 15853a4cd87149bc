"""The graph IR: frozen, explicit, framework-neutral.

Everything a backend needs is resolved here, so that no backend ever has to re-derive a
shape, a padding or a channel count (docs/DESIGN.md, style 3: shape inference exists once).
The node types, one per op with their attributes and rules, live in :mod:`archcompiler.ops`
and are re-exported here.

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
``multiply`` is just a node with two inputs. A :class:`Graph` checks itself on construction
(names, wiring, arity, and every node's shape against its op's shape rule), so a hand-built
graph with a wrong shape is rejected naming the node.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archcompiler import ops
from archcompiler.ops import *  # noqa: F403  (the node types are part of the IR's interface)
from archcompiler.ops import NODE_TYPES, Input, Node, OpError, Shape, Softmax, arity_error
from archcompiler.text import listing, shape

if TYPE_CHECKING:
    from archcompiler.language.spec import Checkpoint

__all__ = [*ops.__all__, "Graph", "GraphError"]


class GraphError(ValueError):
    """A graph that breaks the IR's rules; the message names the node."""


@dataclass(frozen=True)
class Graph:
    """A lowered network: nodes in topological order, plus what it was lowered from."""

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    """What the model returns, in order: one node (a tensor) or several (a list of tensors,
    e.g. feature maps at several strides, :mod:`archcompiler.lowering.features`)."""
    width: float
    resolution: tuple[int, int]
    description: str = ""
    source: str = ""
    rounding: str = ""
    depth_multiplier: float = 1.0
    """The depth multiplier it was lowered at (``round_repeats``; :meth:`depth` is the graph's own depth)."""
    variant: str = ""
    """The spec's variant it was lowered from (``""``: none); ``name`` ends with ``_<variant>``."""
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The spec's ``checkpoints:``: how other implementations name its tensors (archcompiler.checkpoints)."""
    _index: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """The IR's rules: names, wiring, arity, each node's shape, the outputs."""
        index: dict[str, Node] = {}
        for node in self.nodes:
            _check_node(node, index)
            index[node.name] = node
        if isinstance(self.outputs, str) or not self.outputs:
            raise GraphError(f"graph {self.name!r}: outputs must be a non-empty tuple of node names")
        for out in self.outputs:
            if out not in index:
                raise GraphError(f"graph {self.name!r}: output {out!r} is not a node")
        if len(set(self.outputs)) != len(self.outputs):
            raise GraphError(f"graph {self.name!r}: an output is listed twice in {self.outputs}")
        if not any(isinstance(n, Input) for n in self.nodes):
            raise GraphError(f"graph {self.name!r} has no input node")
        object.__setattr__(self, "_index", index)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed every node (13,570 characters for MobileNet).
        outs = listing([shape(s) for s in self.output_shapes])
        returns = f"[{outs}]" if self.multi_output else outs
        h, w = self.resolution
        return (
            f"<Graph {self.name}: {len(self.nodes)} nodes, input {shape(self.input_shape)} -> {returns}, "
            f"width {self.width:g}, resolution {h}x{w}>"
        )

    def input_shapes(self, node: Node) -> tuple[Shape, ...]:
        return tuple(self._index[i].shape for i in node.inputs)

    @property
    def inputs(self) -> tuple[Input, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Input))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def multi_output(self) -> bool:
        """True when the model returns a list of tensors rather than one."""
        return len(self.outputs) > 1

    @property
    def output(self) -> str:
        """The output node of a single-output graph; a multi-output graph has none (read
        ``outputs``), and asking is an error rather than a silent first pick."""
        if self.multi_output:
            raise GraphError(f"graph {self.name!r} has {len(self.outputs)} outputs {self.outputs}; read .outputs")
        return self.outputs[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self[self.output].shape

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self[o].shape for o in self.outputs)

    @property
    def logits(self) -> str:
        """The node whose output is the logits: the input of a final softmax, else the output.
        Training losses and parity's logit tolerance are taken there (single-output graphs)."""
        out = self[self.output]
        return out.inputs[0] if isinstance(out, Softmax) else out.name

    def depth(self) -> int:
        """Nodes on the longest path from the input (the input alone: 0): how deep a framework
        that walks the graph recursively goes (Keras' functional API; limits.MAX_GRAPH_DEPTH)."""
        level: dict[str, int] = {}
        for node in self.nodes:
            level[node.name] = 1 + max((level[i] for i in node.inputs), default=-1)
        return max(level.values(), default=0)

    def reader_counts(self) -> dict[str, int]:
        """Node name -> how many nodes read its value, each graph output counting as one more
        reader: a value with one reader may be folded into it or overwritten by it."""
        count: dict[str, int] = {}
        for node in self.nodes:
            for i in node.inputs:
                count[i] = count.get(i, 0) + 1
        for out in self.outputs:
            count[out] = count.get(out, 0) + 1
        return count


def _check_node(node: Node, earlier: dict[str, Node]) -> None:
    """One node against the IR's rules, given the nodes before it."""
    if not isinstance(node, NODE_TYPES):
        raise GraphError(f"node {node.name!r}: {type(node).__name__} is not an IR op")
    if node.name in earlier:
        raise GraphError(f"node {node.name!r}: duplicate name")
    for i in node.inputs:
        if i not in earlier:
            raise GraphError(f"node {node.name!r} ({node.op}): reads {i!r}, which is not an earlier node")
    problem = arity_error(node.op, type(node).arity, len(node.inputs))
    if problem:
        raise GraphError(f"node {node.name!r}: {problem}")
    try:
        shape = node.infer_shape(tuple(earlier[i].shape for i in node.inputs))
    except OpError as exc:
        raise GraphError(f"node {node.name!r} ({node.op}): {exc}") from None
    if tuple(node.shape) != tuple(shape):
        raise GraphError(f"node {node.name!r} ({node.op}): shape {node.shape}, but its inputs give {shape}")
