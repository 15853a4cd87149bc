"""The torch emitter: standalone source equal to the built model, deterministic, lint-clean, inert.

The emitted module is always imported in a subprocess where ``archcompiler`` cannot be
imported, and compared with the model build() makes, node by node.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jinja2")

from helpers import fast_first, framework

import archcompiler as a
from archcompiler import ir
from archcompiler import weights as W
from archcompiler.kit.registry import BackendError, UnsupportedOpError, get_backend

torch = framework("torch")

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
PAPER = str(REPO / "specs/mobilenet.yaml")
KERAS = str(REPO / "specs/mobilenet_keras.yaml")
RUFF = Path(sys.executable).with_name("ruff")


@pytest.fixture(scope="module")
def backend():
    return get_backend("torch")


def all_ops_graph() -> ir.Graph:
    """Every IR op once, with a residual add and a squeeze-excite multiply (a DAG)."""
    n = ir
    nodes = (
        n.Input(name="image", inputs=(), shape=(10, 8, 3)),
        n.Rescaling(name="pre", inputs=("image",), shape=(10, 8, 3), scale=1 / 127.5, offset=-1.0),
        n.Normalization(name="norm", inputs=("pre",), shape=(10, 8, 3), channels=3),
        n.Conv2D(
            name="stem",
            inputs=("norm",),
            shape=(5, 4, 8),
            in_channels=3,
            filters=8,
            kernel=(3, 3),
            stride=(2, 2),
            padding=(0, 1, 0, 1),
            use_bias=True,
        ),
        n.BatchNorm(
            name="stem_bn",
            inputs=("stem",),
            shape=(5, 4, 8),
            channels=8,
            epsilon=1e-3,
            decay=0.99,
            variance_update="biased",
        ),
        n.Activation(name="stem_act", inputs=("stem_bn",), shape=(5, 4, 8), kind="hard_swish"),
        n.ZeroPad2D(name="pad", inputs=("stem_act",), shape=(6, 6, 8), padding=(1, 0, 2, 0)),
        n.DepthwiseConv2D(
            name="dw",
            inputs=("pad",),
            shape=(6, 6, 16),
            in_channels=8,
            multiplier=2,
            kernel=(3, 3),
            stride=(1, 1),
            padding=(1, 1, 1, 1),
        ),
        n.BatchNorm(
            name="dw_bn",
            inputs=("dw",),
            shape=(6, 6, 16),
            channels=16,
            epsilon=1e-5,
            decay=0.9,
            variance_update="unbiased",
        ),
        n.Conv2D(
            name="expand",
            inputs=("pad",),
            shape=(6, 6, 16),
            in_channels=8,
            filters=16,
            kernel=(1, 1),
            stride=(1, 1),
            padding=(0, 0, 0, 0),
        ),
        n.LayerScale(name="scale", inputs=("expand",), shape=(6, 6, 16), channels=16),
        n.DropPath(name="expand_drop", inputs=("scale",), shape=(6, 6, 16), rate=0.1),
        n.Add(name="residual", inputs=("dw_bn", "expand_drop"), shape=(6, 6, 16)),
        n.MobileMQA(
            name="attn",
            inputs=("residual",),
            shape=(6, 6, 16),
            in_channels=16,
            filters=16,
            heads=2,
            key_dim=4,
            value_dim=3,
            kv_stride=2,
            kv_padding=(1, 1, 1, 1),
            variance_update="biased",
        ),
        n.GlobalPool(name="squeeze", inputs=("attn",), shape=(1, 1, 16), kind="avg", keepdims=True),
        n.Activation(name="gate", inputs=("squeeze",), shape=(1, 1, 16), kind="hard_sigmoid"),
        n.Multiply(name="excite", inputs=("residual", "gate"), shape=(6, 6, 16)),
        n.Pool2D(name="pool", inputs=("excite",), shape=(3, 3, 16), kind="max", kernel=(2, 2), stride=(2, 2)),
        n.Pool2D(name="excite_pool", inputs=("excite",), shape=(3, 3, 16), kind="avg", kernel=(2, 2), stride=(2, 2)),
        n.Concat(name="cat", inputs=("pool", "excite_pool"), shape=(3, 3, 32)),
        n.Activation(name="act2", inputs=("cat",), shape=(3, 3, 32), kind="swish"),
        n.Flatten(name="flat", inputs=("act2",), shape=(288,)),
        n.Dense(name="fc", inputs=("flat",), shape=(10,), in_features=288, units=10),
        n.Dropout(name="drop", inputs=("fc",), shape=(10,), rate=0.5),
        n.Softmax(name="probs", inputs=("drop",), shape=(10,)),
    )
    return ir.Graph(name="all_ops", nodes=nodes, outputs=("probs",), width=1.0, resolution=(10, 8))


RUNNER = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.modules["archcompiler"] = None  # the generated module must not need archc
    import numpy as np, torch
    torch.set_num_threads(1)  # as the backend's run() does: same kernels, so 1e-6 holds
    path, cls_name, state_path, x_path, out_path = sys.argv[1:6]
    spec = importlib.util.spec_from_file_location("generated_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, cls_name)().eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(torch.load(state_path, weights_only=True))
    outs = {}
    for name, child in model.named_children():
        # a copy: an in-place ReLU after this layer would overwrite the tensor itself
        child.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o.detach().numpy().copy()))
    with torch.no_grad():
        model(torch.from_numpy(np.load(x_path)))
    np.savez(out_path, **outs)
    loaded = [m for m, v in sys.modules.items() if v is not None and m.startswith("archcompiler")]
    print(json.dumps({"keys": list(shapes), "shapes": shapes, "archc": loaded}))
    """
)


