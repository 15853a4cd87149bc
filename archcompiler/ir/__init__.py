"""The graph IR: frozen nodes that name their inputs (the op definitions in
:mod:`archcompiler.ops`), the self-checking :class:`Graph`, layout conversions and graph passes."""

from archcompiler.ir.graph import *  # noqa: F403
from archcompiler.ir.graph import __all__  # noqa: F401
