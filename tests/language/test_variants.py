"""Compound scaling in the language: the depth multiplier (``depth:``, ``$depth``,
``round_repeats``), ``ceil``/``floor``, spec-level ``params:`` and named ``variants:``.

Oracle: hand arithmetic on small specs (EfficientNet's rule ``ceil(depth * n)``: at depth 1.1,
3 repeats become ceil(3.3) = 4), never the code's own output."""

from __future__ import annotations

import pytest
from helpers import FAMILY, family_units

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.language.expr import Expr
from archcompiler.lowering.expand import round_repeats


def test_round_repeats_by_hand() -> None:
    assert round_repeats(3, 1.1) == 4  # ceil(3.3)
    assert round_repeats(2, 1.1) == 3  # ceil(2.2)
    assert round_repeats(4, 3.1) == 13  # EfficientNet-B7's stage 6: ceil(12.4)
    assert round_repeats(1, 0.1) == 1  # at least 1 for n >= 1
    assert round_repeats(1, 0.4, "round") == 1 and round_repeats(3, 0.2, "floor") == 1  # round(0.4), floor(0.6)
    assert round_repeats(0, 2.0) == 0
    assert round_repeats(3, 1.5, "round") == 4  # round(4.5) is 4 (half to even)
    assert round_repeats(3, 1.5, "floor") == 4 and round_repeats(3, 1.2, "floor") == 3


def test_ceil_and_floor_are_checked_like_the_other_functions() -> None:
    assert Expr("=ceil(3.3) + floor(3.7)").evaluate({}) == 7
    assert Expr("=ceil(-0.5)").evaluate({}) == 0 and Expr("=floor(-0.5)").evaluate({}) == -1
    with pytest.raises(ValueError, match=r"ceil\(\) is out of range"):
        Expr("=ceil(1e300)").evaluate({})


def test_depth_scales_repeats_and_reaches_expressions() -> None:
    plain = FAMILY.split("variants:")[0] + FAMILY.split("      - {op: dense, units: $classes}\n", 1)[1]
    assert family_units(archc.compile(plain).graph) == 3 + 1
    assert family_units(archc.compile(plain, depth=1.1).graph) == 4 + 1  # ceil(3.3)
    assert family_units(archc.compile(plain, depth=0.2).graph) == 1 + 1  # ceil(0.6), the fixed stage stays 1
    text = plain.replace("kernel: 3}", "kernel: 3, repeat: '=floor($depth * 2)'}", 1)
    g = archc.compile(text, depth=1.6).graph
    assert g.depth_multiplier == 1.6 and sum(1 for n in g if n.name.startswith("conv_")) == 3  # floor(3.2)


def test_a_variant_sets_width_depth_size_params_and_layers() -> None:
    a, b, c = (archc.compile(FAMILY, variant=v).graph for v in "abc")
    assert (a.name, a.variant, a.resolution, family_units(a)) == ("fam_a", "a", (16, 16), 4)
    # b: depth 1.1 -> ceil(3.3) + 1 units, width 2 doubles the stem, drop rate from the variant
    assert (b.name, b.resolution, family_units(b), b["conv_1"].filters) == ("fam_b", (20, 20), 5, 16)
    assert {n.rate for n in b if n.op == "dropout"} == {0.5}
    assert {n.rate for n in a if n.op == "dropout"} == {0.2}
    # c: its own table (a max pool), depth 2 -> round_repeats(2) = 4 units
    assert (
        (family_units(c), c.depth_multiplier) == (4, 2.0) and "global_max_pool_1" in c and "global_avg_pool_1" not in c
    )


def test_a_list_of_variants_where_one_is_taken_says_where_lists_go() -> None:
    with pytest.raises(SpecError) as info:
        archc.compile(FAMILY, variant="a, b")
    assert "'archc fit' and 'archc sweep'" in info.value.message
    with pytest.raises(SpecError) as info:  # a list with an unknown name is an unknown variant
        archc.compile(FAMILY, variant="a,zz")
    assert "fit" not in info.value.message and "variants: a, b, c" in info.value.message


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            ("variants:", "variant: bb\nvariants:"),
            "variant",
            "unknown variant 'bb' (did you mean 'b'?); variants: a, b, c",
        ),
        (("b: {width", "b: {colour: 1, width"), "variants.b.colour", "unknown key 'colour'"),
        (("params: {drop_rate: 0.5}", "params: {drop: 0.5}"), "variants.b.params.drop", "unknown param 'drop'"),
        (("params: {drop_rate: 0.2,", "params: {width: 2, drop_rate: 0.2,"), "params.width", "built-in name"),
        (("depth: 2.0", "depth: 9"), "variants.c.depth", "at most 8"),
        (("classes: 10", "classes: 10\ndepth: 0"), "depth", "greater than 0"),
        (("classes: 10", "classes: 10\ndepth_rounding: up"), "depth_rounding", "'ceil', 'round' or 'floor'"),
    ],
)
def test_bad_tables_are_located_one_line_errors(change: tuple[str, str], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        archc.compile(FAMILY.replace(*change, 1))
    assert info.value.path == path and message in info.value.message and info.value.line is not None
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "path", "message"),
    [
        ({"variant": "b9"}, "variant", "unknown variant 'b9'"),
        ({"depth": 0}, "depth", "expected a depth multiplier in (0, 8]"),
        ({"depth": 8.5}, "depth", "(got 8.5)"),
        ({"depth": True}, "depth", "(got True)"),
    ],
)
def test_bad_arguments_are_located_one_line_errors(kwargs: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        archc.compile(FAMILY, **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path and message in str(info.value)


def test_no_variants_says_so_and_round_repeats_refuses_a_negative_count() -> None:
    with pytest.raises(SpecError, match="the spec defines no variants"):
        archc.compile(FAMILY.split("variants:")[0] + "layers:\n  - {op: conv, filters: 8, kernel: 3}\n", variant="a")
    with pytest.raises(SpecError, match="round_repeats: expected a repeat count of 0 or more"):
        archc.compile(FAMILY.replace("round_repeats(3)", "round_repeats(0 - 3)"))
