"""The graph as a diagram: Mermaid or Graphviz DOT text, with shapes on the edges.

Drawn from the IR, so what is drawn is what every backend builds. ``collapse_blocks`` folds
each block instance into one box: consecutive nodes lowered from one spec entry (the same
``span.path``) that share the numbers in their names (``conv_dw_3``, ``conv_pw_3_bn``: block
instance 3), which is how the emitters find repeated blocks (archcompiler.kit.calls.NUMBER).

Node names are validated identifiers, but every text that reaches a label (names, ops, the
spec's free-text description) is escaped for the target language anyway: a diagram is often
pasted into a page, and a description is whatever the spec's author typed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from archcompiler import ir

FORMATS = ("mermaid", "dot")
_NUMBER = re.compile(r"\d+")
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
    return (node.span.path, tuple(_NUMBER.findall(node.name)))


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
    raise ValueError(f"unknown diagram format {fmt!r}; choose from {', '.join(FORMATS)}")
