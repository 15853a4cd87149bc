"""Pictures: `archc diagram` (Mermaid, DOT), `summary --format html` and `sweep --plot`.

Oracles: the paper's Table 1 (shapes between layers, 13 separable blocks), hostile spec text
that must come out escaped, and file formats checked by their own rules (PNG signature,
SVG as XML).
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import SPEC, run

import archcompiler
from archcompiler.tools.diagram import Layout, boxes, dot, dot_escape, layout, mermaid, mermaid_escape, svg

HOSTILE = 'evil "quote" \\ back <script>alert(1)</script> | pipe ]; n0 --> n1 %%{init: {}}%% & #35;\nnext line'

TINY = """\
archc: 1
name: tiny
description: {desc}
input: {{size: 8, channels: 3}}
blocks:
  pair:
    params: {{filters: null}}
    layers:
      - {{op: conv, filters: $filters, kernel: 3, name: "c_{{index}}"}}
      - {{op: activation, name: "r_{{index}}"}}
layers:
  - {{block: pair, filters: 4}}
  - {{block: pair, filters: 8}}
  - {{op: global_avg_pool, name: pool}}
"""


def _tiny(desc: str = "tiny") -> archcompiler.Compiled:
    return archcompiler.compile(TINY.format(desc=json.dumps(desc)))


def _dot_unescape(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append({"n": "\n", '"': '"', "\\": "\\"}[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def test_mermaid_edges_carry_table1_shapes() -> None:
    """Table 1: the stem's output (input to the first dw) is 112x112x32; the last pw gives 7x7x1024."""
    g = archcompiler.compile(SPEC).graph
    text = mermaid(g)
    ids = {b.members[0]: b.id for b in boxes(g)[0] if not b.terminal}
    assert f'{ids["conv1"]} -->|"112x112x32"| {ids["conv1_bn"]}' in text
    assert f'{ids["conv_pw_13_relu"]} -->|"7x7x1024"| {ids["avg_pool"]}' in text
    assert text.count("-->") == len(g)  # MobileNet is a chain, then its one output
    assert text.endswith(f'{ids["predictions"]} -->|"1000"| o0') and '    o0(["output<br/>predictions"])' in text


def test_collapse_blocks_gives_the_papers_13_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diagram", SPEC, "--collapse-blocks")
    assert code == 0
    folded = [ln for ln in out.splitlines() if "6 layers" in ln]
    assert len(folded) == 13
    # input, conv1/bn/relu, 13 blocks, pool, fc, softmax: 20 boxes and a chain of 19 edges,
    # then the output
    assert len(re.findall(r"^\s+n\d+\[", out, re.M)) == 20 and out.count("-->") == 20
    assert '-->|"7x7x1024"|' in out and '-->|"112x112x32"|' in out


def test_collapse_blocks_keeps_keras_lettered_blocks_apart() -> None:
    """EfficientNetV2-B0's stages are Keras' block2a, block2b, ...: a box holds layers of one
    block, never two blocks of a stage, and each of its 21 mbconv blocks (Keras' table:
    1 + 2 + 2 + 3 + 5 + 8) has a box."""
    bx, _ = boxes(archcompiler.compile("specs/efficientnet_v2.yaml").graph, collapse_blocks=True)
    owners = [{m.split("_")[0] for m in b.members} for b in bx if b.members and b.members[0].startswith("block")]
    assert all(len(owner) == 1 for owner in owners)
    assert len(set.union(*owners)) == 1 + 2 + 2 + 3 + 5 + 8


def test_feature_levels_are_marked_as_outputs_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's feature cut of MobileNet 224: Table 1 gives 28x28x256 after block 5,
    14x14x512 after block 11 and 7x7x1024 after block 13; a level inside a collapsed block is
    drawn from that block's box and named."""
    outputs = "conv_pw_5_relu,conv_pw_11_relu,conv_pw_13_relu"
    code, out, _ = run(capsys, "diagram", SPEC, "--collapse-blocks", "--outputs", outputs)
    assert code == 0
    block = {m.group(2): m.group(1) for m in re.finditer(r'(n\d+)\["conv_dw_(\d+) \.\. ', out)}
    for k, (name, shape, number) in enumerate(
        [
            ("conv_pw_5_relu", "28x28x256", "5"),
            ("conv_pw_11_relu", "14x14x512", "11"),
            ("conv_pw_13_relu", "7x7x1024", "13"),
        ]
    ):
        assert f'    o{k}(["output {k + 1}<br/>{name}"])' in out
        assert f'    {block[number]} -->|"{shape}"| o{k}' in out
    assert "o3" not in out and "predictions" not in out  # the head is not drawn
    code, out, _ = run(capsys, "diagram", SPEC, "--format", "dot", "--outputs", "conv_dw_5")
    assert code == 0 and 'o0 [label="output\\nconv_dw_5", shape=oval];' in out
    assert re.search(r'n\d+ -> o0 \[label="28x28x256"\];', out)  # Table 1: dw 5 is s1 on 28x28x256


