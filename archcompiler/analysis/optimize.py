"""The optimised inference build (``archc build --optimize``): one IR-level rewrite of the graph
and its canonical weights that every backend consumes, so no backend folds BatchNorm its own way.

* BatchNorm folded into the convolution before it: in inference BN is the affine map
  ``(x - mean) / sqrt(var + eps) * gamma + beta`` per channel, so ``bn(conv(x))`` equals a conv
  with its kernel scaled per output channel and a bias (Ioffe and Szegedy 2015, section 3.2;
  torch.nn.utils.fusion.fuse_conv_bn_weights does the same per module). Only where the conv's
  output is read by that BN alone, so no other reader sees a changed value.
* A zero_pad2d merged into the convolution after it: padding with zeros and then convolving
  with padding ``p`` is one convolution padded by the sum (explicit per side in the IR, so a
  TF-SAME bottom/right pad merges too; each backend then expresses it as its handler does).
* Only for a backend whose convolutions pad symmetrically (``Backend.asymmetric_padding`` is
  False: torch, where TF-SAME's extra bottom/right pixel is otherwise a separate copying pad):
  a conv padded more at the bottom than the top is the same conv with ``bottom - top`` zero
  taps added at the top of its kernel and ``bottom`` rows of padding on both sides (windows
  start one row earlier, on a zero weight); likewise for columns. MobileNet v1's five
  stride-2 3x3 convs become 4x4: 2% more multiply-adds, one pass over the tensor fewer each.

The result is a new graph named ``<name>_optimized`` (so every file an optimised build
writes, and the model or class name inside it, says so) whose canonical weights are the folded
ones: they are not the original graph's weights and :mod:`archcompiler.weights` refuses them
there by name. Framework-free: numpy only, imported lazily. The rewritten graph depends on the
graph alone (and the backend's padding), never on weight values: :func:`rewrite` without
weights gives it for generated source and for saving a model built optimised.

:func:`optimize_model` builds the rewritten graph in a backend and checks it computes what
the unoptimised model computes, within :data:`TOLERANCE`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archcompiler import ir
from archcompiler.kit.backend import BackendError

if TYPE_CHECKING:
    from archcompiler.kit.backend import Backend
    from archcompiler.weights import Weights

SUFFIX = "_optimized"
"""Appended to the graph name: files, model names and generated classes then say 'optimized'."""

TOLERANCE = 1e-4
"""Largest difference allowed between the optimised and the unoptimised model's logits and
output, relative to the output's magnitude (at least 1): float32 rounding of the folded
weights is about 1e-6 relative; a wrong fold is off by the size of the values."""

TRANSFORMS = (
    "batchnorm folded into the convolution before it",
    "zero padding merged into the convolution after it",
)
WIDENED = "asymmetric padding made symmetric by zero taps added to the kernel"


@dataclass(frozen=True)
class Optimized:
    """The rewritten graph, its folded canonical weights, and what was rewritten."""

    graph: ir.Graph
    weights: Weights
    """Empty for a rewrite of the structure alone (``optimize(graph, None)``)."""
    folded: tuple[str, ...]
    """BatchNorm nodes folded away (into the conv that feeds each)."""
    merged: tuple[str, ...]
    """zero_pad2d nodes merged away (into the conv each feeds)."""
    names: dict[str, str]
    """Original node -> the node of the optimised graph that holds its value."""
    widened: tuple[str, ...] = ()
    """Convs whose kernel grew so that their padding is symmetric (``symmetric_padding``)."""

    def __post_init__(self) -> None:
        from archcompiler.weights import Weights

        object.__setattr__(self, "weights", Weights(self.weights))  # a dict whose repr summarises

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the graph, every weight and every name.
        widened = f", {len(self.widened)} kernels widened" if self.widened else ""
        return (
            f"<Optimized {self.graph.name}: {len(self.folded)} BatchNorms folded, {len(self.merged)} pads merged"
            f"{widened}, {len(self.weights)} weight tensors>"
        )

    def holders(self) -> dict[str, str]:
        """Node of the optimised graph -> the original node whose value it computes (a conv
        with a BatchNorm folded in computes the BN's value): where to read an unoptimised
        model's value to compare with each optimised node (parity)."""
        return {new: original for original, new in self.names.items()}  # graph order: the last wins

    def manifest(self, original: ir.Graph) -> dict[str, Any]:
        """What an optimised build writes next to its files (``<name>_optimized.json``)."""
        return {
            "optimized": True,
            "graph": self.graph.name,
            "from_graph": original.name,
            "width": original.width,
            "resolution": list(original.resolution),
            "transforms": [*TRANSFORMS, *([WIDENED] if self.widened else [])],
            "batchnorm_folded": list(self.folded),
            "pads_merged": list(self.merged),
            "kernels_widened": list(self.widened),
            "weights": (
                "folded weights of the optimised graph, not the canonical layout of "
                f"{original.name!r}: load them only into an optimised build"
            ),
        }


Conv = ir.Conv2D | ir.DepthwiseConv2D


def _fold(conv: Conv, bn: ir.BatchNorm, weights: Weights) -> dict[str, Any]:
    """The conv's kernel and bias with ``bn`` folded in (float64 arithmetic, the kernel's dtype)."""
    import numpy as np

    kernel = np.asarray(weights[f"{conv.name}.kernel"])
    c = bn.channels
    gamma = np.asarray(weights[f"{bn.name}.gamma"], np.float64) if bn.scale else np.ones(c)
    beta = np.asarray(weights[f"{bn.name}.beta"], np.float64) if bn.center else np.zeros(c)
    mean = np.asarray(weights[f"{bn.name}.moving_mean"], np.float64)
    var = np.asarray(weights[f"{bn.name}.moving_variance"], np.float64)
    scale = gamma / np.sqrt(var + bn.epsilon)
    bias = np.asarray(weights[f"{conv.name}.bias"], np.float64) if conv.use_bias else np.zeros(c)
    # Canonical conv kernels are (kh, kw, I/groups, O): the output channel is the last axis;
    # depthwise ones (kh, kw, C, M), output channel c*M + m being kernel[..., c, m].
    depthwise = isinstance(conv, ir.DepthwiseConv2D)
    factor = scale.reshape(conv.in_channels, conv.multiplier) if depthwise else scale
    return {
        f"{conv.name}.kernel": (kernel.astype(np.float64) * factor).astype(kernel.dtype),
        f"{conv.name}.bias": ((bias - mean) * scale + beta).astype(kernel.dtype),
    }


def _widen(conv: Conv, weights: Weights | None) -> tuple[Conv, dict[str, Any]] | None:
    """``conv`` with symmetric padding and a kernel widened by zero taps (and its widened
    kernel, unless ``weights`` is None), or None when its padding is symmetric already (or it
    is dilated: the taps would have to be dilated too)."""
    import numpy as np

    top, bottom, left, right = conv.padding
    if (top == bottom and left == right) or conv.dilation != (1, 1):
        return None
    # zero taps before the kernel where the padding is larger after it, and the other way round
    taps = ((max(bottom - top, 0), max(top - bottom, 0)), (max(right - left, 0), max(left - right, 0)))
    kernel = (conv.kernel[0] + sum(taps[0]), conv.kernel[1] + sum(taps[1]))
    h, w = max(top, bottom), max(left, right)
    new = dataclasses.replace(conv, kernel=kernel, padding=(h, h, w, w))
    if weights is None:
        return new, {}
    wide = np.pad(np.asarray(weights[f"{conv.name}.kernel"]), (*taps, (0, 0), (0, 0)))
    return new, {f"{conv.name}.kernel": wide}


def optimize(graph: ir.Graph, weights: Weights | None, *, symmetric_padding: bool = False) -> Optimized:
    """``graph`` with every foldable BatchNorm folded and every mergeable pad merged, and the
    canonical ``weights`` to match (checked against the new graph; None: the structure alone,
    with no weights). ``symmetric_padding``: also widen the kernels of asymmetrically padded
    convs (see the module docstring)."""
    from archcompiler.weights import check

    if weights is not None:
        check(graph, weights)
    made = _Rewrite(graph, weights)
    for node in graph.nodes:
        made.add(node)
    if symmetric_padding:
        made.widen_all()
    new = dataclasses.replace(
        graph,
        name=f"{graph.name}{SUFFIX}",
        nodes=tuple(made.out.values()),
        outputs=tuple(made.rename.get(o, o) for o in graph.outputs),
        description=(graph.description + " " if graph.description else "")
        + "(optimised for inference by archc: BatchNorm folded, pads merged)",
    )
    if weights is not None:
        check(new, made.weights, origin="folded weights")
    names = {n.name: made.rename.get(n.name, n.name) for n in graph.nodes}
    return Optimized(new, made.weights, tuple(made.folded), tuple(made.merged), names, tuple(made.widened))


@dataclass
class _Rewrite:
    """The optimised graph as it is made, node by node in the original order."""

    graph: ir.Graph
    original: Weights | None
    """The canonical weights, or None for the structure alone."""
    out: dict[str, ir.Node] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)
    """Original node -> the node that now holds its value (a folded BN's conv, a merged pad's)."""
    weights: dict[str, Any] = field(init=False)
    """The weights of the graph made so far (the original's, then folded and widened)."""
    readers: dict[str, int] = field(init=False)
    folded: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.readers = self.graph.reader_counts()
        self.weights = dict(self.original or {})

    def add(self, node: ir.Node) -> None:
        """``node`` folded into the conv before it, or merged into by the pad before it, or as it is."""
        # ``sole``: nothing but this node reads its input's value (counted in the original graph)
        sole = len(node.inputs) == 1 and self.readers[node.inputs[0]] == 1
        node = dataclasses.replace(node, inputs=tuple(self.rename.get(i, i) for i in node.inputs))
        src = self.out.get(node.inputs[0]) if len(node.inputs) == 1 else None
        if sole and self._foldable(node, src):
            self._fold_into(src, node)  # type: ignore[arg-type]
            return
        if sole and isinstance(node, Conv) and isinstance(src, ir.ZeroPad2D):
            node = self._merge(src, node)
        self.out[node.name] = node

    def _foldable(self, node: ir.Node, src: ir.Node | None) -> bool:
        """A BatchNorm on an image that a conv alone feeds; a BN the model returns stays
        (folding would return it under the conv's name)."""
        returned = node.name in self.graph.outputs
        return isinstance(node, ir.BatchNorm) and isinstance(src, Conv) and not returned and len(node.shape) == 3

    def _fold_into(self, conv: Conv, bn: ir.BatchNorm) -> None:
        if self.original is not None:
            self.weights.update(_fold(conv, bn, self.weights))
        for p in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.weights.pop(f"{bn.name}.{p}", None)
        self.out[conv.name] = dataclasses.replace(conv, use_bias=True)
        self.rename[bn.name] = conv.name
        self.folded.append(bn.name)

    def _merge(self, pad: ir.ZeroPad2D, conv: Conv) -> Conv:
        padding = tuple(a + b for a, b in zip(pad.padding, conv.padding, strict=True))
        del self.out[pad.name]
        self.rename[pad.name] = conv.name  # nothing else reads it; kept for ``names``
        self.merged.append(pad.name)
        return dataclasses.replace(conv, inputs=pad.inputs, padding=padding)

    def widen_all(self) -> None:
        """Every asymmetrically padded conv widened (:func:`_widen`)."""
        for name, node in self.out.items():
            wide = _widen(node, None if self.original is None else self.weights) if isinstance(node, Conv) else None
            if wide is not None:
                self.out[name], changed = wide
                self.weights.update(changed)
                self.widened.append(name)


