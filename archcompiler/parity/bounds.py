"""The constants parity's verdicts rest on: unit roundoffs, the float64 agreement, the rounding
allowances, and the activations' Lipschitz constants and clamps (see :mod:`.inference`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


U32 = 2.0**-24
"""float32 unit roundoff (half an ulp of 1)."""


U64 = 2.0**-53
"""float64 unit roundoff."""


ETA32 = 2.0**-126
"""The absolute part of a float32 rounding (Higham's model fl(x) = x(1 + d) + e, |e| <= ETA32):
below float32's smallest normal number a result is subnormal, or 0 on a platform that flushes
subnormals to zero (TensorFlow's CPU threads do), whatever its relative size."""


K_ROUNDINGS = 16
"""Roundings per element besides a node's reductions (see the module docstring)."""


RTOL64 = 1e-9
"""float64 agreement, relative to a tensor's magnitude (max |x|)."""


K_TRAIN = 100.0
"""Training (float64): allowed includes K_TRAIN * (probe deviation + u * magnitude); see train_parity."""


FLOAT32_MAX = float(2**128 - 2**104)
"""The largest float32 (3.4e38): a reference beyond it explains an infinity in float32 (overflow)."""


ACTIVATION_LIPSCHITZ: Mapping[str, float] = {
    "relu": 1.0,
    "relu6": 1.0,
    "sigmoid": 0.25,
    "tanh": 1.0,
    "hard_sigmoid": 1.0 / 6.0,
    "hard_swish": 1.5,  # d/dx x * relu6(x + 3) / 6 = (2x + 3) / 6 on [-3, 3]
    "swish": 1.1,  # max of d/dx x * sigmoid(x) is 1.0998
}


CLAMPS: Mapping[str, float] = {"relu": 0.0, "relu6": 0.0, "hard_sigmoid": 6.0}
"""Activations whose output either equals a bound or is computed from inputs in a bounded
range: relu and relu6 pass x through exactly or return a constant (no rounding of their own);
hard_sigmoid rounds relu6(x + 3) / 6 only where |x| <= 3, intermediates at most 6. Their own
rounding is judged at that magnitude, not at the (possibly huge) input's."""
