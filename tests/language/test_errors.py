"""The invalid-spec corpus: every bad input is one located line, never a traceback.

Each ``tests/invalid/*.yaml`` starts with comment lines that state what must happen:

    # expect: <substring of the message>     (one or more)
    # at: <line>:<col>                        (the location the error must report)
    # path: <spec path>                       (optional: the field the message names)
    # not: <substring>                        (optional: must NOT be in the message)
    # lower: {"width": 0}                     (optional: lower() overrides; loading must succeed)

The test loads and lowers each file and checks that a :class:`SpecError` comes out whose text
is ``<file>:<line>:<col>: <path>: ...`` on one line and contains every expected substring.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.language import source

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests"
CORPUS = sorted((HERE / "invalid").glob("*.yaml"))
SHIPPED = sorted((ROOT / "specs").glob("*.yaml"))
MARKER = "archc_tag_marker"  # what the !!python tags in the corpus would `touch`


@dataclass
class Case:
    expect: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    line: int = 0
    col: int = 0
    path: str | None = None
    lower: dict[str, Any] = field(default_factory=dict)


def read_case(file: Path) -> Case:
    """Parse the leading comment block of a corpus file."""
    case = Case()
    text = file.read_bytes().decode("utf-8", errors="replace")  # non_utf8.yaml's header is ASCII
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*(expect|not|at|path|lower):\s?(.*)$", line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).rstrip()
        if key == "expect":
            case.expect.append(value)
        elif key == "not":
            case.absent.append(value)
        elif key == "at":
            case.line, case.col = (int(x) for x in value.split(":"))
        elif key == "path":
            case.path = value
        else:
            case.lower = ast.literal_eval(value)
    return case


def assert_one_located_line(err: SpecError, file: Path | str, line: int, col: int, path: str | None) -> str:
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    prefix = f"{file}:{line}:{col}: "
    assert msg.startswith(prefix), f"{msg!r} does not start with {prefix!r}"
    if path:
        assert msg.startswith(f"{prefix}{path}: "), f"{msg!r} does not name {path!r}"
    assert (err.file, err.line, err.col) == (str(file), line, col)
    return msg


# --- the corpus ---------------------------------------------------------------------------


REQUIRED_CASES = {
    "not_yaml_indent",
    "not_yaml_bracket",
    "empty",
    "null_document",
    "top_level_list",
    "unknown_op",
    "unknown_key",
    "wrong_type_stride",
    "zero_filters",
    "negative_kernel",
    "yaml11_no",
    "quoted_number",
    "pool_too_large",
    "kernel_too_large",
    "kernel_too_large_in_block",
    "shape_reaches_zero",
    "unknown_block",
    "block_arg_not_param",
    "missing_block_param",
    "unknown_param_in_block",
    "dangling_input",
    "forward_input",
    "self_reference",
    "python_tag_apply",
    "duplicate_keys",
    "duplicate_layer_names",
    "dense_on_image",
    "add_mismatched",
    "hostile_name",
    "keyword_name",
    "unicode_lookalike_name",
    "width_override_zero",
    "width_override_five",
    "resolution_override_negative",
    "resolution_override_zero",
    "non_utf8",
    "seed_blog_sample",
}


def test_corpus_is_well_formed() -> None:
    assert {p.stem for p in CORPUS} >= REQUIRED_CASES
    for file in CORPUS:
        case = read_case(file)
        assert case.expect, f"{file.name}: no '# expect:' line"
        assert case.line >= 1 and case.col >= 1, f"{file.name}: no '# at: line:col' line"


LOADERS = [
    pytest.param(True, id="libyaml", marks=pytest.mark.skipif(source._CParser is None, reason="no libyaml")),
    pytest.param(False, id="python"),
]


@pytest.mark.parametrize("libyaml", LOADERS)
@pytest.mark.parametrize("file", CORPUS, ids=lambda p: p.stem)
def test_invalid_spec(file: Path, libyaml: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # under both YAML loaders (tests/language/test_yaml_loaders.py checks they give identical messages)
    monkeypatch.setattr(source, "LIBYAML", libyaml)
    case = read_case(file)
    monkeypatch.chdir(tmp_path)  # a constructed !!python/object/apply would create MARKER here
    if case.lower:
        loaded = archc.load(file)  # the spec is fine; only the override is out of range
        with pytest.raises(SpecError) as info:
            archc.lower(loaded, **case.lower)
    else:
        with pytest.raises(SpecError) as info:
            archc.lower(archc.load(file))
    msg = assert_one_located_line(info.value, file, case.line, case.col, case.path)
    for expected in case.expect:
        assert expected in msg, f"{expected!r} not in {msg!r}"
    for unwanted in case.absent:
        assert unwanted not in msg, f"{unwanted!r} in {msg!r}"
    assert not (tmp_path / MARKER).exists(), "a YAML tag was executed"


def test_python_tags_are_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f"!!python/object/apply:subprocess.call [[touch, {marker}]]",
        f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        "!!python/name:os.system",
        "!!python/module:os",
        f'!custom ["touch {marker}"]',
    ]
    for payload in payloads:
        for text in (
            f"archc: 1\nname: t\ninput: {{size: 8}}\nlayers:\n  - {{op: conv, filters: 8, kernel: {payload} }}\n",
            f"archc: 1\nname: t\ninput: {{size: 8}}\nlayers: {payload}\n",
            f"{payload}\n",
        ):
            with pytest.raises(SpecError, match="YAML tags are not allowed"):
                archc.load_text(text, "tag.yaml")
    assert not marker.exists()


# --- files that are not specs -------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        archc.load(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:")
    assert "no such file" in msg


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        archc.load(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path}:")
    assert "is a directory" in msg


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n", b"---\n", b"# nothing\n"], ids=repr)
def test_empty_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        archc.load(path)
    msg = assert_one_located_line(info.value, path, 1, 1, None)
    assert "the spec is empty" in msg


def test_scalar_document(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"must be a mapping .*\(got str\)"):
        archc.load_text("just some words\n", "words.yaml")


def test_several_documents() -> None:
    text = "archc: 1\nname: a\ninput: {size: 8}\nlayers: [{op: flatten}]\n---\nname: b\n"
    with pytest.raises(SpecError) as info:
        archc.load_text(text, "two.yaml")
    assert_one_located_line(info.value, "two.yaml", 6, 1, None)
    assert "one YAML document" in str(info.value)


def test_self_referencing_alias_is_refused() -> None:
    # A recursive alias would otherwise build an endless structure.
    text = "archc: 1\nname: a\ninput: {size: 8}\nx: &m {y: [1, *m]}\nlayers: [{op: flatten}]\n"
    with pytest.raises(SpecError) as info:
        archc.load_text(text, "alias.yaml")
    assert_one_located_line(info.value, "alias.yaml", 4, 4, "x.y[1]")
    assert "(a cycle)" in str(info.value)


def test_plain_aliases_still_work() -> None:
    text = "archc: 1\nname: a\ninput: {size: 8}\nlayers:\n  - &c {op: conv, filters: 8, kernel: 3}\n  - *c\n"
    graph = archc.lower(archc.load_text(text, "alias.yaml"))
    assert [n.op for n in graph.nodes] == ["input", "conv2d", "conv2d"]


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * 70 + "]" * 70 + "\n"
    with pytest.raises(SpecError, match="nesting is deeper than 64 levels"):
        archc.load_text(text, "deep.yaml")


# --- overrides on the shipped spec ----------------------------------------------------------


def _field_location(path: Path, key: str) -> tuple[int, int]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        m = re.match(rf"^{key}:\s*", line)
        if m:
            return number, m.end() + 1
    raise AssertionError(f"{key} not in {path}")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"width": 0}, "width", "expected a width multiplier in (0, 4] (got 0)"),
        ({"width": 5}, "width", "expected a width multiplier in (0, 4] (got 5)"),
        ({"width": -0.25}, "width", "(got -0.25)"),
        ({"width": math.nan}, "width", "(got nan)"),
        ({"width": True}, "width", "(got True)"),
        ({"width": "0.5"}, "width", "(got '0.5')"),
        ({"resolution": -1}, "resolution", "expected a size from 1 to 8192 pixels (got -1)"),
        ({"resolution": 0}, "resolution", "(got 0)"),
        ({"resolution": 0.0}, "resolution", "expected a multiplier in (0, 4] (got 0.0)"),
        ({"resolution": -0.5}, "resolution", "(got -0.5)"),
        ({"resolution": math.inf}, "resolution", "(got inf)"),
        ({"resolution": math.nan}, "resolution", "(got nan)"),
        ({"resolution": True}, "resolution", "(got True)"),
        ({"resolution": 100_000}, "resolution", "(got 100000)"),
        ({"resolution": (224, 0)}, "resolution", "(got (224, 0))"),
        ({"resolution": 0.001}, "resolution", "collapses to 0x0"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_override_out_of_range(overrides: dict[str, Any], field: str, message: str) -> None:
    spec_path = ROOT / "specs" / "mobilenet.yaml"
    loaded = archc.load(spec_path)
    with pytest.raises(SpecError) as info:
        archc.lower(loaded, **overrides)
    line, col = _field_location(spec_path, field)
    msg = assert_one_located_line(info.value, spec_path, line, col, field)
    assert message in msg


# --- the reverse check: valid input is accepted ---------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_are_valid(path: Path) -> None:
    graph = archc.lower(archc.load(path))
    assert graph.output_shape == (1000,)


def test_shipped_specs_present() -> None:
    assert {p.name for p in SHIPPED} >= {"mobilenet.yaml", "mobilenet_keras.yaml"}


def test_yaml12_scalars_are_numbers() -> None:
    # YAML 1.1 (PyYAML's safe_load) reads 1e-3 as the string '1e-3'; YAML 1.2 reads a float.
    text = """\
