"""The graph as a diagram: Mermaid or Graphviz DOT text, or an SVG drawing, shapes on the edges.

Drawn from the IR, so what is drawn is what every backend builds. ``collapse_blocks`` folds
each block instance into one box: consecutive nodes lowered from one spec entry (the same
``span.path``) that share the indices in their names (``conv_dw_3``, ``conv_pw_3_bn``: block
instance 3; ``block2b_add``: 2, b), as the emitters read them (archcompiler.kit.calls.NUMBER).

Node names are validated identifiers, but every text that reaches a label (names, ops, the
spec's free-text description) is escaped for the target language anyway: a diagram is often
pasted into a page, and a description is whatever the spec's author typed.

The SVG is drawn by archc itself (:func:`layout`, :func:`svg`), so the HTML summary shows the
graph with nothing fetched or run at view time: a layered top-to-bottom layout in which each box
sits one row below the lowest box it reads, and an edge that skips rows (a residual, a
squeeze-excite gate) runs in a lane of its own beside the chain.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass

from archcompiler import ir
from archcompiler.kit.calls import NUMBER

FORMATS = ("mermaid", "dot", "svg")
_MERMAID_SPECIAL = set('"#&<>|`{}[]()\\;:')


@dataclass(frozen=True)
class Box:
    """One drawn node: a single IR node, or a folded block instance."""

    id: str
    lines: tuple[str, ...]
    members: tuple[str, ...]
    terminal: bool = False
    """An output of the model (drawn as an oval after the box that makes it), not a layer."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def _group_key(node: ir.Node) -> tuple[str, tuple[str, ...]] | None:
    if node.span is None:
        return None
    return (node.span.path, tuple(NUMBER.findall(node.name)))


def boxes(graph: ir.Graph, *, collapse_blocks: bool = False) -> tuple[list[Box], list[Edge]]:
    """The boxes and edges to draw (ids ``n0, n1, ...`` for layers and ``o0, o1, ...`` for the
    outputs: never a name a diagram language reserves)."""
    groups: list[list[ir.Node]] = []
    for node in graph.nodes:
        key = _group_key(node)
        if collapse_blocks and groups and key is not None and _group_key(groups[-1][-1]) == key:
            groups[-1].append(node)
        else:
            groups.append([node])
    box_of: dict[str, str] = {}
    out: list[Box] = []
    for i, members in enumerate(groups):
        bid = f"n{i}"
        for m in members:
            box_of[m.name] = bid
        if len(members) == 1:
            n = members[0]
            lines: tuple[str, ...] = (n.name, n.op)
        else:
            first, last = members[0], members[-1]
            lines = (f"{first.name} .. {last.name}", f"{len(members)} layers")
        out.append(Box(bid, lines, tuple(m.name for m in members)))
    edges: list[Edge] = []
    seen: set[tuple[str, str]] = set()
    for node in graph.nodes:
        for src in node.inputs:
            a, b = box_of[src], box_of[node.name]
            if a == b or (a, b) in seen:
                continue
            seen.add((a, b))
            edges.append(Edge(a, b, _shape(graph[src].shape)))
    # What the model returns, in order: a feature extractor's levels are marked, and a level
    # inside a collapsed block is named.
    for k, name in enumerate(graph.outputs):
        title = "output" if len(graph.outputs) == 1 else f"output {k + 1}"
        out.append(Box(f"o{k}", (title, name), (), terminal=True))
        edges.append(Edge(box_of[name], f"o{k}", _shape(graph[name].shape)))
    return out, edges


def mermaid_escape(text: str) -> str:
    """Text for a quoted Mermaid label: special characters as ``#NN;`` entity codes, one line."""
    text = " ".join(text.split())
    return "".join(f"#{ord(c)};" if c in _MERMAID_SPECIAL else c for c in text)


