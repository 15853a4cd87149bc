"""TorchBackend: the handler table plus torch glue; verification, weight layouts, input
checks and atomic saving come from the kit (archcompiler.kit)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from archcompiler.backends.torch import weights as weight_io
from archcompiler.backends.torch.build import GraphModule, build_module, last_uses
from archcompiler.backends.torch.names import RESERVED
from archcompiler.backends.torch.ops import HANDLERS, Handler
from torch import nn

from archcompiler import ir
from archcompiler.ir.layouts import shape_to
from archcompiler.kit.registry import Backend, BackendError
from archcompiler.quiet import ArchcWarning


def _as_graph_module(model: Any) -> GraphModule:
    if not isinstance(model, GraphModule):
        raise BackendError(f"expected a model built by the torch backend, got {type(model).__name__}")
    return model


def _counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) elements: parameters that take gradients, then frozen
    parameters and buffers. ``num_batches_tracked`` is torch bookkeeping, not a weight, so the
    buffers counted are the BN running statistics, i.e. Keras' non-trainable weights."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(b.numel() for k, b in module.named_buffers() if k.rsplit(".", 1)[-1] != "num_batches_tracked")
    return trainable, frozen + stats


VERIFY_THREADS = 1
"""Intra-op threads for verification, parity and training steps. Their tensors are small
(batch 1-2): one thread is as fast, and it does not collapse when other processes hold the
cores (with 2 OpenMP threads on a busy 2-core machine, verify went from 11 ms to over 1 s)."""


@contextlib.contextmanager
def pinned_threads(n: int = VERIFY_THREADS) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchBackend(Backend):
    """PyTorch: NCHW nn.Module, submodules named after IR nodes."""

    name: ClassVar[str] = "torch"
    optimizable: ClassVar[bool] = True
    trains: ClassVar[bool] = True  # sgd_step
    multi_output: ClassVar[bool] = True
    asymmetric_padding: ClassVar[bool] = False  # nn.Conv2d pads symmetrically; nn.ZeroPad2d copies
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    weight_layout = "channels_first"
    activation_layout = "channels_first"
    reserved_names = RESERVED
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    foreign_weight_suffixes: ClassVar[tuple[str, ...]] = (".pt",)  # its own state_dict (checkpoint.py)
    file_suffixes: ClassVar[tuple[str, ...]] = (".pt", ".py", ".pt2", ".torchscript.pt")

    @functools.cached_property
    def weight_names(self) -> Mapping[tuple[str, str], str]:  # type: ignore[override]
        """(IR op, canonical param) -> name inside the node's module, from each op's handler
        (``Handler.weight_names``) in this instance's table."""
        return weight_io.weight_names(self.handlers)

    def __init__(self, *, export: bool = False, source: bool = True) -> None:
        """``export``: save also writes a torch.export program (``.pt2``; slow, so opt-in);
        ``source``: save writes the emitted module (``.py``) next to the state_dict."""
        self.export = export
        self.source = source

    def build(self, graph: ir.Graph, dtype: str = "float32") -> GraphModule:
        """The module in float32, or in float64 (``model.double()``: parameters and buffers) for
        parity's oracle."""
        self.check_supported(graph)
        model = build_module(graph, self.handlers)
        model.compute_dtype = dtype  # a model without parameters still knows its dtype
        return model.double() if dtype == "float64" else model

    def graph_name(self, model: Any) -> str:
        """The name of the graph the model was built from (optimize.built_optimized)."""
        return _as_graph_module(model).graph_name

    def model_dtype(self, model: Any) -> str:
        """The dtype of the first floating-point parameter or buffer (float32 if there is none)."""
        declared = getattr(_as_graph_module(model), "compute_dtype", None)
        if declared is not None:
            return declared
        tensors = [*model.parameters(), *model.buffers()]
        first = next((t for t in tensors if t.is_floating_point()), None)
        return "float32" if first is None else str(first.dtype).removeprefix("torch.")

    # -- glue: verification ----------------------------------------------------------------

    def node_shapes(self, graph: ir.Graph, model: Any) -> Iterator[tuple[str, tuple[int, ...] | Exception]]:
        """Step through the model layer by layer (eval mode, batch of one, one thread) so that
        the first wrong shape, or the first crash, is attributed to its node."""
        model = _as_graph_module(model)
        was_training = model.training
        model.eval()
        try:
            with pinned_threads():
                dtype = getattr(torch, self.model_dtype(model))
                values = {
                    model.input_name: torch.zeros((1, *shape_to(graph.input_shape, "channels_first")), dtype=dtype)
                }
                yield model.input_name, tuple(values[model.input_name].shape[1:])
                # Only shapes are needed: free each value after its last use (half the time).
                dead = last_uses(model.input_name, model.steps, ())
                for (name, inputs), done in zip(model.steps, dead, strict=True):
                    try:
                        with torch.no_grad():
                            values[name] = model.get_submodule(name)(*(values[i] for i in inputs))
                    except RuntimeError as exc:
                        yield name, exc
                        return
                    yield name, tuple(values[name].shape[1:])
                    for d in done:
                        del values[d]
        finally:
            model.train(was_training)

    def param_counts(self, graph: ir.Graph, model: Any) -> dict[str, tuple[int, int]]:
        return {name: _counts(module) for name, module in model.named_children()}

    def param_totals(self, model: Any) -> tuple[int, int]:
        return _counts(model)

    # -- glue: weights ---------------------------------------------------------------------

    def weight_tensors(self, model: Any) -> Mapping[tuple[str, str], torch.Tensor]:
        return weight_io.weight_tensors(model)

    def read_tensor(self, tensor: torch.Tensor) -> np.ndarray:
        return weight_io.read_tensor(tensor)

    def write_tensors(self, staged: Sequence[tuple[torch.Tensor, np.ndarray]]) -> None:
        weight_io.write_tensors(staged)

    # -- glue: run and train ---------------------------------------------------------------

    def forward(self, graph: ir.Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        model = _as_graph_module(model)
        model.eval()
        with torch.no_grad(), pinned_threads():
            outs = model.forward_nodes(torch.from_numpy(x), names)
        return {n: outs[n].numpy() for n in names}

    def sgd_step(
        self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float
    ) -> tuple[float, np.ndarray]:
        """One plain SGD step on mean softmax cross-entropy of the logits. BatchNorm runs in
        training mode, so its moving statistics update too; the model is left in eval mode.
        Returns the loss and the training-mode logits (before the update)."""
        model = _as_graph_module(model)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
        model.train()
        try:
            with pinned_threads():
                opt.zero_grad(set_to_none=True)
                out = model.forward_nodes(torch.from_numpy(x), (logits,))[logits]
                loss = F.cross_entropy(out, torch.from_numpy(y))
                loss.backward()
                opt.step()
        finally:
            model.eval()
        return float(loss.item()), out.detach().numpy().copy()

    def tune(self, graph: ir.Graph, model: Any) -> GraphModule:
        """An optimised build's torch-only change (optimize.py): channels-last weights."""
        from archcompiler.backends.torch.optimize import tune

        return tune(_as_graph_module(model))

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        from archcompiler.backends.torch.save import save_model

        source = None
        if self.source:
            try:
                source = self.emit(graph)
            except BackendError as exc:  # a model can be buildable yet not expressible as source
                warnings.warn(f"not writing {graph.name}.py: {exc}", ArchcWarning, stacklevel=2)
        return save_model(self, graph, _as_graph_module(model), Path(out_dir), source=source, export=self.export)

    def read_foreign_weights(self, path: Path, graph: ir.Graph) -> dict[str, np.ndarray]:
        from archcompiler.backends.torch.checkpoint import load_state_dict

        return load_state_dict(path, graph, self.weight_names)

    def emit(self, graph: ir.Graph) -> str:
        """Standalone PyTorch source for ``graph`` (see emit.py); needs jinja2."""
        from archcompiler.backends.torch.emit import emit_source

        self.check_supported(graph)
        return emit_source(graph, self.handlers)
