"""Generated Keras source is the built model: same layers, same weights, same outputs.

The generated modules run in a subprocess where archcompiler cannot be imported, so they are
proven standalone; one subprocess serves every case to keep the tier fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_first, framework

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.kit.calls import describe_graph
from archcompiler.kit.pysource import literal
from archcompiler.kit.registry import BackendError, get_backend

keras = framework("keras")
keras_emit = framework("archcompiler.backends.keras.emit")
keras_ops = framework("archcompiler.backends.keras.ops")

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def kitchen_sink() -> ir.Graph:
    """Every IR op once, with branches (multiply, add), an asymmetric pad, unbiased BN."""
    n = [
        ir.Input(name="x", inputs=(), shape=(8, 8, 3)),
        ir.Rescaling(name="pre", inputs=("x",), shape=(8, 8, 3), scale=1 / 127.5, offset=-1.0),
        ir.Normalization(name="norm", inputs=("pre",), shape=(8, 8, 3), channels=3),
        ir.Conv2D(
            name="c",
            inputs=("norm",),
            shape=(8, 8, 4),
            in_channels=3,
            filters=4,
            kernel=(3, 3),
            stride=(1, 1),
            padding=(2, 0, 1, 1),
            use_bias=True,
        ),
        ir.BatchNorm(
            name="bn", inputs=("c",), shape=(8, 8, 4), channels=4, epsilon=1e-5, decay=0.9, variance_update="unbiased"
        ),
        ir.Activation(name="hs", inputs=("bn",), shape=(8, 8, 4), kind="hard_swish"),
        ir.ZeroPad2D(name="zp", inputs=("hs",), shape=(10, 10, 4), padding=(1, 1, 1, 1)),
        ir.DepthwiseConv2D(
            name="dw",
            inputs=("zp",),
            shape=(8, 8, 8),
            in_channels=4,
            multiplier=2,
            kernel=(3, 3),
            stride=(1, 1),
            padding=(0, 0, 0, 0),
        ),
        ir.Pool2D(name="pool", inputs=("dw",), shape=(4, 4, 8), kind="max", kernel=(2, 2), stride=(2, 2)),
        ir.Activation(name="r", inputs=("pool",), shape=(4, 4, 8), kind="relu"),
        ir.GlobalPool(name="gp", inputs=("r",), shape=(1, 1, 8), kind="avg", keepdims=True),
        ir.Activation(name="sg", inputs=("gp",), shape=(1, 1, 8), kind="hard_sigmoid"),
        ir.Multiply(name="mul", inputs=("r", "sg"), shape=(4, 4, 8)),
        ir.LayerScale(name="ls", inputs=("mul",), shape=(4, 4, 8), channels=8),
        ir.DropPath(name="dp", inputs=("ls",), shape=(4, 4, 8), rate=0.1),
        ir.Add(name="add", inputs=("dp", "r"), shape=(4, 4, 8)),
        ir.MobileMQA(
            name="attn",
            inputs=("add",),
            shape=(4, 4, 8),
            in_channels=8,
            filters=8,
            heads=2,
            key_dim=4,
            value_dim=4,
            kv_stride=2,
            kv_padding=(0, 1, 0, 1),
        ),
        ir.Concat(name="cat", inputs=("attn", "pool"), shape=(4, 4, 16)),
        ir.Flatten(name="fl", inputs=("cat",), shape=(256,)),
        ir.Dense(name="fc", inputs=("fl",), shape=(5,), in_features=256, units=5),
        ir.Dropout(name="do", inputs=("fc",), shape=(5,), rate=0.5),
        ir.Softmax(name="sm", inputs=("do",), shape=(5,)),
    ]
    return ir.Graph(name="kitchen_sink", nodes=tuple(n), outputs=("sm",), width=1.0, resolution=(8, 8))


def lowered(spec: str, width: float, resolution: int) -> ir.Graph:
    return a.lower(a.load(ROOT / "specs" / f"{spec}.yaml"), width=width, resolution=resolution)


CASES = {
    "mobilenet_1_224": lambda: lowered("mobilenet", 1.0, 224),
    "mobilenet_05_160": lambda: lowered("mobilenet", 0.5, 160),
    "mobilenet_025_199": lambda: lowered("mobilenet", 0.25, 199),
    "mobilenet_keras_05_128": lambda: lowered("mobilenet_keras", 0.5, 128),
    "mobilenet_keras_025_199": lambda: lowered("mobilenet_keras", 0.25, 199),
    # one function for V2's and V3's inverted-residual block, whose guards drop layers per instance
    "mobilenet_v2_05_97": lambda: lowered("mobilenet_v2", 0.5, 97),
    "mobilenet_v3_large_05_97": lambda: lowered("mobilenet_v3_large", 0.5, 97),
    "mobilenet_v3_small_075_97": lambda: lowered("mobilenet_v3_small", 0.75, 97),
    # Keras' lettered names (block2a, block2b): one function for every instance of the block
    "efficientnet_v2_05_97": lambda: lowered("efficientnet_v2", 0.5, 97),
    "kitchen_sink": kitchen_sink,
    "tiny_resnet": lambda: a.lower(a.load(ROOT / "tests" / "specs" / "tiny_resnet.yaml")),
}

FAST = ("mobilenet_1_224", "mobilenet_keras_05_128", "kitchen_sink", "tiny_resnet")
"""The cases the fast tier emits and runs (the rest in the slow tier): the tests below that name
a case use these, and each kind of graph (paper and Keras layouts, a DAG, every op) is here
once; guarded blocks (V2, V3) are in the slow tier."""
KEYS = [key if key in FAST else pytest.param(key, marks=pytest.mark.slow) for key in CASES]

RUNNER = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.modules["archcompiler"] = None  # generated code must not need archc
    import numpy as np, keras

    for job in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location(job["module"], job["path"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = mod.build_model()
        w = np.load(job["weights"])
        for layer in model.layers:
            for v in layer.weights:
                if v.name != "count":  # Normalization's sample count: Keras bookkeeping, not canonical
                    v.assign(w[layer.name + "." + v.name])
            getattr(layer, "finalize_state", lambda: None)()  # Normalization re-reads mean, variance
        table = [
            [layer.name, type(layer).__name__, [[v.name, list(v.shape)] for v in layer.weights]]
            for layer in model.layers
        ]
        names = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
        outs = keras.Model(model.input, [model.get_layer(n).output for n in names])(np.load(job["x"]))
        np.savez(job["out"], **{n: np.asarray(o) for n, o in zip(names, outs)})
        with open(job["table"], "w") as fh:
            json.dump({"layers": table, "name": model.name}, fh)
    """
)


