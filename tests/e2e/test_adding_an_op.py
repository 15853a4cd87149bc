"""docs/adding-an-op.md, done literally: its code blocks become a plug-in package in a temporary
folder, installed as pip would (the package on the path, a dist-info holding pyproject's entry
points), and a fresh Python process checks that the op works like a built-in one.

Each check runs in a subprocess so the registered op does not leak into other tests. The fast
one needs no torch or TensorFlow: registration, the spec language, costs against hand
arithmetic, weights, the parity bound, the Keras emitter, ONNX against a numpy formula, and
loud failures. The slow one builds the op in torch, Keras, ONNX and TFLite, judges them with
parity, and runs the code both emitters generate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/adding-an-op.md"
FENCE = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def documented_files() -> dict[str, str]:
    """Every code block of the page that names a file (``title="path"``): path -> text."""
    files = {title: text for _, title, text in FENCE.findall(DOC.read_text(encoding="utf-8"))}
    assert files, f"{DOC} has no code blocks with a title"
    return files


def project_table(pyproject: str) -> dict[str, object]:
    """The ``[project]`` table of the page's pyproject.toml: its ``key = "value"`` lines and its
    entry points by group (the TOML it uses; tomllib is not in Python 3.10)."""
    project: dict[str, object] = {}
    groups: dict[str, dict[str, str]] = {}
    section: dict[str, object] | dict[str, str] | None = None
    for line in pyproject.splitlines():
        header = re.fullmatch(r'\[project(?:\.entry-points\."([^"]+)")?\]', line.strip())
        pair = re.fullmatch(r'([\w.-]+) = "([^"]*)"', line.strip())
        if header:
            section = project if header[1] is None else groups.setdefault(header[1], {})
        elif line.startswith("["):
            section = None
        elif pair and section is not None:
            section[pair[1]] = pair[2]
    return {**project, "entry-points": groups}


def install(folder: Path, files: dict[str, str]) -> None:
    """The documented plug-in in ``folder``, installed as ``pip install`` would: its files, and
    a dist-info whose entry_points.txt holds the entry points pyproject.toml declares."""
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    project: dict[str, Any] = project_table(files["pyproject.toml"])
    dist = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (dist / "entry_points.txt").write_text("\n".join(groups))


def run(folder: Path, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter, in ``folder``, with the plug-in on its path."""
    env = {**os.environ, "PYTHONPATH": str(folder), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    install(tmp_path, documented_files())
    return tmp_path


def test_the_page_documents_a_whole_plugin() -> None:
    files = documented_files()
    entries: dict[str, Any] = project_table(files["pyproject.toml"])["entry-points"]  # type: ignore[assignment]
    assert set(entries) == {f"archcompiler.{g}" for g in ("ops", "handlers.torch", "handlers.keras", "handlers.onnx")}
    for group in entries.values():
        for value in group.values():
            module = value.partition(":")[0]
            assert f"{module.replace('.', '/')}.py" in files, value  # every entry point's module is on the page
    assert "scaled_net.yaml" in files


FAST = """
    import sys

    import numpy as np

    import archcompiler as a
    from archcompiler import ops, weights
    from archcompiler.analysis.cost import cost
    from archcompiler.kit.registry import get_backend
    from archcompiler.language.spec import json_schema
    from archcompiler.parity.inference import node_bound
    from archcompiler.tools.cli import main

    assert "channel_scale" in ops.IR_OPS and "channel_scale" in ops.SPEC_OPS
    assert "channel_scale" not in ops.BUILTIN_OPS
    assert "channel_scale" in str(json_schema())

    net = a.compile("scaled_net.yaml")
    g = net.graph
    assert [n.name for n in g.nodes if n.op == "channel_scale"] == ["stem_scale", "pool_scale"]
    assert g["stem_scale"].shape == (8, 8, 8) and g["pool_scale"].shape == (8,)

    # costs by hand: conv 3x3x3x8 = 216 weights at 8x8 outputs; dense 8x10 (+10 biases);
    # 8 gammas per channel_scale; no multiply-adds of its own
    paper, keras = cost(g, "paper"), cost(g, "keras")
    assert (paper.params, paper.macs) == (216 + 80 + 8 + 8, 216 * 8 * 8 + 80), (paper.params, paper.macs)
    assert (keras.trainable, keras.non_trainable) == (216 + 80 + 10 + 8 + 8, 0)
    assert paper.node("stem_scale").params == 8 and paper.node("stem_scale").category == "Channel Scale"

    w = weights.init(g, 0)
    assert w["stem_scale.gamma"].shape == (8,) and "pool_scale.gamma" in weights.specs(g)
    x64 = {n.name: np.ones((2, *n.shape)) for n in g.nodes}
    bound = node_bound(g["stem_scale"], w, x64)
    assert bound.lipschitz == (float(np.abs(w["stem_scale.gamma"]).max()),) and bound.reductions == 1

    # the Keras emitter needs no framework: it copies the plug-in's layer class
    source = get_backend("keras").emit(g)
    assert "class ChannelScale(keras.layers.Layer):" in source and "ChannelScale(8" in source
    compile(source, "scaled_net_keras.py", "exec")

    # ONNX (no torch, no TensorFlow): the op against its formula, x * gamma per channel
    onnx = get_backend("onnx")
    model = onnx.build(g)
    onnx.verify(g, model)
    onnx.set_weights(g, model, w)
    image = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    out = onnx.run(g, model, image, ["stem", "stem_scale", "pool", "pool_scale"])
    np.testing.assert_allclose(out["stem_scale"], out["stem"] * w["stem_scale.gamma"], rtol=1e-6)
    np.testing.assert_allclose(out["pool_scale"], out["pool"] * w["pool_scale.gamma"], rtol=1e-6)

    assert main(["summary", "scaled_net.yaml"]) == 0
    assert not {"torch", "tensorflow", "keras"} & set(sys.modules), "a framework was imported"
    print("fast checks passed")
"""


def test_a_plugin_op_works_in_the_spec_language_costs_parity_bound_keras_emit_and_onnx(plugin: Path) -> None:
    res = run(plugin, FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fast checks passed" in res.stdout
    assert re.search(r"stem_scale\s+channel_scale\s+8x8x8\s+8\s", res.stdout), res.stdout  # archc summary's row


def test_a_plugin_op_without_a_parity_bound_stops_the_import(plugin: Path) -> None:
    op = plugin / "archc_channel_scale/op.py"
    text = op.read_text(encoding="utf-8")
    assert "    def parity_bound(" in text
    op.write_text(text.replace("    def parity_bound(", "    def parity_bound_unused("), encoding="utf-8")
    res = run(plugin, "import archcompiler")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    op = "op 'channel_scale' (archc_channel_scale.op.ChannelScaleOp)"
    assert f"OpDefinitionError: {op} does not define parity_bound" in last


def test_a_handler_for_an_op_nobody_registered_stops_the_backend_import(plugin: Path) -> None:
    ep = next((plugin).glob("*.dist-info")) / "entry_points.txt"
    entry = "[archcompiler.ops]\nchannel_scale = archc_channel_scale.op:ChannelScaleOp\n"
    ep.write_text(ep.read_text().replace(entry, ""))
    res = run(plugin, "import archcompiler.backends.onnx.ops")
    assert res.returncode == 1
    assert "plug-in handler 'channel_scale' of backend 'onnx'" in res.stderr
    assert "no op 'channel_scale' is registered" in res.stderr


SLOW = """
    import torch  # before TensorFlow (docs/DESIGN.md)
    import numpy as np

    import archcompiler as a
    from archcompiler import weights
    from archcompiler.kit.registry import get_backend
    from archcompiler.parity.inference import parity

    g = a.compile("scaled_net.yaml").graph
    w = weights.init(g, 0)
    image = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    for name in ("torch", "keras", "onnx", "tflite"):
        backend = get_backend(name)
        model = backend.build(g)
        backend.verify(g, model)  # every node's shape and parameter counts against the IR
        backend.set_weights(g, model, w)
        got = backend.get_weights(g, model)
        assert all(np.array_equal(got[k], w[k]) for k in w), name

    for dtype in ("float32", "float64"):
        backends = ("torch", "keras", "onnx", "tflite") if dtype == "float32" else ("torch", "keras")
        report = parity(g, backends, dtype=dtype)
        assert report.ok, report.table()
        assert {d.node for d in report.diffs} >= {"stem_scale", "pool_scale"}

    # both emitters: the generated module defines ChannelScale itself and computes what the
    # built model does with the same weights
    torch_backend = get_backend("torch")
    built = torch_backend.build(g)
    torch_backend.set_weights(g, built, w)
    source = torch_backend.emit(g)
    assert "class ChannelScale(nn.Module):" in source
    namespace = {"__name__": "scaled_net_torch"}
    exec(compile(source, "scaled_net_torch.py", "exec"), namespace)
    generated = namespace["ScaledNet"]().eval()
    generated.load_state_dict(built.state_dict())
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        assert torch.equal(generated(x), built(x))

    keras_backend = get_backend("keras")
    built = keras_backend.build(g)
    keras_backend.set_weights(g, built, w)
    namespace = {"__name__": "scaled_net_keras"}
    exec(compile(keras_backend.emit(g), "scaled_net_keras.py", "exec"), namespace)
    generated = namespace["build_model"]()
    generated.set_weights(built.get_weights())
    np.testing.assert_array_equal(np.asarray(generated(image)), np.asarray(built(image)))
    print("slow checks passed")
"""


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
def test_a_plugin_op_builds_and_agrees_in_four_backends_and_both_emitters(plugin: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    res = run(plugin, SLOW, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "slow checks passed" in res.stdout
