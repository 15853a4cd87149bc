"""The PyTorch backend: builds NCHW nn.Modules from the IR, moves weights, emits source.

Importing this package imports torch; ``archcompiler`` itself never does (registry.py
imports it lazily when the "torch" backend is asked for).
"""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
