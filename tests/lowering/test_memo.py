"""What lowering and loading remember between calls (pure functions of immutable inputs) never
changes an answer: a value that validated once does not let a look-alike through, and an error
is raised every time, not remembered away."""

from __future__ import annotations

from pathlib import Path

import pytest

import archcompiler as archc
from archcompiler import SpecError
from archcompiler.language.source import parse_text
from archcompiler.lowering import infer

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


def _made(graph: archc.ir.Graph) -> list[tuple[str, object, dict[str, tuple[type, object]]]]:
    """Every node's type, span and fields with their types (1 and 1.0 are told apart)."""
    return [(repr(n), n.span, {k: (type(v), v) for k, v in vars(n).items()}) for n in graph.nodes]


@pytest.mark.parametrize("spec", sorted((Path(__file__).parents[2] / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_remembered_nodes_are_the_nodes_made_afresh(spec: Path) -> None:
    # lowering copies a node made from the same layer under the same context on the same input
    # shapes, in this lowering or an earlier one (infer._NODES): the copies are what making
    # each node afresh gives, at every width and resolution, whatever was lowered before
    settings = [(1.0, 1.0), (0.5, 160), (0.75, 1.0), (1.0, 1.0)]
    remembered = [_made(archc.compile(spec, width=w, resolution=r).graph) for w, r in settings]
    afresh = []
    for w, r in settings:
        infer._NODES.clear()
        afresh.append(_made(archc.compile(spec, width=w, resolution=r).graph))
    assert remembered == afresh


def test_equal_context_values_of_other_types_are_not_confused() -> None:
    # epsilon: 1 and epsilon: 1.0 compare and hash equal; each lowers as it does afresh
    text = (
        "archc: 1\nname: t\ninput: {{size: 8}}\ndefaults: {{batchnorm: {{epsilon: {eps}}}}}\n"
        "layers:\n  - {{op: batchnorm}}\n"
    )
    for eps in ("1", "1.0", "1", "1.0"):
        made = _made(archc.compile(text.format(eps=eps)).graph)
        infer._NODES.clear()
        assert made == _made(archc.compile(text.format(eps=eps)).graph)


def test_a_parameter_value_validated_once_does_not_pass_a_look_alike() -> None:
    # a layer filled from block parameters is validated once per distinct (type, value)s in a
    # lowering: 1 passes; True (== 1) is refused every time; 1.0 is made whole (as ever)
    text = (
        "archc: 1\nname: t\ninput: {{size: 8}}\nblocks:\n  b:\n    params: {{f: null}}\n"
        "    layers:\n      - {{op: conv, filters: $f, kernel: 1}}\n"
        "layers:\n  - {{block: b, f: 1}}\n  - {{block: b, f: {f}}}\n"
    )
    for _ in range(2):
        assert archc.compile(text.format(f=1)).graph.output_shape == (8, 8, 1)
        with pytest.raises(SpecError, match=r"expected a positive integer \(got True\) \(from \$f"):
            archc.compile(text.format(f="true"))
        assert [type(n.filters) for n in archc.compile(text.format(f="1.0")).graph.nodes[1:]] == [int, int]
