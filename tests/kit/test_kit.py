"""The backend kit (archcompiler.kit, archcompiler.ir.layouts) without any ML framework.

Layout conversions are checked against convolutions written from the frameworks' documented
definitions with plain loops (TensorFlow's NHWC conv2d/depthwise_conv2d, PyTorch's NCHW grouped
Conv2d), never against the conversion code itself. The kit is exercised through a pure-numpy
backend that implements only the glue: if it verifies, moves weights, runs and rejects bad
input, a third backend needs nothing but glue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from archcompiler import ir
from archcompiler import weights as W
from archcompiler.ir import layouts
from archcompiler.kit.backend import Backend, BackendError, check_input

RNG = np.random.default_rng(20261126)


# ---------------------------------------------------------------------------------------------
# oracles: direct loops over output elements, from the frameworks' documentation


def conv_nhwc(x: np.ndarray, k: np.ndarray, stride: int = 1, groups: int = 1) -> np.ndarray:
    """tf.nn.conv2d (VALID) with Keras' grouped extension: NHWC x, (kh, kw, I/g, O) kernel;
    output channel o reads input channels of group o // (O / g)."""
    n, h, w, _ = x.shape
    kh, kw, ig, o_total = k.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    og = o_total // groups
    out = np.zeros((n, oh, ow, o_total))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(o_total):
                    g = o // og
                    patch = x[b, i * stride : i * stride + kh, j * stride : j * stride + kw, g * ig : (g + 1) * ig]
                    out[b, i, j, o] = np.sum(patch * k[:, :, :, o])
    return out


def conv_nchw(x: np.ndarray, w: np.ndarray, stride: int = 1, groups: int = 1) -> np.ndarray:
    """torch.nn.functional.conv2d (no padding): NCHW x, (O, I/g, kh, kw) weight."""
    n, _, h, wd = x.shape
    o_total, ig, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    og = o_total // groups
    out = np.zeros((n, o_total, oh, ow))
    for b in range(n):
        for o in range(o_total):
            g = o // og
            for i in range(oh):
                for j in range(ow):
                    patch = x[b, g * ig : (g + 1) * ig, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    out[b, o, i, j] = np.sum(patch * w[o])
    return out


def depthwise_nhwc(x: np.ndarray, k: np.ndarray, stride: int = 1) -> np.ndarray:
    """tf.nn.depthwise_conv2d: output[b, i, j, c*M + m] = sum input[b, .., .., c] * k[.., .., c, m]."""
    n, h, w, c_in = x.shape
    kh, kw, _, m_mult = k.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, c_in * m_mult))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for c in range(c_in):
                    for m in range(m_mult):
                        patch = x[b, i * stride : i * stride + kh, j * stride : j * stride + kw, c]
                        out[b, i, j, c * m_mult + m] = np.sum(patch * k[:, :, c, m])
    return out


