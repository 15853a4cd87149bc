"""What ``archc check`` accepts, every built-in backend builds: a chain at the depth limit.

Keras walks its functional graph with one Python frame per layer of depth (a RecursionError at
1,200 layers before issue 19); archc bounds the depth (limits.MAX_GRAPH_DEPTH) and makes room
for it. The oracle is arithmetic: each of the N layers adds 0.5, so the output is x + N / 2
exactly (x holds multiples of 1/4, far below 2**24).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import archcompiler as a
from archcompiler.kit.registry import get_backend
from archcompiler.language.limits import MAX_GRAPH_DEPTH

pytestmark = pytest.mark.slow

CHAIN = {
    "name": "chain",
    "input": {"size": 3, "channels": 2},
    "layers": [{"op": "rescaling", "scale": 1.0, "offset": 0.5, "repeat": MAX_GRAPH_DEPTH}],
}


@pytest.fixture(scope="module")
def net() -> a.Compiled:
    return a.compile(CHAIN)


def _x() -> np.ndarray:
    return np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2) / 4


@pytest.mark.parametrize("name", ["torch", "keras", "onnx", "tflite"])
def test_every_backend_builds_runs_and_saves_a_chain_at_the_depth_limit(net, name, tmp_path):
    pytest.importorskip({"torch": "torch", "keras": "keras", "onnx": "onnxruntime", "tflite": "tensorflow"}[name])
    backend = get_backend(name)
    limit = sys.getrecursionlimit()
    built = net.build_to(backend, tmp_path)  # built, verified against the IR, saved
    assert built.files and all(p.is_file() for p in built.files)
    out = backend.run(net.graph, built.model, _x())[net.graph.output]
    np.testing.assert_array_equal(out, _x() + 0.5 * MAX_GRAPH_DEPTH)
    assert sys.getrecursionlimit() == limit


@pytest.mark.keras
def test_the_generated_keras_module_builds_a_chain_at_the_depth_limit(net, tmp_path):
    pytest.importorskip("keras")
    path = net.generate_to("keras", tmp_path)
    spec = importlib.util.spec_from_file_location("deep_chain_keras", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()  # raises the recursion limit itself
    assert len(model.layers) == MAX_GRAPH_DEPTH + 1
    np.testing.assert_array_equal(np.asarray(model(_x())), _x() + 0.5 * MAX_GRAPH_DEPTH)