def test_collapse_keeps_edges_into_blocks_and_only_folds_instances() -> None:
    bx, edges = boxes(_tiny().graph, collapse_blocks=True)
    assert [b.members for b in bx] == [("input",), ("c_1", "r_1"), ("c_2", "r_2"), ("pool",), ()]
    assert [(e.source, e.target, e.label) for e in edges] == [
        ("n0", "n1", "8x8x3"),
        ("n1", "n2", "8x8x4"),
        ("n2", "n3", "8x8x8"),
        ("n3", "o0", "8"),
    ]


def test_hostile_description_is_escaped_in_mermaid() -> None:
    text = mermaid(_tiny(HOSTILE).graph)
    lines = text.splitlines()
    assert lines[0] == "---" and lines[2] == "---" and lines[3] == "flowchart TD"
    title = json.loads(lines[1].removeprefix("title: "))
    assert title == "tiny: " + " ".join(HOSTILE.split())
    assert all(ln.startswith(("    n", "    o")) for ln in lines[4:])  # nothing broke out of its line


@pytest.mark.parametrize("text", [HOSTILE, 'a"b', "x|y", "<b>", "[(])", "#quot;"])
def test_mermaid_escape_leaves_no_syntax(text: str) -> None:
    out = mermaid_escape(text)
    assert not set(out) & set('"<>|[](){}`\n')
    decoded = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), out)
    assert decoded == " ".join(text.split())


def test_hostile_description_is_escaped_in_dot() -> None:
    text = dot(_tiny(HOSTILE).graph)
    label_line = next(ln for ln in text.splitlines() if ln.strip().startswith("label="))
    quoted = re.fullmatch(r'\s+label="((?:[^"\\]|\\.)*)";', label_line)
    assert quoted is not None, label_line
    assert _dot_unescape(quoted.group(1)) == "tiny\n" + HOSTILE
    assert text.count("\n") == len(text.splitlines()) - 1  # the newline in the text stayed escaped


@pytest.mark.parametrize("text", [HOSTILE, "\\", '"', 'a\\"b', "x\ny"])
def test_dot_escape_round_trips(text: str) -> None:
    out = dot_escape(text)
    assert "\n" not in out and not re.search(r'(?<!\\)(?:\\\\)*"', out)
    assert _dot_unescape(out) == text


def test_dot_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diagram", SPEC, "--format", "dot")
    assert code == 0 and out.startswith('digraph "mobilenet_v1" {') and out.rstrip().endswith("}")
    assert '[label="112x112x32"]' in out