# ---------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize(("groups", "stride"), [(1, 1), (1, 2), (2, 1), (3, 2)])
def test_conv_kernel_channels_first_computes_the_same_conv(groups: int, stride: int) -> None:
    x = RNG.normal(size=(2, 7, 6, 6))
    k = RNG.normal(size=(3, 2, 6 // groups, 3 * groups))  # non-square kernel catches kh/kw swaps
    want = conv_nhwc(x, k, stride, groups)
    got = conv_nchw(layouts.batch_to(x, "channels_first"), layouts.to_channels_first(k, "conv_kernel"), stride, groups)
    np.testing.assert_allclose(layouts.batch_from(got, "channels_first"), want, atol=1e-12)


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_kernel_is_a_grouped_conv_with_channel_c_times_m_plus_m(multiplier: int) -> None:
    c = 4
    x = RNG.normal(size=(2, 6, 5, c))
    k = RNG.normal(size=(3, 2, c, multiplier))
    w = layouts.to_channels_first(k, "depthwise_kernel")
    assert w.shape == (c * multiplier, 1, 3, 2)
    for ci in range(c):
        for m in range(multiplier):
            np.testing.assert_array_equal(w[ci * multiplier + m, 0], k[:, :, ci, m])
    got = conv_nchw(layouts.batch_to(x, "channels_first"), w, stride=1, groups=c)
    np.testing.assert_allclose(layouts.batch_from(got, "channels_first"), depthwise_nhwc(x, k), atol=1e-12)


def test_dense_kernel_channels_first_is_a_linear_weight() -> None:
    x = RNG.normal(size=(3, 5))
    k = RNG.normal(size=(5, 2))  # Keras Dense (in, out)
    w = layouts.to_channels_first(k, "dense_kernel")  # torch Linear (out, in): y = x W^T
    np.testing.assert_allclose(np.einsum("ni,oi->no", x, w), x @ k, atol=1e-12)


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("conv_kernel", (3, 2, 4, 5)), ("depthwise_kernel", (3, 3, 4, 2)), ("dense_kernel", (6, 3)), ("vector", (7,))],
)
def test_channels_first_round_trip_is_exact(layout: W.Layout, shape: tuple[int, ...]) -> None:
    a = RNG.normal(size=shape).astype(np.float32)
    cf = layouts.to_channels_first(a, layout)
    assert cf.shape == layouts.channels_first_shape(shape, layout)
    back = layouts.from_channels_first(cf, layout, shape)
    np.testing.assert_array_equal(back, a)
    assert (back.flags.c_contiguous and not np.shares_memory(back, cf)) or layout == "vector"


def test_layout_mismatches_are_errors() -> None:
    with pytest.raises(ValueError, match="4 axes"):
        layouts.to_channels_first(np.zeros((3, 3, 4)), "conv_kernel")
    with pytest.raises(ValueError, match=r"\(8, 1, 3, 3\)"):  # C*M=8 but the canonical shape says 4*1
        layouts.from_channels_first(np.zeros((8, 1, 3, 3)), "depthwise_kernel", (3, 3, 4, 1))
    with pytest.raises(ValueError, match="unknown weight layout"):
        layouts.weight_to(np.zeros(3), "vector", "nchw")  # type: ignore[arg-type]


def test_activation_layouts() -> None:
    x = RNG.normal(size=(2, 3, 4, 5))  # N, H, W, C
    cf = layouts.batch_to(x, "channels_first")
    assert cf.shape == (2, 5, 3, 4)
    assert cf[1, 4, 2, 3] == x[1, 2, 3, 4]
    np.testing.assert_array_equal(layouts.batch_from(cf, "channels_first"), x)
    v = RNG.normal(size=(2, 5))
    assert layouts.batch_to(v, "channels_first") is v
    assert layouts.batch_to(x, "channels_last") is x
    assert layouts.shape_to((3, 4, 5), "channels_first") == (5, 3, 4)
    assert layouts.shape_to((5,), "channels_first") == (5,)


# ---------------------------------------------------------------------------------------------
# a framework made of numpy, and its backend: glue only


@dataclass
class Layer:
    fn: Callable[[list[np.ndarray], dict[str, np.ndarray]], np.ndarray]
    inputs: tuple[str, ...]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    frozen: frozenset[str] = frozenset()


@dataclass
class NumpyModel:
    input_name: str
    layers: dict[str, Layer]
    stray: dict[str, np.ndarray] = field(default_factory=dict)
    """Trainable tensors that belong to no node (counted only in the totals)."""

    def values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        env = {self.input_name: x}
        for name, layer in self.layers.items():
            env[name] = layer.fn([env[i] for i in layer.inputs], layer.tensors)
        return env


