"""The expression language (archcompiler/expr.py) and what it adds to specs: when: guards,
parameters on any field, blocks calling blocks, {param} names, $in evaluated while inferring."""

from __future__ import annotations

import pytest

import archcompiler as a
from archcompiler import SpecError
from archcompiler.language.expr import Expr, ExprError

# --- the language on its own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("=1 + 2 * 3", {}, 7),
        ("=(1 + 2) * 3", {}, 9),
        ("=7 // 2", {}, 3),
        ("=-7 // 2", {}, -4),  # floor division, as Python
        ("=7 / 2", {}, 3.5),
        ("=7 % 3", {}, 1),
        ("=2 - 3 - 4", {}, -5),  # left associative
        ("$in * $t", {"in": 16, "t": 6}, 96),
        ("=max(1280, 1280 * $w)", {"w": 1.4}, 1792.0),
        ("=min(3, 1, 2)", {}, 1),
        ("=int(16 * 0.35)", {}, 5),
        ("$s == 1 and $in == $out", {"s": 1, "in": 24, "out": 24}, True),
        ("$s == 1 and $in == $out", {"s": 2, "in": 24, "out": 24}, False),
        ("=not $a or $b", {"a": True, "b": False}, False),
        ("='same' if $s == 1 else 'valid'", {"s": 2}, "valid"),
        ("$k // 2 - 1 + $h % 2", {"k": 5, "h": 15}, 2),
        ("=1e-3 * 2", {}, 0.002),
    ],
)
def test_evaluates(text: str, env: dict[str, object], want: object) -> None:
    got = Expr(text).evaluate(env)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("text", "env", "message", "column"),
    [
        ("$exp * $in +", {}, "expected a value", 13),
        ("=(1 + 2", {}, "expected ')'", 8),
        ("$a = 1", {}, "unexpected character '='", 4),
        ("=1 < 2 < 3", {}, "cannot be chained", 8),
        ('=max("a", 1)', {}, "strings use single quotes", 6),
        ("=__import__('os')", {}, "unknown function '__import__'", 2),
        ("=max(1)", {}, "max() takes 2 to 16 arguments, got 1", 2),
        ("$a / ($b - 2)", {"a": 1, "b": 2}, "division by zero", 4),
        ("$a + $b", {"a": 1, "b": True}, "expected a number, got a boolean", 6),
        ("$a and 1", {"a": True}, "expected true or false, got a number", 8),
        ("$nope", {"nop": 1}, "unknown parameter '$nope' (did you mean 'nop'?)", 1),
        ("=1 == 'a'", {}, "cannot compare a number (1) with a string ('a')", 4),
    ],
)
def test_errors_name_the_column(text: str, env: dict[str, object], message: str, column: int) -> None:
    with pytest.raises(ExprError) as info:
        Expr(text).evaluate(env)
    assert message in info.value.message
    assert info.value.column == column


def test_limits() -> None:
    with pytest.raises(ExprError, match="longer than"):
        Expr("=" + "1+" * 300 + "1")
    with pytest.raises(ExprError, match="nested deeper"):
        Expr("=" + "(" * 60 + "1" + ")" * 60)
    with pytest.raises(ExprError, match=r"'\*' overflows: beyond the float range") as info:
        Expr("=1e308 * 10").evaluate({})
    assert info.value.column == 8


# --- in specs ------------------------------------------------------------------------------

RESIDUAL = """\
archc: 1
name: res
input: {size: 16, channels: 8}
rounding: {mode: make_divisible, divisor: 8}
defaults: {activation: relu6}
blocks:
  unit:
    params: {filters: null, stride: 1, act: relu, out: "round_channels($filters)", prefix: "u{index}"}
    layers:
      - {op: conv, filters: "$in * 2", scale_width: false, kernel: 1, name: "{prefix}_expand", when: "$in < 16"}
      - {op: activation, kind: $act, name: "{prefix}_act"}
      - {op: depthwise_conv, kernel: 3, stride: $stride, name: "{prefix}_dw"}
      - {op: conv, filters: $out, scale_width: false, kernel: 1, name: "{prefix}_project"}
      - {op: add, inputs: [_input, "{prefix}_project"], name: "{prefix}_add", when: "$stride == 1 and $in == $out"}
  pair:
    params: {filters: null}
    layers:
      - {block: unit, filters: $filters, stride: 2}
      - {block: unit, filters: $filters, act: hard_swish, repeat: "$filters // 16 - 1"}
layers:
  - {block: unit, filters: 8}
  - {block: pair, filters: 32}
  - {op: global_avg_pool, name: pool}
"""


