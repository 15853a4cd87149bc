"""libyaml and the pure-Python loader read every spec the same: values, line:col and errors.

:func:`archcompiler.language.source.parse_text` composes with libyaml when PyYAML has it
(``source.LIBYAML``) and falls back to the pure-Python loader on any failure, so error text is
the Python loader's by construction. What that leaves to prove, with the Python loader as the
oracle:

* every valid text gives the same data, positions and key positions in each libyaml mode
  (its own composer, and its events under the bounded Python composer);
* every text the Python loader refuses is refused by libyaml too (else libyaml's result would
  be used where the Python loader reports an error);
* the bad-input corpus (tests/invalid/, tests/language/test_errors.py) gives identical messages with
  either loader.

Texts: the shipped specs, the corpus, and seeded random edits of both (a character deleted,
duplicated or inserted from YAML's indicators, tabs, odd line breaks and non-ASCII).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from helpers import fast_first
from test_errors import read_case  # tests/ is on sys.path (rootdir-relative imports)

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.language import source

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests"
CORPUS = sorted((HERE / "invalid").glob("*.yaml"))
SHIPPED = sorted((ROOT / "specs").glob("*.yaml"))
TEXTS = {p.name: p.read_bytes().decode("utf-8", errors="replace") for p in [*SHIPPED, *CORPUS]}

needs_libyaml = pytest.mark.skipif(source._CParser is None, reason="PyYAML was built without libyaml")
C_MODES = ["libyaml", "libyaml-events"]

# Characters an edit inserts: YAML's indicators and whitespace, line breaks PyYAML and libyaml
# both count (CR, NEL, U+2028), a tab, a BOM, non-ASCII letters and an astral character.
INSERTS = [*"[]{}:,-?#&*!|>'\"%@` \n\t0a=$.", "\r", "\r\n", "\x85", "\u2028", "\ufeff", "é", "с", "😀", "~"]


def outcome(text: str, mode: source.Mode) -> tuple[Any, ...]:
    """What one loader makes of ``text``: ('ok', data, positions, key positions) or ('error',).

    Data is compared by repr, which tells 1, 1.0 and True apart and equals nan with nan."""
    try:
        s = source._parse(text, "t.yaml", mode)
    except SpecError:
        return ("error",)
    except Exception as exc:  # only libyaml may fail other than with a SpecError: parse_text falls back
        assert mode != "python", f"the Python loader raised {exc!r}"
        return ("error",)
    return ("ok", repr(s.data), s.positions, s.key_positions)


def check_same(text: str) -> str:
    """Assert each libyaml mode reads ``text`` as the Python loader does, or fails (parse_text
    then asks the Python loader); the Python loader's outcome."""
    want = outcome(text, "python")
    modes = C_MODES if source._mode(text) != "python" else []  # a tab or BOM: Python only
    for mode in modes:
        got = outcome(text, mode)
        if got[0] == "ok":
            assert want[0] == "ok", f"{mode} accepts {text!r}, which the Python loader refuses"
            assert got == want, f"{mode} reads {text!r} differently"
    if want[0] == "ok":  # and what the loaders agree on is what parse_text gives
        got_ok = source.parse_text(text, "t.yaml")
        assert ("ok", repr(got_ok.data), got_ok.positions, got_ok.key_positions) == want
    else:
        with pytest.raises(SpecError):
            source.parse_text(text, "t.yaml")
    return str(want[0])


def edits(text: str, rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        t = text
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(t) + 1)
            kind = rng.random()
            if kind < 0.3:
                t = t[:i] + t[i + 1 :]
            elif kind < 0.5:
                t = t[:i] + t[i:][:1] + t[i:]
            else:
                t = t[:i] + rng.choice(INSERTS) + t[i:]
        out.append(t)
    return out


@needs_libyaml
@pytest.mark.parametrize("name", sorted(TEXTS), ids=str)
def test_files_read_the_same(name: str) -> None:
    check_same(TEXTS[name])


@needs_libyaml
def test_shipped_specs_compose_in_c() -> None:
    # a C path is the one taken, never the pure-Python loader: the MobileNet specs are small
    # enough for libyaml's composer; the family specs with one layer table per variant
    # (efficientnet_v2, mobilenet_v4) or 26 lettered rows (efficientnet, efficientnet_keras: over
    # C_COMPOSE_MAX indicators) take libyaml's bounded events
    large = {"efficientnet.yaml", "efficientnet_keras.yaml", "efficientnet_v2.yaml", "mobilenet_v4.yaml"}
    for p in SHIPPED:
        want = "libyaml-events" if p.name in large else "libyaml"
        assert source._mode(p.read_text(encoding="utf-8")) == want, p.name


