"""Pictures of a sweep: MACs against parameters, one labelled point per width/resolution.

matplotlib is an optional extra (``pip install 'archc[plot]'``): it is imported only here and
only when a picture is asked for, with the Agg backend (no display needed), so the core and
the command line stay light. The file is written atomically (archcompiler.files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcompiler.files import Inputs, atomic_write

if TYPE_CHECKING:
    from archcompiler.api import Sweep

PLOT_SUFFIXES = (".png", ".svg")


class PlotUnavailable(Exception):
    """matplotlib is not installed: a one-line error naming the extra to install."""


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (typed loosely: matplotlib is optional)."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'archc[plot]'") from None
    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def sweep_plot(
    grid: Sweep,
    path: str | Path,
    *,
    max_macs: int | None = None,
    max_params: int | None = None,
    inputs: Inputs = (),
) -> Path:
    """Draw ``grid`` (MACs on y, parameters on x, one labelled point per setting, one line per
    width) into ``path`` (.png or .svg), with the budget as dashed lines when given.
    ``inputs``: files the caller read (the spec), never replaced (files.atomic_write)."""
    p = Path(path)
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"expected a .png or .svg file name, got {str(p)!r}")
    plt = _pyplot()
    # SVG text as <text> elements, not glyph outlines: searchable, and smaller.
    with plt.rc_context({"svg.fonttype": "none"}):
        panels = 2 if grid.latency is not None else 1
        fig, axes = plt.subplots(1, panels, figsize=(8 * panels, 5.5), dpi=100, squeeze=False)
        try:
            _macs_vs_params(axes[0][0], grid, max_macs, max_params)
            if grid.latency is not None:
                _latency_vs_macs(axes[0][1], grid, max_macs)
            fig.tight_layout()
            fmt = p.suffix.lower().lstrip(".")
            return atomic_write(p, lambda tmp: fig.savefig(tmp, format=fmt), suffix=p.suffix, inputs=inputs)
        finally:
            plt.close(fig)


def _log_axes(ax: Any) -> None:
    """Log axes with plain tick labels: the paper's grid spans 13M..569M MACs, and on a linear
    axis the small models overlap."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.grid(True, alpha=0.3)


def _points(ax: Any, grid: Sweep, xs_ys: Any) -> None:
    """One line per width, one labelled point (``width/resolution``) per setting."""
    from archcompiler.api import resolution_label

    for i, (w, row) in enumerate(zip(grid.widths, grid.rows, strict=True)):
        pts = [xs_ys(i, j, r) for j, (_, r) in enumerate(row)]
        g0 = row[0][0]
        setting = f"{g0.variant or '-'} depth {g0.depth_multiplier:g} " if grid.varies else ""
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", linestyle="-", label=f"{setting}width {w:g}")
        for (g, _), (x, y) in zip(row, pts, strict=True):
            ax.annotate(f"{w:g}/{resolution_label(g)}", (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)


def _macs_vs_params(ax: Any, grid: Sweep, max_macs: int | None, max_params: int | None) -> None:
    _points(ax, grid, lambda i, j, r: (r.params / 1e6, r.macs / 1e6))
    if max_macs is not None:
        ax.axhline(max_macs / 1e6, color="red", linestyle="--", linewidth=1, label=f"max MACs {max_macs:,}")
    if max_params is not None:
        ax.axvline(max_params / 1e6, color="purple", linestyle="--", linewidth=1, label=f"max params {max_params:,}")
    _log_axes(ax)
    ax.set_xlabel(f"parameters, millions ({grid.convention} convention)")
    ax.set_ylabel("multiply-adds, millions")
    ax.set_title(f"{Path(grid.file).name}: MACs vs parameters by width/resolution")
    ax.legend(fontsize=8)


def _latency_vs_macs(ax: Any, grid: Sweep, max_macs: int | None) -> None:
    assert grid.latency is not None
    lat = grid.latency
    _points(ax, grid, lambda i, j, r: (r.macs / 1e6, 1000 * lat[i][j]))
    if max_macs is not None:
        ax.axvline(max_macs / 1e6, color="red", linestyle="--", linewidth=1, label=f"max MACs {max_macs:,}")
    _log_axes(ax)
    ax.set_xlabel("multiply-adds, millions")
    ax.set_ylabel(f"median latency, ms (batch 1, {grid.latency_backend}, this machine)")
    ax.set_title("measured latency vs MACs")
    ax.legend(fontsize=8)