def dot_escape(text: str) -> str:
    """Text for a double-quoted DOT string: backslashes and quotes escaped, newlines as ``\\n``."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def mermaid(graph: ir.Graph, *, collapse_blocks: bool = False) -> str:
    """A Mermaid flowchart (top to bottom); the title (name, description) is YAML front matter,
    written as a JSON string, which YAML reads with every character escaped."""
    bx, edges = boxes(graph, collapse_blocks=collapse_blocks)
    title = graph.name + (f": {graph.description}" if graph.description else "")
    lines = ["---", f"title: {json.dumps(' '.join(title.split()))}", "---", "flowchart TD"]
    for b in bx:
        label = "<br/>".join(mermaid_escape(s) for s in b.lines)
        lines.append(f'    {b.id}(["{label}"])' if b.terminal else f'    {b.id}["{label}"]')
    for e in edges:
        lines.append(f'    {e.source} -->|"{mermaid_escape(e.label)}"| {e.target}')
    return "\n".join(lines)


def dot(graph: ir.Graph, *, collapse_blocks: bool = False) -> str:
    """A Graphviz digraph (``dot -Tsvg``), boxes top to bottom."""
    bx, edges = boxes(graph, collapse_blocks=collapse_blocks)
    title = graph.name + (f"\n{graph.description}" if graph.description else "")
    lines = [
        f'digraph "{dot_escape(graph.name)}" {{',
        f'    label="{dot_escape(title)}";',
        "    labelloc=t;",
        "    rankdir=TB;",
        '    node [shape=box, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for b in bx:
        oval = ", shape=oval" if b.terminal else ""
        lines.append(f'    {b.id} [label="{dot_escape(chr(10).join(b.lines))}"{oval}];')
    for e in edges:
        lines.append(f'    {e.source} -> {e.target} [label="{dot_escape(e.label)}"];')
    lines.append("}")
    return "\n".join(lines)


def render(graph: ir.Graph, fmt: str, *, collapse_blocks: bool = False) -> str:
    """``archc diagram``: ``fmt`` is one of :data:`FORMATS`."""
    if fmt == "mermaid":
        return mermaid(graph, collapse_blocks=collapse_blocks)
    if fmt == "dot":
        return dot(graph, collapse_blocks=collapse_blocks)
    if fmt == "svg":
        return svg(graph, collapse_blocks=collapse_blocks)
    raise ValueError(f"unknown diagram format {fmt!r}; choose from {', '.join(FORMATS)}")


# -- the drawing: a layered layout, as SVG --------------------------------------------------

CHAR_WIDTH = 7.5
"""Width of one character of the labels' 12 px monospace font (0.6 em, rounded up): box sizes
are computed here, with no browser to measure text."""
LINE_HEIGHT = 15
PAD_X, PAD_Y = 10, 7
ROW_GAP = 34
"""Vertical space between rows: an edge's arrow and its shape label."""
BOX_GAP = 24
LANE_GAP = 14
"""Horizontal distance between the lanes of edges that skip rows, and from the boxes."""
MARGIN = 16
LABEL_CHAR_WIDTH = 6.5
"""Width of one character of the edges' 11 px shape labels."""
MAX_DRAWN = 2000
"""Boxes beyond which the page says the graph is too large instead of drawing it (a spec
without blocks may have up to 100,000 layers)."""

Point = tuple[float, float]


@dataclass(frozen=True)
class Placed:
    """A box with its place: top-left corner, size, and its row (0 at the top)."""

    box: Box
    x: float
    y: float
    width: float
    height: float
    row: int

    @property
    def center(self) -> float:
        return self.x + self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height


@dataclass(frozen=True)
class Route:
    """An edge's polyline (ending at its target's border) and where its label goes."""

    edge: Edge
    points: tuple[Point, ...]
    label_at: Point
    skip: bool
    """Runs in a lane beside the chain (it skips at least one row)."""


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Placed, ...]
    routes: tuple[Route, ...]
    width: float
    height: float


def _rows(bx: list[Box], edges: list[Edge]) -> dict[str, int]:
    """Each box one row below the lowest box it reads (boxes come in topological order)."""
    inputs: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        inputs[e.target].append(e.source)
    row: dict[str, int] = {}
    for b in bx:
        row[b.id] = 1 + max((row[s] for s in inputs[b.id]), default=-1)
    return row


