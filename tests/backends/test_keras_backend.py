"""The Keras backend against independent references: keras.applications, docs/NUMBERS.md, numpy,
TensorFlow's own ops and Keras' own training loop.

Kept fast: MobileNet at 128 (and one odd size), models shared by module-scoped fixtures.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_first, framework

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.kit.registry import BackendError, get_backend

keras = framework("keras")
h5py = framework("h5py")
keras_package = framework("archcompiler.backends.keras")
keras_ops = framework("archcompiler.backends.keras.ops")

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[2]
KERAS_SPEC = a.load(ROOT / "specs" / "mobilenet_keras.yaml")
PAPER_SPEC = a.load(ROOT / "specs" / "mobilenet.yaml")
ALPHAS = (0.25, 0.5, 0.75, 1.0)

# docs/NUMBERS.md, keras.applications.MobileNet (Keras 3.15): total / trainable / non-trainable.
APP_PARAMS = {
    1.0: (4_253_864, 4_231_976, 21_888),
    0.75: (2_601_976, 2_585_560, 16_416),
    0.5: (1_342_536, 1_331_592, 10_944),
    0.25: (475_544, 470_072, 5_472),
}


@pytest.fixture(scope="module")
def backend():
    return get_backend("keras")


def randomise(model: keras.Model, seed: int) -> None:
    """Random weights through Keras' own API (independent of archc's set_weights); BN moving
    statistics away from 0 and 1, kernels He-scaled so logits stay informative."""
    rng = np.random.default_rng(seed)
    values = []
    for v in model.weights:
        shape, name = tuple(v.shape), v.name
        if name == "moving_variance":
            arr = rng.uniform(0.5, 2.0, shape)
        elif name == "gamma":
            arr = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias"):
            arr = rng.normal(0.0, 0.2, shape)
        else:
            fan_in = shape[0] * shape[1] * (1 if "conv_dw" in v.path else shape[2])
            arr = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        values.append(arr.astype("float32"))
    model.set_weights(values)


class _Apps(dict):
    """alpha -> (graph, archc model, keras.applications model with random weights), at 128, each
    built on first use: the fast tier uses one width of four."""

    def __init__(self, backend: typing.Any) -> None:
        super().__init__()
        self.backend = backend

    def __missing__(self, alpha: float) -> tuple[typing.Any, typing.Any, typing.Any]:
        graph = a.lower(KERAS_SPEC, width=alpha, resolution=128)
        app = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(128, 128, 3))
        randomise(app, seed=ALPHAS.index(alpha))
        self[alpha] = (graph, self.backend.build(graph), app)
        return self[alpha]


@pytest.fixture(scope="module")
def apps(backend) -> _Apps:
    return _Apps(backend)


def weight_table(model: keras.Model) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    return [(layer.name, [(v.name, tuple(v.shape)) for v in layer.weights]) for layer in model.layers if layer.weights]


# -- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", fast_first(ALPHAS))
def test_layers_and_weight_shapes_equal_keras_applications(apps, alpha: float) -> None:
    _, model, app = apps[alpha]
    assert weight_table(model) == weight_table(app)
    ours = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    # keras.applications leaves its global pool unnamed: Keras calls the first one in a process
    # "global_average_pooling2d" (the name the spec copies), later ones "..._1", "..._2".
    theirs = [
        re.sub(r"^global_average_pooling2d_\d+$", "global_average_pooling2d", layer.name)
        for layer in app.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    assert ours == theirs


@pytest.mark.parametrize("alpha", ALPHAS)
def test_param_counts_match_numbers_md(backend, apps, alpha: float) -> None:
    graph, model, _ = apps[alpha]
    total, trainable, frozen = APP_PARAMS[alpha]
    assert model.count_params() == total
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == trainable
    assert sum(int(np.prod(v.shape)) for v in model.non_trainable_weights) == frozen
    backend.verify(graph, model)  # the IR's keras-convention counts agree too


def test_paper_spec_builds_and_verifies(backend) -> None:
    graph = a.lower(PAPER_SPEC, width=0.5, resolution=160)
    model = backend.build(graph)
    backend.verify(graph, model)
    # The paper rule (Howard et al.) counts conv/FC weights only: 1,319,648 at a=0.5 (docs/NUMBERS.md).
    weights_only = sum(int(np.prod(v.shape)) for v in model.trainable_weights if v.name == "kernel")
    assert weights_only == 1_319_648
    # TF "same" stays "same": no helper pad layers when the IR's pads are TF SAME's.
    assert not [layer.name for layer in model.layers if layer.name.endswith("_pad")]


def test_same_versus_keras_pad_shapes_at_odd_size(backend) -> None:
    """At 200: keras.applications' (0,1)-pad-then-valid floors, TF SAME ceils (docs/NUMBERS.md)."""
    dws = ("conv1", "conv_dw_2", "conv_dw_4", "conv_dw_6", "conv_dw_12")
    sides = {}
    for spec in (KERAS_SPEC, PAPER_SPEC):
        graph = a.lower(spec, width=0.25, resolution=200)
        model = backend.build(graph)
        backend.verify(graph, model)
        sides[spec.spec.name] = [model.get_layer(n).output.shape[1] for n in dws]
    assert sides["mobilenet_keras"] == [100, 50, 25, 12, 6]
    assert sides["mobilenet_v1"] == [100, 50, 25, 13, 7]
    app = keras.applications.MobileNet(weights=None, alpha=0.25, input_shape=(200, 200, 3))
    assert [app.get_layer(n).output.shape[1] for n in dws] == sides["mobilenet_keras"]


