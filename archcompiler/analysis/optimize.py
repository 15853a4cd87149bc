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
from dataclasses import dataclass
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
    readers = graph.reader_counts()
    out: dict[str, ir.Node] = {}
    rename: dict[str, str] = {}
    new_weights = dict(weights or {})
    folded: list[str] = []
    merged: list[str] = []
    for node in graph.nodes:
        # ``sole``: nothing but this node reads its input's value (counted in the original graph)
        sole = len(node.inputs) == 1 and readers[node.inputs[0]] == 1
        node = dataclasses.replace(node, inputs=tuple(rename.get(i, i) for i in node.inputs))
        src = out.get(node.inputs[0]) if len(node.inputs) == 1 else None
        # a BN the model returns stays: folding would return it under the conv's name
        returned = node.name in graph.outputs
        if isinstance(node, ir.BatchNorm) and isinstance(src, Conv) and sole and not returned and len(node.shape) == 3:
            if weights is not None:
                new_weights.update(_fold(src, node, new_weights))
            for p in ("gamma", "beta", "moving_mean", "moving_variance"):
                new_weights.pop(f"{node.name}.{p}", None)
            out[src.name] = dataclasses.replace(src, use_bias=True)
            rename[node.name] = src.name
            folded.append(node.name)
            continue
        if isinstance(node, Conv) and isinstance(src, ir.ZeroPad2D) and sole:
            padding = tuple(a + b for a, b in zip(src.padding, node.padding, strict=True))
            node = dataclasses.replace(node, inputs=src.inputs, padding=padding)
            del out[src.name]
            rename[src.name] = node.name  # nothing else reads it; kept for ``names``
            merged.append(src.name)
        out[node.name] = node
    widened: list[str] = []
    if symmetric_padding:
        for name, node in out.items():
            wide = _widen(node, None if weights is None else new_weights) if isinstance(node, Conv) else None
            if wide is not None:
                out[name], changed = wide
                new_weights.update(changed)
                widened.append(name)
    new = dataclasses.replace(
        graph,
        name=f"{graph.name}{SUFFIX}",
        nodes=tuple(out.values()),
        outputs=tuple(rename.get(o, o) for o in graph.outputs),
        description=(graph.description + " " if graph.description else "")
        + "(optimised for inference by archc: BatchNorm folded, pads merged)",
    )
    if weights is not None:
        check(new, new_weights, origin="folded weights")
    names = {n.name: rename.get(n.name, n.name) for n in graph.nodes}
    return Optimized(new, new_weights, tuple(folded), tuple(merged), names, tuple(widened))


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