@pytest.fixture(scope="module")
def backend():
    return get_backend("keras")


@pytest.fixture(scope="module")
def emitted(backend, tmp_path_factory, request):
    """Per case the run selects: graph, source, the built model (with weights), x, and what the
    subprocess saw (all cases in one subprocess, so that Keras is imported once)."""
    tmp = tmp_path_factory.mktemp("emit")
    selected = set(FAST)
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is request.module and callspec is not None and "key" in callspec.params:
            selected.add(callspec.params["key"])
    jobs, cases = [], {}
    for key, make in CASES.items():
        if key not in selected:
            continue
        graph = make()
        source = backend.emit(graph)
        path = tmp / f"{key}.py"
        path.write_text(source, encoding="utf8")
        w = W.init(graph, seed=1)
        np.savez(tmp / f"{key}_w.npz", **w)
        x = np.random.default_rng(2).normal(size=(2, *graph.input_shape)).astype("float32")
        np.save(tmp / f"{key}_x.npy", x)
        model = backend.build(graph)
        backend.set_weights(graph, model, w)
        cases[key] = {"graph": graph, "source": source, "path": path, "model": model, "x": x}
        jobs.append(
            {
                "module": f"gen_{key}",
                "path": str(path),
                "weights": str(tmp / f"{key}_w.npz"),
                "x": str(tmp / f"{key}_x.npy"),
                "out": str(tmp / f"{key}_out.npz"),
                "table": str(tmp / f"{key}_table.json"),
            }
        )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], check=True, env=env, cwd=tmp)
    for key, job in zip(cases, jobs, strict=True):
        with np.load(job["out"]) as data:
            cases[key]["outputs"] = {k: data[k] for k in data.files}
        cases[key]["table"] = json.loads(Path(job["table"]).read_text())
    return cases


def layer_table(model: keras.Model) -> list[list]:
    return [
        [layer.name, type(layer).__name__, [[v.name, list(v.shape)] for v in layer.weights]] for layer in model.layers
    ]


@pytest.mark.parametrize("key", KEYS)
def test_same_layers_and_weight_shapes_as_build(emitted, key: str) -> None:
    case = emitted[key]
    assert case["table"]["layers"] == layer_table(case["model"])
    assert case["table"]["name"] == case["model"].name


@pytest.mark.parametrize("key", KEYS)
def test_outputs_match_build_at_every_layer(backend, emitted, key: str) -> None:
    case = emitted[key]
    graph, got = case["graph"], case["outputs"]
    names = [n.name for n in graph.nodes if not isinstance(n, ir.Input)]
    want = backend.run(graph, case["model"], case["x"], names)
    assert set(names) <= set(got)
    for n in names:
        np.testing.assert_allclose(got[n], want[n], atol=1e-6, rtol=0, err_msg=n)
    assert np.abs(want[graph.output]).max() > 0


