"""How two tensors are compared: differences under which equal infinities (and NaN in both) agree,
and shares of a bound that are never NaN, shared by inference and training parity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from archcompiler.ops.base import absmax

if TYPE_CHECKING:
    import numpy as np

__all__ = ["absmax", "difference", "max_difference", "nonfinite", "pairwise", "share", "times", "within"]


def difference(r: np.ndarray, o: np.ndarray) -> np.ndarray:
    """|o - r| elementwise, never NaN: equal values (the same infinity, NaN in both) differ by
    0, any other pair involving NaN or infinity by infinity."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.asarray(o, dtype=np.float64) - r)
    d = np.where((o == r) | (np.isnan(o) & np.isnan(r)), 0.0, d)
    return np.where(np.isnan(d), np.inf, d)


def max_difference(r: np.ndarray, o: np.ndarray) -> float:
    """max |o - r| by :func:`difference`; infinity for a shape mismatch."""
    if o.shape != r.shape:
        return float("inf")
    return float(difference(r, o).max(initial=0.0))


def pairwise(r: np.ndarray, o: np.ndarray) -> tuple[float, float]:
    """(max abs, max rel) difference of ``o`` from ``r`` (:func:`difference`; never NaN)."""
    import numpy as np

    if o.shape != r.shape:
        return float("inf"), float("inf")
    d = difference(r, o)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.where(d == 0, 0.0, d / np.maximum(np.abs(r), 1e-30))
    rel = np.where(np.isnan(rel), np.inf, rel)
    return float(d.max(initial=0.0)), float(rel.max(initial=0.0))


def between(values: Sequence[tuple[str, np.ndarray]]) -> tuple[float, float, str]:
    """(max abs, max rel, pair) of every backend's values at one node against the first
    backend's (``values``: (backend, array) in order, float64): the largest of each, and the
    pair the max abs comes from, named ``"keras vs torch"`` ("" with fewer than two)."""
    worst_abs, worst_rel, pair = 0.0, 0.0, ""
    first, r = values[0] if values else ("", None)
    for name, o in values[1:]:
        a, rel = pairwise(r, o)  # type: ignore[arg-type]
        if a > worst_abs or not pair:
            worst_abs, pair = max(worst_abs, a), f"{name} vs {first}"
        worst_rel = max(worst_rel, rel)
    return worst_abs, worst_rel, pair


def times(a: float, b: float) -> float:
    """a * b for non-negative factors, with 0 * infinity = 0 (a Lipschitz constant of 0, or an
    error of 0, contributes nothing, however large the other), so that no bound is NaN."""
    return 0.0 if a == 0 or b == 0 else a * b


def share(error: float, allowed: float) -> float:
    """``error / allowed``, the share of its bound a difference uses: 0 for no difference,
    infinity for an infinite one or no allowance (never NaN)."""
    if error == 0:
        return 0.0
    return error / allowed if allowed > 0 and error < float("inf") else float("inf")


def within(error: float, allowed: float) -> bool:
    """A difference of 0 always passes; an infinite one never; otherwise ``error <= allowed``."""
    return error == 0 or (error < float("inf") and error <= allowed)


def nonfinite(arrays: Sequence[np.ndarray]) -> str:
    """What every array holds besides finite numbers ("NaN", "infinity", "NaN and infinity"), or
    "" if one of them is all finite."""
    import numpy as np

    if not arrays or any(bool(np.isfinite(a).all()) for a in arrays):
        return ""
    nan = any(bool(np.isnan(a).any()) for a in arrays)
    inf = any(bool(np.isinf(a).any()) for a in arrays)
    return "NaN and infinity" if nan and inf else "NaN" if nan else "infinity"
