"""Plain-text building blocks shared by every report archc prints (summaries, sweeps, parity)."""

from __future__ import annotations

import html
from collections.abc import Sequence

FORMATS = ("table", "json", "csv", "markdown")
"""The text formats of every report that comes in several (summaries, sweeps)."""


def shape(dims: Sequence[int]) -> str:
    """(7, 7, 1024) -> '7x7x1024'."""
    return "x".join(str(d) for d in dims)


def table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """Columns padded to their widest cell, aligned per ``align`` (one 'l' or 'r' per column)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown(headers: list[str], rows: list[list[str]], align: str) -> str:
    """:func:`table` as a Markdown table."""
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [headers, sep, *rows])


def html_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """:func:`table` as an HTML ``<table>``; every cell escaped (cells hold spec text)."""

    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f'<{tag} class="{"num" if a == "r" else "txt"}">{html.escape(v)}</{tag}>'
            for v, a in zip(values, align, strict=True)
        )

    body = "\n".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table>\n<thead><tr>{cells('th', headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def listing(items: Sequence[str], limit: int = 4) -> str:
    """'a, b, c' or, beyond ``limit`` items, 'a, b, c, d, ... (12 in all)': a list a short
    repr can show whatever its length."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"


def brief(text: str, limit: int = 60) -> str:
    """``repr(text)`` cut to ``limit`` characters (a file name or a user's string in a repr)."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"
