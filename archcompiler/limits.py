"""Limits on what a spec may ask for, so that a typo fails at ``archc check`` with a located
error instead of a build that tries to allocate terabytes (README, "Guarantees").

Each is far above any real network's need (MobileNet v1 at 224 px: 4.2M parameters, about
5M activation values per example).
"""

from __future__ import annotations

MAX_SIZE = 8192
"""Largest input height or width in pixels, from the spec or from ``--resolution``."""

MAX_FIELD = 65536
"""Largest integer a layer field may hold (filters, units, kernel, stride, groups, ...)."""

MAX_PARAMETERS = 500_000_000
"""Most weights (every tensor, BatchNorm statistics included) a graph may have: 2 GB in float32."""

MAX_ACTIVATIONS = 500_000_000
"""Most output values per example, summed over every node: 2 GB in float32 for batch 1."""

EPSILON_RANGE = (1e-10, 1.0)
"""BatchNorm epsilon bounds: below 1e-10 it vanishes in float32 arithmetic (1e-320 is 0 there);
above 1 it is no longer a small stabiliser."""
