"""Training equivalence: N plain-SGD steps in PyTorch and Keras from the same weights and batches.

The outside oracles: float64 runs of two independent frameworks (which must agree to 1e-9 of
each quantity's magnitude after the first step, and within the float64 sensitivity bound of
archcompiler/parity.py after five), numpy for the moving-statistics convention, and injected
bugs (a wrong momentum convention, a wrong learning rate) that must be named at the right step
and quantity. The fast tier runs a few settings; the grid is marked slow.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

torch = pytest.importorskip("torch")  # torch before tensorflow in one process (docs/DESIGN.md)
tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402

import archcompiler as a  # noqa: E402
from archcompiler import weights  # noqa: E402
from archcompiler.cli import main  # noqa: E402
from archcompiler.parity import TrainingReport, train_parity  # noqa: E402
from archcompiler.registry import BackendError, get_backend  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[1]


def lowered(spec: str, resolution: int, variance_update: str = "biased", width: float = 0.25) -> a.Graph:
    """A shipped spec; ``variance_update`` overrides the spec default (biased) in every BN."""
    text = (ROOT / "specs" / f"{spec}.yaml").read_text()
    assert "variance_update: biased" in text
    text = text.replace("variance_update: biased", f"variance_update: {variance_update}")
    return a.lower(a.load_text(text, f"{spec}.yaml"), width=width, resolution=resolution)


def check_float64(rep: TrainingReport) -> None:
    bad = rep.first_failure
    assert bad is None, f"step {bad.step} {bad.quantity}: {bad.error:.3g} > {bad.allowed:.3g}"
    # the first step is not yet chaotic: everything agrees to 1e-9 of its magnitude
    for d in rep.diffs:
        if d.step == 1:
            assert d.error <= 1e-9 * max(d.magnitude, 1e-12), d
    kinds = {d.kind for d in rep.diffs}
    assert kinds == {"loss", "logits", "parameter", "moving statistic"}


def single_value_bn(graph: a.Graph, batch: int) -> bool:
    return any(n.op == "batchnorm" and batch * int(np.prod(graph[n.inputs[0]].shape[:-1])) < 2 for n in graph.nodes)


# -- fast tier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "resolution", "batch", "variance_update"),
    [("mobilenet", 33, 1, "unbiased"), ("mobilenet_keras", 33, 2, "biased")],
)
def test_float64_training_agrees(spec: str, resolution: int, batch: int, variance_update: str) -> None:
    graph = lowered(spec, resolution, variance_update)
    rep = train_parity(graph, ("torch", "keras"), steps=5, batch=batch, dtype="float64", seed=1)
    check_float64(rep)
    assert rep.steps == 5 and len({d.step for d in rep.diffs}) == 5
    if spec == "mobilenet_keras":
        assert rep.dropout_excluded == ("dropout",)


def test_float32_training_judged_by_float64() -> None:
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, ("torch", "keras"), steps=2, batch=2, dtype="float32", seed=2)
    assert rep.ok, rep.first_failure
    # float32 really differs from the float64 oracle, and is held to a bound well below the values
    params = [d for d in rep.diffs if d.kind == "parameter"]
    assert max(d.error for d in params) > 0
    ratios = sorted(d.allowed / max(d.magnitude, 1e-12) for d in params if d.step == 1)
    # Loose at this chaotic setting (measured median 8% of the magnitude, README), yet a bound:
    # most parameters are held well below their own size (the momentum-bug test shows it bites).
    assert ratios[len(ratios) // 2] < 0.2


def test_batchnorm_over_a_single_value_is_refused_by_both() -> None:
    """Batch 1 at 32 px: the BatchNorms after the last stride see one value per channel. torch's own BatchNorm
    raises on it; Keras' would output beta. archc refuses it in every backend, alike."""
    graph = lowered("mobilenet_keras", 32)
    assert graph["conv_dw_12_bn"].shape[:2] == (1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(4).train()(torch.ones(1, 4, 1, 1))
    x = np.zeros((1, *graph.input_shape), np.float32)
    messages = set()
    for name in ("torch", "keras"):
        b = get_backend(name)
        m = b.build(graph)
        before = b.get_weights(graph, m)
        with pytest.raises(BackendError, match=r"'conv_dw_12_bn'.*1 value per channel") as info:
            b.train_step(graph, m, x, np.array([0]), lr=0.1)
        messages.add(str(info.value))
        after = b.get_weights(graph, m)
        assert all(np.array_equal(before[k], after[k]) for k in before)  # refused before any change
    assert len(messages) == 1
    # batch 2 is accepted, and batch 1 where the last map is 2x2
    assert not single_value_bn(graph, 2) and not single_value_bn(lowered("mobilenet", 33), 1)


@pytest.mark.parametrize("variance_update", ["biased", "unbiased"])
def test_moving_statistics_follow_the_ir_convention(variance_update: str) -> None:
    """numpy recomputes the stem BN's update from the stem conv's output (which BN mode does not
    affect); both backends match it, in float64, to 1e-12."""
    graph = lowered("mobilenet", 64, variance_update)
    w0 = {k: v.astype(np.float64) for k, v in weights.init(graph, seed=3).items()}
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, *graph.input_shape))
    y = rng.integers(0, graph.output_shape[-1], size=4)
    bn = graph["conv1_bn"]
    tb = get_backend("torch")
    m = tb.build_in(graph, "float64")
    tb.set_weights(graph, m, w0)
    conv = tb.run(graph, m, x, ["conv1"])["conv1"]
    var = conv.var(axis=(0, 1, 2), ddof=1 if variance_update == "unbiased" else 0)
    want_var = bn.decay * w0["conv1_bn.moving_variance"] + (1 - bn.decay) * var
    want_mean = bn.decay * w0["conv1_bn.moving_mean"] + (1 - bn.decay) * conv.mean(axis=(0, 1, 2))
    for name in ("torch", "keras"):
        b = get_backend(name)
        model = b.build_in(graph, "float64")
        b.set_weights(graph, model, w0)
        b.train_step(graph, model, x, y, lr=0.1)
        after = b.get_weights(graph, model)
        np.testing.assert_allclose(after["conv1_bn.moving_variance"], want_var, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(after["conv1_bn.moving_mean"], want_mean, rtol=1e-12, atol=1e-15, err_msg=name)
    other = conv.var(axis=(0, 1, 2), ddof=0 if variance_update == "unbiased" else 1)
    assert not np.allclose(bn.decay * w0["conv1_bn.moving_variance"] + (1 - bn.decay) * other, want_var, rtol=1e-6)


# -- injected bugs are named at the right step and quantity -----------------------------------


def _wrong_momentum_keras():  # type: ignore[no-untyped-def]
    """A Keras backend whose BatchNorm uses torch's momentum (1 - decay) as Keras' momentum."""
    from archcompiler.backends.keras.backend import KerasBackend
    from archcompiler.backends.keras.ops import HANDLERS, BatchNormHandler

    class Swapped(BatchNormHandler):
        def describe(self, node, graph):  # type: ignore[no-untyped-def]
            return super().describe(dataclasses.replace(node, decay=1.0 - node.decay), graph)

    class WrongMomentum(KerasBackend):
        handlers: ClassVar[Mapping[str, Any]] = {**HANDLERS, "batchnorm": Swapped()}

    return WrongMomentum()


def _wrong_lr_torch():  # type: ignore[no-untyped-def]
    from archcompiler.backends.torch.backend import TorchBackend

    class WrongLr(TorchBackend):
        def sgd_step(self, graph, model, x, y, logits, lr):  # type: ignore[no-untyped-def]
            return super().sgd_step(graph, model, x, y, logits, lr * 1.01)

    return WrongLr()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_wrong_momentum_convention_is_named(dtype: str) -> None:
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, steps=2, batch=2, dtype=dtype, instances={"keras": _wrong_momentum_keras()})
    bad = rep.first_failure
    # loss, logits and every parameter of step 1 are unaffected (training BN uses batch statistics)
    assert bad is not None and (bad.step, bad.quantity, bad.kind) == (1, "conv1_bn.moving_mean", "moving statistic")
    assert bad.backend == "keras"


