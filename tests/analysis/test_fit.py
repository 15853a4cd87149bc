"""`archc fit` and archcompiler.fit: settings within a budget, ranked, and the front of a search.

Oracles: the paper's exact Mult-Adds and parameters (docs/NUMBERS.md, Tables 6/7, via
tests/tools/test_cli.py's tables), fronts worked out by hand from them, and a hand-built grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import PAPER_MACS, PAPER_PARAMS, SPEC, run

import archcompiler
from archcompiler.analysis.fitting import SEARCH_RESOLUTIONS, SEARCH_WIDTHS, FitRow, dominates, front, rank
from archcompiler.analysis.fitting import fit as fit_grid
from archcompiler.analysis.fitting import search as fit_search
from archcompiler.language.source import parse_text


def run_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Like ``run``, also for argparse's own errors (SystemExit)."""
    try:
        return run(capsys, *argv)
    except SystemExit as exc:
        out, err = capsys.readouterr()
        return int(exc.code or 0), out, err


BUDGET = 150_000_000


def _published_within(max_macs: int | None, max_params: int | None) -> list[tuple[float, int]]:
    """The paper's grid filtered by the budget and ranked (MACs, then params), from NUMBERS.md alone."""
    ok = [
        (w, r)
        for (w, r), macs in PAPER_MACS.items()
        if (max_macs is None or macs <= max_macs) and (max_params is None or PAPER_PARAMS[w] <= max_params)
    ]
    return sorted(ok, key=lambda wr: (-PAPER_MACS[wr], -PAPER_PARAMS[wr[0]]))


def test_150m_ranks_half_width_224_first_and_matches_the_published_grid() -> None:
    rows = archcompiler.fit(SPEC, max_macs=BUDGET)
    first = rows[0]
    assert (first.width, first.resolution, first.macs, first.params) == (0.5, (224, 224), 149_497_088, 1_319_648)
    expected = _published_within(BUDGET, None)
    assert [(r.width, r.resolution[0]) for r in rows] == expected
    assert [r.macs for r in rows] == [PAPER_MACS[wr] for wr in expected]
    assert [r.params for r in rows] == [PAPER_PARAMS[w] for w, _ in expected]


@pytest.mark.parametrize(
    ("max_macs", "max_params"), [(None, 2_000_000), (300_000_000, 3_000_000), (41_030_272, None), (600_000_000, None)]
)
def test_budgets_against_the_published_grid(max_macs: int | None, max_params: int | None) -> None:
    rows = archcompiler.fit(SPEC, max_macs=max_macs, max_params=max_params)
    assert [(r.width, r.resolution[0]) for r in rows] == _published_within(max_macs, max_params)


def test_params_break_ties() -> None:
    a = FitRow(0.5, (224, 224), 100, 10)
    b = FitRow(1.0, (112, 112), 100, 40)
    c = FitRow(0.25, (320, 320), 120, 5)
    assert rank([a, b, c]) == [c, b, a]


def test_front_by_hand() -> None:
    """Fitting settings of a 3x3 grid; the front is worked out on paper."""
    rows = [
        FitRow(1.0, (128, 128), 0, 0),
        FitRow(0.5, (128, 128), 0, 0),
        FitRow(0.5, (160, 160), 0, 0),
        FitRow(0.25, (128, 128), 0, 0),
        FitRow(0.25, (160, 160), 0, 0),
        FitRow(0.25, (192, 192), 0, 0),
    ]
    got = {(r.width, r.resolution[0]) for r in front(rows)}
    assert got == {(1.0, 128), (0.5, 160), (0.25, 192)}
    assert dominates(rows[2], rows[1]) and not dominates(rows[1], rows[1]) and not dominates(rows[0], rows[2])


def test_front_on_the_papers_grid_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """Under 150M the paper's grid fits 0.75/128 (106.8M), every 0.5 and every 0.25; nothing
    at least as wide and as large beats 0.5/224 or 0.75/128, everything else is under one."""
    code, out, _ = run(
        capsys, "fit", SPEC, "--max-macs", "150M", "--search", "--width", "1,0.75,0.5,0.25",
        "--resolution", "224,192,160,128", "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == [
        {"width": 0.5, "resolution": 224, "macs": PAPER_MACS[(0.5, 224)], "params": PAPER_PARAMS[0.5]},
        {"width": 0.75, "resolution": 128, "macs": PAPER_MACS[(0.75, 128)], "params": PAPER_PARAMS[0.75]},
    ]


@pytest.fixture(scope="module")
def searched() -> list[FitRow]:
    return fit_search(archcompiler.load(SPEC), max_macs=BUDGET)


