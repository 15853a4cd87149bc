"""Expansion (lowering stage 1) holds spec values to the strict schema: a value that compares or
hashes equal to a good one (``True == 1``, ``8.0 == 8``) or reads like it (``'8'``) is refused
wherever it is written, as it is or through a block parameter, and a name made from a template
is checked as a name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import archcompiler as archc
from archcompiler import SpecError

LAYER = "archc: 1\nname: t\ninput: {{size: 8}}\nlayers:\n  - {{op: conv, filters: {filters}, kernel: 3}}\n"


@pytest.mark.parametrize("look_alike", ["true", "8.0", "'8'"])
def test_a_look_alike_of_a_good_value_is_refused(look_alike: str) -> None:
    assert archc.compile(LAYER.format(filters=8)).graph["conv_1"].filters == 8
    with pytest.raises(SpecError, match="filters"):
        archc.compile(LAYER.format(filters=look_alike))


def test_a_name_made_from_a_template_is_checked() -> None:
    """A name written as it is is refused by the schema; one made by filling a template is
    checked when it is made."""
    text = (
        "archc: 1\nname: t\ninput: {{size: 8}}\nblocks:\n  b:\n    params: {{p: x}}\n"
        "    layers:\n      - {{op: conv, filters: 8, kernel: 3, name: '{{p}}'}}\n"
        "layers:\n  - {{block: b, p: {p}}}\n"
    )
    assert "ok_name" in archc.compile(text.format(p="ok_name")).graph
    with pytest.raises(SpecError, match="keyword"):
        archc.compile(text.format(p="class"))


def test_a_parameter_value_is_held_to_the_field_it_fills() -> None:
    # 1 passes; True (== 1) is refused at the argument that passed it; 1.0 is made whole
    text = (
        "archc: 1\nname: t\ninput: {{size: 8}}\nblocks:\n  b:\n    params: {{f: null}}\n"
        "    layers:\n      - {{op: conv, filters: $f, kernel: 1}}\n"
        "layers:\n  - {{block: b, f: 1}}\n  - {{block: b, f: {f}}}\n"
    )
    assert archc.compile(text.format(f=1)).graph.output_shape == (8, 8, 1)
    with pytest.raises(SpecError, match=r"expected a positive integer \(got True\) \(from \$f"):
        archc.compile(text.format(f="true"))
    assert [type(n.filters) for n in archc.compile(text.format(f="1.0")).graph.nodes[1:]] == [int, int]


def test_of_two_bad_fields_the_same_is_reported_in_every_process() -> None:
    """The fields of a layer are filled in the model's order, not a set's, whose order changes
    with the interpreter's string hashing (PYTHONHASHSEED)."""
    text = (
        "archc: 1\nname: t\ninput: {size: 8}\nblocks:\n  b:\n    params: {f: 8}\n"
        "    layers:\n      - {op: conv, filters: '=$f / 0', kernel: '=$f / 0', stride: '=$f / 0'}\n"
        "layers:\n  - {block: b}\n"
    )
    probe = "import sys, archcompiler as a\ntry:\n    a.compile(sys.argv[1])\nexcept a.SpecError as e:\n    print(e)"
    messages = set()
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", probe, text], capture_output=True, text=True, env=env, check=True)
        messages.add(proc.stdout.strip())
    assert len(messages) == 1 and "division by zero" in messages.pop()
