"""The op registry and the IR's self-check: one definition per op, every graph validated.

Expected values are hand arithmetic on the paper's formulas (docs/NUMBERS.md), not the
code's own output.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import get_args

import pytest

import archcompiler as a
from archcompiler import ir, ops, weights
from archcompiler.language.fields import LayerBase
from archcompiler.lowering.expand import expand


def graph(*nodes: ir.Node, size: int = 8, channels: int = 3) -> ir.Graph:
    first = ir.Input(name="x", inputs=(), shape=(size, size, channels))
    return ir.Graph(name="g", nodes=(first, *nodes), outputs=(nodes[-1].name,), width=1.0, resolution=(size, size))


def conv(**kw: object) -> ir.Conv2D:
    args: dict[str, object] = dict(
        name="c", inputs=("x",), shape=(4, 4, 16), in_channels=3, filters=16, kernel=(3, 3), stride=(2, 2)
    )
    args["padding"] = (0, 1, 0, 1)  # TF SAME for 8 -> 4 with a 3x3 kernel, stride 2: extra pixel after
    args.update(kw)
    return ir.Conv2D(**args)  # type: ignore[arg-type]


def test_hand_built_graph_is_checked_on_construction() -> None:
    assert graph(conv()).output_shape == (4, 4, 16)
    wrong = r"node 'c' \(conv2d\): shape \(5, 5, 16\), but its inputs give \(4, 4, 16\)"
    with pytest.raises(ir.GraphError, match=wrong):
        graph(conv(shape=(5, 5, 16)))
    with pytest.raises(ir.GraphError, match=r"node 'c'.*3 input channels, got 4"):
        graph(conv(), channels=4)
    with pytest.raises(ir.GraphError, match=r"node 'c'.*'y', which is not an earlier node"):
        graph(conv(inputs=("y",)))
    with pytest.raises(ir.GraphError, match=r"node 'c'.*reads exactly one input"):
        graph(conv(inputs=("x", "x")))
    with pytest.raises(ir.GraphError, match="node 'x': duplicate name"):
        graph(conv(name="x"))


SPECS = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))


def test_graphs_made_from_a_lowered_one_are_checked() -> None:
    # a node with a wrong shape is refused in any graph made from a lowered one
    g = a.compile(SPECS[0]).graph
    k = next(i for i, n in enumerate(g.nodes) if isinstance(n, ir.Conv2D) and i > 1)
    bad = dataclasses.replace(g.nodes[k], shape=(1, 1, 1))
    nodes = (*g.nodes[:k], bad, *g.nodes[k + 1 :])
    wrong = rf"node {bad.name!r} \(conv2d\): shape \(1, 1, 1\), but its inputs give"
    with pytest.raises(ir.GraphError, match=wrong):
        dataclasses.replace(g, nodes=nodes)
    with pytest.raises(ir.GraphError, match=wrong):
        ir.Graph(name="g", nodes=nodes, outputs=g.outputs, width=1.0, resolution=(224, 224))


def test_merge_ops_check_their_inputs() -> None:
    relu = ir.Activation(name="r", inputs=("x",), shape=(8, 8, 3), kind="relu")
    with pytest.raises(ir.GraphError, match="add needs at least two inputs"):
        graph(relu, ir.Add(name="s", inputs=("r",), shape=(8, 8, 3)))
    gate = ir.GlobalPool(name="p", inputs=("r",), shape=(1, 1, 3), kind="avg", keepdims=True)
    se = ir.Multiply(name="m", inputs=("r", "p"), shape=(8, 8, 3))
    assert graph(relu, gate, se).output_shape == (8, 8, 3)


def defined_in_op_modules(base: type) -> list[type]:
    """The subclasses of ``base`` that the modules of archcompiler/ops/ define, found by reading
    the modules, not the registry built from them."""
    found: list[type] = []
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"{ops.__name__}.{info.name}")
        found += [
            c
            for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, base) and c is not base and c.__module__ == module.__name__
        ]
    return found


def test_every_op_is_defined_once_and_reachable_from_the_spec_language() -> None:
    defined = defined_in_op_modules(ir.Node)
    assert sorted(t.__name__ for t in defined) == sorted(t.__name__ for t in ops.NODE_TYPES)  # none left out
    assert len({t.op for t in defined}) == len(defined)  # one class per op name
    for node_type in defined:
        if node_type is not ir.Input:
            assert node_type.spec_layers, f"{node_type.op} cannot be written in a spec"
    for layer in defined_in_op_modules(LayerBase):
        tags = get_args(layer.model_fields["op"].annotation) if "op" in layer.model_fields else ()
        assert tags, f"{layer.__name__} has no op tag"
        assert any(layer in t.spec_layers for t in defined), f"{layer.__name__} lowers to no IR op"
        for tag in tags:  # the spec language knows the tag: an unknown key is the only complaint
            text = f"archc: 1\nname: t\ninput: {{size: 8}}\nlayers:\n  - {{op: {tag}, zzz: 1}}\n"
            with pytest.raises(a.SpecError, match=r"layers\[0\]\.zzz: unknown key 'zzz'$"):
                a.load_text(text)


def test_separable_layer_cost_is_the_papers_formula() -> None:
    """D_K·D_K·M·D_F·D_F + M·N·D_F·D_F for one separable layer (Howard et al. 2017, eq. 5)."""
    net = a.compile("specs/mobilenet.yaml", width=0.5, resolution=160)
    dk, df = 3, 80  # conv_dw_1 / conv_pw_1 at 160 px run on 80x80 maps (after the stride-2 stem)
    m, n = int(32 * 0.5), int(64 * 0.5)  # alpha M, alpha N
    expected = dk * dk * m * df * df + m * n * df * df
    report = net.cost("paper")
    assert report.node("conv_dw_1").macs + report.node("conv_pw_1").macs == expected


def test_weights_come_from_the_ops_in_keras_order() -> None:
    """Canonical names and order are Keras' variable order (kernel, bias; gamma, beta, mean, var)."""
    g = a.compile("specs/mobilenet_keras.yaml", width=0.25, resolution=128).graph
    specs = list(weights.specs(g).values())
    assert [t.name for t in specs[:5]] == [
        "conv1.kernel",
        "conv1_bn.gamma",
        "conv1_bn.beta",
        "conv1_bn.moving_mean",
        "conv1_bn.moving_variance",
    ]
    assert specs[0].shape == (3, 3, 3, 8) and specs[0].layout == "conv_kernel"  # int(32 * 0.25) filters
    dw = weights.specs(g)["conv_dw_1.kernel"]
    assert dw.shape == (3, 3, 8, 1) and dw.layout == "depthwise_kernel" and dw.fan_in == 9
    assert not weights.specs(g)["conv1_bn.moving_mean"].trainable


