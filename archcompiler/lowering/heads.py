"""Heads like keras.applications' and timm's: drop or resize the classifier, pool the
features, change the classifier's activation or dropout, without editing the spec.

The classifier ("the top") is the first global pooling layer and everything after it, as in
keras.applications' MobileNet, MobileNetV2 and MobileNetV3 (``include_top=False`` ends the
model just before their global pooling). ``classes=N`` re-lowers the spec with ``$classes``
set to N, so the classifier is the spec's own at the new size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from archcompiler import ir
from archcompiler.language.source import SpecError

Pooling = Literal["avg", "max", "none"]


@dataclass(frozen=True)
class Head:
    """What to change about the classifier (None: keep the spec's)."""

    classes: int | None = None
    """Number of classes; 0 drops the classifier (keras' ``include_top=False``)."""
    pooling: Pooling | None = None
    """With ``classes=0``: global average or max pooling of the features, or none (an image)."""
    classifier_activation: Literal["softmax", "none"] | None = None
    dropout: float | None = None
    """The rate of the classifier's dropout layers."""

    def __post_init__(self) -> None:
        """Each field checked (a SpecError naming it, as ``width=-1`` is): a wrong value is
        never taken for another (``pooling="bogus"`` as no pooling)."""
        from archcompiler import arguments as A
        from archcompiler.language.limits import MAX_FIELD

        if self.classes is not None:
            A.integer(self.classes, "classes", high=MAX_FIELD, error=SpecError)
        if self.pooling is not None:
            A.choice(self.pooling, "pooling", ("avg", "max", "none"), error=SpecError)
        if self.classifier_activation is not None:
            A.choice(self.classifier_activation, "classifier_activation", ("softmax", "none"), error=SpecError)
        if self.dropout is not None:
            A.number(self.dropout, "dropout", low=0.0, high=1.0, high_open=True, error=SpecError)

    @property
    def changes_nothing(self) -> bool:
        return self == Head()


def option_error(graph: ir.Graph, option: str, message: str) -> SpecError:
    """A located error about a command-line option (``--classes``, ``--outputs``...) on ``graph``."""
    return SpecError(message, file=graph.source or "<spec>", path=option)


def main_path(graph: ir.Graph) -> list[bool]:
    """Per node: does every path from the input to the outputs pass through it?

    Inside a residual block or a squeeze-excite branch the skip connection bypasses a node,
    so only block outputs and chain layers are on the main path. In topological order a node
    is bypassed exactly when some edge jumps over it (from before it to after it)."""
    index = {n.name: k for k, n in enumerate(graph.nodes)}
    opened = [0] * (len(graph.nodes) + 1)
    for k, node in enumerate(graph.nodes):
        for i in node.inputs:
            if index[i] + 1 < k:  # the edge covers the nodes strictly between its ends
                opened[index[i] + 1] += 1
                opened[k] -= 1
    out, covered = [], 0
    for k in range(len(graph.nodes)):
        covered += opened[k]
        out.append(covered == 0)
    return out


def top_index(graph: ir.Graph) -> int:
    """Index of the first global pooling node on the main path, where keras.applications' top
    begins (a squeeze-excite pool is a side branch, not the top), or len(nodes)."""
    main = main_path(graph)
    return next((k for k, n in enumerate(graph.nodes) if isinstance(n, ir.GlobalPool) and main[k]), len(graph.nodes))


def _top(graph: ir.Graph) -> ir.Node | None:
    """The node where keras.applications' top begins (:func:`top_index`), if any."""
    k = top_index(graph)
    return graph.nodes[k] if k < len(graph.nodes) else None


def _unique(graph_names: set[str], base: str) -> str:
    name, k = base, 1
    while name in graph_names:
        k += 1
        name = f"{base}_{k}"
    return name


def _with(graph: ir.Graph, nodes: list[ir.Node], output: str) -> ir.Graph:
    from archcompiler.lowering.infer import live

    return dataclasses.replace(graph, nodes=live(nodes, (output,)), outputs=(output,))


def apply(graph: ir.Graph, head: Head) -> ir.Graph:
    """``graph`` with ``head``'s changes (``classes=N > 0`` is applied while lowering)."""
    nodes = list(graph.nodes)
    output = graph.output
    top = _top(graph)
    if head.pooling is not None and head.classes != 0:
        raise option_error(
            graph, "--pooling", "pooling applies when the classifier is dropped (--classes 0), as in Keras"
        )
    if head.classes == 0:
        if top is None:
            raise option_error(graph, "--classes", "the spec has no classifier to drop (no global pooling layer)")
        if head.classifier_activation is not None or head.dropout is not None:
            raise option_error(
                graph, "--classes", "--classifier-activation and --dropout need a classifier (--classes > 0)"
            )
        output = top.inputs[0]
        nodes = nodes[: nodes.index(top)]
        if head.pooling in ("avg", "max"):
            features = graph[output]
            name = _unique({n.name for n in nodes}, f"{head.pooling}_pool")
            shape = (features.shape[-1],)
            nodes.append(ir.GlobalPool(name=name, inputs=(output,), shape=shape, kind=head.pooling))
            output = name
        return _with(graph, nodes, output)
    if head.dropout is not None:
        start = nodes.index(top) if top is not None else 0
        drops = [i for i in range(start, len(nodes)) if isinstance(nodes[i], ir.Dropout)]
        if not drops:
            raise option_error(graph, "--dropout", "the classifier has no dropout layer to set")
        for i in drops:
            nodes[i] = dataclasses.replace(nodes[i], rate=head.dropout)
    last = graph[output]
    if head.classifier_activation == "none" and isinstance(last, ir.Softmax):
        output = last.inputs[0]
    elif head.classifier_activation == "softmax" and not isinstance(last, ir.Softmax):
        name = _unique({n.name for n in nodes}, "predictions")
        nodes.append(ir.Softmax(name=name, inputs=(output,), shape=last.shape))
        output = name
    return _with(graph, nodes, output)