def test_handlers_cover_every_ir_op(backend) -> None:
    assert set(keras_ops.HANDLERS) == set(ir.IR_OPS)
    assert backend.ops == ir.IR_OPS


# -- pretrained compatibility ----------------------------------------------------------------


def legacy_h5(model: keras.Model, path: Path, *, keras2_names: bool, whole_model: bool = False) -> None:
    """The legacy HDF5 weights layout, written with h5py: one group per layer, ``layer_names``
    and ``weight_names`` attributes. With ``keras2_names`` the variable names are those of the
    published Keras 2 files (``conv_dw_1/depthwise_kernel:0``); ``whole_model`` nests it under
    ``model_weights`` as a legacy ``model.save("m.h5")`` does."""
    with h5py.File(path, "w") as root:
        f = root.create_group("model_weights") if whole_model else root
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            g = f.create_group(layer.name)
            names = []
            for v in layer.weights:
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                var = "depthwise_kernel" if keras2_names and depthwise else v.name
                wname = f"{layer.name}/{var}:0" if keras2_names else f"{layer.name}/{var}"
                g.create_dataset(wname, data=np.asarray(v.numpy()))
                names.append(wname.encode())
            g.attrs["weight_names"] = names


def app_layer(app: keras.Model, name: str) -> keras.layers.Layer:
    """keras.applications' layer ``name``; its unnamed global pool may carry a ``_<k>`` suffix."""
    if name == "global_average_pooling2d":
        (layer,) = [la for la in app.layers if isinstance(la, keras.layers.GlobalAveragePooling2D)]
        return layer
    return app.get_layer(name)


def check_against_app(backend, graph, app, x: np.ndarray, weights: W.Weights) -> None:
    model = backend.build(graph)
    backend.set_weights(graph, model, weights)
    names = [n.name for n in graph.nodes if not isinstance(n, ir.Input)]
    got = backend.run(graph, model, x, names)
    ref_model = keras.Model(app.input, [app_layer(app, n).output for n in names])
    want = dict(zip(names, ref_model(x, training=False), strict=True))
    for n in names:  # every intermediate, not only the output
        np.testing.assert_allclose(got[n], np.asarray(want[n]), atol=1e-4, rtol=0, err_msg=n)
    logits = np.asarray(want["reshape_2"])
    assert np.abs(logits).max() > 0.1, "logits near 0 would make the comparison vacuous"
    assert np.abs(got["reshape_2"] - logits).max() <= 1e-4


