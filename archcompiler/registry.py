"""Compatibility shim: backend lookup moved to :mod:`archcompiler.kit.registry`.

Plug-ins written against ``archcompiler.registry`` (``Backend``, ``BackendError``,
``get_backend``...) keep working; new code imports from ``archcompiler.kit``.
"""

from archcompiler.kit.registry import *  # noqa: F403
from archcompiler.kit.registry import __all__  # noqa: F401
