"""Every op and every activation kind against every framework-free consumer: the spec language,
lowering, cost, weights, parity's bound and the Keras emitter (the four backends and the torch
emitter: tests/backends/test_every_op_in_every_backend.py). An op or kind without an entry
fails here, or earlier: at import (archcompiler.ops.registry.check_definition,
ops.activation.KIND_BOUNDS).

Expected values are hand arithmetic and numpy formulas, not the code's own output.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest

import archcompiler as a
from archcompiler import ir, ops, weights
from archcompiler.analysis.cost import cost
from archcompiler.language.fields import LayerBase
from archcompiler.ops.activation import KIND_BOUNDS
from archcompiler.parity.inference import node_bound

ROOT = Path(__file__).resolve().parents[2]
EVERY_OP = ROOT / "tests/specs/every_op.yaml"


@pytest.fixture(scope="module")
def graph() -> ir.Graph:
    return a.lower(a.load(EVERY_OP))


def test_the_every_op_spec_uses_every_op_tag_and_kind(graph: ir.Graph) -> None:
    # a new op, spec tag or activation kind must be added to tests/specs/every_op.yaml, and so
    # reaches every consumer tested here and in tests/backends/test_every_op_in_every_backend.py
    assert {n.op for n in graph.nodes} == ops.IR_OPS
    kinds = {n.kind for n in graph.nodes if isinstance(n, ir.Activation)}
    assert kinds == set(typing.get_args(ir.ActivationKind)) == set(KIND_BOUNDS)
    tags = {layer.op for layer in a.load(EVERY_OP).spec.layers}
    assert tags == set(ops.SPEC_OPS)


def test_costs_of_every_op_are_the_hand_counts(graph: ir.Graph) -> None:
    # by hand from tests/specs/every_op.yaml (12x12x3 input):
    # stem 3x3x3x8 (+8 bias) at 6x6; dw 3x3x8x2 at 5x5; pw 1x1x(16/2)x8 at 5x5; side_pw 1x1x16x8
    # at 5x5; fc_flat 256x6 (+6); fc 22x5 (+5); stem_bn 8 and dw_bn 16 channels; side_scale 8
    # gammas (trainable, like BatchNorm's gamma: not in the paper's count); no MACs of gelu,
    # layer_scale or drop_path under any convention; norm's mean and variance (3 each) are
    # non-trainable (keras only), and Keras' count_params() counts its scalar count as 1
    # attn (mobile_mqa on 5x5x8, 2 heads, key_dim 4, value_dim 3, kv_stride 2: 3x3 keys): query
    # 8x(2*4), key 8x4, value 8x3, output (2*3)x8 and two 3x3 depthwise down convs of 8 channels
    # with a BatchNorm each; MACs: 25 positions x (64 + 48), 9 key/value positions x (32 + 24 +
    # 2 * 72), and the two attention products 2 heads x 25 x 9 x (4 + 3)
    attn_weights, attn_macs = 64 + 32 + 24 + 48 + 2 * 72, 25 * (64 + 48) + 9 * (32 + 24 + 144) + 2 * 25 * 9 * 7
    weights_only = 216 + 144 + 64 + 128 + 1536 + 110 + attn_weights
    biases = 8 + 6 + 5
    bn_affine, bn_stats, layer_scale = 2 * 8 + 2 * 16 + 2 * 2 * 8, 2 * 8 + 2 * 16 + 2 * 2 * 8, 8
    macs = 216 * 36 + 144 * 25 + 64 * 25 + 128 * 25 + 1536 + 110 + attn_macs
    paper, keras = cost(graph, "paper"), cost(graph, "keras")
    assert (paper.params, paper.macs) == (weights_only, macs)
    norm = 3 + 3 + 1
    assert (keras.trainable, keras.non_trainable) == (weights_only + biases + bn_affine + layer_scale, bn_stats + norm)
    assert cost(graph, "torch").params == weights_only + biases + bn_affine + layer_scale
    # fvcore adds BatchNorm's two operations per element and one per pooled input element
    pooled = 5 * 5 * 8 + 5 * 5 * 16 + 5 * 5 * 16 + 2 * 2 * 16  # inputs of squeeze, maxpool, avgpool, gmax
    attn_bn = 2 * 3 * 3 * 8  # attn's two BatchNorms over its 3x3x8 keys and values
    assert cost(graph, "fvcore").macs == macs + 2 * (6 * 6 * 8 + 5 * 5 * 16 + attn_bn) + pooled


def test_every_op_costs_the_tensors_it_holds(graph: ir.Graph) -> None:
    # an op's cost() and its weights() are two statements of one fact: they must agree
    for node in graph.nodes:
        raw = node.cost(graph.input_shapes(node))
        held = sum(math.prod(w.shape) for w in node.weights())
        assert raw.weights + raw.bias + raw.bn_affine + raw.bn_stats == held, node.name


def test_every_op_has_canonical_weights_in_both_initialisations(graph: ir.Graph) -> None:
    specs = weights.specs(graph)
    for made in (weights.init(graph, 0), weights.training_init(graph, 0)):
        assert set(made) == set(specs)
        for name, arr in made.items():
            assert arr.shape == specs[name].shape and np.isfinite(arr).all(), name


def _reference(graph: ir.Graph) -> dict[str, np.ndarray]:
    """Values of the right shapes for every node (a bound reads magnitudes and shapes)."""
    rng = np.random.default_rng(0)
    return {n.name: rng.normal(size=(2, *n.shape)) for n in graph.nodes}


def test_every_op_states_a_parity_bound(graph: ir.Graph) -> None:
    w, x64 = weights.init(graph, 0), _reference(graph)
    for node in graph.nodes:
        bound = node_bound(node, w, x64)
        assert len(bound.lipschitz) == len(node.inputs), node.name
        assert all(math.isfinite(v) and v >= 0 for v in (*bound.lipschitz, bound.constant)), node.name
        assert bound.reductions >= 0, node.name
        assert bound.rounding is None or (math.isfinite(bound.rounding) and bound.rounding > 0), node.name


def test_linear_ops_bounds_are_their_max_norm_operator_norms(graph: ir.Graph) -> None:
    # the max-norm Lipschitz constant of x -> x @ K is the largest column sum of |K| (the
    # infinity norm of K^T); of BatchNorm at inference, max |gamma| / sqrt(var + eps)
    w, x64 = weights.init(graph, 0), _reference(graph)
    fc = graph["fc_flat"]
    kernel = np.asarray(w["fc_flat.kernel"], np.float64)
    worst = int(np.argmax(np.abs(kernel).sum(axis=0)))
    x, step = np.zeros(kernel.shape[0]), 1e-3 * np.sign(kernel[:, worst])
    gain = float(np.abs((x + step) @ kernel - x @ kernel).max() / 1e-3)
    assert node_bound(fc, w, x64).lipschitz == pytest.approx((gain,))
    bn = graph["stem_bn"]
    scale = np.asarray(w["stem_bn.gamma"], np.float64) / np.sqrt(np.asarray(w["stem_bn.moving_variance"]) + 1e-3)
    assert node_bound(bn, w, x64).lipschitz == pytest.approx((float(np.abs(scale).max()),))


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


FORMULAS = {  # PyTorch's formulas (what every activation kind means), written out in numpy
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "hard_sigmoid": lambda v: np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "hard_swish": lambda v: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "swish": lambda v: v * _sigmoid(v),
    "gelu": lambda v: v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0))) / 2.0,  # the exact form
}


@pytest.mark.parametrize("kind", typing.get_args(ir.ActivationKind))
def test_activation_lipschitz_constants_bound_the_formulas_slopes(kind: str) -> None:
    # the steepest slope of the formula on a fine grid: the declared constant bounds it and is
    # tight (within 1%), so the bound is neither wrong nor needlessly loose
    x = np.linspace(-10.0, 10.0, 400_001)
    slope = float(np.abs(np.diff(FORMULAS[kind](x)) / np.diff(x)).max())
    declared = KIND_BOUNDS[kind].lipschitz
    assert slope <= declared * (1 + 1e-9)
    assert declared <= slope * 1.01


@pytest.mark.parametrize("kind", [k for k, b in KIND_BOUNDS.items() if b.clamp is not None])
def test_clamped_kinds_round_only_within_their_clamp(kind: str) -> None:
    # a clamped kind's output, for an input beyond +-clamp, is a constant or the input itself
    # (no rounding that grows with the input), in float32 as a backend computes it
    clamp = KIND_BOUNDS[kind].clamp
    assert clamp is not None
    beyond = clamp + np.geomspace(1e-3, 1e6, 20_001)
    x = np.concatenate([-beyond, beyond]).astype(np.float32)
    values = FORMULAS[kind](x)
    assert np.all((values == x) | np.isin(values, [0.0, 1.0, 6.0]))
    # the unclamped kinds are not: sigmoid rounds inputs of any size to values in between
    assert not np.all(np.isin(_sigmoid(x[np.abs(x) < 30]), [0.0, 1.0]))


def test_the_keras_emitter_covers_every_op(graph: ir.Graph) -> None:
    # the Keras emitter needs no framework: every op renders, into source Python can compile
    from archcompiler.kit.registry import get_backend

    source = get_backend("keras").emit(graph)
    compile(source, "every_op.py", "exec")
    for node in graph.nodes:
        assert repr(node.name)[1:-1] in source, node.name


# -- an op missing a piece fails when it is registered -----------------------------------


class DoubleLayer(LayerBase):
    op: Literal["double"]


def _op(name: str, *, shape: bool = True, bound: bool = True, decorated: bool = True, tag: type = DoubleLayer) -> type:
    """A small op class (``x * 2``) with or without its shape rule and parity bound."""
    body: dict[str, object] = {"op": name, "spec_layers": (tag,), "__annotations__": {"op": ClassVar[str]}}
    if shape:
        body["infer_shape"] = lambda self, inputs: inputs[0]
    if bound:
        body["parity_bound"] = lambda self, params, inputs: ops.ParityBound((2.0,), 1)
    cls = type(f"Op_{name}", (ops.Node,), body)
    return dataclass(frozen=True, kw_only=True)(cls) if decorated else cls


def test_a_complete_definition_is_accepted() -> None:
    ops.check_definition(_op("double"), ops.NODE_TYPES)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _op("double", bound=False), r"op 'double' .* does not define parity_bound"),
        (lambda: _op("double", shape=False), r"op 'double' .* does not define infer_shape"),
        (lambda: _op("double", shape=False, bound=False), "does not define infer_shape or parity_bound"),
        (lambda: _op("double", decorated=False), "must be a frozen dataclass"),
        (lambda: _op("conv2d"), r"op 'conv2d' is already defined by archcompiler\.ops\.conv\.Conv2D"),
        (lambda: _op("twice", tag=ops.SPEC_OPS["dense"]), "spec op 'dense' already lowers to op 'dense'"),
        (lambda: int, "is not an op definition"),
    ],
)
def test_an_incomplete_or_clashing_definition_fails_naming_what_is_wrong(make: typing.Any, message: str) -> None:
    with pytest.raises(ops.OpDefinitionError, match=message):
        ops.check_definition(make(), ops.NODE_TYPES)


def test_every_built_in_op_passes_the_registration_check() -> None:
    # what import did, again: each built-in op against those before it; one more without a
    # bound stops the registration
    assert ops.registered(ops.BUILTIN_NODE_TYPES) == ops.BUILTIN_NODE_TYPES
    with pytest.raises(ops.OpDefinitionError, match="does not define parity_bound"):
        ops.registered((*ops.BUILTIN_NODE_TYPES, _op("double", bound=False)))


def test_parity_bound_has_no_default() -> None:
    node = ir.Flatten(name="f", inputs=("x",), shape=(4,))
    with pytest.raises(NotImplementedError, match="no parity bound"):
        ops.Node.parity_bound(node, {}, [np.zeros((1, 2, 2, 1))])


def test_training_parity_sets_every_random_op_rate_to_zero_and_names_it(graph: ir.Graph) -> None:
    # backends draw different dropout and drop path masks: the comparison excludes both
    from archcompiler.parity.training import without_dropout

    g, excluded = without_dropout(graph)
    assert excluded == ("side_drop", "drop")
    assert {(n.op, n.rate) for n in g.nodes if n.name in excluded} == {("drop_path", 0.0), ("dropout", 0.0)}
