"""Lowering a variant: explicit values override it, the default variant applies, its graph
names keep file stems apart, and its own layer table is located in errors."""

from __future__ import annotations

import pytest
from helpers import FAMILY, family_units

import archcompiler as archc
from archcompiler import SpecError


def test_explicit_values_override_the_variant_and_the_default_variant_applies() -> None:
    g = archc.compile(FAMILY, variant="b", width=1.0, depth=1.0, resolution=24).graph
    assert (g["conv_1"].filters, family_units(g), g.resolution) == (8, 4, (24, 24))
    assert archc.compile(FAMILY, variant="b", resolution=0.5).graph.resolution == (10, 10)
    default = archc.compile(FAMILY + "variant: b\n").graph
    assert default.name == "fam_b" and family_units(default) == 5
    assert archc.compile(FAMILY).graph.name == "fam"  # no variant asked for, none by default


def test_two_variants_never_share_a_file_stem() -> None:
    stems = {archc.compile(FAMILY, variant=v).stem for v in "abc"}
    stems |= {archc.compile(FAMILY, variant="a", depth=d).stem for d in (1.1, 1.2)}
    assert len(stems) == 5
    assert archc.compile(FAMILY, variant="b").default_output_dir("torch").name.startswith("fam_b_2_20")


def test_an_error_in_a_variants_layers_points_at_them() -> None:
    text = FAMILY.replace('{block: unit, repeat: "=round_repeats(2)"}', "{block: unti}")
    with pytest.raises(SpecError, match="unknown block 'unti'") as info:
        archc.compile(text, variant="c")
    assert info.value.line == FAMILY.splitlines().index('      - {block: unit, repeat: "=round_repeats(2)"}') + 1
    archc.compile(text, variant="a")  # the other variants do not use that table
