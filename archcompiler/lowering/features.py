"""Multi-output models: named layers (``outputs=[...]``), or the last layer at each stride
(``features=True``), like timm's ``features_only`` / ``out_indices``.

The graph keeps only what the outputs depend on (``infer.live`` over several roots), so costs,
builds and saved weights cover exactly the feature extractor. The model returns the outputs as
a list in the order given; one name gives an ordinary single-output model (what the spec's
``output:`` does).

Feature levels follow timm (``FeatureInfo``): one per spatial reduction of the input, the
*last* layer on the main path at that reduction (the product of the strides before it, not
the map size, which stops shrinking at small inputs), before the classifier (the first global pooling
on the main path, where keras.applications' top begins, :mod:`archcompiler.lowering.heads`). Like
timm's MobileNet default ``out_indices=(0, 1, 2, 3, 4)`` the stride-2 level is included
(reductions 2, 4, 8, 16, 32); the input itself is not a level, nor are padding layers (a
ZeroPad2d before a strided conv only enlarges the map it pads), nor layers a skip connection
bypasses (inside a residual block or a squeeze-excite branch, whose 1x1 pool is no level).

For MobileNet v1 this is timm's default. For inverted-residual nets (V2, V3) the last layer at
a size is the expansion of the next stage's first block, i.e. timm's
``feature_location="expansion"`` (what SSDLite attaches to), not its default block outputs
(``"bottleneck"``); name those layers with ``outputs=`` to get the block outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from archcompiler import ir
from archcompiler.language.source import did_you_mean
from archcompiler.lowering.heads import Head, main_path, option_error, top_index

MAX_LISTED = 12
"""How many layer names an unknown-name error lists (``archc summary`` lists all)."""


@dataclass(frozen=True)
class Level:
    """One feature level: the node whose output it is and how far it reduces the input."""

    node: str
    reduction: int
    shape: tuple[int, ...]


def reductions(graph: ir.Graph) -> dict[str, tuple[int, int]]:
    """Node name -> its (height, width) reduction of the input: the product of the strides on
    the way (the largest over its inputs). Not the ratio of map sizes, which collapses at small
    inputs (a stride-2 conv of a 1x1 map is still 1x1: another stride, the same size)."""
    out: dict[str, tuple[int, int]] = {}
    for node in graph.nodes:
        rh, rw = max((out[i] for i in node.inputs), default=(1, 1))
        sh, sw = getattr(node, "stride", (1, 1))
        out[node.name] = (rh * sh, rw * sw)
    return out


def levels(graph: ir.Graph) -> tuple[Level, ...]:
    """The feature levels of ``graph``, shallowest first (see the module docstring)."""
    main = main_path(graph)
    reduction = reductions(graph)
    last: dict[tuple[int, int], int] = {}
    for k, node in enumerate(graph.nodes[: top_index(graph)]):
        if len(node.shape) != 3 or isinstance(node, ir.Input | ir.ZeroPad2D) or not main[k]:
            continue
        if reduction[node.name] != (1, 1):
            last[reduction[node.name]] = k
    chosen = sorted(last.values())
    return tuple(Level(graph.nodes[k].name, reduction[graph.nodes[k].name][0], graph.nodes[k].shape) for k in chosen)


def _with_outputs(graph: ir.Graph, outputs: tuple[str, ...]) -> ir.Graph:
    from archcompiler.lowering.infer import live

    return dataclasses.replace(graph, nodes=live(graph.nodes, outputs), outputs=outputs)


def _check_head(graph: ir.Graph, outputs: tuple[str, ...], head: Head | None, option: str) -> None:
    """Head options only make sense when an output reads the classifier; else they are dead."""
    if head is None or head.changes_nothing:
        return
    top = top_index(graph)
    classifier = {n.name for n in graph.nodes[top:]}
    if not classifier.intersection(outputs):
        raise option_error(
            graph,
            option,
            "no output is in the classifier, so --classes/--pooling/--classifier-activation/--dropout would change "
            "nothing; drop them, or name a classifier layer among the outputs",
        )


def select(graph: ir.Graph, outputs: Sequence[str], *, head: Head | None = None, option: str = "--outputs") -> ir.Graph:
    """``graph`` returning the named nodes, in order, with every layer none of them reads left out.

    ``head``: the classifier options already applied to ``graph``; refused unless an output
    is in the classifier (they would change nothing)."""
    if isinstance(outputs, str):
        outputs = [outputs]
    names = tuple(outputs)
    if not names:
        raise option_error(graph, option, "expected at least one layer name")
    known = [n.name for n in graph.nodes]
    for name in names:
        if not isinstance(name, str) or name not in graph:
            shown = ", ".join(known[1 : MAX_LISTED + 1]) + (", ..." if len(known) > MAX_LISTED + 1 else "")
            hint = did_you_mean(str(name), known)
            raise option_error(
                graph, option, f"no layer named {name!r}{hint} (known: {shown}; 'archc summary' lists all)"
            )
        if isinstance(graph[name], ir.Input):
            raise option_error(graph, option, f"{name!r} is the model's input, not a layer")
    twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if twice is not None:
        raise option_error(graph, option, f"layer {twice!r} is listed twice")
    _check_head(graph, names, head, option)
    return _with_outputs(graph, names)


def features(
    graph: ir.Graph, out_indices: Sequence[int] | None = None, *, head: Head | None = None, option: str = "--features"
) -> ir.Graph:
    """``graph`` returning the last layer at each stride (:func:`levels`), or the levels
    ``out_indices`` picks (timm's: 0 is the shallowest, negative counts from the deepest)."""
    if head is not None and not head.changes_nothing:
        raise option_error(
            graph, option, "feature maps come before the classifier: drop --classes/--pooling/... options"
        )
    found = levels(graph)
    if not found:
        raise option_error(
            graph, option, "the graph has no image-shaped layer before its classifier to take features from"
        )
    if out_indices is None:
        picked = found
    else:
        if not out_indices:
            raise option_error(graph, "--out-indices", "expected at least one level index")
        picked = []
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -len(found) <= i < len(found):
                raise option_error(
                    graph,
                    "--out-indices",
                    f"index {i!r} is not a feature level; the graph has {len(found)} "
                    f"(0..{len(found) - 1}, reductions {', '.join(str(lv.reduction) for lv in found)})",
                )
            if found[i] in picked:
                raise option_error(graph, "--out-indices", f"level {i!r} ({found[i].node}) is listed twice")
            picked.append(found[i])
        return select(graph, [lv.node for lv in picked], option="--out-indices")
    return select(graph, [lv.node for lv in picked], option=option)


@dataclass(frozen=True)
class Outputs:
    """What a model should return instead of the spec's output (None / False: keep it)."""

    names: tuple[str, ...] | None = None
    """Named layers, in order (``--outputs``)."""
    features: bool = False
    """The last layer at each stride (``--features``)."""
    out_indices: tuple[int, ...] | None = None
    """With ``features``: which levels (``--out-indices``; implies ``features``)."""

    def __post_init__(self) -> None:
        """Each field checked (a SpecError naming it): layer names, True/False, whole numbers."""
        from archcompiler import arguments as A
        from archcompiler.language.source import SpecError

        if self.names is not None:
            object.__setattr__(self, "names", A.names(self.names, "outputs"))
        A.flag(self.features, "features", error=SpecError)
        if self.out_indices is not None:
            indices = A.sequence(self.out_indices, "out_indices", what="level indices")
            for i in indices:
                A.integer(i, "out_indices", low=-(2**31), error=SpecError)
            object.__setattr__(self, "out_indices", indices)
        if self.names is not None and (self.features or self.out_indices is not None):
            raise SpecError(
                "outputs and features are exclusive: name the layers, or ask for the feature levels",
                file=A.ARGUMENTS,
                path="outputs",
            )

    @property
    def changes_nothing(self) -> bool:
        return self == Outputs()

    def apply(self, graph: ir.Graph, head: Head | None = None) -> ir.Graph:
        """``graph`` (with ``head`` already applied) returning the selected outputs."""
        if self.names is not None:
            return select(graph, self.names, head=head)
        if self.features or self.out_indices is not None:
            return features(graph, self.out_indices, head=head)
        return graph
