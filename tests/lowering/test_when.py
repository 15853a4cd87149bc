"""A layer its ``when:`` leaves out can still be named (docs/spec.md, "when"): reading it reads
what would have flowed through it, its one input; naming one that reads several inputs is an
error at the layer that names it. The oracle is the same network written without the layer,
naming its input directly; a guard decided at expansion (block parameters) and one decided
from the input shape (``$in``) give the same graph."""

from __future__ import annotations

import pytest

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.tools.cli import main

HEAD = "archc: 1\nname: t\ninput: {size: 8, channels: 4}\nclasses: 10\n"

BLOCK = """blocks:
  b:
    params: {se: 0}
    layers:
      - {op: conv, filters: 4, kernel: 1, name: "b{index}_conv"}
      - {op: activation, kind: sigmoid, name: "b{index}_gate", when: "GUARD"}
      - {op: add, inputs: [_input, "b{index}_gate"], name: "b{index}_add"}
layers:
  - {block: b}
  - {block: b, se: 1}
"""

WRITTEN_OUT = """layers:
  - {op: conv, filters: 4, kernel: 1, name: b1_conv}
  - {op: add, inputs: [input, b1_conv], name: b1_add}
  - {op: conv, filters: 4, kernel: 1, name: b2_conv}
  - {op: activation, kind: sigmoid, name: b2_gate}
  - {op: add, inputs: [b1_add, b2_gate], name: b2_add}
"""


def wiring(text: str) -> list[tuple[str, str, tuple[str, ...], tuple[int, ...]]]:
    graph = archc.compile(text).graph
    return [(n.name, n.op, n.inputs, n.shape) for n in graph.nodes]


@pytest.mark.parametrize("guard", ["$se > 0", "$se > 0 and $in > 0"], ids=["at-expansion", "from-the-shape"])
def test_naming_a_left_out_layer_reads_its_input(guard: str) -> None:
    assert wiring(HEAD + BLOCK.replace("GUARD", guard)) == wiring(HEAD + WRITTEN_OUT)


def test_an_explicit_single_input_is_what_flows_through() -> None:
    """Left out, ``skip`` passes on what it reads (``a``), to a layer that names it and to the
    next layer alike; at the top level too."""
    text = HEAD + (
        "layers:\n"
        "  - {op: conv, filters: 4, kernel: 1, name: a}\n"
        "  - {op: conv, filters: 4, kernel: 1, name: b}\n"
        "  - {op: activation, inputs: [a], name: skip, when: false}\n"
        "  - {op: activation, name: after}\n"
        "  - {op: add, inputs: [skip, b], name: total}\n"
    )
    oracle = HEAD + (
        "layers:\n"
        "  - {op: conv, filters: 4, kernel: 1, name: a}\n"
        "  - {op: conv, filters: 4, kernel: 1, name: b}\n"
        "  - {op: activation, inputs: [a], name: after}\n"
        "  - {op: add, inputs: [a, b], name: total}\n"
    )
    assert wiring(text) == wiring(oracle)


@pytest.mark.parametrize("guard", ["false", "$in < 0"], ids=["at-expansion", "from-the-shape"])
def test_naming_a_left_out_layer_of_several_inputs_is_an_error(guard: str) -> None:
    text = HEAD + (
        "layers:\n"
        "  - {op: conv, filters: 4, kernel: 1, name: a}\n"
        "  - {op: conv, filters: 4, kernel: 1, name: b}\n"
        f"  - {{op: add, inputs: [a, b], name: both, when: '{guard}'}}\n"
        "  - {op: activation, name: next}\n"
        "  - {op: multiply, inputs: [both, a], name: product}\n"
    )
    message = r"product: reads 'both', which its when: leaves out here; it reads 2 inputs, so no one value"
    with pytest.raises(SpecError, match=message) as e:
        archc.compile(text)
    assert e.value.line == 10  # the layer that names it
    # the chain goes on from the layer before it, as before: without the naming layer it compiles
    graph = archc.compile(text.rsplit("  - {op: multiply", 1)[0]).graph
    assert graph["next"].inputs == ("b",)


def test_a_block_reads_a_left_out_residual_as_its_input() -> None:
    """A block's ``_input`` is the chain's value: after a left-out residual add, the layer
    before it (EfficientNet's stride-2 blocks)."""
    text = HEAD + (
        "blocks:\n  b:\n    params: {res: false}\n    layers:\n"
        '      - {op: conv, filters: 4, kernel: 1, name: "b{index}_conv"}\n'
        '      - {op: add, inputs: [_input, "b{index}_conv"], name: "b{index}_add", when: $res}\n'
        "layers:\n  - {block: b}\n  - {block: b, res: true}\n"
    )
    assert archc.compile(text).graph["b2_add"].inputs == ("b1_conv", "b2_conv")


@pytest.mark.parametrize("order", ["taken-first", "taken-last"])
def test_alternatives_of_one_name(order: str) -> None:
    """Two layers of one name, one left out: the one made is what the name reads."""
    relu = "  - {op: activation, kind: relu, name: act, when: true}\n"
    swish = "  - {op: activation, kind: hard_swish, inputs: [c], name: act, when: false}\n"
    pair = relu + swish if order == "taken-first" else swish + relu
    text = HEAD + (
        "layers:\n  - {op: conv, filters: 4, kernel: 1, name: c}\n"
        + pair
        + "  - {op: add, inputs: [act, c], name: total}\n"
    )
    graph = archc.compile(text).graph
    assert graph["act"].kind == "relu" and graph["total"].inputs == ("act", "c")


def test_the_command_line_reports_it_on_one_line(tmp_path, capsys) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        HEAD
        + "layers:\n  - {op: conv, filters: 4, kernel: 1, name: a}\n"
        + "  - {op: add, inputs: [a, input], name: both, when: false}\n"
        + "  - {op: activation, inputs: [both], name: act}\n",
        encoding="utf-8",
    )
    assert main(["check", str(spec)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{spec}:8:" in lines[0] and "act: reads 'both'" in lines[0], lines