archc: 1
name: yaml12
input: {size: 8, channels: 3}
defaults:
  batchnorm: {epsilon: 1e-3, decay: 0.99}
layers:
  - {op: conv, filters: 8, kernel: 3}
  - {op: batchnorm, name: bn, epsilon: 1e-5}
  - {op: batchnorm, name: bn2}
"""
    graph = archc.lower(archc.load_text(text, "yaml12.yaml"))
    assert graph["bn"].epsilon == 1e-5
    assert graph["bn2"].epsilon == 1e-3


def test_seed_blog_sample_is_valid_with_a_global_pool() -> None:
    """A control: the blog sample's only fault is the fixed 7x7 pool on a 2x2 map."""
    file = HERE / "invalid" / "seed_blog_sample.yaml"
    text = file.read_text().replace(
        "{op: avg_pool, pool: 7, stride: 1, name: avg_pool}", "{op: global_avg_pool, name: avg_pool}"
    )
    graph = archc.lower(archc.load_text(text, "blog_fixed.yaml"))
    assert graph["avg_pool"].inputs and graph[graph["avg_pool"].inputs[0]].shape == (2, 2, 512)
    assert graph.output_shape == (1000,)


def test_non_square_input_is_accepted() -> None:
    # The schema advertises input.size as an integer or [height, width]; YAML gives a list.
    text = (
        "archc: 1\nname: rect\ninput: {size: [20, 12], channels: 3}\n"
        "layers:\n  - {op: conv, filters: 8, kernel: 3, stride: 2}\n"
    )
    loaded = archc.load_text(text, "rect.yaml")
    assert archc.lower(loaded).output_shape == (10, 6, 8)  # TF SAME: ceil(20/2), ceil(12/2)
    assert archc.lower(loaded, resolution=0.5).input_shape == (10, 6, 3)


def test_block_argument_may_be_classes() -> None:
    text = """\
archc: 1
name: head
input: {size: 8, channels: 3}
classes: 7
blocks:
  head:
    params: {units: $classes}
    layers:
      - {op: global_avg_pool}
      - {op: dense, units: $units}
layers:
  - {block: head, name: h1}
  - {op: activation, inputs: [input], name: again}
  - {block: head, name: h2, units: $classes}
  - {op: add, inputs: [h1_dense, h2_dense]}  # both heads live (dead branches are left out)
"""
    graph = archc.lower(archc.load_text(text, "head.yaml"))
    assert graph["h1_dense"].units == 7
    assert graph["h2_dense"].units == 7