def require(backend: Backend) -> None:
    """A BackendError unless ``backend`` can build optimised models (``Backend.optimizable``):
    said before anything slow is done."""
    from archcompiler.kit.backend import require_capabilities

    require_capabilities([backend], optimize=True)


def rewrite(backend: Backend, graph: ir.Graph, weights: Weights | None = None) -> Optimized:
    """:func:`optimize` as ``backend`` builds it: kernels widened where its convolutions pad
    symmetrically (``Backend.asymmetric_padding`` False). Every caller (build, generate,
    save, parity) goes through here, so they all agree on the rewritten graph."""
    require(backend)
    return optimize(graph, weights, symmetric_padding=not getattr(backend, "asymmetric_padding", True))


def built_optimized(backend: Backend, graph: ir.Graph, model: Any) -> bool:
    """Whether ``model`` was built from ``graph``'s optimised rewrite, by the graph name the
    model records (``Backend.graph_name``: every built-in's models carry it); False for a
    backend that does not say."""
    name = getattr(backend, "graph_name", None)
    return name is not None and name(model) == f"{graph.name}{SUFFIX}"


def rewrite_of(backend: Backend, graph: ir.Graph, model: Any) -> Optimized | None:
    """The rewrite ``model`` was built from when it is ``graph``'s optimised model
    (:func:`built_optimized`), with the structure alone: its weights are the model's; else None."""
    return rewrite(backend, graph) if built_optimized(backend, graph, model) else None


