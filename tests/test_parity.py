"""Cross-framework parity: the same weights and input give the same numbers in PyTorch and Keras.

The fast tier runs a few configurations; the full grid (both shipped specs x widths 1, 0.75,
0.5, 0.25 x resolutions 224, 160, 128 and the odd 199) is marked slow and runs in CI.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # torch before tensorflow in one process (docs/DESIGN.md)
tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402

import archcompiler as a  # noqa: E402
from archcompiler import weights  # noqa: E402
from archcompiler.parity import parity  # noqa: E402
from archcompiler.registry import get_backend  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[1]
SPECS = {name: a.load(ROOT / "specs" / f"{name}.yaml") for name in ("mobilenet", "mobilenet_keras")}
LOGIT_ATOL = 1e-5


def check(spec: str, width: float, resolution: int) -> None:
    graph = a.lower(SPECS[spec], width=width, resolution=resolution)
    rep = parity(graph, ("torch", "keras"), atol=1e-5, rtol=1e-5, seed=0)
    bad = rep.first_failure
    assert bad is None, f"first divergence at {bad.node} ({bad.op}): max abs {bad.max_abs:.3g}"
    logits = rep.diff(rep.logits)
    assert logits.max_abs <= LOGIT_ATOL, f"logits differ by {logits.max_abs:.3g}"
    assert len(rep.diffs) == len(graph.nodes)


@pytest.mark.parametrize(
    ("spec", "width", "resolution"),
    [("mobilenet", 0.25, 128), ("mobilenet_keras", 0.25, 128), ("mobilenet", 0.5, 199), ("mobilenet_keras", 0.5, 199)],
)
def test_parity_fast(spec: str, width: float, resolution: int) -> None:
    check(spec, width, resolution)


GRID = [
    c
    for c in itertools.product(SPECS, (1.0, 0.75, 0.5, 0.25), (224, 160, 128, 199))
    if c not in {("mobilenet", 0.25, 128), ("mobilenet_keras", 0.25, 128)}
]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "width", "resolution"), GRID)
def test_parity_grid(spec: str, width: float, resolution: int) -> None:
    check(spec, width, resolution)


def test_parity_detects_a_wrong_weight() -> None:
    """The checker is not vacuous: perturb one BN statistic in one backend only and it must
    fail at exactly that node, not before."""
    graph = a.lower(SPECS["mobilenet"], width=0.25, resolution=96)
    torch_b = get_backend("torch")

    class Skewed(type(torch_b)):  # type: ignore[misc]
        def set_weights(self, graph, model, w):  # type: ignore[no-untyped-def]
            w = dict(w)
            w["conv_pw_3_bn.moving_mean"] = w["conv_pw_3_bn.moving_mean"] + 0.5
            super().set_weights(graph, model, w)

    rep = parity(graph, ("torch", "keras"), instances={"keras": get_backend("keras"), "torch": Skewed()})
    assert not rep.ok
    assert rep.first_failure is not None and rep.first_failure.node == "conv_pw_3_bn"


def _train_graph(variance_update: str) -> a.Graph:
    text = (ROOT / "specs" / "mobilenet.yaml").read_text()
    assert "variance_update: biased" in text
    text = text.replace("variance_update: biased", f"variance_update: {variance_update}")
    return a.lower(a.load_text(text, "mobilenet_train.yaml"), width=0.25, resolution=64)


@pytest.mark.parametrize("variance_update", ["biased", "unbiased"])
def test_one_training_step_agrees(variance_update: str) -> None:
    """Same weights, batch, plain SGD and learning rate: one step (BN in training mode) gives
    the same updated weights and moving statistics in both frameworks, to 1e-4."""
    graph = _train_graph(variance_update)
    w0 = weights.init(graph, seed=3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, *graph.input_shape)).astype(np.float32)
    y = rng.integers(0, graph.output_shape[-1], size=8)
    after = {}
    for name in ("torch", "keras"):
        b = get_backend(name)
        m = b.build(graph)
        b.set_weights(graph, m, w0)
        b.train_step(graph, m, x, y, lr=0.1)
        after[name] = b.get_weights(graph, m)
    changed = 0
    for key in w0:
        t, k = after["torch"][key], after["keras"][key]
        np.testing.assert_allclose(t, k, atol=1e-4, rtol=1e-4, err_msg=key)
        changed += not np.allclose(t, w0[key], atol=1e-7)
    # the step really did something: kernels moved and moving statistics updated
    assert changed > len(w0) * 0.9
    # The moving statistics follow the convention the IR states: recompute the stem BN's
    # update by hand from the stem conv's output (which BN mode does not affect).
    bn = graph["conv1_bn"]
    assert bn.variance_update == variance_update
    tb = get_backend("torch")
    m = tb.build(graph)
    tb.set_weights(graph, m, w0)
    conv = tb.run(graph, m, x, ["conv1"])["conv1"].astype(np.float64)
    n = conv.size // conv.shape[-1]
    var = conv.var(axis=(0, 1, 2), ddof=1 if variance_update == "unbiased" else 0)
    mean = conv.mean(axis=(0, 1, 2))
    want_var = bn.decay * w0["conv1_bn.moving_variance"] + (1 - bn.decay) * var
    want_mean = bn.decay * w0["conv1_bn.moving_mean"] + (1 - bn.decay) * mean
    assert n > 1
    for name in ("torch", "keras"):
        np.testing.assert_allclose(after[name]["conv1_bn.moving_variance"], want_var, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(after[name]["conv1_bn.moving_mean"], want_mean, rtol=1e-5, atol=1e-6, err_msg=name)
    other = conv.var(axis=(0, 1, 2), ddof=0 if variance_update == "unbiased" else 1)
    assert not np.allclose(bn.decay * w0["conv1_bn.moving_variance"] + (1 - bn.decay) * other, want_var, rtol=1e-6)
