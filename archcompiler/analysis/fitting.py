"""Fitting a budget: which widths and resolutions of a spec fit a MACs / parameter budget.

Two questions, two answers:

* :func:`fit` on a grid (default: the paper's widths 1, 0.75, 0.5, 0.25 and resolutions 224,
  192, 160, 128) ranks every setting that fits, MACs descending and parameters as the
  tie-break: the first row is the largest model the budget allows (at MACs 150M, MobileNet's
  0.5/224 with 149,497,088, docs/NUMBERS.md Tables 6/7).
* :func:`search` scans a fine grid (alpha 0.10..1.40 in steps of 0.05, resolution 96..320 px in
  steps of 8; channels rounded by the spec's own rule) and keeps the *front*: the fitting
  settings that no other fitting setting dominates, where ``t`` dominates ``s`` when ``t`` is
  at least as wide and at least as large an input (height and width) and differs from ``s``.
  Every setting under the front fits too (MACs and parameters grow with alpha and rho), so the
  front is the complete answer to "how far can each knob go for the others' values".

Across a family's variants and depth multipliers (``variants=["b0", "b1"]``, ``depths=``) the
grid is every variant x depth x width x resolution; with variants, the widths and resolutions
left out are each variant's own, so "the best EfficientNet under 400M multiply-adds" is one call.

Settings compare by what the spec's rounding rule makes of them, so two alphas that round to
the same channel counts are both listed (they are the same network, labelled twice), and a
setting at which the spec does not lower (an input too small for a pool) is skipped in
:func:`search` but is the user's error in :func:`fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from archcompiler.analysis.cost import cost
from archcompiler.language.loading import LoadedSpec
from archcompiler.language.source import SpecError
from archcompiler.lowering.features import Outputs
from archcompiler.lowering.heads import Head
from archcompiler.lowering.lower import lower

PAPER_WIDTHS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS: tuple[int, ...] = (224, 192, 160, 128)
SEARCH_WIDTHS: tuple[float, ...] = tuple(round(0.10 + 0.05 * k, 2) for k in range(27))
"""0.10, 0.15, ..., 1.40: the paper's four widths, Keras' 0.35/1.3/1.4 and everything between."""
SEARCH_RESOLUTIONS: tuple[int, ...] = tuple(range(96, 321, 8))
"""96, 104, ..., 320 px: multiples of 8 (what stride-8 feature maps need to stay whole)."""

Resolution = float | int | tuple[int, int]


@dataclass(frozen=True, order=False)
class FitRow:
    """One setting and its cost under the convention asked for."""

    width: float
    resolution: tuple[int, int]
    """(height, width) of the input in pixels."""
    macs: int
    params: int
    variant: str = ""
    """The spec's variant (``""``: none)."""
    depth: float = 1.0
    """The depth multiplier."""

    @property
    def label(self) -> str:
        """``0.5/224`` (``0.5/224x160`` for a non-square input), after the variant and with the
        depth when it is not 1 (``b1 1/240 depth 1.1``): how tables and plots name it."""
        h, w = self.resolution
        text = f"{self.width:g}/{h}" if h == w else f"{self.width:g}/{h}x{w}"
        variant = f"{self.variant} " if self.variant else ""
        depth = f" depth {self.depth:g}" if self.depth != 1.0 else ""
        return f"{variant}{text}{depth}"


def _fits(row: FitRow, max_macs: int | None, max_params: int | None) -> bool:
    return (max_macs is None or row.macs <= max_macs) and (max_params is None or row.params <= max_params)


@dataclass(frozen=True)
class Grid:
    """The settings to try: every variant x depth x width x resolution (None: the spec's own,
    or the variant's)."""

    widths: Sequence[float | None]
    resolutions: Sequence[Resolution | None]
    variants: Sequence[str | None] = (None,)
    depths: Sequence[float | None] = (None,)

    def settings(self) -> list[tuple[str | None, float | None, float | None, Resolution | None]]:
        return [(v, d, w, r) for v in self.variants for d in self.depths for w in self.widths for r in self.resolutions]


def _row(
    loaded: LoadedSpec,
    setting: tuple[str | None, float | None, float | None, Resolution | None],
    convention: str,
    head: Head | None = None,
    outputs: Outputs | None = None,
) -> FitRow:
    variant, depth, width, res = setting
    g = lower(loaded, width=width, resolution=res, depth=depth, variant=variant, head=head, outputs=outputs)
    c = cost(g, convention)
    return FitRow(g.width, g.resolution, c.macs, c.params, g.variant, g.depth_multiplier)


