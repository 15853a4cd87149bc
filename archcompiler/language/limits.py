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

MAX_LAYERS = 100_000
"""Most layers a spec may expand to: a typo such as ``repeat: 1000000000`` fails at once
instead of keeping the checker busy for hours (lowering runs about 100k layers a second)."""

MAX_ITERATIONS = 2 * MAX_LAYERS
"""Most repeat iterations an expansion may run: each copy of a layer and each block instance,
nested ones multiplied, counting those a ``when:`` leaves out (which make no layer but still
cost time). Checked before a loop starts, against the fewest iterations its body can take
(``{op: activation, repeat: 1000000000, when: false}`` is refused at once), and counted as it
runs; room for a network at MAX_LAYERS made of one-layer blocks, and at most a few seconds of
work (a guarded-off iteration or an empty block instance costs 10-30 us)."""

MAX_GRAPH_DEPTH = 5_000
"""Most layers on one path from the input (ir.Graph.depth: a chain of 1,200 activations is 1,200
deep; specs/mobilenet.yaml is 84, mobilenet_v3_large.yaml 193). Keras walks its functional
graph with one Python frame per layer of depth: the keras backend makes that much room
(backends/keras/build.recursion_room), and this bounds it; every built-in backend builds, runs
and saves a graph this deep (tests/backends/test_deep_graphs.py; TFLite's conversion takes
minutes there)."""

MAX_PARAMETERS = 500_000_000
"""Most weights (every tensor, BatchNorm statistics included) a graph may have: 2 GB in float32."""

MAX_ACTIVATIONS = 2_000_000_000
"""Most output values per example, summed over every node (8 GB in float32 at batch 1 if all were
kept; a framework keeps a few at a time). EfficientNet-B7 at its 600 px sums 1.06 billion (BatchNorm
and activation outputs included): specs/efficientnet.yaml --variant b7 must lower."""

EPSILON_RANGE = (1e-10, 1.0)
"""BatchNorm epsilon bounds: below 1e-10 it vanishes in float32 arithmetic (1e-320 is 0 there);
above 1 it is no longer a small stabiliser."""

MAX_MEMORY = 4 * 2**30
"""Most bytes of tensors one run may hold (4 GiB): parity's value of every node in every backend
plus its float64 reference, a training comparison's trajectories, a model run on a batch.
Estimated from the IR before anything is built or run (kit.check_memory), so ``parity --batch
999999`` or a float64 parity at 8,192 px is one line naming what to lower, not a MemoryError
minutes later. The environment variable ``ARCHC_MAX_MEMORY`` (bytes, or 512M, 16G) changes it."""

MEMORY_ENV = "ARCHC_MAX_MEMORY"