@pytest.mark.parametrize("alpha", fast_first(ALPHAS))
def test_keras_applications_weights_load_by_name(backend, apps, alpha: float, tmp_path: Path) -> None:
    graph, _, app = apps[alpha]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 128, 128, 3)).astype("float32")
    # get_weights works on keras.applications' own model: the names are the canonical ones.
    direct = backend.get_weights(graph, app)
    by_path = {v.path.replace("/", "."): np.asarray(v.numpy()) for v in app.weights}
    assert direct.keys() == by_path.keys()
    assert all(np.array_equal(direct[k], by_path[k]) for k in by_path)
    # The files a user writes: Keras 3 .weights.h5, and the legacy layout of the published files.
    files = {
        "keras3": tmp_path / "m.weights.h5",
        "legacy": tmp_path / "m.h5",
        "keras2": tmp_path / "m2.h5",
        "keras2_model": tmp_path / "m3.h5",
    }
    app.save_weights(files["keras3"])
    legacy_h5(app, files["legacy"], keras2_names=False)
    legacy_h5(app, files["keras2"], keras2_names=True)
    legacy_h5(app, files["keras2_model"], keras2_names=True, whole_model=True)
    for kind, path in files.items():
        loaded = keras_package.load_keras_weights(path, graph)
        assert loaded.keys() == by_path.keys(), kind
        assert all(loaded[k].dtype == np.float32 and np.array_equal(loaded[k], by_path[k]) for k in by_path), kind
    check_against_app(backend, graph, app, x, keras_package.load_keras_weights(files["keras3"], graph))


def test_keras_applications_weights_at_odd_size(backend, tmp_path: Path) -> None:
    graph = a.lower(KERAS_SPEC, width=0.5, resolution=199)
    app = keras.applications.MobileNet(weights=None, alpha=0.5, input_shape=(199, 199, 3))
    randomise(app, seed=11)
    app.save_weights(tmp_path / "odd.weights.h5")
    x = np.random.default_rng(2).uniform(-1, 1, (2, 199, 199, 3)).astype("float32")
    check_against_app(backend, graph, app, x, keras_package.load_keras_weights(tmp_path / "odd.weights.h5", graph))


def test_keras_weights_file_mismatch_is_named(apps, tmp_path: Path) -> None:
    _, _, app = apps[0.5]
    app.save_weights(tmp_path / "half.weights.h5")
    other = a.lower(KERAS_SPEC, width=0.25, resolution=128)
    with pytest.raises(W.WeightError, match=r"conv1\.kernel.*shape"):
        keras_package.load_keras_weights(tmp_path / "half.weights.h5", other)
    paper = a.lower(PAPER_SPEC, width=0.5, resolution=128)
    with pytest.raises(W.WeightError, match=r"missing tensor 'fc\.kernel'"):
        keras_package.load_keras_weights(tmp_path / "half.weights.h5", paper)


def test_checkpoint_reader_needs_no_tensorflow() -> None:
    code = "import sys, archcompiler.backends.keras as k; k.load_keras_weights; k.KerasBackend; " + (
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- weights in and out ----------------------------------------------------------------------


def test_weight_round_trip_is_exact(backend, apps) -> None:
    graph, model, _ = apps[0.25]
    w = W.init(graph, seed=3)
    backend.set_weights(graph, model, w)
    back = backend.get_weights(graph, model)
    assert back.keys() == w.keys()
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_set_weights_errors_name_the_tensor(backend, apps) -> None:
    graph, model, _ = apps[0.25]
    w = W.init(graph, seed=4)
    before = backend.get_weights(graph, model)
    missing = {k: v for k, v in w.items() if k != "conv_dw_3_bn.moving_mean"}
    with pytest.raises(W.WeightError, match=r"missing tensor 'conv_dw_3_bn\.moving_mean'"):
        backend.set_weights(graph, model, missing)
    with pytest.raises(W.WeightError, match=r"unexpected tensor 'bogus\.kernel'"):
        backend.set_weights(graph, model, {**w, "bogus.kernel": np.zeros(3, "float32")})
    bad = {**w, "conv_pw_2.kernel": np.zeros((1, 1, 16, 33), "float32")}
    with pytest.raises(W.WeightError, match=r"'conv_pw_2.kernel' has shape \(1, 1, 16, 33\)"):
        backend.set_weights(graph, model, bad)
    after = backend.get_weights(graph, model)
    assert all(np.array_equal(before[k], after[k]) for k in before), "a failed load must not write"


# -- verify and unsupported ops --------------------------------------------------------------


def tiny_graph(*nodes: ir.Node, size: int = 6, channels: int = 3) -> ir.Graph:
    inp = ir.Input(name="x", inputs=(), shape=(size, size, channels))
    return ir.Graph(name="tiny", nodes=(inp, *nodes), outputs=(nodes[-1].name,), width=1.0, resolution=(size, size))


def conv(name: str = "c", **kw) -> ir.Conv2D:
    args = dict(
        inputs=("x",), shape=(6, 6, 4), in_channels=3, filters=4, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1)
    )
    args.update(kw)
    return ir.Conv2D(name=name, **args)


