"""IR graph -> torch.nn.Module: one submodule per layer call, named after its IR node, wired as the DAG.

Submodule names are the IR node names (a helper layer, e.g. the nn.ZeroPad2d before an
asymmetrically padded conv, is ``<node>_pad``), so state_dict keys read ``conv_dw_1.weight``
and map onto the canonical ``conv_dw_1.kernel`` by name alone. The module is NCHW (torch's
layout); the kit moves tensors to and from the IR's channels-last layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from archcompiler.backends.torch.ops import BACKEND, HANDLERS, Handler
from torch import nn

from archcompiler import ir
from archcompiler.kit.calls import describe_graph
from archcompiler.kit.registry import BackendError

Step = tuple[str, tuple[str, ...]]
"""(layer name, names of the values it reads)."""


def last_uses(input_name: str, steps: Iterable[Step], keep: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Per step, the values no later step reads (and not in ``keep``): freed right after it.

    Computed once at build time, so the forward holds only live tensors (at batch 16 the
    difference between keeping every intermediate and not is most of the peak memory)."""
    steps = tuple(steps)
    last: dict[str, int] = {input_name: -1}
    for k, (name, inputs) in enumerate(steps):
        last[name] = k  # a value nobody reads dies right after it is made
        for i in inputs:
            last[i] = k
    kept = set(keep)
    dead: list[list[str]] = [[] for _ in steps]
    for value, k in last.items():
        if value not in kept and k >= 0:
            dead[k].append(value)
    return tuple(tuple(d) for d in dead)


class GraphModule(nn.Module):
    """Runs the layers in topological order, each ``module(*inputs)``, so the same wiring serves
    chains, residual adds and squeeze-excite multiplies.

    ``forward`` frees every intermediate after its last use; ``forward_nodes`` returns the
    intermediates asked for (verification and parity read them), by default all of them.
    ``forward`` returns the one output's tensor, or a list of the outputs' tensors in order
    (a multi-output feature extractor, like timm's ``features_only`` models).
    """

    def __init__(
        self,
        name: str,
        input_name: str,
        outputs: str | Sequence[str],
        steps: Iterable[Step],
        modules: Mapping[str, nn.Module],
    ) -> None:
        super().__init__()
        self.graph_name = name
        self.input_name = input_name
        self.outputs: tuple[str, ...] = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        self.steps: tuple[Step, ...] = tuple(steps)
        self._dead = last_uses(input_name, self.steps, self.outputs)
        for node_name, module in modules.items():
            if hasattr(self, node_name) and node_name not in self._modules:
                raise BackendError(f"node name {node_name!r} clashes with a torch.nn.Module attribute")
            self.add_module(node_name, module)

    def forward_nodes(self, x: torch.Tensor, keep: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the layers in ``keep`` (default: every layer), stopping once all are known;
        values nothing later reads and ``keep`` does not name are freed on the way."""
        values: dict[str, torch.Tensor] = {self.input_name: x}
        if keep is None:
            for node_name, inputs in self.steps:
                values[node_name] = self._run(node_name, inputs, values, None)
            return values
        wanted = set(keep)
        missing = set(wanted) - values.keys()
        dead = last_uses(self.input_name, self.steps, wanted) if missing else ()
        for k, (node_name, inputs) in enumerate(self.steps):
            if not missing:
                break
            values[node_name] = self._run(node_name, inputs, values, wanted)
            missing.discard(node_name)
            for d in dead[k]:
                del values[d]
        return {k: values[k] for k in wanted}

    def _run(
        self, name: str, inputs: tuple[str, ...], values: dict[str, torch.Tensor], wanted: set[str] | None
    ) -> torch.Tensor:
        """One step of forward_nodes. An in-place module (an optimised model's ReLU) would
        overwrite a value that is to be returned (``wanted``; None: all), so it gets a copy."""
        module = self._modules[name]
        if getattr(module, "inplace", False):
            return module(*(values[i].clone() if wanted is None or i in wanted else values[i] for i in inputs))
        return module(*(values[i] for i in inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """NCHW (or (N, C)) input -> the graph output (a list of them for several), in torch
        layout; each intermediate is dropped as soon as no later layer reads it."""
        values: dict[str, torch.Tensor] = {self.input_name: x}
        del x
        modules = self._modules
        for (node_name, inputs), dead in zip(self.steps, self._dead, strict=True):
            values[node_name] = modules[node_name](*(values[i] for i in inputs))
            for d in dead:
                del values[d]
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return [values[o] for o in self.outputs]


def build_module(graph: ir.Graph, handlers: Mapping[str, Handler] = HANDLERS) -> GraphModule:
    """Instantiate every node's calls through ``handlers`` (the backend's table); eval mode, float32.

    Every node is described first, so an op the table cannot express fails before any module
    is created."""
    inputs = graph.inputs
    if len(inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(inputs)} inputs; the torch backend supports one")
    modules: dict[str, nn.Module] = {}
    steps: list[Step] = []
    for item in describe_graph(graph, handlers, BACKEND):
        node = item.node
        if not item.calls:
            if not isinstance(node, ir.Input):
                raise BackendError(f"handler for {node.op!r} built no module for node {node.name!r}")
            continue
        for call in item.calls:
            modules[call.name] = item.handler.instantiate(call)
            steps.append((call.name, call.inputs))
    model = GraphModule(graph.name, inputs[0].name, graph.outputs, steps, modules)
    return model.float().eval()
