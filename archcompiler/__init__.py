"""archc: a declarative architecture-spec compiler for neural networks.

``import archcompiler`` loads no ML framework (a test checks): the spec language, the IR and
the cost model are pure Python; a framework is imported only by the backend that runs.
"""

from archcompiler.analysis.cost import CONVENTIONS, CostReport, cost
from archcompiler.analysis.fitting import FitRow
from archcompiler.api import Compiled, compile, fit, load_spec, sweep
from archcompiler.ir.graph import Graph
from archcompiler.language.loading import LoadedSpec, load, load_text
from archcompiler.language.source import SpecError
from archcompiler.lowering.lower import lower

__all__ = [
    "CONVENTIONS",
    "Compiled",
    "CostReport",
    "FitRow",
    "Graph",
    "LoadedSpec",
    "SpecError",
    "compile",
    "cost",
    "fit",
    "load",
    "load_spec",
    "load_text",
    "lower",
    "sweep",
]
__version__ = "0.1.0"
"""Kept equal to pyproject.toml's version: ``archc --version`` falls back to it when the
distribution's metadata is missing (running from a source tree without installing)."""