def test_verify_names_the_node(backend, apps) -> None:
    _, model, _ = apps[0.25]
    wider = a.lower(KERAS_SPEC, width=0.5, resolution=128)
    with pytest.raises(BackendError, match="node 'conv1'"):
        backend.verify(wider, model)
    plain = tiny_graph(conv())
    with pytest.raises(BackendError, match=r"node 'c'.*parameters"):
        backend.verify(tiny_graph(conv(use_bias=True)), backend.build(plain))


def test_strided_dilated_conv_builds_by_composition(backend) -> None:
    """Keras refuses strides with dilation in one layer; archc composes it (see
    test_keras_strided_dilated.py for the numbers), so what check accepts, keras builds."""
    graph = tiny_graph(conv(stride=(2, 2), dilation=(2, 2), shape=(3, 3, 4), padding=(2, 2, 2, 2)))
    backend.verify(graph, backend.build(graph))


@pytest.mark.parametrize(
    ("node", "what"),
    [
        (conv(padding=(-1, 0, 0, 0)), "negative padding"),
        (ir.Activation(name="c", inputs=("x",), shape=(6, 6, 3), kind="elu"), "elu"),  # type: ignore[arg-type]
        (ir.Dense(name="c", inputs=("x",), shape=(6, 6, 5), in_features=3, units=5), "flat input"),
    ],
)
def test_invalid_ir_never_reaches_a_backend(node: ir.Node, what: str) -> None:
    """What no backend could build is refused by the IR itself, naming the node."""
    with pytest.raises(ir.GraphError, match=rf"node 'c'.*{what}"):
        tiny_graph(node)


class UnknownOp(ir.Node):
    op = "mystery"


def test_unknown_op_is_refused() -> None:
    node = UnknownOp(name="m", inputs=("x",), shape=(6, 6, 3))
    with pytest.raises(ir.GraphError, match=r"node 'm'.*not an IR op"):
        tiny_graph(node)


def test_asymmetric_padding_is_exact(backend) -> None:
    """Pads TF SAME would not give become an explicit ZeroPadding2D + valid conv."""
    import tensorflow as tf

    node = conv(padding=(2, 0, 1, 1), shape=(6, 6, 4))
    graph = tiny_graph(node)
    model = backend.build(graph)
    backend.verify(graph, model)
    assert model.get_layer("c_pad").output.shape[1:] == (8, 8, 3)
    w = W.init(graph, seed=5)
    backend.set_weights(graph, model, w)
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 3)).astype("float32")
    got = backend.run(graph, model, x)["c"]
    want = tf.nn.conv2d(np.pad(x, ((0, 0), (2, 0), (1, 1), (0, 0))), w["c.kernel"], 1, "VALID").numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Helper names never collide with IR names.
    taken = tiny_graph(ir.ZeroPad2D(name="c_pad", inputs=("x",), shape=(6, 6, 3), padding=(0, 0, 0, 0)), node)
    assert "c_pad_2" in [layer.name for layer in backend.build(taken).layers]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


