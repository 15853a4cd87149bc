"""Lowering: a validated spec -> the frozen graph IR, in two stages.

1. :mod:`.expand`: blocks, repeats, parameters and names -> a flat list of concrete layers
   (a reference to a layer that comes later can then be told apart from a typo);
2. :mod:`.infer`: each layer through its op definition -> attributes and shapes.

This module resolves the width and resolution overrides and runs both.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from archcompiler.ir.graph import Graph
from archcompiler.language.limits import MAX_SIZE
from archcompiler.language.loading import LoadedSpec
from archcompiler.language.source import SpecError, short_repr
from archcompiler.language.variants import select
from archcompiler.lowering.expand import expand
from archcompiler.lowering.features import Outputs
from archcompiler.lowering.heads import Head, apply
from archcompiler.lowering.infer import infer
from archcompiler.ops import make_divisible, same_padding

__all__ = ["MAX_SIZE", "lower", "make_divisible", "resolve_size", "same_padding"]

WIDTH_RANGE = (0.0, 4.0)
RESOLUTION_RANGE = (0.0, 4.0)
DEPTH_RANGE = (0.0, 8.0)


def _override_error(loaded: LoadedSpec, field: str, message: str, value: Any) -> SpecError:
    line, col = loaded.source.locate((field,)) if field in loaded.source.data else (1, 1)
    return SpecError(f"{message} (got {short_repr(value)})", file=loaded.file, line=line, col=col, path=field)


def resolve_size(loaded: LoadedSpec, resolution: float | int | tuple[int, int] | None) -> tuple[int, int]:
    """Input (H, W): an int or pair is a size in pixels, a float the multiplier rho."""
    spec = loaded.spec
    base = spec.input.size if isinstance(spec.input.size, tuple) else (spec.input.size, spec.input.size)
    if resolution is None:
        rho = spec.resolution
    elif isinstance(resolution, bool) or not isinstance(resolution, int | float | tuple | list):
        # a str such as '224x0' is the command line's to parse, not float()'s
        raise _override_error(
            loaded, "resolution", "expected a multiplier, a size in pixels or (height, width)", resolution
        )
    elif isinstance(resolution, int):
        if not 1 <= resolution <= MAX_SIZE:
            raise _override_error(loaded, "resolution", f"expected a size from 1 to {MAX_SIZE} pixels", resolution)
        return (resolution, resolution)
    elif isinstance(resolution, tuple | list):
        if len(resolution) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_SIZE for x in resolution
        ):
            raise _override_error(
                loaded, "resolution", f"expected (height, width) from 1 to {MAX_SIZE} pixels", resolution
            )
        return (resolution[0], resolution[1])
    else:
        rho = float(resolution)
        lo, hi = RESOLUTION_RANGE
        if not (lo < rho <= hi) or math.isnan(rho):
            raise _override_error(loaded, "resolution", f"expected a multiplier in ({lo:g}, {hi:g}]", resolution)
    h, w = round(base[0] * rho), round(base[1] * rho)
    if h < 1 or w < 1:
        raise _override_error(loaded, "resolution", f"the input collapses to {h}x{w}", rho)
    if max(h, w) > MAX_SIZE:
        raise _override_error(loaded, "resolution", f"the input grows to {h}x{w}, over {MAX_SIZE} pixels", rho)
    return (h, w)


def select_variant(loaded: LoadedSpec, variant: str | None) -> tuple[LoadedSpec, str]:
    """``loaded`` with ``variant`` (default: the spec's ``variant:``) applied
    (:func:`archcompiler.language.variants.select`), and the variant's name (``""``: none)."""
    chosen = select(loaded.spec, loaded.source, variant)
    if not chosen.variant:
        return loaded, ""
    return LoadedSpec(spec=chosen.spec, source=chosen.source), chosen.variant


def lower(
    loaded: LoadedSpec,
    *,
    width: float | None = None,
    resolution: float | int | tuple[int, int] | None = None,
    depth: float | None = None,
    variant: str | None = None,
    head: Head | None = None,
    outputs: Outputs | None = None,
) -> Graph:
    """Lower a loaded spec to the IR: the ``variant`` asked for (default: the spec's
    ``variant:``; :mod:`archcompiler.language.variants`), optionally overriding alpha, rho (or
    the input size) and the depth multiplier, the classifier
    (:class:`~archcompiler.lowering.heads.Head`) and what the model returns
    (:class:`~archcompiler.lowering.features.Outputs`: named layers or feature maps)."""
    loaded, name = select_variant(loaded, variant)
    alpha = _multiplier(loaded, "width", width, WIDTH_RANGE)
    d = _multiplier(loaded, "depth", depth, DEPTH_RANGE)
    graph = _lower(loaded, alpha, resolution, head, d)
    if name or d != 1.0:
        graph = dataclasses.replace(graph, variant=name, depth_multiplier=d)
    return graph if outputs is None else outputs.apply(graph, head)


def _multiplier(loaded: LoadedSpec, field: str, value: Any, bounds: tuple[float, float]) -> float:
    """``value`` (None: the spec's ``field``) checked within ``bounds``, as a float."""
    v = getattr(loaded.spec, field) if value is None else value
    lo, hi = bounds
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo < v <= hi:  # NaN too
        raise _override_error(loaded, field, f"expected a {field} multiplier in ({lo:g}, {hi:g}]", v)
    return float(v)


def _lower(
    loaded: LoadedSpec,
    alpha: float,
    resolution: float | int | tuple[int, int] | None,
    head: Head | None,
    depth: float = 1.0,
) -> Graph:
    size = resolve_size(loaded, resolution)
    if head is None or head.changes_nothing:
        return infer(loaded, expand(loaded, alpha, depth), alpha, size)
    if head.classes:
        if loaded.spec.classes is None:
            raise SpecError("the spec sets no 'classes' for --classes to change", file=loaded.file, path="--classes")
        loaded = dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"classes": head.classes}))
    return apply(infer(loaded, expand(loaded, alpha, depth), alpha, size), head)