def test_html_summary_is_self_contained_and_escaped(tmp_path: Path) -> None:
    spec = tmp_path / "h.yaml"
    spec.write_text(TINY.format(desc=json.dumps(HOSTILE)), encoding="utf-8")
    out = tmp_path / "page.html"
    assert archcompiler.tools.cli.main(["summary", str(spec), "--format", "html", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # no external assets: the only url() is the arrowhead marker defined in the page itself
    assert not re.search(r"""(?:src|href)\s*=|@import|url\((?!#archc-arrow\))""", page)
    assert page.count("<svg ") == 1 and 'id="archc-arrow"' in page
    # conv 3x3, 3 -> 4 on 8x8 "same": 108 weights, 6,912 MACs (paper convention)
    assert '<td class="num">108</td>' in page and "6,912" in page


def test_html_summary_to_stdout_and_bad_o(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", SPEC, "--format", "html")
    assert code == 0 and "568,740,352" in out and "<table>" in out
    code, _, err = run(capsys, "summary", SPEC, "-o", "x.txt")
    assert code == 2 and err.count("\n") == 1 and "-o" in err


PAPER_GRID = ["--width", "1,0.75,0.5,0.25", "--resolution", "224,192,160,128"]


def test_sweep_plot_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "grid.png"
    code, _, err = run(capsys, "sweep", SPEC, *PAPER_GRID, "--plot", str(out), "--max-macs", "150M")
    assert code == 0 and f"wrote {out}" in err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_sweep_plot_svg_has_labels_and_budget_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "grid.svg"
    argv = ["sweep", SPEC, *PAPER_GRID, "--plot", str(out), "--max-macs", "150M", "--max-params", "2M"]
    assert run(capsys, *argv)[0] == 0
    root = ET.parse(out).getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text}
    labels = {f"{w}/{r}" for w in ("1", "0.75", "0.5", "0.25") for r in (224, 192, 160, 128)}
    assert labels <= texts
    assert "max MACs 150,000,000" in texts and "max params 2,000,000" in texts


def test_sweep_plot_without_matplotlib(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run(capsys, "sweep", SPEC, "--plot", str(tmp_path / "g.png"))
    assert code == 2 and err.count("\n") == 1 and "pip install 'archc[plot]'" in err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sweep", SPEC, "--plot", "g.jpg"], "--plot"),
        (["sweep", SPEC, "--max-macs", "1G"], "--plot"),
        (["diagram", SPEC, "--format", "png"], "--format"),
    ],
)
def test_picture_bad_input(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exc:
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err


@pytest.mark.torch
def test_sweep_latency_table_and_panel(tmp_path: Path) -> None:
    """Latency is measured, so only its presence and sanity are checked: positive, one per setting."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from archcompiler.tools import render
    from archcompiler.tools.plot import sweep_plot

    grid = archcompiler.sweep(SPEC, [0.25], [96, 64], latency="torch", runs=1)
    assert grid.latency_backend == "torch" and len(grid.latency) == 1 and len(grid.latency[0]) == 2
    assert all(t > 0 for t in grid.latency[0])
    text = render.sweep(grid, "table")
    assert "median latency in ms, batch 1, torch" in text
    assert render.sweep(grid, "csv").splitlines()[0] == "width,resolution,macs,params,latency_s"
    out = sweep_plot(grid, tmp_path / "lat.svg")
    texts = {t.text for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text") if t.text}
    assert "measured latency vs MACs" in texts and {"0.25/96", "0.25/64"} <= texts


def test_sweep_latency_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sweep", SPEC, "--latency", "tensorflowz")
    assert code == 2 and err.count("\n") == 1 and "--latency" in err


# -- the SVG drawing: geometry checked by its own rules, text by an XML parser ----------------

SVG_NS = "{http://www.w3.org/2000/svg}"
BRANCHES = """\
name: branches
input: {size: 16}
layers:
  - {op: conv, filters: 8, kernel: 3, name: stem}
  - {op: conv, filters: 4, kernel: 1, name: a, inputs: [stem]}
  - {op: conv, filters: 4, kernel: 3, name: b, inputs: [stem]}
  - {op: activation, name: b_relu}
  - {op: conv, filters: 4, kernel: 5, name: c, inputs: [stem]}
  - {op: concat, inputs: [a, b_relu, c], name: cat}
  - {op: global_avg_pool, name: pool}
"""


def _layouts() -> list[Layout]:
    return [
        layout(archcompiler.compile(SPEC).graph),
        layout(archcompiler.compile(SPEC, features=True).graph),
        layout(archcompiler.compile("specs/mobilenet_v3_small.yaml").graph),
        layout(archcompiler.compile("specs/mobilenet_v2.yaml").graph, collapse_blocks=False),
        layout(archcompiler.compile(BRANCHES).graph),
    ]


def _on_border(point: tuple[float, float], p: object) -> bool:
    x, y = point
    inside_x, inside_y = p.x - 0.01 <= x <= p.right + 0.01, p.y - 0.01 <= y <= p.bottom + 0.01
    on_vertical = inside_y and (abs(x - p.x) < 0.01 or abs(x - p.right) < 0.01)
    on_horizontal = inside_x and (abs(y - p.y) < 0.01 or abs(y - p.bottom) < 0.01)
    return on_vertical or on_horizontal


def test_layout_boxes_do_not_overlap_and_edges_join_their_boxes() -> None:
    """Every drawing of the shipped specs, a feature cut and a branching graph: no two boxes
    overlap, each box is below every box it reads, each arrow starts on its source's border,
    ends on its target's, and runs in straight horizontal or vertical pieces."""
    for lay in _layouts():
        at = {p.box.id: p for p in lay.boxes}
        for i, p in enumerate(lay.boxes):
            assert p.width > 0 and p.height > 0 and p.right <= lay.width and p.bottom <= lay.height
            for q in lay.boxes[i + 1 :]:
                apart = p.right <= q.x or q.right <= p.x or p.bottom <= q.y or q.bottom <= p.y
                assert apart, (p.box.lines, q.box.lines)
        for r in lay.routes:
            s, t = at[r.edge.source], at[r.edge.target]
            assert s.bottom < t.y
            assert _on_border(r.points[0], s) and _on_border(r.points[-1], t), r
            for (x0, y0), (x1, y1) in zip(r.points, r.points[1:], strict=False):
                assert x0 == x1 or y0 == y1, r


def test_edges_that_skip_rows_run_beside_the_boxes_they_pass() -> None:
    """A residual or a squeeze-excite gate is routed in a lane right of every box in the rows
    it passes, and two lanes that run alongside never share an x."""
    for lay in _layouts():
        at = {p.box.id: p for p in lay.boxes}
        lanes = []
        for r in lay.routes:
            s, t = at[r.edge.source], at[r.edge.target]
            assert r.skip == (t.row > s.row + 1)
            if not r.skip:
                continue
            pieces = zip(r.points, r.points[1:], strict=False)
            x = max(px for (px, py), (qx, qy) in pieces if px == qx and py != qy)  # the lane: its rightmost piece
            passed = [p for p in lay.boxes if s.row < p.row < t.row]
            assert all(p.right < x for p in passed)
            lanes.append((s.row, t.row, x))
        for i, (a0, a1, xa) in enumerate(lanes):
            for b0, b1, xb in lanes[i + 1 :]:
                assert not (a0 <= b1 and b0 <= a1) or xa != xb


def test_v3_small_draws_its_squeeze_excite_gates_and_residuals_beside_the_chain() -> None:
    """keras.applications.MobileNetV3Small, blocks collapsed: what skips rows is a
    squeeze-excite gate's input (into a multiply) or a residual (into an add), and both kinds
    are there (Howard et al. 2019, Table 2: SE in 9 of 11 blocks, residuals where the stride is
    1 and the width stays)."""
    g = archcompiler.compile("specs/mobilenet_v3_small.yaml").graph
    lay = layout(g)
    ops_into = [
        {g[m].op for m in p.box.members} for r in lay.routes if r.skip for p in lay.boxes if p.box.id == r.edge.target
    ]
    assert ops_into and all(ops & {"multiply", "add"} for ops in ops_into)
    assert any("multiply" in ops for ops in ops_into) and any("add" in ops for ops in ops_into)


def test_svg_is_xml_with_every_label_and_edge(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diagram", SPEC, "--collapse-blocks", "--format", "svg")
    assert code == 0
    root = ET.fromstring(out)
    assert root.tag == f"{SVG_NS}svg"
    nodes = [g for g in root.iter(f"{SVG_NS}g") if g.get("class", "").startswith("node")]
    edges = [g for g in root.iter(f"{SVG_NS}g") if g.get("class", "").startswith("edge")]
    texts = ["|".join(ts.text for ts in g.iter(f"{SVG_NS}tspan")) for g in nodes]
    # Table 1: the stem, 13 separable blocks of 6 layers, the pool, the classifier; one output
    assert len(nodes) == 21 and len(edges) == 20 and sum(t.endswith("|6 layers") for t in texts) == 13
    assert "conv_dw_13 .. conv_pw_13_relu|6 layers" in texts and "output|predictions" in texts
    assert {"".join(g.find(f"{SVG_NS}text").itertext()) for g in edges} >= {"112x112x32", "7x7x1024", "1000"}


def test_hostile_description_is_escaped_in_svg() -> None:
    text = svg(_tiny(HOSTILE).graph)
    root = ET.fromstring(text)  # parses: nothing broke out of its element
    assert root.find(f"{SVG_NS}title").text == "tiny: " + " ".join(HOSTILE.split())
    assert "<script" not in text and len(list(root.iter(f"{SVG_NS}script"))) == 0


def test_a_graph_too_large_to_draw_says_so_and_what_draws_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(archcompiler.tools.diagram, "MAX_DRAWN", 20)  # MobileNet collapsed: 21 boxes
    code, out, _ = run(capsys, "summary", SPEC, "--format", "html")
    assert code == 0 and "<svg" not in out
    assert "Not drawn: 21 boxes (at most 20 are drawn here); &#x27;archc diagram SPEC --collapse-blocks" in out
