"""Every op and every activation kind (tests/specs/every_op.yaml, which tests/ops/test_every_op.py
keeps complete) in every built-in backend: built, verified against the IR, weights moved both
ways, judged by parity against the float64 oracle, and reproduced by both emitters.

A backend whose table misses a built-in op or an activation kind fails at its import
(kit.registry.handler_table, check_kinds); this is where the ops it has must also work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import ir, ops, weights
from archcompiler.kit.registry import get_backend
from archcompiler.parity.inference import parity

torch = framework("torch")
framework("tensorflow")
framework("onnxruntime")

pytestmark = [pytest.mark.torch, pytest.mark.keras, pytest.mark.onnx, pytest.mark.tflite]

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("torch", "keras", "onnx", "tflite")


@pytest.fixture(scope="module")
def graph() -> ir.Graph:
    g = a.lower(a.load(ROOT / "tests/specs/every_op.yaml"))
    assert {n.op for n in g.nodes} == ops.BUILTIN_OPS
    return g


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_builds_every_op_and_moves_its_weights(graph: ir.Graph, name: str) -> None:
    backend = get_backend(name)
    assert backend.ops >= ops.BUILTIN_OPS
    model = backend.build(graph)
    backend.verify(graph, model)  # every node's shape, per-node and total parameter counts
    w = weights.init(graph, 3)
    backend.set_weights(graph, model, w)
    back = backend.get_weights(graph, model)
    assert set(back) == set(w)
    for key, value in w.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_every_op_agrees_in_four_backends_within_its_parity_bound(graph: ir.Graph) -> None:
    report = parity(graph, BACKENDS)  # float32, each judged against torch's float64 run
    assert report.ok, report.table()
    judged = {d.op for d in report.diffs if len(d.skipped) < len(BACKENDS)}
    assert judged == ops.BUILTIN_OPS


def test_the_torch_emitter_reproduces_every_op(graph: ir.Graph) -> None:
    backend = get_backend("torch")
    built = backend.build(graph)
    backend.set_weights(graph, built, weights.init(graph, 4))
    namespace: dict[str, object] = {"__name__": "every_op_torch"}
    exec(compile(backend.emit(graph), "every_op_torch.py", "exec"), namespace)
    generated = namespace["EveryOp"]().eval()  # type: ignore[operator]
    generated.load_state_dict(built.state_dict())
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(2, 3, 12, 12)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(generated(x), built(x))


def test_the_keras_emitter_reproduces_every_op(graph: ir.Graph) -> None:
    backend = get_backend("keras")
    built = backend.build(graph)
    backend.set_weights(graph, built, weights.init(graph, 4))
    namespace: dict[str, object] = {"__name__": "every_op_keras"}
    exec(compile(backend.emit(graph), "every_op_keras.py", "exec"), namespace)
    generated = namespace["build_model"]()  # type: ignore[operator]
    generated.set_weights(built.get_weights())
    for layer in generated.layers:  # Keras' Normalization re-reads its variables only here (or in load_weights)
        getattr(layer, "finalize_state", lambda: None)()
    x = np.random.default_rng(5).normal(size=(2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(generated(x)), np.asarray(built(x)))
