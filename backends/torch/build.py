"""IR graph -> torch.nn.Module: one submodule per IR node, named after it, wired as the DAG.

Submodule names are the IR node names, so state_dict keys read ``conv_dw_1.weight`` and map
onto the canonical ``conv_dw_1.kernel`` by name alone. The module is NCHW (torch's layout);
:mod:`.convert` moves tensors to and from the IR's channels-last layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from archcompiler import ir
from archcompiler.codegen import describe_graph
from archcompiler.registry import BackendError

from .ops import BACKEND, HANDLERS, Handler


class GraphModule(nn.Module):
    """Runs IR nodes in topological order; ``forward_nodes`` also returns intermediates.

    Each step is ``module(*inputs)``, so the same wiring serves chains, residual adds and
    squeeze-excite multiplies.
    """

    def __init__(
        self,
        name: str,
        input_name: str,
        output: str,
        steps: Iterable[tuple[str, tuple[str, ...]]],
        modules: Mapping[str, nn.Module],
    ) -> None:
        super().__init__()
        self.graph_name = name
        self.input_name = input_name
        self.output = output
        self.steps: tuple[tuple[str, tuple[str, ...]], ...] = tuple(steps)
        for node_name, module in modules.items():
            if hasattr(self, node_name) and node_name not in self._modules:
                raise BackendError(f"node name {node_name!r} clashes with a torch.nn.Module attribute")
            self.add_module(node_name, module)

    def forward_nodes(self, x: torch.Tensor, keep: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the nodes in ``keep`` (default: every node), stopping once all are known."""
        values: dict[str, torch.Tensor] = {self.input_name: x}
        wanted = None if keep is None else set(keep)
        if wanted is not None and wanted <= values.keys():
            return {k: values[k] for k in wanted}
        for node_name, inputs in self.steps:
            values[node_name] = getattr(self, node_name)(*(values[i] for i in inputs))
            if wanted is not None and wanted <= values.keys():
                break
        return values if wanted is None else {k: values[k] for k in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW (or (N, C)) input -> the graph output, in torch layout."""
        return self.forward_nodes(x, (self.output,))[self.output]


def build_module(graph: ir.Graph, handlers: Mapping[str, Handler] = HANDLERS) -> GraphModule:
    """Instantiate every node's call through ``handlers`` (the backend's table); eval mode, float32.

    Every node is described first, so an op the table cannot express fails before any module
    is created."""
    inputs = graph.inputs
    if len(inputs) != 1:
        raise BackendError(f"graph {graph.name!r} has {len(inputs)} inputs; the torch backend supports one")
    modules: dict[str, nn.Module] = {}
    steps: list[tuple[str, tuple[str, ...]]] = []
    for item in describe_graph(graph, handlers, BACKEND):
        node = item.node
        if not item.calls:
            if not isinstance(node, ir.Input):
                raise BackendError(f"handler for {node.op!r} built no module for node {node.name!r}")
            continue
        if len(item.calls) != 1:
            raise BackendError(f"handler for {node.op!r} describes {node.name!r} as several modules; torch needs one")
        modules[node.name] = item.handler.instantiate(item.calls[0])
        steps.append((node.name, node.inputs))
    model = GraphModule(graph.name, inputs[0].name, graph.output, steps, modules)
    return model.float().eval()