@needs_libyaml
@pytest.mark.parametrize("seed", fast_first(range(4), keep=0))
def test_edited_files_read_the_same(seed: int) -> None:
    rng = random.Random(seed)
    kinds = []
    for name in sorted(TEXTS):
        for text in edits(TEXTS[name], rng, 2):
            kinds.append(check_same(text))
    # the edits must exercise both sides: texts that stay valid and texts that break
    assert kinds.count("ok") > len(kinds) // 10 and kinds.count("error") > len(kinds) // 10


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [
        "a: 1\r\nb: [x, y]\r\n",  # CRLF
        "a: 1\rb: 2\r",  # old Mac line ends
        "a: x\x85b: 2\n",  # NEL is a line break to both
        "a: 'x\u2028y'\nb: 2\n",  # so is LINE SEPARATOR
        "\ufeffa: 1\nb: 2\n",  # a BOM
        'a: "é😀"\nb: [1, {c: 2}]\n',  # columns count characters, not bytes
        "a:\t1\nb:  2\n",  # a tab after the colon
        "a: &x [1, 2]\nb: *x\n",  # an alias builds a copy, located where the anchor is
        "a: 1e-320\nb: 2001-12-14\nc: =1\n",  # YAML 1.1 strings and timestamps
        "a: |\n  x\n  y\nb: >-\n  z\n",  # block scalars
        "? a\n: 1\n",  # an explicit key
        "? \n: 1\n",  # a left-out key
        "a: {b: , c: }\nd:\n",  # left-out values
        "a: 1\na: 2\n",  # a duplicate key
        "a: !!python/name:os.system x\n",  # a tag
        "- [" * 70 + "]" * 70 + "\n",  # too deep
        "a: 1\n---\nb: 2\n",  # two documents
        "a: 1\n...\n",  # an explicit end
    ],
    ids=repr,
)
def test_edge_cases_read_the_same(text: str) -> None:
    check_same(text)


@pytest.mark.parametrize("libyaml", [False, True] if source._CParser is not None else [False])
def test_dates_are_strings_as_in_yaml_1_2(libyaml: bool) -> None:
    # YAML 1.2's core schema has no timestamp type: a plain date is a string (README), by
    # every loader; an explicit !!timestamp tag is still refused, like any tag
    text = "a: 2001-12-14\nb: [2001-12-14t21:59:43.10-05:00, 2002-1-1 1:2:3]\nc: '2001-12-14'\n"
    data = source.parse_text(text, "t.yaml", libyaml=libyaml).data
    assert data == {"a": "2001-12-14", "b": ["2001-12-14t21:59:43.10-05:00", "2002-1-1 1:2:3"], "c": "2001-12-14"}
    assert check_same(text) == "ok"
    with pytest.raises(SpecError, match=r"YAML tags are not allowed \(got 'tag:yaml.org,2002:timestamp'\)"):
        source.parse_text("a: !!timestamp 2001-12-14\n", "t.yaml", libyaml=libyaml)


def test_a_date_is_a_description() -> None:
    # a date-like text reaches the spec as written (it was refused as a timestamp tag)
    text = "name: net\ndescription: 2001-12-14\ninput: {size: 8, channels: 3}\nlayers:\n  - op: activation\n"
    spec = archc.load_text(text).spec
    assert spec.description == "2001-12-14"


@needs_libyaml
def test_large_texts_compose_from_events() -> None:
    # above C_COMPOSE_MAX indicators libyaml's composer is not used (it recurses in C and
    # counts nothing): the events go through the bounded Python composer, and read the same
    text = "x: [" + "1, " * (source.C_COMPOSE_MAX + 5) + "]\n"
    assert source._mode(text) == "libyaml-events"
    assert check_same(text) == "ok"


def corpus_message(file: Path, libyaml: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one-line error the corpus file gives with (or without) libyaml."""
    monkeypatch.setattr(source, "LIBYAML", libyaml)
    case = read_case(file)
    with pytest.raises(SpecError) as info:
        archc.lower(archc.load(file), **case.lower)
    return str(info.value)


@needs_libyaml
@pytest.mark.parametrize("file", CORPUS, ids=lambda p: p.stem)
def test_corpus_messages_are_identical(file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # as test_errors: a constructed tag would write here
    assert corpus_message(file, True, monkeypatch) == corpus_message(file, False, monkeypatch)


def test_without_libyaml_the_python_loader_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # a PyYAML built without libyaml: parse_text uses the pure-Python loader alone
    monkeypatch.setattr(source, "_CParser", None)
    text = TEXTS["mobilenet.yaml"]
    assert source.parse_text(text, "t.yaml") == source._parse(text, "t.yaml", "python")


def test_scalars_keep_their_types() -> None:
    # YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
    data = source.parse_text("a: 1\nb: '1'\nc: 1.0\nd: true\ne: -0.0\nf: 0.0\ng: ~\n").data
    assert [type(v) for v in data.values()] == [int, str, float, bool, float, float, type(None)]
    assert str(data["e"]) == "-0.0" and str(data["f"]) == "0.0"