def run_emitted(source: str, cls_name: str, state: dict, x_nchw: np.ndarray, tmp: Path) -> tuple[dict, dict]:
    (tmp / "model.py").write_text(source)
    torch.save(state, tmp / "state.pt")
    np.save(tmp / "x.npy", x_nchw)
    (tmp / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "runner.py", "model.py", cls_name, "state.pt", "x.npy", "outs.npz"],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    with np.load(tmp / "outs.npz") as data:
        outs = {k: data[k] for k in data.files}
    return info, outs


def check_same_model(backend, g: ir.Graph, cls_name: str, tmp: Path) -> float:
    """Emitted vs built: same state_dict keys, order and shapes; every node within 1e-6."""
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=3))
    shape = g.input_shape
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    info, outs = run_emitted(backend.emit(g), cls_name, model.state_dict(), x.transpose(0, 3, 1, 2).copy(), tmp)
    assert info["archc"] == []
    assert info["keys"] == list(model.state_dict())
    assert info["shapes"] == {k: list(v.shape) for k, v in model.state_dict().items()}
    layer_names = [n.name for n in g.nodes if not isinstance(n, ir.Input)]
    helpers = set(outs) - set(layer_names)  # e.g. the nn.ZeroPad2d before a conv: "<node>_pad"
    assert set(layer_names) <= set(outs)
    assert all(h.rsplit("_", 1)[0] in layer_names and h.rsplit("_", 1)[1] in ("pad", "pool") for h in helpers), helpers
    built = backend.run(g, model, x, layer_names)
    worst = 0.0
    for name in layer_names:
        got = outs[name].transpose(0, 2, 3, 1) if outs[name].ndim == 4 else outs[name]
        assert got.shape == built[name].shape, name
        diff = float(np.abs(got - built[name]).max())
        assert diff <= 1e-6, f"{name}: {diff}"
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize(
    ("spec", "cls_name", "width", "resolution"),
    fast_first(
        [
            (KERAS, "MobilenetKeras", 0.25, 128),
            # guarded layers (expansion, stride-2 pad, squeeze-excite, residual add) and a choice of
            # activation inside one block function
            (str(REPO / "specs/mobilenet_v3_small.yaml"), "MobilenetV3Small", 0.75, 97),
            (PAPER, "MobilenetV1", 0.5, 160),
            (PAPER, "MobilenetV1", 0.25, 199),
            (KERAS, "MobilenetKeras", 0.5, 199),
            (str(REPO / "specs/mobilenet_v2.yaml"), "MobilenetV2", 0.5, 97),
            (str(REPO / "specs/mobilenet_v3_large.yaml"), "MobilenetV3Large", 0.5, 97),
            # Keras' lettered names (block2a, block2b): one function for every instance of the block
            (str(REPO / "specs/efficientnet_v2.yaml"), "EfficientnetV2B0", 0.5, 97),
        ],
        keep=2,
    ),
)
def test_emitted_model_equals_built_model(backend, tmp_path, spec, cls_name, width, resolution):
    check_same_model(backend, a.lower(a.load(spec), width=width, resolution=resolution), cls_name, tmp_path)