def test_wrong_learning_rate_is_named() -> None:
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, steps=2, batch=2, dtype="float64", instances={"torch": _wrong_lr_torch()})
    bad = rep.first_failure
    # the loss and logits of step 1 come before the update; the first updated tensor diverges
    assert bad is not None and (bad.step, bad.quantity, bad.kind) == (1, "conv1.kernel", "parameter")


def test_cli_train_steps(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["parity", str(ROOT / "specs" / "mobilenet_keras.yaml"), "--width", "0.25", "--resolution", "33"]
    assert main([*argv, "--train-steps", "1", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "training parity torch vs keras: mobilenet_keras, 1 SGD steps, batch 2" in out
    assert "dropout excluded: rate set to 0 at dropout" in out
    assert out.rstrip().endswith("PASS: 139 quantities agree at every one of 1 steps")
    assert main([*argv, "--train-steps", "1", "--batch", "1"]) == 2  # a single-value BatchNorm
    assert "1 value per channel" in capsys.readouterr().err


# -- the grid ----------------------------------------------------------------------------------

_CHAOTIC = "chaotic after step 1 (issue 13 open): the float64 nudge under-estimates how fast the backends' "
"rounding-sized differences grow through BatchNorm over a few values per channel (README)"
KNOWN = {
    ("mobilenet_keras", 64, 1, "biased", "float64"): _CHAOTIC,
    # measured by CI's first full slow run (worst quantity, error > allowed)
    ("mobilenet_keras", 32, 2, "biased", "float64"): _CHAOTIC,  # step 5 conv1_bn.moving_variance 538 > 114
    ("mobilenet_keras", 32, 2, "unbiased", "float64"): _CHAOTIC,  # step 5 conv1_bn.moving_variance 539 > 115
    ("mobilenet_keras", 32, 4, "biased", "float64"): _CHAOTIC,  # step 4 conv1.kernel 0.61 > 0.174
    ("mobilenet_keras", 32, 4, "unbiased", "float64"): _CHAOTIC,
    ("mobilenet_keras", 32, 4, "biased", "float32"): _CHAOTIC,  # step 5 loss 0.97 > 0.51
    ("mobilenet_keras", 32, 4, "unbiased", "float32"): _CHAOTIC,
    ("mobilenet_keras", 64, 1, "unbiased", "float64"): _CHAOTIC,  # step 4 conv_pw_13_bn.gamma 8.9e-5 > 5.8e-5
}
GRID = [
    pytest.param(*c, marks=pytest.mark.xfail(reason=KNOWN[c], strict=False)) if c in KNOWN else c
    for c in itertools.product(
        ("mobilenet", "mobilenet_keras"), (32, 33, 64), (1, 2, 4), ("biased", "unbiased"), ("float64", "float32")
    )
]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "resolution", "batch", "variance_update", "dtype"), GRID)
def test_training_grid(spec: str, resolution: int, batch: int, variance_update: str, dtype: str) -> None:
    graph = lowered(spec, resolution, variance_update)
    if single_value_bn(graph, batch):
        with pytest.raises(BackendError, match="1 value per channel"):
            train_parity(graph, steps=5, batch=batch, dtype=dtype)
        return
    rep = train_parity(graph, steps=5, batch=batch, dtype=dtype)
    if dtype == "float64":
        check_float64(rep)
    else:
        assert rep.ok, rep.first_failure