ACTIVATIONS = {  # the formulas PyTorch uses too (Hardsigmoid, Hardswish, SiLU)
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "hard_sigmoid": lambda v: np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "hard_swish": lambda v: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "swish": lambda v: v * _sigmoid(v),
    "gelu": lambda v: v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0))) / 2.0,  # exact, not tanh's
}


def test_activations_match_numpy(backend) -> None:
    x = np.linspace(-8, 8, 2 * 6 * 6 * 3, dtype="float32").reshape(2, 6, 6, 3)
    assert set(ACTIVATIONS) == set(typing.get_args(ir.ActivationKind))
    for kind, fn in ACTIVATIONS.items():
        graph = tiny_graph(ir.Activation(name="c", inputs=("x",), shape=(6, 6, 3), kind=kind))
        got = backend.run(graph, backend.build(graph), x)["c"]
        np.testing.assert_allclose(got, fn(x), atol=1e-6, err_msg=kind)


def test_depthwise_multiplier_channel_order_matches_numpy(backend) -> None:
    """Output channel c * M + m is input channel c filtered by kernel[..., c, m] (the IR's layout)."""
    node = ir.DepthwiseConv2D(
        name="c", inputs=("x",), shape=(6, 6, 6), in_channels=3, multiplier=2, kernel=(3, 3), stride=(1, 1),
        padding=(1, 1, 1, 1), use_bias=True,
    )  # fmt: skip
    graph = tiny_graph(node)
    model = backend.build(graph)
    w = W.init(graph, seed=16)
    backend.set_weights(graph, model, w)
    x = np.random.default_rng(17).normal(size=(2, 6, 6, 3)).astype("float32")
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    k, b = w["c.kernel"], w["c.bias"]
    want = np.zeros((2, 6, 6, 6), "float32")
    for c in range(3):
        for m in range(2):
            for i in range(3):
                for j in range(3):
                    want[..., c * 2 + m] += xp[:, i : i + 6, j : j + 6, c] * k[i, j, c, m]
    np.testing.assert_allclose(backend.run(graph, model, x)["c"], want + b, atol=1e-5)


@pytest.mark.parametrize(
    ("groups", "stride", "dilation", "padding", "out"),
    [
        (3, 1, 1, (1, 1, 1, 1), 6),  # grouped
        (3, 2, 1, (0, 1, 0, 1), 3),  # grouped, strided, TF SAME's extra pixel after
        (1, 1, 2, (2, 2, 2, 2), 6),  # dilated SAME
        (2, 1, 2, (3, 1, 2, 2), 6),  # grouped, dilated, asymmetric: explicit pad layer
    ],
)
def test_grouped_and_dilated_conv_match_numpy(backend, groups, stride, dilation, padding, out) -> None:
    node = ir.Conv2D(
        name="c", inputs=("x",), shape=(out, out, 6), in_channels=6, filters=6, kernel=(3, 3),
        stride=(stride, stride), padding=padding, dilation=(dilation, dilation), groups=groups,
    )  # fmt: skip
    graph = tiny_graph(node, channels=6)
    model = backend.build(graph)
    backend.verify(graph, model)
    w = W.init(graph, seed=18)
    backend.set_weights(graph, model, w)
    x = np.random.default_rng(19).normal(size=(2, 6, 6, 6)).astype("float32")
    top, bottom, left, right = padding
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    k, per = w["c.kernel"], 6 // groups
    want = np.zeros((2, out, out, 6), "float32")
    span = stride * (out - 1) + 1
    for o in range(6):
        g = o // per
        for i in range(3):
            for j in range(3):
                patch = xp[:, i * dilation : i * dilation + span : stride, j * dilation : j * dilation + span : stride]
                want[..., o] += (patch[..., g * per : (g + 1) * per] * k[i, j, :, o]).sum(-1)
    np.testing.assert_allclose(backend.run(graph, model, x)["c"], want, atol=1e-5)


# -- BatchNorm: biased versus unbiased moving variance ---------------------------------------