@pytest.mark.parametrize("key", KEYS)
def test_deterministic_and_ruff_clean(backend, emitted, key: str) -> None:
    case = emitted[key]
    assert backend.emit(case["graph"]) == case["source"]
    if not RUFF.exists():
        pytest.skip("ruff not installed")
    rules = ["--select", "E,F,W,I,B,UP,RUF,SIM", "--line-length", "120"]
    check = subprocess.run([RUFF, "check", "--isolated", *rules, case["path"]], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = [RUFF, "format", "--isolated", "--line-length", "120", "--check", case["path"]]
    assert subprocess.run(fmt, capture_output=True).returncode == 0


def test_repeated_blocks_are_one_function_and_a_table(emitted) -> None:
    """Not dozens of unrolled lines: MobileNet's 13 blocks are rows of one table."""
    paper = emitted["mobilenet_1_224"]["source"]
    assert paper.count("\ndef ") == 2  # one block function (stride 1 and 2 alike) and build_model
    assert "for block, *args in BLOCKS:" in paper
    assert paper.count('name=f"conv_dw_{index}"') == 1
    assert "(separable_block, 2, 2, 128)," in paper  # index, stride, filters of Table 1's 2nd row
    keras_src = emitted["mobilenet_keras_05_128"]["source"]
    assert keras_src.count("\ndef ") == 3  # padded stride-2 blocks have one more layer
    assert len(keras_src.splitlines()) < 120
    sink = emitted["kitchen_sink"]["source"]
    assert "tensors[" in sink and "class UnbiasedBatchNormalization" in sink
    resnet = emitted["tiny_resnet"]["source"]  # a DAG folds too: the skip input is a parameter
    assert resnet.count("\ndef ") == 2 and "res2_conv_a" not in resnet
    assert "tensors[source]" in resnet and '(residual_block, 3, "res2_out"),' in resnet


def test_docstring_names_spec_and_costs(emitted) -> None:
    src = emitted["mobilenet_1_224"]["source"]
    head = src.split('"""')[1]
    assert "mobilenet_v1" in head and "the spec file mobilenet.yaml." in head  # loaded by an absolute path:
    assert "/specs/" not in src  # its file name, never the author's folders (files.spec_reference)
    assert "4,253,864 parameters" in head  # Keras count (docs/NUMBERS.md, a=1.0)
    assert "568,740,352 multiply-adds" in head  # paper MACs at 224 (docs/NUMBERS.md)
    assert "Width multiplier 1.0, input 224x224" in head


def test_builder_and_emitter_cover_the_same_ops(backend) -> None:
    """One table: every IR op has a handler, and the kitchen-sink graph (every op) builds and
    emits every call of it."""
    graph = kitchen_sink()
    assert {n.op for n in graph.nodes} == set(ir.IR_OPS)
    assert set(keras_ops.HANDLERS) == set(ir.IR_OPS) == backend.ops
    built = {layer.name for layer in backend.build(graph).layers}
    source = backend.emit(graph)
    for item in describe_graph(graph, keras_ops.HANDLERS, "keras"):
        for call in item.calls:
            assert call.name in built
            # ruff normalises quotes; every string here is an identifier or a plain literal.
            assert keras_emit.constructor(call, literal(call.name)).replace("'", '"') in source


HOSTILE = [
    'x"""; import os; os.system("echo pwned")  #',
    "line\nbreak '''\\",
    "__import__('os').system('echo pwned')",
    "ｅｖａｌ — unicode look-alikes",
]


@pytest.mark.parametrize("text", fast_first(HOSTILE, keep=0))
def test_hostile_description_and_source_are_inert(backend, tmp_path: Path, text: str) -> None:
    graph = dataclasses.replace(lowered("mobilenet", 0.25, 32), description=text, source=text)
    source = backend.emit(graph)
    path = tmp_path / "hostile.py"
    path.write_text(source, encoding="utf8")
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('h', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "print(repr(m.SPEC_DESCRIPTION)); print(repr(m.SPEC_SOURCE))"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "pwned" not in res.stdout.replace(repr(text), "")
    assert res.stdout.splitlines() == [repr(text), repr(text)]


@pytest.mark.parametrize("name", ["class", "bad-name", "x y", "ｍodel"])
def test_hostile_names_are_rejected(backend, name: str) -> None:
    graph = lowered("mobilenet", 0.25, 32)
    with pytest.raises(BackendError, match="not a valid Python identifier"):
        backend.emit(dataclasses.replace(graph, name=name))
