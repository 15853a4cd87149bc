"""TorchBackend: the archcompiler Backend interface over build.py, weights.py and save.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from archcompiler import ir
from archcompiler.cost import cost
from archcompiler.registry import Backend, BackendError
from archcompiler.weights import Weights

from . import weights as weight_io
from .build import GraphModule, build_module
from .convert import from_torch_layout, to_torch_layout
from .ops import HANDLERS, Handler


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """IR per-example shape (H, W, C) -> torch (C, H, W); vectors unchanged."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


def _as_graph_module(model: Any) -> GraphModule:
    if not isinstance(model, GraphModule):
        raise BackendError(f"expected a model built by the torch backend, got {type(model).__name__}")
    return model


class TorchBackend(Backend):
    """PyTorch: NCHW nn.Module, submodules named after IR nodes."""

    name: ClassVar[str] = "torch"
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    capabilities: ClassVar[frozenset[str]] = frozenset({"build", "weights", "run", "train", "save", "emit"})
    model_suffix: ClassVar[str] = ".pt"

    def build(self, graph: ir.Graph) -> GraphModule:
        self.check_supported(graph)
        return build_module(graph, self.handlers)

    def verify(self, graph: ir.Graph, model: Any) -> None:
        """Every node's output shape, then per-node and total parameter counts, against the IR.

        Trainable parameters follow cost convention "torch" (weights, biases, BN affine);
        buffers counted as non-trainable are the BN running statistics, i.e. Keras'
        non-trainable weights (``num_batches_tracked`` is torch bookkeeping, not a weight).
        """
        model = _as_graph_module(model)
        was_training = model.training
        model.eval()
        try:
            self._verify_shapes(graph, model)
        finally:
            model.train(was_training)
        trainable = cost(graph, "torch")
        stats = cost(graph, "keras")
        for node in graph.nodes:
            if node.name not in model._modules:
                continue
            module = model.get_submodule(node.name)
            n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
            n_stats = sum(b.numel() for k, b in module.named_buffers() if k.rsplit(".", 1)[-1] != "num_batches_tracked")
            if n_train != trainable.node(node.name).trainable:
                raise BackendError(
                    f"node {node.name!r}: {n_train} trainable parameters, IR says {trainable.node(node.name).trainable}"
                )
            if n_stats != stats.node(node.name).non_trainable:
                raise BackendError(
                    f"node {node.name!r}: {n_stats} non-trainable values, IR says {stats.node(node.name).non_trainable}"
                )
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if total != trainable.trainable:
            raise BackendError(f"model has {total} trainable parameters, IR says {trainable.trainable}")
        buffers = sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
        if buffers != stats.non_trainable:
            raise BackendError(f"model has {buffers} non-trainable values, IR says {stats.non_trainable}")

    @staticmethod
    def _verify_shapes(graph: ir.Graph, model: GraphModule) -> None:
        """Step through the model node by node so the first wrong shape (or crash) is named."""
        values = {model.input_name: torch.zeros((1, *_torch_shape(graph.input_shape)), dtype=torch.float32)}
        steps = dict(model.steps)
        for node in graph.nodes:
            if node.name not in values:
                if node.name not in steps:
                    raise BackendError(f"node {node.name!r}: the model computes no output for it")
                try:
                    with torch.no_grad():
                        values[node.name] = model.get_submodule(node.name)(*(values[i] for i in steps[node.name]))
                except RuntimeError as exc:
                    raise BackendError(f"node {node.name!r}: forward pass failed: {exc}") from None
            got = tuple(values[node.name].shape[1:])
            want = _torch_shape(node.shape)
            if got != want:
                raise BackendError(
                    f"node {node.name!r}: output shape {got} (NCHW) but the IR says {node.shape} (= {want} in NCHW)"
                )

    def get_weights(self, graph: ir.Graph, model: Any) -> Weights:
        return weight_io.get_weights(graph, _as_graph_module(model))

    def set_weights(self, graph: ir.Graph, model: Any, weights: Weights) -> None:
        weight_io.set_weights(graph, _as_graph_module(model), weights)

    def run(
        self, graph: ir.Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        model = _as_graph_module(model)
        names = [graph.output] if outputs is None else list(outputs)
        for n in names:
            if n not in graph:
                raise BackendError(f"no node named {n!r} in graph {graph.name!r}")
        xt = torch.from_numpy(to_torch_layout(self._check_input(graph, x)))
        model.eval()
        with torch.no_grad():
            outs = model.forward_nodes(xt, names)
        return {n: from_torch_layout(outs[n].numpy()) for n in names}

    @staticmethod
    def _check_input(graph: ir.Graph, x: np.ndarray) -> np.ndarray:
        """float32 NHWC batch of the IR's input shape, or a BackendError saying what came."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape[1:] != tuple(graph.input_shape):
            raise BackendError(f"input of shape {arr.shape}; graph {graph.name!r} takes (N, *{graph.input_shape})")
        return arr

    def train_step(self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        """One plain SGD step on mean softmax cross-entropy of the logits.

        The logits are the input of the final Softmax when the graph ends in one (the loss
        is then numerically the cross-entropy of the graph's output); otherwise the output.
        BatchNorm runs in training mode, so its moving statistics update too.
        """
        model = _as_graph_module(model)
        logits_name = graph.logits
        if len(graph[logits_name].shape) != 1:
            raise BackendError(
                f"training needs (N, classes) logits; node {logits_name!r} is {graph[logits_name].shape}"
            )
        xt = torch.from_numpy(to_torch_layout(self._check_input(graph, x)))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
        model.train()
        try:
            opt.zero_grad(set_to_none=True)
            logits = model.forward_nodes(xt, (logits_name,))[logits_name]
            loss = F.cross_entropy(logits, yt)
            loss.backward()
            opt.step()
        finally:
            model.eval()

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        from .save import save_model

        return save_model(graph, _as_graph_module(model), Path(out_dir))

    def emit(self, graph: ir.Graph) -> str:
        """Standalone PyTorch source for ``graph`` (see emit.py); needs jinja2."""
        from .emit import emit_source

        self.check_supported(graph)
        return emit_source(graph, self.handlers)