def test_guards_parameters_and_nested_blocks() -> None:
    g = a.lower(a.load_text(RESIDUAL, "res.yaml"))
    names = [n.name for n in g.nodes]
    # u1: 8 -> 8 channels, stride 1: expand (8 < 16) and the residual exist
    assert names[:6] == ["input", "u1_expand", "u1_act", "u1_dw", "u1_project", "u1_add"]
    assert g["u1_add"].inputs == ("input", "u1_project")
    # u2 (stride 2, 8 -> 32): no residual; u3 (32 -> 32): no expand (32 >= 16), a residual
    assert "u2_add" not in names and "u3_expand" not in names
    assert g["u3_act"].inputs == ("u2_project",)  # the guarded-out expand does not break the chain
    assert g["u3_add"].inputs == ("u2_project", "u3_project")
    assert g["u2_act"].kind == "relu" and g["u3_act"].kind == "hard_swish"
    assert g["pool"].inputs == ("u3_add",)
    assert g.output_shape == (32,)


def test_width_reaches_expressions_and_guards() -> None:
    loaded = a.load_text(RESIDUAL, "res.yaml")
    g = a.lower(loaded, width=0.5)  # round_channels(32) = make_divisible(16) = 16
    assert g["u2_project"].filters == 16
    assert g["u2_expand"].filters == 16  # 8 < 16: expanded, 2 x 8 input channels
    assert "u3_expand" not in {n.name for n in g.nodes}  # 16 input channels: no expand
    assert g["u3_add"].inputs == ("u2_project", "u3_project")


def test_a_layer_may_read_a_guarded_out_layer() -> None:
    text = """\
archc: 1
name: t
input: {size: 8, channels: 3}
layers:
  - {op: conv, filters: 4, kernel: 1, name: a}
  - {op: conv, filters: 4, kernel: 1, name: b, when: "$in == 3"}
  - {op: activation, name: c, inputs: [b]}
"""
    g = a.lower(a.load_text(text, "t.yaml"))
    assert g["c"].inputs == ("a",)  # 'b' does not exist: reading it reads the layer before it


def test_repeat_zero_from_an_expression() -> None:
    text = RESIDUAL.replace("- {block: pair, filters: 32}", "- {block: pair, filters: 16}")
    g = a.lower(a.load_text(text, "t.yaml"))
    assert "u3_project" not in {n.name for n in g.nodes}  # 16 // 16 - 1 = 0 copies


def test_syntax_errors_are_found_at_load_time() -> None:
    text = RESIDUAL.replace('"$in * 2"', '"$in * * 2"')
    with pytest.raises(SpecError) as info:
        a.load_text(text, "t.yaml")
    assert str(info.value).startswith("t.yaml:10:29: blocks.unit.layers[0].filters: in '$in * * 2': expected a value")


def test_reserved_parameter_names() -> None:
    text = RESIDUAL.replace("params: {filters: null, stride: 1,", "params: {filters: null, width: 1, stride: 1,")
    with pytest.raises(SpecError, match="'width' is a built-in name"):
        a.load_text(text, "t.yaml")


def test_schema_documents_expressions() -> None:
    from archcompiler.language.spec import json_schema

    schema = json_schema()
    text = str(schema)
    assert "when" in text and "An expression" in text


SQUEEZE = """\
archc: 1
name: se
input: {size: 8, channels: 3}
blocks:
  squeeze_excite:
    params: {ratio: null}
    layers:
      - {op: global_avg_pool, keepdims: true, name: "se{index}_pool"}
      - {op: conv, filters: "max(1, int($in * $ratio))", scale_width: false, kernel: 1, name: "se{index}_squeeze"}
      - {op: conv, filters: $block_in, scale_width: false, kernel: 1, name: "se{index}_restore"}
      - {op: multiply, inputs: [_input, "se{index}_restore"], name: "se{index}_mul"}
  unit:
    params: {filters: null, se: 0}
    layers:
      - {op: conv, filters: $filters, kernel: 3, name: "conv{index}"}
      - {block: squeeze_excite, ratio: $se, when: "$se > 0"}
layers:
  - {block: unit, filters: 16, se: 0.25}
  - {block: unit, filters: 24}
  - {block: unit, filters: 32, se: 0.5}
"""


def test_block_in_and_shared_instance_numbers() -> None:
    g = a.lower(a.load_text(SQUEEZE, "se.yaml"))
    names = [n.name for n in g.nodes]
    # squeeze_excite inside 'unit' shares the unit's number; unit 2 has none (se: 0)
    assert names == [
        "input",
        *("conv1", "se1_pool", "se1_squeeze", "se1_restore", "se1_mul"),
        "conv2",
        *("conv3", "se3_pool", "se3_squeeze", "se3_restore", "se3_mul"),
    ]
    assert (g["se1_squeeze"].filters, g["se1_restore"].filters) == (4, 16)  # 16 * 0.25; $block_in = 16
    assert (g["se3_squeeze"].filters, g["se3_restore"].filters) == (16, 32)
    assert g["se1_mul"].inputs == ("conv1", "se1_restore")
    assert g["conv2"].inputs == ("se1_mul",)