def test_builder_and_emitter_cover_every_ir_op(backend, tmp_path):
    g = all_ops_graph()
    assert {n.op for n in g.nodes} == ir.IR_OPS  # the graph really uses every op
    assert backend.ops == ir.IR_OPS
    backend.verify(g, backend.build(g))
    check_same_model(backend, g, "AllOps", tmp_path)


RESNET = (REPO / "tests/specs/tiny_resnet.yaml").read_text(encoding="utf-8")


def test_residual_blocks_are_detected_on_a_dag(backend, tmp_path):
    """Block detection is generic: a residual squeeze-excite block (not MobileNet) becomes one
    function, its skip input a parameter, and the model still equals the built one."""
    g = a.lower(a.load_text(RESNET, "tiny_resnet.yaml"))
    assert any(n.op == "add" for n in g.nodes) and any(n.op == "multiply" for n in g.nodes)
    src = backend.emit(g)
    assert len(re.findall(r"\ndef \w+_block\(", src)) == 1  # besides layers.py helpers it copies
    assert '(Add(), (f"res{index}_excite", source))' in src
    assert '1, "stem_relu")' in src and '3, "res2_out")' in src
    assert "res2_conv_a" not in src
    backend.verify(g, backend.build(g))
    check_same_model(backend, g, "TinyResnet", tmp_path)


@pytest.mark.parametrize("op", sorted(ir.IR_OPS - {"input"}))
def test_an_op_missing_from_the_table_fails_build_and_emit_alike(op):
    from archcompiler.backends.torch.build import build_module
    from archcompiler.backends.torch.emit import emit_source
    from archcompiler.backends.torch.ops import HANDLERS

    g = all_ops_graph()
    partial = {k: h for k, h in HANDLERS.items() if k != op}
    first = next(n for n in g.nodes if n.op == op)
    with pytest.raises(UnsupportedOpError, match=first.name):
        build_module(g, partial)
    with pytest.raises(UnsupportedOpError, match=first.name):
        emit_source(g, partial)


def test_repeated_blocks_are_one_function_in_a_loop(backend):
    g = a.lower(a.load(KERAS), width=1.0, resolution=224)
    src = backend.emit(g)
    # 13 separable blocks -> two block functions (plain and down-sampling) and one table
    assert len(re.findall(r"\ndef \w+_block\(", src)) == 2
    assert "for block, *args in BLOCKS:" in src
    assert "conv_dw_7" not in src  # no unrolled block layers
    assert len(src.splitlines()) < 200
    assert '"""PyTorch model ``mobilenet_keras``' in src
    assert "4,231,976 parameters" in src  # torch count at width 1.0 (docs/NUMBERS.md)
    assert "568,740,352 multiply-adds" in src  # paper MACs at 1.0-224 (docs/NUMBERS.md)


@pytest.mark.slow
def test_emit_is_deterministic_across_processes(backend, tmp_path):
    code = (
        "import archcompiler as a, sys; from archcompiler.kit.registry import get_backend; "
        f"g = a.lower(a.load({PAPER!r}), width=0.5, resolution=160); sys.stdout.write(get_backend('torch').emit(g))"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
    g = a.lower(a.load(PAPER), width=0.5, resolution=160)
    assert outs[0] == outs[1] == backend.emit(g)


@pytest.mark.skipif(not RUFF.exists() and shutil.which("ruff") is None, reason="ruff not installed")
@pytest.mark.parametrize("which", ["paper", "keras", "all_ops", "resnet"])
def test_emitted_source_is_formatted_and_lint_clean(backend, tmp_path, which):
    g = {
        "paper": lambda: a.lower(a.load(PAPER), width=0.75, resolution=199),
        "keras": lambda: a.lower(a.load(KERAS), width=1.0, resolution=224),
        "all_ops": all_ops_graph,
        "resnet": lambda: a.lower(a.load_text(RESNET, "tiny_resnet.yaml")),
    }[which]()
    path = tmp_path / "model.py"
    path.write_text(backend.emit(g))
    ruff = str(RUFF) if RUFF.exists() else shutil.which("ruff")
    fmt = subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "120", "--check", str(path)], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    lint = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--line-length",
            "120",
            "--target-version",
            "py310",
            "--select",
            "E,F,W,I,B,UP,RUF,SIM",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