def _place(bx: list[Box], row: dict[str, int]) -> list[Placed]:
    """Rows top to bottom. A row's layers sit side by side, centred on one axis, and the model's
    outputs to their right, so that marking a feature level does not push the chain aside."""
    by_row: dict[int, list[Box]] = defaultdict(list)
    for b in bx:
        by_row[row[b.id]].append(b)
    size = {
        b.id: (max(len(s) for s in b.lines) * CHAR_WIDTH + 2 * PAD_X, len(b.lines) * LINE_HEIGHT + 2 * PAD_Y)
        for b in bx
    }

    def span(members: list[Box]) -> float:
        return sum(size[b.id][0] for b in members) + BOX_GAP * max(len(members) - 1, 0)

    layers = {r: [b for b in members if not b.terminal] for r, members in by_row.items()}
    axis = MARGIN + max((span(m) for m in layers.values()), default=0) / 2
    placed, top = [], float(MARGIN)
    for r in sorted(by_row):
        height = max(size[b.id][1] for b in by_row[r])
        x = axis - span(layers[r]) / 2
        if not layers[r]:  # outputs only: the last row, on the axis
            x = axis - span(by_row[r]) / 2
        for b in layers[r] + [b for b in by_row[r] if b.terminal]:
            w, h = size[b.id]
            placed.append(Placed(b, max(x, MARGIN), top + (height - h) / 2, w, h, r))
            x += w + BOX_GAP
        top += height + ROW_GAP
    return placed


def _lanes(skips: list[tuple[Placed, Placed]], placed: list[Placed]) -> list[float]:
    """The x of each skipping edge's lane: right of every box in the rows it spans and of every
    lane it runs alongside. Shorter spans first, so they nest inside longer ones."""
    right_of_row: dict[int, float] = defaultdict(float)
    for p in placed:
        right_of_row[p.row] = max(right_of_row[p.row], p.right)
    order = sorted(range(len(skips)), key=lambda i: (skips[i][1].row - skips[i][0].row, skips[i][0].row))
    lane: dict[int, float] = {}
    for i in order:
        s, t = skips[i]
        x = max(right_of_row[r] for r in range(s.row, t.row + 1)) + LANE_GAP
        for j, xj in lane.items():
            if skips[j][0].row <= t.row and s.row <= skips[j][1].row:
                x = max(x, xj + LANE_GAP)
        lane[i] = x
    return [lane[i] for i in range(len(skips))]


def _ports(skips: list[tuple[Placed, Placed]]) -> tuple[list[float], list[float]]:
    """Where each skipping edge leaves its source and enters its target, spread over the boxes'
    right sides (leaving above entering), so that no two share a point."""
    sides: dict[str, list[tuple[int, int]]] = defaultdict(list)  # box -> [(edge, 0 leaves | 1 enters)]
    for i, (s, t) in enumerate(skips):
        sides[s.box.id].append((i, 0))
        sides[t.box.id].append((i, 1))
    out, into = [0.0] * len(skips), [0.0] * len(skips)
    for members in sides.values():
        members.sort(key=lambda m: m[1])
        for k, (i, end) in enumerate(members):
            p = skips[i][end]
            (out if end == 0 else into)[i] = p.y + p.height * (k + 1) / (len(members) + 1)
    return out, into


def _next_row(s: Placed, t: Placed) -> tuple[Point, ...]:
    """An edge to the next row: straight down, or, to a box beside the source (an output),
    out of the source's side and down into the box, clear of the chain's own edges."""
    if abs(s.center - t.center) < 0.5:
        return ((s.center, s.bottom), (t.center, t.y))
    middle = s.y + s.height / 2
    if t.center > s.right or t.center < s.x:
        side = s.right if t.center > s.right else s.x
        return ((side, middle), (t.center, middle), (t.center, t.y))
    bend = (s.bottom + t.y) / 2
    return ((s.center, s.bottom), (s.center, bend), (t.center, bend), (t.center, t.y))


def _skip(s: Placed, t: Placed, x: float, leave: float, enter: float, open_right: set[str]) -> tuple[Point, ...]:
    """An edge that skips rows: out of the source, along its lane at ``x``, into the target.
    It leaves and enters by the right side, or, where a box has a neighbour on its right (a
    branch, an output), below or above the box, clear of the neighbour."""
    step = ROW_GAP / 4
    if s.box.id in open_right:
        start: tuple[Point, ...] = ((s.right, leave), (x, leave))
    else:
        foot = s.x + 0.75 * s.width
        start = ((foot, s.bottom), (foot, s.bottom + step), (x, s.bottom + step))
    if t.box.id in open_right:
        return (*start, (x, enter), (t.right, enter))
    head = t.x + 0.75 * t.width
    return (*start, (x, t.y - step), (head, t.y - step), (head, t.y))