def test_search_front_is_maximal(searched: list[FitRow]) -> None:
    """Every front row fits; no front row dominates another; one grid step wider or larger
    (at the same other knob) does not fit, unless the front holds a row that dominates it."""
    loaded = archcompiler.load(SPEC)
    assert searched and all(r.macs <= BUDGET for r in searched)
    assert not any(dominates(a, b) for a in searched for b in searched)
    for r in searched[:4]:
        w_next = [w for w in SEARCH_WIDTHS if w > r.width][:1]
        r_next = [x for x in SEARCH_RESOLUTIONS if x > r.resolution[0]][:1]
        for w, res in [(w_next[0], r.resolution[0])] if w_next else []:
            assert archcompiler.cost(archcompiler.lower(loaded, width=w, resolution=res)).macs > BUDGET
        for res in r_next:
            assert archcompiler.cost(archcompiler.lower(loaded, width=r.width, resolution=res)).macs > BUDGET


def test_search_includes_the_published_fitting_corner(searched: list[FitRow]) -> None:
    """0.5/224 fits at 149,497,088 (published); on the fine grid the front holds it or a setting dominating it."""
    half = FitRow(0.5, (224, 224), PAPER_MACS[(0.5, 224)], PAPER_PARAMS[0.5])
    assert any(r == half or dominates(r, half) for r in searched)


def test_fit_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fit", SPEC, "--max-macs", "150M")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "150,000,000" in lines[0]
    assert lines[4].split() == ["0.5", "224", "149,497,088", "1,319,648"]
    code, out, _ = run(capsys, "fit", SPEC, "--max-macs", "150M", "--max-params", "1M", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and all(set(d) == {"width", "resolution", "macs", "params"} for d in doc)
    assert [(d["width"], d["resolution"]) for d in doc] == _published_within(BUDGET, 1_000_000)


def test_empty_fit_is_exit_1_naming_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fit", SPEC, "--max-macs", "10M")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "--max-macs 10,000,000" in err and SPEC in err
    code, out, err = run(capsys, "fit", SPEC, "--max-params", "1k", "--format", "json")
    assert code == 1 and json.loads(out) == [] and "--max-params 1,000" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fit", SPEC], "give a budget"),
        (["fit", SPEC, "--max-macs", "lots"], "--max-macs"),
        (["fit", SPEC, "--max-macs", "1G", "--width", "0.5,x"], "--width"),
        (["fit", SPEC, "--max-macs", "1G", "--resolution", "224x"], "--resolution"),
        (["fit", SPEC, "--max-macs", "1G", "--width", "9"], "width"),
        (["fit", SPEC, "--max-macs", "1G", "--format", "csv"], "--format"),
    ],
)
def test_fit_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, _, err = run_exit(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_fit_takes_non_square_resolutions() -> None:
    """224x160 halves exactly to 7x5, so every conv/dw MAC scales by 160/224 and the FC stays:
    (568,740,352 - 1,024,000) * 5/7 + 1,024,000 (docs/NUMBERS.md: FC 1,024,000)."""
    rows = fit_grid(archcompiler.load(SPEC), max_macs=10**9, widths=[1.0], resolutions=[(224, 160)])
    assert [(r.resolution, r.macs) for r in rows] == [((224, 160), (568_740_352 - 1_024_000) * 5 // 7 + 1_024_000)]
    assert rows[0].label == "1/224x160"


def test_api_fit_accepts_text_and_dict() -> None:
    text = Path(SPEC).read_text(encoding="utf-8")
    as_dict = parse_text(text).data
    for spec in (text, as_dict):
        rows = archcompiler.fit(spec, max_macs=BUDGET, widths=[0.5], resolutions=[224, 256])
        assert [(r.width, r.resolution[0], r.macs) for r in rows] == [(0.5, 224, PAPER_MACS[(0.5, 224)])]


def test_fit_budgets_a_feature_extractor_without_its_classifier(capsys: pytest.CaptureFixture[str]) -> None:
    """A backbone's budget: --features drops the pool and the classifier. Table 1's FC is a
    1024 alpha x 1000 matrix, as many parameters as MACs; the paper's grid minus it decides what
    fits (1.0/160: 290,675,200 MACs with the classifier, over 290M; 289,651,200 without)."""
    from archcompiler.lowering.features import Outputs

    budget = 290_000_000

    def fc(w: float) -> int:
        return int(1024 * w) * 1000

    expected = sorted(
        ((w, r) for (w, r), macs in PAPER_MACS.items() if macs - fc(w) <= budget),
        key=lambda wr: (-(PAPER_MACS[wr] - fc(wr[0])), -PAPER_PARAMS[wr[0]]),
    )
    assert (1.0, 160) in expected and (1.0, 160) not in _published_within(budget, None)
    code, out, _ = run(capsys, "fit", SPEC, "--max-macs", str(budget), "--features", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["width"], r["resolution"]) for r in rows] == expected
    assert [r["macs"] for r in rows] == [PAPER_MACS[wr] - fc(wr[0]) for wr in expected]
    assert [r["params"] for r in rows] == [PAPER_PARAMS[w] - fc(w) for w, _ in expected]
    api = archcompiler.fit(SPEC, max_macs=budget, outputs=Outputs(features=True))
    assert [(r.width, r.resolution[0], r.macs) for r in api] == [(x["width"], x["resolution"], x["macs"]) for x in rows]