HOSTILE = [
    'x"""\nimport os\nos.system("touch PWNED")\n"""',
    "'; __import__('os').system('touch PWNED'); '",
    "\\' + __import__('os').system('touch PWNED') + \\'",
    "{{ graph_name }} {% raw %} \x00 \u2028 ｉｍｐｏｒｔ",
]


@pytest.mark.parametrize("text", fast_first(HOSTILE))
def test_hostile_description_and_source_are_inert(backend, tmp_path, text):
    g = dataclasses.replace(all_ops_graph(), description=text, source=text)
    src = backend.emit(g)
    assert text not in src.split("SPEC_NAME")[0]  # never raw in the docstring
    (tmp_path / "model.py").write_text(src)
    code = (
        "import importlib.util, json, sys; s = importlib.util.spec_from_file_location('m', 'model.py'); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "print(json.dumps([m.SPEC_DESCRIPTION, m.SPEC_SOURCE]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [text, text]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["not an identifier", "class", "x\nimport os", "forward"])
def test_unsafe_names_are_rejected(backend, name):
    g = all_ops_graph()
    if name == "forward":  # a valid identifier that would shadow nn.Module.forward
        nodes = tuple(dataclasses.replace(n, name="forward") if n.name == "act2" else n for n in g.nodes)
        nodes = tuple(
            dataclasses.replace(n, inputs=tuple("forward" if i == "act2" else i for i in n.inputs)) for n in nodes
        )
        g = dataclasses.replace(g, nodes=nodes)
    else:
        g = dataclasses.replace(g, name=name)
    with pytest.raises(BackendError):
        backend.emit(g)


@pytest.mark.parametrize(
    ("graph_name", "expected"),
    [
        ("mobilenet_v1", "MobilenetV1"),
        ("add", "AddModel"),
        ("flatten_h_w_c", "FlattenHWCModel"),
        ("w_i_d_t_h", "WIDTHModel"),
    ],
)
def test_model_class_never_shadows_a_module_name(graph_name, expected):
    from archcompiler.backends.torch.emit import class_name

    assert class_name(graph_name) == expected


def test_templates_render_with_strict_undefined():
    import jinja2
    from archcompiler.backends.torch.emit import TEMPLATES

    from archcompiler.kit.pysource import template_environment

    with pytest.raises(jinja2.UndefinedError):
        template_environment(TEMPLATES).from_string("{{ missing }}").render()


def test_a_dropped_empty_pad_does_not_let_an_activation_overwrite_a_shared_input(backend):
    """Found in review: the emitter drops a block instance's pad of nothing, so an in-place
    activation after it would overwrite the block input the residual add reads. Oracle: the
    node-by-node evaluation (which never runs a layer in place over a value it returns)."""
    import torch

    g = a.lower(a.load(REPO / "tests/specs/empty_pad_relu.yaml"))
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=3))
    namespace: dict[str, object] = {"__name__": "generated_empty_pad"}
    exec(compile(backend.emit(g), "generated_empty_pad", "exec"), namespace)  # archc's own output
    generated = namespace["EmptyPadRelu"]().eval()  # type: ignore[operator]
    generated.load_state_dict(model.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        want = model.forward_nodes(x.clone(), [g.output])[g.output]
        for forward in (model, generated):
            torch.testing.assert_close(forward(x.clone()), want, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_generated_modules_of_two_variants_are_apart(tmp_path: Path) -> None:
    """Each variant's module has its own file and class, and carries its own params (s2's
    drop rate 0.3, the others' 0.2)."""
    spec = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "scaled.yaml")
    for variant in ("s1", "s2"):
        a.compile(spec, variant=variant).generate_to("torch", tmp_path)
    s1, s2 = (
        (tmp_path / "scaled_s1_1_40_depth1_1_torch.py").read_text(),
        (tmp_path / "scaled_s2_1_5_48_depth1_4_torch.py").read_text(),
    )
    assert "class ScaledS1(" in s1 and "class ScaledS2(" in s2
    assert "nn.Dropout(0.2)" in s1 and "nn.Dropout(0.3)" in s2
