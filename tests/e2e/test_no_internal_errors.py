"""No input ends in an internal error or a hang (issue 19): each case a regression test.

Expression arithmetic that overflows or makes NaN, expansions that would iterate forever, names
and depths a backend cannot build, runs that would not fit in memory, and wrong arguments to
the Python API: each is one located line (a SpecError, BackendError, WeightError or OutputError;
exit status 2 on the command line), never OverflowError, RecursionError, MemoryError,
AttributeError, ... Framework-free: the backend cases live in tests/backends/.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import fast_first
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.api import OutputError
from archcompiler.kit.backend import Backend, BackendError
from archcompiler.language.limits import MAX_GRAPH_DEPTH, MAX_ITERATIONS, MAX_LAYERS
from archcompiler.weights import WeightError

ROOT = Path(__file__).resolve().parents[2]


def archc_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, so that a hang fails the test instead of stalling the run."""
    return subprocess.run(
        [sys.executable, "-m", "archcompiler.tools.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "ARCHC_DEBUG": ""},
    )


def one_line(text: str) -> str:
    msg = text.rstrip("\n")
    assert msg and "\n" not in msg and "Traceback" not in msg and "internal error" not in msg, msg
    return msg


# --- expression arithmetic ---------------------------------------------------------------

HEAD = "archc: 1\nname: t\ninput: {size: 8, channels: 3}\nclasses: 10\n"
D400 = "9" * 400


def _spec(layers: str, *, blocks: str = "", top: str = "") -> str:
    return HEAD + top + (f"blocks:\n{blocks}" if blocks else "") + "layers:\n" + layers


def _block(params: str, layer: str) -> str:
    return f"  b:\n    params: {params}\n    layers:\n      - {layer}\n"


OVERFLOWS = "overflows: beyond the float range"
OUT_OF_RANGE = "is out of range: an integer beyond 2**63 - 1"
NAN = "is not a number (NaN)"

EXPRESSION_CASES: dict[str, tuple[str, str, str]] = {
    # case: (spec, the located spec path, what the message says)
    "int(1e999)": (
        _spec('  - {op: conv, filters: "=int(1e999)", kernel: 1}\n'),
        "layers[0].filters",
        f"the number 1e999 {OVERFLOWS} (about 1.8e308) at column 6",
    ),
    "int($in * 1e308 * 10)": (
        _spec('  - {op: conv, filters: "=int($in * 1e308 * 10)", kernel: 1}\n'),
        "layers[0].filters",
        f"'*' {OVERFLOWS} (about 1.8e308) at column 10",
    ),
    "400 digits * 1.5": (
        _spec(f'  - {{op: conv, filters: "={D400} * 1.5", kernel: 1}}\n'),
        "layers[0].filters",
        f"the number 9999999999...999999 (400 characters) {OUT_OF_RANGE} at column 2",
    ),
    "round_channels(1e999)": (
        _spec('  - {op: conv, filters: "=round_channels(1e999)", kernel: 1}\n'),
        "layers[0].filters",
        f"the number 1e999 {OVERFLOWS} (about 1.8e308) at column 17",
    ),
    "round_channels(1e308) at width 4": (
        _spec('  - {op: conv, filters: "=round_channels(1e308)", kernel: 1}\n', top="width: 4\n"),
        "layers[0].filters",
        f"round_channels() {OVERFLOWS} at column 2",
    ),
    "make_divisible(8, 400 digits)": (
        _spec(f'  - {{op: conv, filters: "=make_divisible(8, {D400})", kernel: 1}}\n'),
        "layers[0].filters",
        f"(400 characters) {OUT_OF_RANGE} at column 20",
    ),
    "make_divisible(1e308)": (
        _spec('  - {op: conv, filters: "=make_divisible(1e308)", kernel: 1}\n'),
        "layers[0].filters",
        f"make_divisible() {OUT_OF_RANGE} at column 2",
    ),
    "int(1e300)": (
        _spec('  - {op: conv, filters: "=int(1e300)", kernel: 1}\n'),
        "layers[0].filters",
        f"int() {OUT_OF_RANGE} at column 2",
    ),
    "int64 max + 1": (
        _spec('  - {op: conv, filters: "=9223372036854775807 + 1", kernel: 1}\n'),
        "layers[0].filters",
        f"'+' {OUT_OF_RANGE} at column 22",
    ),
    "-int64 max - 2": (
        _spec('  - {op: conv, filters: "=-9223372036854775807 - 2", kernel: 1}\n'),
        "layers[0].filters",
        f"'-' {OUT_OF_RANGE} at column 23",
    ),
    "1e308 // 1e-300": (
        _spec('  - {op: conv, filters: "=int(1e308 // 1e-300)", kernel: 1}\n'),
        "layers[0].filters",
        f"'//' {OVERFLOWS}",
    ),
    "inf - inf (NaN form)": (
        _spec('  - {op: conv, filters: "=int(1e308 * 10 - 1e308 * 10)", kernel: 1}\n'),
        "layers[0].filters",
        f"'*' {OVERFLOWS} (about 1.8e308) at column 12",
    ),
    "NaN parameter in int()": (
        _spec("  - {block: b}\n", blocks=_block("{x: .nan}", '{op: conv, filters: "=int($x)", kernel: 1}')),
        "blocks.b.layers[0].filters",
        f"'$x' {NAN} at column 6 (in block 'b' instance 1)",
    ),
    "NaN parameter, bare": (
        _spec("  - {block: b}\n", blocks=_block("{x: .nan}", "{op: conv, filters: $x, kernel: 1}")),
        "blocks.b.layers[0].filters",
        f"'$x' {NAN} (in block 'b' instance 1)",
    ),
    "infinite parameter, bare": (
        _spec("  - {block: b}\n", blocks=_block("{x: .inf}", "{op: conv, filters: 8, kernel: $x}")),
        "blocks.b.layers[0].kernel",
        f"'$x' {OVERFLOWS}",
    ),
    "NaN block argument": (
        _spec("  - {block: b, n: .nan}\n", blocks=_block("{n: 1}", '{op: conv, filters: "=$n * 2", kernel: 1}')),
        "blocks.b.layers[0].filters",
        f"'$n' {NAN} at column 2",
    ),
    "overflowing block argument": (
        _spec('  - {block: b, n: "=1e308 * 10"}\n', blocks=_block("{n: 1}", "{op: conv, filters: $n, kernel: 1}")),
        "layers[0].n",
        f"'*' {OVERFLOWS}",
    ),
    "overflowing block default": (
        _spec("  - {block: b}\n", blocks=_block('{n: "=int(1e999)"}', "{op: conv, filters: $n, kernel: 1}")),
        "blocks.b.params",
        f"the number 1e999 {OVERFLOWS}",
    ),
    "padding list": (
        _spec('  - {op: conv, filters: 8, kernel: 3, padding: [0, 0, "=int(1e999)", 0]}\n'),
        "layers[0].padding",
        f"the number 1e999 {OVERFLOWS}",
    ),
    "padding list, reading $in": (
        _spec('  - {op: conv, filters: 8, kernel: 3, padding: ["$in * 1e308 * 10", 0, 0, 0]}\n'),
        "layers[0].padding",
        f"'*' {OVERFLOWS}",
    ),
    "padding pairs": (
        _spec('  - {op: conv, filters: 8, kernel: 3, padding: [[0, "=int(1e300)"], [0, 0]]}\n'),
        "layers[0].padding",
        f"int() {OUT_OF_RANGE}",
    ),
    "stride pair": (
        _spec('  - {op: conv, filters: 8, kernel: 3, stride: ["=int(1e999)", 1]}\n'),
        "layers[0].stride",
        f"the number 1e999 {OVERFLOWS}",
    ),
    "repeat": (
        _spec('  - {op: activation, repeat: "=int(1e300)"}\n'),
        "layers[0].repeat",
        f"int() {OUT_OF_RANGE}",
    ),
    "when": (
        _spec('  - {op: activation, when: "=1e308 * 10 > 1"}\n'),
        "layers[0].when",
        f"'*' {OVERFLOWS}",
    ),
    "dense units from $classes": (
        _spec('  - {op: global_avg_pool}\n  - {op: dense, units: "=int($classes * 1e308 * 10)"}\n'),
        "layers[1].units",
        f"'*' {OVERFLOWS}",
    ),
    "dropout rate": (
        _spec('  - {op: dropout, rate: "=1e308 * 10"}\n'),
        "layers[0].rate",
        f"'*' {OVERFLOWS}",
    ),
    "rescaling scale": (
        _spec('  - {op: rescaling, scale: "=1e200 * 1e200"}\n'),
        "layers[0].scale",
        f"'*' {OVERFLOWS}",
    ),
    "Arabic-Indic digit": (
        _spec('  - {op: conv, filters: "$in * ٢", kernel: 1, scale_width: false}\n'),
        "layers[0].filters",
        "unexpected character '٢' at column 7",
    ),
}


@pytest.mark.parametrize("case", EXPRESSION_CASES, ids=str)
def test_expression_arithmetic_is_checked(case: str) -> None:
    text, path, message = EXPRESSION_CASES[case]
    with pytest.raises(SpecError) as info:
        archc.lower(archc.load_text(text, "t.yaml"))
    msg = one_line(str(info.value))
    assert msg.startswith("t.yaml:") and f": {path}: " in msg, msg
    assert message in msg, msg


def test_huge_values_from_a_dict_are_checked_too() -> None:
    # a dict is not read by the YAML reader, whose integers are bounded to 64 bits
    for value, message in ((10**400, f"'$n' {OUT_OF_RANGE}"), (float("nan"), f"'$n' {NAN}")):
        spec = {
            "name": "t",
            "input": {"size": 8},
            "blocks": {"b": {"params": {"n": value}, "layers": [{"op": "conv", "filters": "=$n * 1.5", "kernel": 1}]}},
            "layers": [{"block": "b"}],
        }
        with pytest.raises(SpecError) as info:
            archc.compile(spec)
        assert message in one_line(str(info.value))


TOKENS = [
    *("1", "0", "7", "2.5", "1e308", "1e999", "1e-320", "9223372036854775807", "9" * 40, "$in", "$nan", "$big"),
    *("$yes", "$same", "+", "-", "*", "/", "//", "%", "(", ")", "<", "==", "and", "or", "not", "if", "else"),
    *("true", "'a'", "min(", "max(", "int(", "round_channels(", "make_divisible(", ",", "٢"),
    *("ceil(", "floor(", "round_repeats("),
]  # fmt: skip


@pytest.mark.slow  # tests/language/test_expr.py checks the evaluator case by case in the fast tier
@settings(max_examples=3000)
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12), width=st.sampled_from([0.25, 4.0]))
def test_random_expressions_give_a_checked_value_or_an_expression_error(tokens: list[str], width: float) -> None:
    """Whatever the text, the evaluator gives a finite number, an int within 64 bits, a bool or a
    string, or an ExprError: never OverflowError, ValueError, ZeroDivisionError or a NaN."""
    from archcompiler.language.expr import Expr, ExprError
    from archcompiler.lowering.expand import functions
    from archcompiler.ops import LowerContext

    rounding = "make_divisible" if width > 1 else "truncate"
    ctx = LowerContext(width, rounding, 8, None, "same", False, "relu", 1e-3, 0.99, "biased")
    env = {"in": 3, "nan": math.nan, "big": 10**30, "yes": True, "same": "same"}
    try:
        value = Expr("=" + " ".join(tokens)).evaluate(env, functions(ctx))
    except ExprError:
        return
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, int):
        assert abs(value) < 2**63


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"op": "rescaling", "scale": 10**400}, "layers[0].scale: expected a number within float32 range"),
        (
            {"op": "rescaling", "scale": 1, "offset": -(10**400)},
            "layers[0].offset: expected a number within float32 range",
        ),
        ({"op": "dropout", "rate": 10**400}, "layers[0].rate: expected a rate from 0 up to (not including) 1"),
        ({"op": "activation", "repeat": 10**400}, "layers[0].repeat: the spec expands to more than 100,000 layers"),
    ],
)
def test_integers_beyond_float64_in_a_dict_are_refused(layer: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as info:  # an int of 400 digits cannot become a float: OverflowError before
        archc.compile({"name": "t", "input": {"size": 8}, "layers": [layer]})
    assert message in one_line(str(info.value))


@pytest.mark.parametrize("case", ["int(1e999)", "make_divisible(8, 400 digits)", "NaN parameter in int()"])
def test_expression_overflow_on_the_command_line(case: str, tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(EXPRESSION_CASES[case][0], encoding="utf-8")
    r = archc_cli("check", spec)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert one_line(r.stderr).startswith(f"{spec}:")


# --- the expansion limit counts iterations -----------------------------------------------

ITERATIONS = f"the spec expands to more than {MAX_ITERATIONS:,} repeat iterations"

EXPANSION_CASES: dict[str, tuple[str, str, str]] = {
    # case: (spec, where it is refused, message)
    "guarded-off layer repeated 10^9 times": (
        _spec("  - {op: activation, repeat: 1000000000, when: false}\n"),
        "layers[0].repeat",
        ITERATIONS,
    ),
    "guarded-off layer, expression guard": (
        _spec('  - {op: activation, repeat: 1000000000, when: "$index < 0"}\n'),
        "layers[0].repeat",
        ITERATIONS,
    ),
    "nested blocks whose layers are all guarded off": (
        _spec(
            "  - {block: outer, repeat: 1000}\n",
            blocks="  inner:\n    layers:\n      - {op: activation, when: false}\n"
            "  outer:\n    layers:\n      - {block: inner, repeat: 1000}\n",
        ),
        "layers[0].repeat",
        ITERATIONS,
    ),
    "block call repeated 10^9 times": (
        _spec("  - {block: b, repeat: 1000000000}\n", blocks=_block("{}", "{op: activation}")),
        "layers[0].repeat",
        ITERATIONS,
    ),
    "block instances of guarded-off repeats": (
        _spec("  - {block: b, repeat: 100000}\n", blocks=_block("{}", "{op: activation, repeat: 100000, when: false}")),
        "layers[0].repeat",
        ITERATIONS,
    ),
    "repeats from a parameter, counted once known": (
        _spec(
            "  - {block: b, n: 300000, repeat: 1000}\n",
            blocks=_block("{n: 1}", '{op: activation, repeat: $n, when: "$n < 0"}'),
        ),
        "blocks.b.layers[0].repeat",
        f"{ITERATIONS} (of layers and blocks, those 'when:' leaves out included; check 'repeat')"
        " (in block 'b' instance 1)",
    ),
    "layers, counted before the loop": (
        _spec("  - {op: activation, repeat: 100001}\n"),
        "layers[0].repeat",
        f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat')",
    ),
}


@pytest.mark.parametrize("case", EXPANSION_CASES, ids=str)
def test_expansion_counts_iterations_before_running_them(case: str) -> None:
    text, path, message = EXPANSION_CASES[case]
    loaded = archc.load_text(text, "t.yaml")
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        archc.lower(loaded)
    elapsed = time.perf_counter() - start
    msg = one_line(str(info.value))
    assert msg.startswith("t.yaml:") and f": {path}: " in msg and message in msg, msg
    assert elapsed < 0.5, f"{elapsed:.2f} s"  # refused before iterating (10 ms here), not after


@pytest.mark.slow
def test_iterations_within_the_limit_are_fine() -> None:
    # 1,000 instances x 100 guarded-off layers: 101,000 iterations, no layer
    text = _spec(
        "  - {block: b, repeat: 1000}\n", blocks=_block("{}", '{op: activation, repeat: 100, when: "$in < 0"}')
    )
    graph = archc.lower(archc.load_text(text, "t.yaml"))
    assert [n.name for n in graph.nodes] == ["input"]


def test_huge_guarded_off_repeat_on_the_command_line(tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(EXPANSION_CASES["guarded-off layer repeated 10^9 times"][0], encoding="utf-8")
    r = archc_cli("check", spec, timeout=30)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert one_line(r.stderr).startswith(f"{spec}:6:30: layers[0].repeat: {ITERATIONS}")


# --- block parameters named like a built-in ------------------------------------------------


@pytest.mark.parametrize("name", ["in", "in_h", "in_w", "block_in", "width", "depth", "classes", "index"])
def test_a_parameter_named_like_a_built_in_is_refused_at_its_definition(name: str) -> None:
    # before, 'block_in' was accepted and silently ignored ($block_in read the block's input)
    text = _spec("  - {block: b}\n", blocks=_block(f"{{{name}: 4}}", f"{{op: conv, filters: ${name}, kernel: 1}}"))
    with pytest.raises(SpecError) as info:
        archc.load_text(text, "t.yaml")
    assert one_line(str(info.value)) == (
        f"t.yaml:7:14: blocks.b.params.{name}: '{name}' is a built-in name (${name}), not a parameter name"
    )


# --- graphs deeper than a backend can walk ------------------------------------------------


def _chain(depth: int) -> dict[str, object]:
    return {"name": "chain", "input": {"size": 4, "channels": 2}, "layers": [{"op": "activation", "repeat": depth}]}


def test_depth_is_the_longest_path_from_the_input() -> None:
    text = _spec(
        "  - {op: conv, filters: 4, kernel: 1, name: a}\n"
        "  - {op: activation, name: b}\n"
        "  - {op: activation, name: c}\n"
        "  - {op: add, inputs: [a, c], name: d}\n"  # a skip: d is 4 deep through b and c
        "  - {op: global_avg_pool, name: e}\n"
    )
    assert archc.lower(archc.load_text(text, "t.yaml")).depth() == 5
    assert archc.compile(_chain(1200)).graph.depth() == 1200


def test_a_graph_deeper_than_the_limit_is_refused_where_it_gets_too_deep() -> None:
    assert archc.compile(_chain(MAX_GRAPH_DEPTH)).graph.depth() == MAX_GRAPH_DEPTH
    with pytest.raises(SpecError) as info:
        archc.compile(_chain(MAX_GRAPH_DEPTH + 1))
    assert one_line(str(info.value)) == (
        f"<dict>:1:1: layers[0]: activation_{MAX_GRAPH_DEPTH + 1}: the graph is more than {MAX_GRAPH_DEPTH:,} layers"
        " deep here (the longest path from the input; a limit: frameworks walk a graph recursively)"
    )


# --- memory: estimated before anything runs -----------------------------------------------

MOBILENET = ROOT / "specs" / "mobilenet.yaml"


def test_parity_refuses_a_batch_that_cannot_fit_before_building_anything() -> None:
    from archcompiler.kit.backend import MemoryLimitError

    net = archc.compile(MOBILENET, width=0.25, resolution=128)
    start = time.perf_counter()
    with pytest.raises(MemoryLimitError) as info:
        net.parity(("torch", "keras"), batch=999_999)  # no backend is built: the estimate comes first
    assert time.perf_counter() - start < 1.0
    msg = one_line(str(info.value))
    assert info.value.option == "batch"
    assert msg.startswith("parity of 'mobilenet_v1' in 2 backends (float32, batch 999,999) would hold about ")
    assert msg.endswith(
        "of tensors, more than the limit of 4 GiB (ARCHC_MAX_MEMORY changes it): lower the batch or the input size"
    )
    with pytest.raises(MemoryLimitError) as info:
        net.parity(("torch", "keras"), train_steps=999_999)
    assert info.value.option == "train_steps" and str(info.value).endswith("lower the training steps")


def test_the_memory_limit_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from archcompiler.kit.backend import BackendError, MemoryLimitError, memory_limit
    from archcompiler.parity.runs import check_parity_memory

    graph = archc.compile(MOBILENET, width=0.25, resolution=128).graph
    check_parity_memory(graph, 2, 2, "float32")  # the defaults fit
    for text, limit in (("512M", 512 << 20), ("16G", 16 << 30), ("1000", 1000), (" 2GiB ", 2 << 30)):
        monkeypatch.setenv("ARCHC_MAX_MEMORY", text)
        assert memory_limit() == limit
    monkeypatch.setenv("ARCHC_MAX_MEMORY", "1M")
    with pytest.raises(MemoryLimitError, match=r"more than the limit of 1 MiB \(ARCHC_MAX_MEMORY changes it\)"):
        check_parity_memory(graph, 2, 2, "float32")
    for bad in ("lots", "0", "-5G", "1.5G", "٤G"):
        monkeypatch.setenv("ARCHC_MAX_MEMORY", bad)
        with pytest.raises(BackendError, match=r"^ARCHC_MAX_MEMORY=.*: expected a size in bytes such as 8G"):
            memory_limit()


SQUARE_8192 = """\
archc: 1
name: big
input: {size: 8192, channels: 3}
layers:
  - {op: conv, filters: 1, kernel: 1}
"""


@pytest.mark.torch  # the parity command loads torch before it sizes the run
@pytest.mark.parametrize(
    ("spec", "args", "flag"),
    fast_first(
        [
            (MOBILENET, ["--batch", "999999"], "--batch"),
            (MOBILENET, ["--train-steps", "999999"], "--train-steps"),
            (None, ["--dtype", "float64"], "--batch"),  # 8192 x 8192 in float64, batch 2
        ]
    ),
    ids=["batch", "train-steps", "8192px-float64"],
)
def test_parity_over_the_memory_limit_on_the_command_line(
    spec: Path | None, args: list[str], flag: str, tmp_path: Path
) -> None:
    if spec is None:
        spec = tmp_path / "big.yaml"
        spec.write_text(SQUARE_8192, encoding="utf-8")
    r = archc_cli("parity", spec, *args, timeout=30)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    msg = one_line(r.stderr)
    assert msg.startswith(f"{spec}: {flag}: parity of ") and "(ARCHC_MAX_MEMORY changes it): lower the " in msg, msg


# --- the Python API: documented errors only -------------------------------------------------

DOCUMENTED = (SpecError, BackendError, WeightError, OutputError)


@pytest.fixture(scope="module")
def net() -> archc.Compiled:
    return archc.compile(MOBILENET, width=0.25, resolution=32)


API_CASES: dict[str, tuple[Callable[[archc.Compiled], object], type[Exception], str]] = {
    # the cases first: (call, documented error, its one-line message)
    "build(None)": (
        lambda n: n.build(None),  # type: ignore[arg-type]
        BackendError,
        "backend: expected a backend name such as 'torch' or a Backend, got NoneType None",
    ),
    "build(123)": (
        lambda n: n.build(123),  # type: ignore[arg-type]
        BackendError,
        "backend: expected a backend name such as 'torch' or a Backend, got int 123",
    ),
    "build(weights={'conv1.kernel': 'x'})": (
        lambda n: n.build("no_such_backend_either", weights={"conv1.kernel": "x"}),
        BackendError,  # the backend is looked up first
        "unknown backend 'no_such_backend_either'",
    ),
    "compile(resolution='224x0')": (
        lambda n: archc.compile(MOBILENET, resolution="224x0"),  # type: ignore[arg-type]
        SpecError,
        ": resolution: expected a multiplier, a size in pixels or (height, width) (got '224x0')",
    ),
    "compile(classes=-1)": (
        lambda n: archc.compile(MOBILENET, classes=-1),
        SpecError,
        f"{MOBILENET}: classes: expected a whole number from 0 to 65,536, got int -1",
    ),
    "compile(dropout=2.0)": (
        lambda n: archc.compile(MOBILENET, dropout=2.0),
        SpecError,
        f"{MOBILENET}: dropout: expected a finite number in [0, 1), got float 2.0",
    ),
    "compile(pooling='bogus')": (
        lambda n: archc.compile(MOBILENET, classes=0, pooling="bogus"),  # type: ignore[arg-type]
        SpecError,
        f"{MOBILENET}: pooling: expected one of 'avg', 'max', 'none', got 'bogus'",
    ),
    "fit(max_macs=-1)": (
        lambda n: archc.fit(MOBILENET, max_macs=-1),
        SpecError,
        f"{MOBILENET}: max_macs: expected a finite number >= 1, got int -1",
    ),
    "fit(max_macs=nan)": (
        lambda n: archc.fit(MOBILENET, max_macs=float("nan")),  # type: ignore[arg-type]
        SpecError,
        f"{MOBILENET}: max_macs: expected a finite number >= 1, got float nan",
    ),
    # and more of the same kind
    "compile(None)": (
        lambda n: archc.compile(None),  # type: ignore[arg-type]
        SpecError,
        "<arguments>: spec: expected a spec path, YAML text or a dict, got NoneType None",
    ),
    "compile(features='no')": (
        lambda n: archc.compile(MOBILENET, features="no"),  # type: ignore[arg-type]
        SpecError,
        f"{MOBILENET}: features: expected True or False, got 'no'",
    ),
    "compile(outputs=123)": (
        lambda n: archc.compile(MOBILENET, outputs=123),  # type: ignore[arg-type]
        SpecError,
        f"{MOBILENET}: outputs: expected a non-empty list of names, got int 123",
    ),
    "sweep(widths=0.5)": (
        lambda n: archc.sweep(MOBILENET, widths=0.5),  # type: ignore[arg-type]
        SpecError,
        f"{MOBILENET}: widths: expected a non-empty list of width multipliers, got float 0.5",
    ),
    "fit(widths=[])": (
        lambda n: archc.fit(MOBILENET, max_macs=10**8, widths=[]),
        SpecError,
        f"{MOBILENET}: widths: expected a non-empty list of width multipliers, got list []",
    ),
    "cost('bogus')": (
        lambda n: n.cost("bogus"),
        SpecError,
        f"{MOBILENET}: convention: expected one of 'paper', 'torch', 'keras', 'fvcore', got 'bogus'",
    ),
    "build_to(out_dir=123)": (
        lambda n: n.build_to("no_such_backend", 123),  # type: ignore[arg-type]
        BackendError,
        "unknown backend 'no_such_backend'",
    ),
    "latency(runs=0)": (
        lambda n: n.latency("onnx", runs=0),
        BackendError,
        "runs: expected a whole number from 1, got int 0",
    ),
    "parity('torch')": (
        lambda n: n.parity("torch"),  # type: ignore[arg-type]
        BackendError,
        "backends: expected a list of backend names such as ('torch', 'keras'), got 'torch'",
    ),
    "parity(seed=-1)": (
        lambda n: n.parity(("torch", "keras"), seed=-1),
        BackendError,
        "seed: expected a whole number from 0 to 4,294,967,295, got int -1",
    ),
    "parity(bogus=1)": (
        lambda n: n.parity(("torch", "keras"), bogus=1),
        BackendError,
        "parity() takes no argument 'bogus' (it takes atol, rtol, seed, batch, instances, dtype, train_steps, lr,"
        " optimize)",
    ),
    "generate_to(out_dir=None)": (
        lambda n: n.generate_to("no_such_backend", None),  # type: ignore[arg-type]
        BackendError,
        "unknown backend 'no_such_backend'",
    ),
}


@pytest.mark.parametrize("case", API_CASES, ids=str)
def test_the_api_raises_documented_errors(case: str, net: archc.Compiled) -> None:
    call, error, message = API_CASES[case]
    with pytest.raises(DOCUMENTED) as info:
        call(net)
    assert type(info.value) is error, repr(info.value)
    assert message in one_line(str(info.value)), str(info.value)


def test_weights_and_folders_are_checked_before_any_build(net: archc.Compiled, tmp_path: Path) -> None:
    class Unbuildable(Backend):  # a backend that fails the test if anything reaches it
        name = "unbuildable"
        handlers: ClassVar[dict[str, Any]] = {}

        def build(self, graph: archc.Graph) -> Any:
            raise AssertionError("built before its arguments were checked")

    b = Unbuildable()
    for call, error, message in [
        (lambda: net.build(b, weights={"conv1.kernel": "x"}), WeightError, "tensor 'conv1.kernel' is a str"),
        (lambda: net.build_to(b, tmp_path / "o", weights=tmp_path / "none.npz"), WeightError, "none.npz"),
        (lambda: net.build_to(b, tmp_path / "o", weights={"conv1.kernel": 1}), WeightError, "'conv1.kernel'"),
        (lambda: net.build(b, weights=123), WeightError, "weights: expected a weights file name or a mapping"),
        (lambda: net.build(b, optimize="yes"), BackendError, "optimize: expected True or False, got 'yes'"),
        (lambda: net.build_to(b, 123), OutputError, "out_dir: expected a folder name, got int 123"),
        (lambda: net.build_to(b, progress=1), BackendError, "progress: expected a function or None, got int 1"),
        (lambda: net.generate_to(b, None), OutputError, "out_dir: expected a folder name, got NoneType None"),
        (lambda: net.save(object(), b, 123), OutputError, "out_dir: expected a folder name, got int 123"),
    ]:
        with pytest.raises(error) as info:
            call()  # type: ignore[no-untyped-call]
        assert message in one_line(str(info.value)), str(info.value)
    with pytest.raises(WeightError, match=r"^weights: tensor 'conv1.kernel' is a str, not an array$"):
        net.load_weights(b, object(), {"conv1.kernel": "x"})


class Refusing(Backend):
    """A backend that refuses to build (so that random arguments after ``backend`` are reached)."""

    name = "refusing"
    handlers: ClassVar[dict[str, Any]] = {}

    def build(self, graph: archc.Graph) -> Any:
        raise BackendError("the refusing backend builds nothing")


# A pool of wrong (and a few right) values of every type; each API call below gets random ones.
JUNK = st.one_of(
    st.just(Refusing()),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "224x0", "٢", "nan", "avg", "softmax", "paper", "float64", "conv1", "\n", "x" * 300]),
    st.binary(max_size=4),
    st.lists(st.one_of(st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=3)), max_size=3),
    st.tuples(st.integers(-1, 9000), st.integers(-1, 9000)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
    st.just(print),  # a callable: a valid progress function, an invalid everything else
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_wrong_arguments_raise_only_documented_errors(
    data: st.DataObject, net: archc.Compiled, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random values for every argument of every public function: a result or a documented
    error, never AttributeError/TypeError/ValueError/KeyError/OverflowError (no backend here:
    names are drawn from the pool, which holds none; a run is stopped by the memory limit)."""
    monkeypatch.setenv("ARCHC_MAX_MEMORY", "1K")  # anything that would run is refused before it does
    out = tmp_path_factory.mktemp("api")
    j = data.draw
    calls: list[Callable[[], object]] = [
        lambda: archc.compile(
            MOBILENET,
            width=j(JUNK),
            resolution=j(JUNK),
            variant=j(JUNK),
            depth=j(JUNK),
            classes=j(JUNK),
            pooling=j(JUNK),
            classifier_activation=j(JUNK),
            dropout=j(JUNK),
            outputs=j(JUNK),
            features=j(JUNK),
            out_indices=j(JUNK),
        ),
        lambda: archc.compile(j(JUNK)),
        lambda: archc.sweep(
            MOBILENET,
            j(JUNK),
            j(JUNK),
            j(JUNK),
            runs=j(JUNK),
            head=j(JUNK),
            outputs=j(JUNK),
            progress=j(JUNK),
            variants=j(JUNK),
            depths=j(JUNK),
        ),
        lambda: archc.fit(
            MOBILENET,
            max_macs=j(JUNK),
            max_params=j(JUNK),
            widths=j(JUNK),
            resolutions=j(JUNK),
            convention=j(JUNK),
            search=j(JUNK),
            head=j(JUNK),
            outputs=j(JUNK),
            variants=j(JUNK),
            depths=j(JUNK),
        ),
        lambda: net.cost(j(JUNK)),
        lambda: net.build(j(JUNK), weights=j(JUNK), optimize=j(JUNK)),
        lambda: net.build_to(j(JUNK), out / "b", weights=j(JUNK), progress=j(JUNK), optimize=j(JUNK)),
        lambda: net.save(j(JUNK), j(JUNK), out / "s", optimized=j(JUNK)),
        lambda: net.generate(j(JUNK), optimize=j(JUNK)),
        lambda: net.generate_to(j(JUNK), out / "g", optimize=j(JUNK)),
        lambda: net.latency(j(JUNK), runs=j(JUNK), warmup=j(JUNK)),
        lambda: net.load_weights(j(JUNK), j(JUNK), j(JUNK)),
        lambda: net.read_weights(j(JUNK), j(JUNK)),
        lambda: net.parity(
            j(JUNK),
            seed=j(JUNK),
            batch=j(JUNK),
            dtype=j(JUNK),
            train_steps=j(JUNK),
            lr=j(JUNK),
            atol=j(JUNK),
            rtol=j(JUNK),
            optimize=j(JUNK),
        ),
        lambda: net.parity(["onnx", "torch"], batch=j(JUNK), train_steps=j(JUNK), dtype=j(JUNK)),
    ]
    call = data.draw(st.sampled_from(calls))
    try:
        call()
    except DOCUMENTED as exc:
        one_line(str(exc))
