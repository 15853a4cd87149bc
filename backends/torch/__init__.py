"""The PyTorch backend: builds NCHW nn.Modules from the IR, moves weights, emits source.

Importing this package imports no framework: ``TorchBackend`` loads torch on first access,
so framework-free parts (``names``) can be read by ``archc check``; ``archcompiler`` itself
never imports torch (registry.py asks for the backend lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archcompiler.backends.torch.backend import TorchBackend

__all__ = ["TorchBackend"]


def __getattr__(name: str) -> Any:
    if name == "TorchBackend":
        from archcompiler.backends.torch.backend import TorchBackend

        return TorchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