@pytest.mark.parametrize("update", ["biased", "unbiased"])
def test_batchnorm_training_update_matches_numpy(backend, update: str) -> None:
    bn = ir.BatchNorm(
        name="bn", inputs=("x",), shape=(6, 6, 3), channels=3, epsilon=1e-3, decay=0.9, variance_update=update
    )
    graph = tiny_graph(bn)
    model = backend.build(graph)
    w = W.init(graph, seed=7)
    backend.set_weights(graph, model, w)
    x = np.random.default_rng(8).normal(1.0, 2.0, size=(4, 6, 6, 3)).astype("float32")
    out = np.asarray(model.get_layer("bn")(x, training=True))
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # ddof=0: normalisation is biased
    want = (x - mean) / np.sqrt(var + 1e-3) * w["bn.gamma"] + w["bn.beta"]
    np.testing.assert_allclose(out, want, atol=1e-4)
    n = x.size // 3
    batch_var = var * n / (n - 1) if update == "unbiased" else var
    after = backend.get_weights(graph, model)
    np.testing.assert_allclose(after["bn.moving_mean"], 0.9 * w["bn.moving_mean"] + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(after["bn.moving_variance"], 0.9 * w["bn.moving_variance"] + 0.1 * batch_var, rtol=1e-5)
    # The two conventions must differ measurably here, or the test proves nothing.
    assert abs(n / (n - 1) - 1) * 0.1 * var.min() > 1e-4


# -- run and train ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_small(backend):
    graph = a.lower(PAPER_SPEC, width=0.25, resolution=64)
    return graph, W.init(graph, seed=9)


@pytest.mark.slow
def test_train_step_equals_keras_own_training_loop(backend, paper_small) -> None:
    """One archc SGD step == Keras' compile/train_on_batch with SGD on the logits model."""
    graph, w = paper_small
    x = np.random.default_rng(10).normal(size=(4, 64, 64, 3)).astype("float32")
    y = np.array([1, 7, 42, 999])
    ours = backend.build(graph)
    backend.set_weights(graph, ours, w)
    backend.train_step(graph, ours, x, y, lr=0.1)
    ref = backend.build(graph)
    backend.set_weights(graph, ref, w)
    logits = keras.Model(ref.input, ref.get_layer("fc").output)
    logits.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logits.train_on_batch(x, y)
    got, want = backend.get_weights(graph, ours), backend.get_weights(graph, ref)
    moved = 0
    for k in w:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=k)
        moved += not np.allclose(got[k], w[k])
    assert moved == len(w), "every weight and every moving statistic should change in one step"