def test_lowering_is_two_stages() -> None:
    loaded = a.load("specs/mobilenet.yaml")
    entries = expand(loaded)
    # stem (3) + 13 separable blocks x 6 layers + pool, fc, softmax; no shapes known yet
    assert len(entries) == 3 + 13 * 6 + 3
    assert [e.name for e in entries[3:9]] == [
        "conv_dw_1",
        "conv_dw_1_bn",
        "conv_dw_1_relu",
        "conv_pw_1",
        "conv_pw_1_bn",
        "conv_pw_1_relu",
    ]
    g = a.lower(loaded)
    assert len(g) == len(entries) + 1  # plus the input node


def test_ir_nodes_are_frozen_and_comparable() -> None:
    c = conv()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.filters = 3  # type: ignore[misc]
    assert c == conv()


def test_layers_after_an_earlier_output_are_left_out() -> None:
    """``output:`` naming an earlier layer: the graph ends there, so costs count only the live
    part and every backend builds the same thing (torch used to build the dead layers too)."""
    text = (
        "archc: 1\nname: early\ninput: {size: 16}\noutput: feat\nlayers:\n"
        "  - {op: conv, filters: 8, kernel: 3, name: feat}\n"
        "  - {op: global_avg_pool}\n"
        "  - {op: dense, units: 10}\n"
    )
    g = a.compile(a.load_text(text)).graph
    assert [n.name for n in g] == ["input", "feat"]
    assert a.cost(g, "paper").params == 3 * 3 * 3 * 8  # the conv's kernel only, no dense layer