def _conv_layer(node: ir.Conv2D) -> Layer:
    top, bottom, left, right = node.padding

    def fn(xs: list[np.ndarray], t: dict[str, np.ndarray]) -> np.ndarray:
        xp = np.pad(xs[0], ((0, 0), (0, 0), (top, bottom), (left, right)))
        return conv_nchw(xp, t["w"], node.stride[0], node.groups)

    shape = (node.filters, node.in_channels // node.groups, *node.kernel)
    return Layer(fn, node.inputs, {"w": RNG.normal(size=shape)})


def _bn_layer(node: ir.BatchNorm) -> Layer:
    def fn(xs: list[np.ndarray], t: dict[str, np.ndarray]) -> np.ndarray:
        c = (1, -1, 1, 1)
        return (xs[0] - t["avg"].reshape(c)) / np.sqrt(t["var"].reshape(c) + node.epsilon) * t["scale"].reshape(c) + t[
            "shift"
        ].reshape(c)

    tensors = {k: np.ones(node.channels) for k in ("scale", "shift", "avg", "var")}
    return Layer(fn, node.inputs, tensors, frozenset({"avg", "var"}))


def _dense_layer(node: ir.Dense) -> Layer:
    return Layer(
        lambda xs, t: xs[0] @ t["w"].T + t["b"],
        node.inputs,
        {"w": np.zeros((node.units, node.in_features)), "b": np.zeros(node.units)},
    )


BUILDERS: dict[str, Callable[[Any], Layer]] = {
    "conv2d": _conv_layer,
    "batchnorm": _bn_layer,
    "activation": lambda n: Layer(lambda xs, t: np.maximum(xs[0], 0), n.inputs),
    "global_pool": lambda n: Layer(lambda xs, t: xs[0].mean(axis=(2, 3)), n.inputs),
    "dense": _dense_layer,
}


class NumpyBackend(Backend):
    """Channels-first weights and activations with its own tensor names, like torch or ONNX."""

    name = "numpy"
    handlers: ClassVar[Mapping[str, Any]] = {"input": None, **BUILDERS}
    weight_layout = "channels_first"
    activation_layout = "channels_first"
    weight_names: ClassVar[Mapping[tuple[str, str], str]] = {
        ("conv2d", "kernel"): "w",
        ("dense", "kernel"): "w",
        ("dense", "bias"): "b",
        ("batchnorm", "gamma"): "scale",
        ("batchnorm", "beta"): "shift",
        ("batchnorm", "moving_mean"): "avg",
        ("batchnorm", "moving_variance"): "var",
    }

    def build(self, graph: ir.Graph) -> NumpyModel:
        self.check_supported(graph)
        layers = {n.name: BUILDERS[n.op](n) for n in graph.nodes if n.op != "input"}
        return NumpyModel(graph.inputs[0].name, layers)

    def node_shapes(self, graph: ir.Graph, model: NumpyModel) -> Iterator[tuple[str, tuple[int, ...] | Exception]]:
        """Like a real framework stepping node by node: a failing node is reported, then stop."""
        env = {model.input_name: np.zeros((1, *layouts.shape_to(graph.input_shape, "channels_first")))}
        yield model.input_name, env[model.input_name].shape[1:]
        for name, layer in model.layers.items():
            try:
                env[name] = layer.fn([env[i] for i in layer.inputs], layer.tensors)
            except ValueError as exc:
                yield name, exc
                return
            yield name, env[name].shape[1:]

    def param_counts(self, graph: ir.Graph, model: NumpyModel) -> dict[str, tuple[int, int]]:
        return {
            name: (
                sum(v.size for k, v in layer.tensors.items() if k not in layer.frozen),
                sum(v.size for k, v in layer.tensors.items() if k in layer.frozen),
            )
            for name, layer in model.layers.items()
        }

    def param_totals(self, model: NumpyModel) -> tuple[int, int]:
        counts = self.param_counts(None, model).values()  # type: ignore[arg-type]
        return sum(c[0] for c in counts) + sum(v.size for v in model.stray.values()), sum(c[1] for c in counts)

    def weight_tensors(self, model: NumpyModel) -> Mapping[tuple[str, str], np.ndarray]:
        return {(n, k): v for n, layer in model.layers.items() for k, v in layer.tensors.items()}

    def read_tensor(self, tensor: np.ndarray) -> np.ndarray:
        return tensor

    def write_tensors(self, staged: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        for tensor, arr in staged:
            tensor[...] = arr

    def forward(self, graph: ir.Graph, model: NumpyModel, x: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
        values = model.values(x)
        return {n: values[n] for n in names}


def tiny() -> ir.Graph:
    """x(6,5,3) -> conv 3x3/2 pad(0,1,1,1) -> bn -> relu -> gap -> fc(2)."""
    nodes = (
        ir.Input(name="x", inputs=(), shape=(6, 5, 3)),
        ir.Conv2D(
            name="conv",
            inputs=("x",),
            shape=(3, 3, 4),
            in_channels=3,
            filters=4,
            kernel=(3, 3),
            stride=(2, 2),
            padding=(0, 1, 1, 1),
        ),
        ir.BatchNorm(
            name="bn", inputs=("conv",), shape=(3, 3, 4), channels=4, epsilon=1e-3, decay=0.99, variance_update="biased"
        ),
        ir.Activation(name="relu", inputs=("bn",), shape=(3, 3, 4), kind="relu"),
        ir.GlobalPool(name="gap", inputs=("relu",), shape=(4,), kind="avg"),
        ir.Dense(name="fc", inputs=("gap",), shape=(2,), in_features=4, units=2),
    )
    return ir.Graph(name="tiny", nodes=nodes, outputs=("fc",), width=1.0, resolution=(6, 5))


def reference(graph: ir.Graph, w: W.Weights, x: np.ndarray) -> np.ndarray:
    """The tiny graph in NHWC from canonical weights: no layout conversion involved."""
    conv = graph["conv"]
    assert isinstance(conv, ir.Conv2D)
    top, bottom, left, right = conv.padding
    h = conv_nhwc(np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), w["conv.kernel"], stride=2)
    h = (h - w["bn.moving_mean"]) / np.sqrt(w["bn.moving_variance"] + 1e-3) * w["bn.gamma"] + w["bn.beta"]
    return np.maximum(h, 0).mean(axis=(1, 2)) @ w["fc.kernel"] + w["fc.bias"]


@pytest.fixture
def backend() -> NumpyBackend:
    return NumpyBackend()


def test_verify_accepts_a_correct_model(backend: NumpyBackend) -> None:
    g = tiny()
    backend.verify(g, backend.build(g))


def test_verify_names_the_node_with_a_wrong_shape(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    conv = g["conv"]
    assert isinstance(conv, ir.Conv2D)
    model.layers["conv"] = _conv_layer(ir.Conv2D(**{**_fields(conv), "padding": (2, 2, 1, 1)}))  # 4 rows, not 3
    with pytest.raises(BackendError, match=r"node 'conv' \(conv2d\).*\(4, 4, 3\) \(channels_first\).*\(3, 3, 4\)"):
        backend.verify(g, model)


def test_verify_names_the_node_whose_forward_fails(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    model.layers["fc"].tensors["w"] = np.zeros((2, 5))  # 5 inputs, 4 arrive: matmul raises ValueError
    with pytest.raises(BackendError, match=r"node 'fc' \(dense\): numpy forward pass failed"):
        backend.verify(g, model)


def test_verify_names_a_node_the_model_lacks(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    model.layers = {k: v for k, v in model.layers.items() if k != "gap"}
    model.layers["fc"].inputs = ("relu",)
    with pytest.raises(BackendError, match=r"node 'gap'.*computes no output"):
        backend.verify(g, model)


def test_verify_names_the_node_with_wrong_parameter_counts(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    model.layers["conv"].tensors["b"] = np.zeros(4)  # a bias the IR does not have: shapes still agree
    with pytest.raises(
        BackendError,
        match=r"node 'conv' \(conv2d\): numpy has 112 trainable / 0 non-trainable parameters, IR says 108 / 0",
    ):
        backend.verify(g, model)
    model = backend.build(g)
    model.layers["bn"].frozen = frozenset({"avg"})  # moving variance counted as trainable
    with pytest.raises(BackendError, match=r"node 'bn'.*12 trainable / 4 non-trainable.*IR says 8 / 8"):
        backend.verify(g, model)


def test_verify_checks_totals_beyond_the_nodes(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    model.stray["temperature"] = np.ones(1)
    with pytest.raises(BackendError, match=r"127 trainable / 8 non-trainable parameters in total, IR says 126 / 8"):
        backend.verify(g, model)


def test_weights_move_through_the_declared_layout_and_run_matches_nhwc_reference(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    w = W.init(g, seed=1)
    backend.set_weights(g, model, w)
    # stored channels-first, as an independent transpose says
    np.testing.assert_array_equal(model.layers["conv"].tensors["w"], w["conv.kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(model.layers["fc"].tensors["w"], w["fc.kernel"].T)
    back = backend.get_weights(g, model)
    assert list(back) == list(W.expected(g))
    for k in w:
        np.testing.assert_array_equal(back[k], w[k], err_msg=k)
        assert back[k].dtype == np.float32
    back["conv.kernel"][...] = 0  # a copy: editing it leaves the model alone
    assert np.abs(model.layers["conv"].tensors["w"]).sum() > 0
    x = RNG.normal(size=(3, 6, 5, 3)).astype(np.float32)
    out = backend.run(g, model, x, ["x", "conv", "fc"])
    assert list(out) == ["x", "conv", "fc"]
    np.testing.assert_array_equal(out["x"], x)
    assert out["conv"].shape == (3, 3, 3, 4)  # back in channels-last
    np.testing.assert_allclose(out["fc"], reference(g, w, x.astype(np.float64)), atol=1e-5)
    assert list(backend.run(g, model, x)) == ["fc"]


def test_get_weights_never_returns_the_models_memory(backend: NumpyBackend) -> None:
    """A float64 model's tensors need no dtype conversion, and vectors no layout change: what
    get_weights returns must still be copies, for every tensor."""

    class Float64(NumpyBackend):
        def model_dtype(self, model: NumpyModel) -> str:
            return "float64"

    g = tiny()
    model = Float64().build(g)
    back = Float64().get_weights(g, model)
    held = [t for layer in model.layers.values() for t in layer.tensors.values()]
    assert all(t.dtype == np.float64 for t in held)
    for k, arr in back.items():
        assert arr.dtype == np.float64
        assert not any(np.shares_memory(arr, t) for t in held), k


@pytest.mark.parametrize("fault", ["missing", "misshapen"])
def test_set_weights_rejects_bad_canonical_tensors_and_changes_nothing(backend: NumpyBackend, fault: str) -> None:
    g = tiny()
    model = backend.build(g)
    before = {k: v.copy() for k, v in backend.weight_tensors(model).items()}
    w = W.init(g, seed=2)
    if fault == "missing":
        del w["fc.bias"]
    else:
        w["fc.bias"] = w["fc.bias"][:1]
    with pytest.raises(W.WeightError, match=r"fc\.bias"):
        backend.set_weights(g, model, w)
    assert all(np.array_equal(v, before[k]) for k, v in backend.weight_tensors(model).items())


def test_set_weights_stages_everything_before_writing(backend: NumpyBackend) -> None:
    """The model disagrees with its IR on the *last* tensor: nothing before it may be written."""
    g = tiny()
    model = backend.build(g)
    model.layers["fc"].tensors["b"] = np.zeros(3)
    before = {k: v.copy() for k, v in backend.weight_tensors(model).items()}
    with pytest.raises(BackendError, match=r"'fc\.bias'.*'b' of node 'fc' is \(3,\)"):
        backend.set_weights(g, model, W.init(g, seed=3))
    assert all(np.array_equal(v, before[k]) for k, v in backend.weight_tensors(model).items())
    with pytest.raises(BackendError, match=r"'fc\.bias'"):
        backend.get_weights(g, model)


def test_an_unmapped_parameter_is_an_error_not_a_guess(backend: NumpyBackend) -> None:
    class Forgetful(NumpyBackend):
        weight_names: ClassVar[Mapping[tuple[str, str], str]] = {
            k: v for k, v in NumpyBackend.weight_names.items() if k != ("batchnorm", "gamma")
        }

    g = tiny()
    model = Forgetful().build(g)
    before = model.layers["conv"].tensors["w"].copy()
    with pytest.raises(BackendError, match=r"no tensor name for 'bn\.gamma'.*\('batchnorm', 'gamma'\)"):
        Forgetful().set_weights(g, model, W.init(g))
    np.testing.assert_array_equal(model.layers["conv"].tensors["w"], before)


def test_a_missing_framework_tensor_names_what_the_node_has(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    del model.layers["bn"].tensors["var"]
    with pytest.raises(
        BackendError, match=r"no tensor 'var' in node 'bn' for 'bn\.moving_variance'.*avg, scale, shift"
    ):
        backend.get_weights(g, model)


def test_run_rejects_bad_input_and_names(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    with pytest.raises(BackendError, match=r"input of shape \(2, 3, 6, 5\).*\(N, \*\(6, 5, 3\)\).*NCHW batch"):
        backend.run(g, model, np.zeros((2, 3, 6, 5), np.float32))
    with pytest.raises(BackendError, match=r"input of shape \(6, 5, 3\)"):  # no batch axis
        backend.run(g, model, np.zeros((6, 5, 3), np.float32))
    with pytest.raises(BackendError, match=r"unknown node 'cnov'.*did you mean 'conv'"):
        backend.run(g, model, np.zeros((1, 6, 5, 3), np.float32), ["cnov"])


def test_train_step_checks_before_the_glue(backend: NumpyBackend) -> None:
    g = tiny()
    model = backend.build(g)
    x = np.zeros((2, 6, 5, 3), np.float32)
    with pytest.raises(BackendError, match=r"label 2 is not a class of node 'fc' \(0\.\.1\)"):
        backend.train_step(g, model, x, np.array([0, 2]), lr=0.1)
    with pytest.raises(BackendError, match=r"expected \(2,\) integer"):
        backend.train_step(g, model, x, np.array([0.0, 1.0]), lr=0.1)
    with pytest.raises(BackendError, match="does not support training"):  # checks passed; no sgd_step glue
        backend.train_step(g, model, x, np.array([0, 1]), lr=0.1)
    image_out = ir.Graph(name="img", nodes=g.nodes[:2], outputs=("conv",), width=1.0, resolution=(6, 5))
    with pytest.raises(BackendError, match=r"\(N, classes\) logits; node 'conv'"):
        backend.train_step(image_out, model, x, np.array([0, 1]), lr=0.1)


def test_a_backend_without_glue_says_what_it_lacks() -> None:
    class Bare(Backend):
        name = "bare"
        handlers: ClassVar[Mapping[str, Any]] = {}

        def build(self, graph: ir.Graph) -> None:
            return None

    with pytest.raises(BackendError, match=r"'bare' cannot verify models: it does not implement node_shapes\(\)"):
        Bare().verify(tiny(), None)
    with pytest.raises(BackendError, match=r"does not implement forward\(\)"):
        Bare().run(tiny(), None, np.zeros((1, 6, 5, 3)))


def test_check_input_converts_to_float32() -> None:
    arr = check_input(tiny(), np.zeros((1, 6, 5, 3), np.float64))
    assert arr.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# publishing saved files


def test_publish_is_atomic_keeps_the_suffix_and_uses_ordinary_permissions(
    backend: NumpyBackend, tmp_path: Path
) -> None:
    seen: list[str] = []

    def write(tmp: str) -> None:
        seen.append(tmp)
        Path(tmp).write_bytes(b"model")

    target = backend.publish(tmp_path / "out" / "m.keras", write)
    assert target.read_bytes() == b"model"
    assert seen[0].endswith(".keras") and Path(seen[0]).parent == target.parent
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.keras"]

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(BackendError, match=r"cannot save numpy model to .*m\.keras: disk full"):
        backend.publish(target, broken)
    assert target.read_bytes() == b"model"  # the old file survives
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.keras"]


def _fields(node: ir.Node) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}


# ---------------------------------------------------------------------------------------------
# capabilities: declared on the class, checked for every named backend before any is built


class Counting(NumpyBackend):
    """A numpy backend that records every build (to prove none happened)."""

    builds: ClassVar[list[str]] = []

    def build(self, graph: ir.Graph) -> NumpyModel:
        Counting.builds.append(self.name)
        return super().build(graph)


class Plain(Counting):
    name = "plain"


class Other(Counting):
    name = "other"


class Able(Counting):
    name = "able"
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    trains: ClassVar[bool] = True
    optimizable: ClassVar[bool] = True


class SingleOutput(Counting):
    name = "single"
    multi_output: ClassVar[bool] = False


def test_parity_names_every_backend_that_lacks_a_capability_before_building_any() -> None:
    from archcompiler.parity.inference import parity

    Counting.builds.clear()
    instances = {"able": Able(), "plain": Plain(), "other": Other()}
    with pytest.raises(BackendError) as info:
        parity(tiny(), ("able", "plain", "other"), dtype="float64", train_steps=1, instances=instances)
    assert str(info.value) == (
        "backends 'plain' and 'other' cannot build models in float64; "
        "backends 'plain' and 'other' cannot take training steps"
    )
    with pytest.raises(BackendError, match=r"^backends 'plain' and 'other' cannot build optimized models$"):
        parity(tiny(), ("able", "plain", "other"), optimize=True, instances=instances)
    assert Counting.builds == []


def test_require_capabilities_reads_the_declarations() -> None:
    from archcompiler.kit.backend import require_capabilities

    require_capabilities([Plain(), Able()])  # float32 inference: asks nothing
    require_capabilities([Able()], dtype="float64", training=True, optimize=True, multi_output=True)
    with pytest.raises(BackendError, match=r"^backend 'single' cannot build models with several outputs$"):
        require_capabilities([Able(), SingleOutput()], multi_output=True)
    with pytest.raises(BackendError, match=r"dtype 'float16': archc builds models in float32, float64"):
        require_capabilities([Able()], dtype="float16")


def test_build_checks_capabilities_before_building() -> None:
    import archcompiler as a

    spec = {
        "name": "tiny",
        "input": {"size": 6, "channels": 3},
        "layers": [
            {"op": "conv", "filters": 4, "kernel": 3, "name": "conv"},
            {"op": "batchnorm", "name": "bn"},
            {"op": "activation", "kind": "relu", "name": "relu"},
            {"op": "global_avg_pool", "name": "gap"},
            {"op": "dense", "units": 2, "name": "fc"},
        ],
    }
    Counting.builds.clear()
    net = a.compile(spec, outputs=["relu", "fc"])
    with pytest.raises(BackendError, match="'single' cannot build models with several outputs"):
        net.build(SingleOutput())
    with pytest.raises(BackendError, match="'plain' cannot build optimized models"):
        a.compile(spec).build(Plain(), optimize=True)
    assert Counting.builds == []
    net.build(Plain())  # a backend that declares nothing builds several outputs (the default)
    assert Counting.builds == ["plain"]


def test_run_refuses_a_batch_over_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from archcompiler.kit.backend import MemoryLimitError

    g = tiny()
    backend = NumpyBackend()
    model = backend.build(g)
    x = np.zeros((3, 6, 5, 3), np.float32)
    assert backend.run(g, model, x)["fc"].shape == (3, 2)
    # 3 examples x 4 bytes x (2 x 2 values of fc + the two largest values: x's 90, conv's 36) = 1,560 bytes
    monkeypatch.setenv("ARCHC_MAX_MEMORY", "1K")
    with pytest.raises(MemoryLimitError) as info:
        backend.run(g, model, x)
    assert str(info.value) == (
        "running 'tiny' on a batch of 3 in numpy would hold about 1.52 KiB of tensors, more than the limit of"
        " 1 KiB (ARCHC_MAX_MEMORY changes it): lower the batch or the input size"
    )
    monkeypatch.setenv("ARCHC_MAX_MEMORY", "1560")
    assert backend.run(g, model, x)["fc"].shape == (3, 2)