def test_run_returns_intermediates_and_is_inference(backend, paper_small) -> None:
    graph, w = paper_small
    model = backend.build(graph)
    backend.set_weights(graph, model, w)
    x = np.random.default_rng(12).normal(size=(2, 64, 64, 3)).astype("float32")
    names = [n.name for n in graph.nodes]
    out = backend.run(graph, model, x, names)
    assert list(out) == names
    for n in graph.nodes:
        assert out[n.name].shape == (2, *n.shape), n.name
    np.testing.assert_array_equal(out["input"], x)
    # Inference BN: (x - moving_mean) / sqrt(moving_var + eps) * gamma + beta, by numpy.
    c = out["conv1"]
    want = (c - w["conv1_bn.moving_mean"]) / np.sqrt(w["conv1_bn.moving_variance"] + 1e-3)
    want = want * w["conv1_bn.gamma"] + w["conv1_bn.beta"]
    np.testing.assert_allclose(out["conv1_bn"], want, atol=1e-4)
    np.testing.assert_allclose(out["predictions"], backend.run(graph, model, x)["predictions"], atol=1e-7)
    np.testing.assert_allclose(out["predictions"].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(BackendError, match=r"input of shape \(2, 3, 64, 64\)"):
        backend.run(graph, model, x.transpose(0, 3, 1, 2))  # NCHW by mistake
    with pytest.raises(BackendError, match="unknown node 'nope'"):
        backend.run(graph, model, x, ["nope"])


# -- save ------------------------------------------------------------------------------------


@pytest.mark.slow  # tests/backends/test_torch_backend.py loads its saved files without archc in the fast tier
def test_saved_model_loads_without_archc(backend, paper_small, tmp_path: Path) -> None:
    graph, w = paper_small
    model = backend.build(graph)
    backend.set_weights(graph, model, w)
    paths = backend.save(graph, model, tmp_path)
    assert paths == [tmp_path / "mobilenet_v1.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v1.keras"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    x = np.random.default_rng(13).normal(size=(2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["archcompiler"] = None  # archc must not be needed to load the model
        import numpy as np, keras
        m = keras.saving.load_model({str(paths[0])!r})
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(m(np.load({str(tmp_path / "x.npy")!r}), training=False)))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), backend.run(graph, model, x)["predictions"], atol=1e-6)


def test_failed_save_leaves_nothing(backend, paper_small, tmp_path: Path, monkeypatch) -> None:
    graph, _ = paper_small
    model = backend.build(graph)

    def half_written(path, *args, **kwargs):  # Keras dies part way through writing the file
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save", half_written)
    with pytest.raises(BackendError, match=r"cannot save keras model .*: disk full"):
        backend.save(graph, model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unbiased_batchnorm_model_saves_and_loads(backend, tmp_path: Path) -> None:
    bn = ir.BatchNorm(
        name="bn", inputs=("x",), shape=(6, 6, 3), channels=3, epsilon=1e-5, decay=0.9, variance_update="unbiased"
    )
    graph = tiny_graph(bn)
    model = backend.build(graph)
    backend.set_weights(graph, model, W.init(graph, seed=14))
    (path,) = backend.save(graph, model, tmp_path)
    loaded = keras.saving.load_model(path)  # archc's layer is registered on import
    assert type(loaded.get_layer("bn")).__name__ == "UnbiasedBatchNormalization"
    x = np.random.default_rng(15).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), backend.run(graph, model, x)["bn"], atol=1e-6)


@pytest.mark.slow
def test_a_chain_deeper_than_the_recursion_limit_builds_runs_and_saves(backend, tmp_path):
    # issue 19: a chain of 1,200 layers was a RecursionError (Keras' functional API walks the
    # graph with one Python frame per layer; the default limit is 1,000)
    depth = 1200
    spec = {"name": "chain", "input": {"size": 3, "channels": 2}, "layers": [{"op": "rescaling", "scale": 1.0,
            "offset": 0.5, "repeat": depth}]}  # fmt: skip
    net = a.compile(spec)
    limit = sys.getrecursionlimit()
    model = net.build(backend)  # verified against the IR: every one of the 1,200 layers
    x = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2) / 4  # multiples of 1/4: exact
    out = backend.run(net.graph, model, x, [net.graph.output, "rescaling_600"])
    np.testing.assert_array_equal(out[net.graph.output], x + 0.5 * depth)  # each layer applied once
    np.testing.assert_array_equal(out["rescaling_600"], x + 300)
    assert {p.suffix for p in net.save(model, backend, tmp_path)} == {".keras", ".npz"}
    assert sys.getrecursionlimit() == limit  # raised only while Keras walked the graph


def test_a_model_from_another_framework_is_a_backend_error(backend, tmp_path):
    # issue 19: save(torch_model, "keras") was an AttributeError inside the Keras glue
    torch = pytest.importorskip("torch")
    net = a.compile(ROOT / "specs" / "mobilenet.yaml", width=0.25, resolution=32)
    foreign = torch.nn.Linear(2, 2)
    x = np.zeros((1, 32, 32, 3), np.float32)
    for call in (
        lambda: net.save(foreign, "keras", tmp_path),
        lambda: backend.verify(net.graph, foreign),
        lambda: backend.get_weights(net.graph, foreign),
        lambda: backend.set_weights(net.graph, foreign, W.init(net.graph)),
        lambda: backend.run(net.graph, foreign, x),
        lambda: backend.graph_name(foreign),
    ):
        with pytest.raises(BackendError, match=r"^expected a model built by the keras backend, got Linear$"):
            call()
    assert list(tmp_path.iterdir()) == []
