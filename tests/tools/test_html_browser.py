"""`archc summary --format html` in a real browser: the graph is drawn, and nothing is fetched.

The oracle is the browser's own layout engine (Chromium, driven by playwright): each box of the
drawing has a size, each label is on the page as text, each arrow has a length, and the page
makes no request beyond its own file and runs no script. Skips where no browser is installed
(Debian's `chromium` package; .ci/run installs it); playwright's own browser download is not
used. In the slow tier: starting a browser takes seconds; the layout's geometry is checked
in the fast tier (tests/tools/test_diagram.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, SPEC

import archcompiler
from archcompiler.tools.cli import main
from archcompiler.tools.diagram import boxes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> & </svg><b>'


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """The page as a user opens it, every request it makes recorded (and refused)."""
    page = browser.new_page()
    requests: list[str] = []

    def route(r: Any) -> None:
        requests.append(r.request.url)
        r.continue_() if r.request.url == page_file.as_uri() else r.abort()

    page.route("**/*", route)
    page.goto(page_file.as_uri())
    return page, requests


DRAWING = """() => {
  const svg = document.querySelector('svg.archc-graph');
  const size = (e) => { const b = e.getBBox(); return [b.width, b.height]; };
  return {
    svg: size(svg),
    boxes: [...svg.querySelectorAll('g.node')].map((g) => ({
      rect: size(g.querySelector('rect')),
      lines: [...g.querySelectorAll('tspan')].map((t) => t.textContent),
      text: size(g.querySelector('text')),
    })),
    edges: [...svg.querySelectorAll('g.edge path')].map((p) => p.getTotalLength()),
    scripts: document.scripts.length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
  };
}"""


@pytest.mark.parametrize("spec", [SPEC, str(ROOT / "specs" / "mobilenet_v3_small.yaml")], ids=["v1", "v3_small"])
def test_html_summary_draws_the_graph_in_a_browser(browser: Any, tmp_path: Path, spec: str) -> None:
    out = tmp_path / "summary.html"
    assert main(["summary", spec, "--format", "html", "-o", str(out)]) == 0
    page, requests = _open(browser, out)
    drawn = page.evaluate(DRAWING)
    expected, edges = boxes(archcompiler.compile(spec).graph, collapse_blocks=True)
    assert requests == [out.as_uri()]  # nothing fetched
    assert drawn["svg"][0] > 0 and drawn["svg"][1] > 0
    assert [tuple(b["lines"]) for b in drawn["boxes"]] == [b.lines for b in expected]
    for b in drawn["boxes"]:
        assert b["rect"][0] > 0 and b["rect"][1] > 0 and b["text"][0] > 0, b
        assert b["text"][0] <= b["rect"][0], b  # the label fits in its box as the browser sets it
    assert len(drawn["edges"]) == len(edges) and all(length > 0 for length in drawn["edges"])
    page.close()


def test_hostile_spec_text_stays_text_in_a_browser(browser: Any, tmp_path: Path) -> None:
    spec = tmp_path / "hostile.yaml"
    spec.write_text(
        "name: hostile\ndescription: " + json.dumps(HOSTILE) + "\ninput: {size: 8}\n"
        "layers:\n  - {op: conv, filters: 4, kernel: 3}\n",
        encoding="utf-8",
    )
    out = tmp_path / "hostile.html"
    assert main(["summary", str(spec), "--format", "html", "-o", str(out)]) == 0
    page, requests = _open(browser, out)
    drawn = page.evaluate(DRAWING)
    assert requests == [out.as_uri()] and drawn["scripts"] == 0 and drawn["pwned"] is None
    assert page.evaluate("document.querySelector('svg.archc-graph title').textContent") == "hostile: " + " ".join(
        HOSTILE.split()
    )
    assert HOSTILE in page.evaluate("document.body.textContent")
    page.close()
