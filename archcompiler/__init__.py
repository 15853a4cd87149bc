"""archc: a declarative architecture-spec compiler for neural networks.

``import archcompiler`` loads no ML framework (a test checks): the spec language, the IR and
the cost model are pure Python; a framework is imported only by the backend that runs.
"""

from .api import Compiled, compile
from .cost import CONVENTIONS, CostReport, cost
from .ir import Graph
from .loading import LoadedSpec, load, load_text
from .lower import lower
from .source import SpecError

__all__ = [
    "CONVENTIONS",
    "Compiled",
    "CostReport",
    "Graph",
    "LoadedSpec",
    "SpecError",
    "compile",
    "cost",
    "load",
    "load_text",
    "lower",
]
__version__ = "0.1.0"