def layout(graph: ir.Graph, *, collapse_blocks: bool = True) -> Layout:
    """Where :func:`boxes`' boxes and edges go in the drawing (pixels, y downwards)."""
    bx, edges = boxes(graph, collapse_blocks=collapse_blocks)
    placed = _place(bx, _rows(bx, edges))
    at = {p.box.id: p for p in placed}
    open_right = {max((p for p in placed if p.row == row), key=lambda p: p.x).box.id for row in {p.row for p in placed}}
    skips = [(at[e.source], at[e.target]) for e in edges if at[e.target].row > at[e.source].row + 1]
    lanes, (leave, enter) = _lanes(skips, placed), _ports(skips)
    skip_index = {(s.box.id, t.box.id): i for i, (s, t) in enumerate(skips)}
    routes = []
    for e in edges:
        s, t = at[e.source], at[e.target]
        i = skip_index.get((e.source, e.target))
        if i is None:
            points = _next_row(s, t)
            routes.append(Route(e, points, (t.center + 6, (points[-2][1] + t.y) / 2 + 4), skip=False))
        else:
            x, skip = lanes[i], _skip(s, t, lanes[i], leave[i], enter[i], open_right)
            sibling = sum(1 for j in range(i) if skips[j][0] is s)  # earlier skips out of the same box
            top = next(py for px, py in skip if px == x)  # where it turns into its lane
            routes.append(Route(e, skip, (x + 4, top + 14 + LINE_HEIGHT * sibling), skip=True))
    right = max(
        [p.right for p in placed] + [r.label_at[0] + len(r.edge.label) * LABEL_CHAR_WIDTH for r in routes], default=0
    )
    bottom = max((p.bottom for p in placed), default=0)
    return Layout(tuple(placed), tuple(routes), right + MARGIN, bottom + MARGIN)


_FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
_BOLD = ' font-weight="bold"'


def _box_svg(p: Placed) -> str:
    b = p.box
    radius = p.height / 2 if b.terminal else 4
    fill, stroke = ("#fdf1dc", "#b07a1f") if b.terminal else ("#eef3fb", "#4a6da7")
    tip = html.escape(", ".join(b.members) if len(b.members) > 1 else " ".join(b.lines))
    first = p.y + PAD_Y + LINE_HEIGHT - 4
    spans = "".join(
        f'<tspan x="{p.center:.1f}" y="{first + k * LINE_HEIGHT:.1f}"{_BOLD if k == 0 else ""}>'
        f"{html.escape(line)}</tspan>"
        for k, line in enumerate(b.lines)
    )
    return (
        f'<g class="node{" output" if b.terminal else ""}" data-id="{b.id}"><title>{tip}</title>'
        f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{p.width:.1f}" height="{p.height:.1f}" rx="{radius:.1f}" '
        f'fill="{fill}" stroke="{stroke}"/><text text-anchor="middle">{spans}</text></g>'
    )


def _route_svg(r: Route) -> str:
    d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in r.points)
    x, y = r.label_at
    return (
        f'<g class="edge{" skip" if r.skip else ""}" data-source="{r.edge.source}" data-target="{r.edge.target}">'
        f'<path d="{d}" fill="none" stroke="#667" marker-end="url(#archc-arrow)"/>'
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" fill="#555" stroke="#fff" stroke-width="3" '
        f'paint-order="stroke">{html.escape(r.edge.label)}</text></g>'
    )


def svg(graph: ir.Graph, *, collapse_blocks: bool = False) -> str:
    """The graph drawn as one SVG element (standalone, or inline in an HTML page): boxes top to
    bottom, arrows labelled with the shape they carry. Every text is XML-escaped."""
    lay = layout(graph, collapse_blocks=collapse_blocks)
    title = graph.name + (f": {graph.description}" if graph.description else "")
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="archc-graph" width="{lay.width:.0f}" '
            f'height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" role="img" '
            f'font-family="{_FONT}" font-size="12">',
            f"<title>{html.escape(' '.join(title.split()))}</title>",
            '<defs><marker id="archc-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" '
            'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#667"/></marker></defs>',
            *(_route_svg(r) for r in lay.routes),
            *(_box_svg(p) for p in lay.boxes),
            "</svg>",
        ]
    )
