"""The constants parity's verdicts rest on: unit roundoffs, the float64 agreement and the
rounding allowances (see :mod:`.inference`). What each op contributes (its Lipschitz constants,
reductions, clamps) is part of the op's definition: ``Node.parity_bound`` in archcompiler/ops."""

from __future__ import annotations

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
