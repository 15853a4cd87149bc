"""Pictures of a sweep: MACs against parameters, one labelled point per width/resolution.

matplotlib is an optional extra (``pip install 'archc[plot]'``): it is imported only here and
only when a picture is asked for, with the Agg backend (no display needed), so the core and
the command line stay light. The file is written atomically (archcompiler.fsutil).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fsutil import atomic_write

if TYPE_CHECKING:
    from .api import Sweep

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
) -> Path:
    """Draw ``grid`` (MACs on y, parameters on x, one labelled point per setting, one line per
    width) into ``path`` (.png or .svg), with the budget as dashed lines when given."""
    p = Path(path)
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"expected a .png or .svg file name, got {str(p)!r}")
    plt = _pyplot()
    # SVG text as <text> elements, not glyph outlines: searchable, and smaller.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
        return _draw(plt, fig, ax, grid, p, max_macs, max_params)


def _draw(plt: Any, fig: Any, ax: Any, grid: Sweep, p: Path, max_macs: int | None, max_params: int | None) -> Path:
    from .api import resolution_label

    try:
        for w, row in zip(grid.widths, grid.rows, strict=True):
            xs = [r.params / 1e6 for _, r in row]
            ys = [r.macs / 1e6 for _, r in row]
            ax.plot(xs, ys, marker="o", linestyle="-", label=f"width {w:g}")
            for (g, _), x, y in zip(row, xs, ys, strict=True):
                ax.annotate(
                    f"{w:g}/{resolution_label(g)}", (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8
                )
        if max_macs is not None:
            ax.axhline(max_macs / 1e6, color="red", linestyle="--", linewidth=1, label=f"max MACs {max_macs:,}")
        if max_params is not None:
            ax.axvline(
                max_params / 1e6, color="purple", linestyle="--", linewidth=1, label=f"max params {max_params:,}"
            )
        # Log axes: the paper's grid spans 13M..569M MACs; on a linear axis the small models overlap.
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.set_xlabel(f"parameters, millions ({grid.convention} convention)")
        ax.set_ylabel("multiply-adds, millions")
        ax.set_title(f"{Path(grid.file).name}: MACs vs parameters by width/resolution")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fmt = p.suffix.lower().lstrip(".")
        return atomic_write(p, lambda tmp: fig.savefig(tmp, format=fmt), suffix=p.suffix)
    finally:
        plt.close(fig)