def optimize_model(
    backend: Backend, graph: ir.Graph, model: Any, *, tolerance: float = TOLERANCE
) -> tuple[Optimized, Any]:
    """The optimised model of ``model`` (built by ``backend`` from ``graph``, weights loaded):
    the rewritten graph built and verified against its IR, the folded weights loaded, the
    backend's own inference tuning applied (``Backend.tune``), then its logits and output
    compared with ``model``'s on a fixed input; a difference above ``tolerance`` is an error."""
    opt = rewrite(backend, graph, backend.get_weights(graph, model))
    fast = backend.build(opt.graph)
    backend.verify(opt.graph, fast)
    backend.set_weights(opt.graph, fast, opt.weights)
    fast = backend.tune(opt.graph, fast)
    check_equal(backend, graph, model, opt, fast, tolerance)
    return opt, fast


def check_equal(backend: Backend, graph: ir.Graph, model: Any, opt: Optimized, fast: Any, tolerance: float) -> None:
    """``fast`` computes ``model``'s logits and output within ``tolerance`` (relative to their
    magnitude, at least 1) on a fixed standard-normal batch of two; else a BackendError."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((2, *graph.input_shape)).astype(np.float32)
    names = graph.outputs if graph.multi_output else tuple(dict.fromkeys((graph.logits, graph.output)))
    want = backend.run(graph, model, x, names)
    got = backend.run(opt.graph, fast, x, tuple(opt.names[n] for n in names))
    for n in names:
        a, b = np.asarray(want[n], np.float64), np.asarray(got[opt.names[n]], np.float64)
        err = float(np.abs(a - b).max(initial=0.0))
        limit = tolerance * max(1.0, float(np.abs(a).max(initial=0.0)))
        if not err <= limit:
            raise BackendError(
                f"the optimized {backend.name} model differs from the built one at node {n!r} by {err:.3g} "
                f"(allowed {limit:.3g}); not writing it"
            )
