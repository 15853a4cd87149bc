"""The backend interface and the kit every backend shares (verification, weight moving, input
checks, saving), backend lookup by name, and the code-generation machinery."""

from archcompiler.kit.backend import (
    DTYPES,
    Backend,
    BackendError,
    Glue,
    MemoryLimitError,
    OpEntry,
    UnsupportedOpError,
    require_capabilities,
)

__all__ = [
    "DTYPES",
    "Backend",
    "BackendError",
    "Glue",
    "MemoryLimitError",
    "OpEntry",
    "UnsupportedOpError",
    "require_capabilities",
]
