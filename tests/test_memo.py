"""What lowering and loading remember between calls (pure functions of immutable inputs) never
changes an answer: a value that validated once does not let a look-alike through, and an error
is raised every time, not remembered away."""

from __future__ import annotations

import pytest

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.source import parse_text

LAYER = "archc: 1\nname: t\ninput: {{size: 8}}\nlayers:\n  - {{op: conv, filters: {filters}, kernel: 3}}\n"


@pytest.mark.parametrize("look_alike", ["true", "8.0", "'8'"])
def test_a_validated_layer_does_not_pass_a_look_alike(look_alike: str) -> None:
    # filters: 8 validates (and is remembered); true, 8.0 and '8' compare or hash equal to 8
    # or read like it, and the strict schema refuses each, every time
    archc.compile(LAYER.format(filters=8))
    for _ in range(2):
        with pytest.raises(SpecError, match="filters"):
            archc.compile(LAYER.format(filters=look_alike))
    assert archc.compile(LAYER.format(filters=8)).graph["conv_1"].filters == 8


def test_scalars_keep_their_types() -> None:
    for _ in range(2):
        data = parse_text("a: 1\nb: '1'\nc: 1.0\nd: true\ne: -0.0\nf: 0.0\ng: ~\n").data
        assert [type(v) for v in data.values()] == [int, str, float, bool, float, float, type(None)]
        assert str(data["e"]) == "-0.0" and str(data["f"]) == "0.0"


def test_expression_errors_repeat() -> None:
    text = LAYER.format(filters='"=8 +"')
    for _ in range(2):
        with pytest.raises(SpecError, match="filters"):
            archc.compile(text)


def test_name_errors_repeat() -> None:
    """A name made by filling a template reaches the remembered-good-names check (a name written
    as it is is refused earlier, by the schema): a good name remembered never lets a bad one by."""
    text = (
        "archc: 1\nname: t\ninput: {{size: 8}}\nblocks:\n  b:\n    params: {{p: x}}\n"
        "    layers:\n      - {{op: conv, filters: 8, kernel: 3, name: '{{p}}'}}\n"
        "layers:\n  - {{block: b, p: {p}}}\n"
    )
    for _ in range(2):
        assert "ok_name" in archc.compile(text.format(p="ok_name")).graph
        with pytest.raises(SpecError, match="keyword"):
            archc.compile(text.format(p="class"))
