"""The Python API the CLI is a thin shell over.

import archcompiler
net = archcompiler.compile("specs/mobilenet.yaml", width=0.5, resolution=160)
net.cost("paper").macs          # 76,524,800
model = net.build("torch")      # a verified torch.nn.Module
source = net.generate("keras")  # standalone Keras source
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ir
from .cost import CostReport, cost
from .loading import LoadedSpec, load
from .lower import lower


@dataclass(frozen=True)
class Compiled:
    """A spec lowered at one width and resolution: the IR plus what can be done with it."""

    loaded: LoadedSpec
    graph: ir.Graph

    def cost(self, convention: str = "paper") -> CostReport:
        return cost(self.graph, convention)

    def build(self, backend: str = "torch", *, weights: str | Path | dict[str, Any] | None = None) -> Any:
        """Instantiate and verify the model in ``backend``; optionally load weights."""
        from .registry import get_backend, read_weights

        b = get_backend(backend)
        model = b.build(self.graph)
        b.verify(self.graph, model)
        if weights is not None:
            w = weights if isinstance(weights, dict) else read_weights(weights, self.graph)
            b.set_weights(self.graph, model, w)
        return model

    def generate(self, backend: str = "torch") -> str:
        from .registry import get_backend

        return get_backend(backend).emit(self.graph)

    def parity(self, backends: Sequence[str] = ("torch", "keras"), **kwargs: Any) -> Any:
        from .parity import parity

        return parity(self.graph, backends, **kwargs)


def compile(
    spec: str | Path | LoadedSpec,
    *,
    width: float | None = None,
    resolution: float | int | tuple[int, int] | None = None,
) -> Compiled:
    """Load (if given a path), validate and lower a spec."""
    loaded = spec if isinstance(spec, LoadedSpec) else load(spec)
    return Compiled(loaded, lower(loaded, width=width, resolution=resolution))