def rank(rows: Sequence[FitRow]) -> list[FitRow]:
    """MACs descending, then parameters descending (the larger of two equally costly models
    first), then width, resolution, depth and variant for a stable order."""
    return sorted(
        rows, key=lambda r: (-r.macs, -r.params, -r.width, tuple(-x for x in r.resolution), -r.depth, r.variant)
    )


def fit(
    loaded: LoadedSpec,
    *,
    max_macs: int | None = None,
    max_params: int | None = None,
    widths: Sequence[float] | None = None,
    resolutions: Sequence[Resolution] | None = None,
    convention: str = "paper",
    head: Head | None = None,
    outputs: Outputs | None = None,
    variants: Sequence[str] | None = None,
    depths: Sequence[float] | None = None,
) -> list[FitRow]:
    """Every grid setting within the budget, ranked (:func:`rank`); empty when none fits.
    With ``variants``, widths and resolutions left out are each variant's own (not the paper's
    grid), so ``variants=["b0", "b1"]`` compares the variants as they are defined."""
    grid = _grid(widths, resolutions, variants, depths, (PAPER_WIDTHS, PAPER_RESOLUTIONS))
    return rank(_fitting(loaded, max_macs, max_params, grid, convention, head, outputs, skip_unlowerable=False))


def _grid(
    widths: Sequence[float] | None,
    resolutions: Sequence[Resolution] | None,
    variants: Sequence[str] | None,
    depths: Sequence[float] | None,
    defaults: tuple[Sequence[float], Sequence[Resolution]],
) -> Grid:
    """The grid asked for: ``defaults`` for widths and resolutions left out, unless variants
    are given (then each variant's own)."""
    own = variants is not None
    return Grid(
        widths or ((None,) if own else defaults[0]),
        resolutions or ((None,) if own else defaults[1]),
        variants or (None,),
        depths or (None,),
    )


def dominates(a: FitRow, b: FitRow) -> bool:
    """``a`` is the same variant as ``b``, at least as wide, deep and large an input, and not
    the same setting (variants are not ordered: each has its own front)."""
    return (
        a.variant == b.variant
        and a.width >= b.width
        and a.depth >= b.depth
        and a.resolution[0] >= b.resolution[0]
        and a.resolution[1] >= b.resolution[1]
        and (a.width, a.depth, a.resolution) != (b.width, b.depth, b.resolution)
    )


def front(rows: Sequence[FitRow]) -> list[FitRow]:
    """The rows no other row dominates (:func:`dominates`), ranked."""
    return rank([r for r in rows if not any(dominates(o, r) for o in rows)])


def search(
    loaded: LoadedSpec,
    *,
    max_macs: int | None = None,
    max_params: int | None = None,
    widths: Sequence[float] | None = None,
    resolutions: Sequence[Resolution] | None = None,
    convention: str = "paper",
    head: Head | None = None,
    outputs: Outputs | None = None,
    variants: Sequence[str] | None = None,
    depths: Sequence[float] | None = None,
) -> list[FitRow]:
    """The front of the fitting settings on a fine grid (default :data:`SEARCH_WIDTHS` x
    :data:`SEARCH_RESOLUTIONS`, for each variant and depth asked for); settings at which the
    spec does not lower are skipped."""
    grid = _grid(widths, resolutions, None, depths, (SEARCH_WIDTHS, SEARCH_RESOLUTIONS))
    grid = Grid(grid.widths, grid.resolutions, variants or (None,), grid.depths)
    return front(_fitting(loaded, max_macs, max_params, grid, convention, head, outputs, skip_unlowerable=True))


def _fitting(
    loaded: LoadedSpec,
    max_macs: int | None,
    max_params: int | None,
    grid: Grid,
    convention: str,
    head: Head | None,
    outputs: Outputs | None,
    *,
    skip_unlowerable: bool,
) -> list[FitRow]:
    """The grid's settings within the budget, unranked. A setting the spec cannot lower at
    (a 7x7 pool over a 3x3 map) is an error, or skipped when searching a fine grid."""
    if max_macs is None and max_params is None:
        raise SpecError("give a budget (--max-macs and/or --max-params)", file=loaded.file, path="--max-macs")
    rows = []
    for setting in grid.settings():
        try:
            row = _row(loaded, setting, convention, head, outputs)
        except SpecError:
            if skip_unlowerable:
                continue
            raise
        if _fits(row, max_macs, max_params):
            rows.append(row)
    return rows
