"""Training equivalence: N plain-SGD steps in PyTorch and Keras from the same weights and batches.

The outside oracles: float64 runs of two independent frameworks, which must agree to 1e-9 of
each quantity's magnitude at step 1, take the same step from the same state at every later step
(the synchronised comparison), and follow the same free-running trajectory to 1e-9 for all five
steps where the dynamics are stable (a small learning rate); PyTorch against itself with the batch
in another order, which shows that at the default learning rate no two implementations can agree
to 1e-9 after five steps; numpy for the moving-statistics convention; and injected bugs (a wrong
momentum convention, a wrong learning rate, from step 1 or only from step 3) that must be named
at the right step and quantity. The fast tier runs a few settings; the grid is marked slow.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from helpers import fast_first, framework

import archcompiler as a
from archcompiler import weights
from archcompiler.kit.registry import BackendError, get_backend
from archcompiler.parity.report import TrainingReport, render_training
from archcompiler.parity.training import train_parity
from archcompiler.tools.cli import main

torch = framework("torch")
tf = framework("tensorflow")

pytestmark = [pytest.mark.torch, pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[2]


def lowered(spec: str, resolution: int, variance_update: str = "biased", width: float = 0.25) -> a.Graph:
    """A shipped spec; ``variance_update`` overrides the spec default (biased) in every BN."""
    text = (ROOT / "specs" / f"{spec}.yaml").read_text()
    assert "variance_update: biased" in text
    text = text.replace("variance_update: biased", f"variance_update: {variance_update}")
    return a.lower(a.load_text(text, f"{spec}.yaml"), width=width, resolution=resolution)


def check_float64(rep: TrainingReport, *, chaotic_step_one: bool = False) -> None:
    """The report passes, every step is judged synchronised, the free run up to the horizon.
    Step 1 must also agree to 1e-9 of each magnitude, unless ``chaotic_step_one``: where one step
    already amplifies a float64 rounding past 1e-9 (horizon 0; MobileNetV3 at 32 px, batch 2,
    4.5e7-1.5e8x), no two implementations can, and the report's nudged bound is the judge."""
    bad = rep.first_failure
    assert bad is None, f"step {bad.step} ({bad.mode}) {bad.quantity}: {bad.error:.3g} > {bad.allowed:.3g}"
    if chaotic_step_one:
        assert rep.horizon == 0, rep.sensitivity  # else step 1 is reproducible: hold it to 1e-9
    else:
        # the first step is not yet chaotic: everything agrees to 1e-9 of its magnitude
        for d in rep.diffs:
            if d.step == 1:
                assert d.error <= 1e-9 * max(d.magnitude, 1e-12), d
    kinds = {d.kind for d in rep.diffs}
    assert kinds == {"loss", "logits", "parameter", "moving statistic"}
    # every step is judged from a shared state; the free run wherever the oracle says it is predictable
    assert {d.step for d in rep.diffs if d.mode == "step" and d.judged} == set(range(1, rep.steps + 1))
    assert {d.step for d in rep.diffs if d.mode == "run" and d.judged} == set(range(2, rep.horizon + 1))


def stability_lr(graph: a.Graph, batch: int, seed: int = 0) -> float:
    """1 / the largest |eigenvalue| of the training loss' Hessian (PyTorch, float64, at
    weights.init(seed) on the first batch train_parity draws), by power iteration on
    Hessian-vector products. Plain gradient descent is stable only for lr < 2 / lambda_max;
    at lr = 1 / lambda_max a step no longer amplifies the top direction."""
    from archcompiler.ir.layouts import batch_to
    from archcompiler.parity.training import _batches

    b = get_backend("torch")
    m = b.build_in(graph, "float64")
    b.set_weights(graph, m, weights.init(graph, seed))
    x, y = _batches(graph, 1, batch, seed)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the backends' training steps do (shared CI cores)
    try:
        return 1.0 / abs(_top_eigenvalue(graph, m, batch_to(x.astype(np.float64), b.activation_layout), y, seed))
    finally:
        torch.set_num_threads(threads)


def _top_eigenvalue(graph: a.Graph, m: Any, native: np.ndarray, y: np.ndarray, seed: int) -> float:
    import torch.nn.functional as F

    m.train()
    out = m.forward_nodes(torch.from_numpy(native), (graph.logits,))
    params = list(m.parameters())
    grads = torch.autograd.grad(F.cross_entropy(out[graph.logits], torch.from_numpy(y)), params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    lam = 0.0
    for _ in range(30):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        lam = float(sum((h * t).sum() for h, t in zip(hv, v, strict=True)))
        v = list(hv)
    return lam


def free_run_within_1e9(rep: TrainingReport) -> None:
    """Where the reference reproduces itself to 1e-9 (the horizon covers every step), the
    free-running trajectories agree to 1e-9 of each quantity's magnitude at every step."""
    assert rep.horizon == rep.steps, (rep.horizon, rep.sensitivity)
    for d in rep.diffs:
        assert d.error <= 1e-9 * max(d.magnitude, 1e-12), d


def torch_run(graph: a.Graph, seed: int, batches: list, lr: float) -> list[dict[str, np.ndarray]]:
    """PyTorch float64 steps; per step the loss, the logits and every tensor after the update."""
    b = get_backend("torch")
    m = b.build_in(graph, "float64")
    b.set_weights(graph, m, weights.init(graph, seed))
    out = []
    for x, y in batches:
        loss, logits = b.train_step_outputs(graph, m, x, y, lr)
        out.append({"loss": np.array(loss), "logits": np.asarray(logits), **b.get_weights(graph, m)})
    return out


def worst_relative(r: dict[str, np.ndarray], o: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(o[q] - r[q])) / max(np.max(np.abs(r[q])), 1e-12)) for q in r)


def single_value_bn(graph: a.Graph, batch: int) -> bool:
    return any(n.op == "batchnorm" and batch * int(np.prod(graph[n.inputs[0]].shape[:-1])) < 2 for n in graph.nodes)


# -- fast tier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "resolution", "batch", "variance_update"),
    fast_first([("mobilenet", 33, 1, "unbiased"), ("mobilenet_keras", 33, 2, "biased")]),
)
def test_float64_training_agrees(spec: str, resolution: int, batch: int, variance_update: str) -> None:
    graph = lowered(spec, resolution, variance_update)
    rep = train_parity(graph, ("torch", "keras"), steps=5, batch=batch, dtype="float64", seed=1)
    check_float64(rep)
    assert rep.steps == 5 and len({d.step for d in rep.diffs}) == 5
    if spec == "mobilenet_keras":
        assert rep.dropout_excluded == ("dropout",)


@pytest.mark.slow  # V3-Small's free step 2 is in the fast tier (test_v3_small_free_step_two_is_judged_and_agrees)
@pytest.mark.parametrize(("spec", "batch"), [("mobilenet_v3_small", 4), ("mobilenet_v2", 2)])
def test_float64_training_agrees_on_mobilenet_v2_and_v3(spec: str, batch: int) -> None:
    """keras.applications' V2 and V3-Small specs (alpha 0.35, 32 px): hard_swish, squeeze-excite
    with its hard_sigmoid gate, the 1x1 head convs, Rescaling. V3-Small failed step 1 here
    (conv.kernel 2.3e-9 off, bound 8.7e-10) while torch's Hardsigmoid backward used float32's 1/6."""
    graph = lowered(spec, 32, width=0.35)
    rep = train_parity(graph, ("torch", "keras"), steps=2, batch=batch, dtype="float64")
    check_float64(rep)
    assert rep.dropout_excluded == (("dropout",) if spec == "mobilenet_v3_small" else ())


@pytest.mark.parametrize(
    ("spec", "resolution", "batch", "variance_update"),
    fast_first([("mobilenet", 33, 1, "biased"), ("mobilenet_keras", 64, 1, "unbiased")], keep=0),
)
def test_float64_five_free_steps_agree_to_1e9_where_stable(
    spec: str, resolution: int, batch: int, variance_update: str
) -> None:
    """At lr = 1 / lambda_max (the SGD stability limit is 2 / lambda_max) the trajectory is stable:
    PyTorch and Keras, each following its own trajectory, agree to 1e-9 after five steps."""
    graph = lowered(spec, resolution, variance_update)
    lr = stability_lr(graph, batch, seed=1)
    assert lr < 1e-3  # far below the default 0.01 at these tiny settings
    rep = train_parity(graph, ("torch", "keras"), steps=5, batch=batch, dtype="float64", lr=lr, seed=1)
    check_float64(rep)
    free_run_within_1e9(rep)


@pytest.mark.slow
def test_default_lr_is_beyond_1e9_for_any_two_implementations() -> None:
    """At lr 0.01, 32 px, batch 2, PyTorch disagrees with *itself* by far more than 1e-9 after a
    few steps when only the order of the batch's samples changes (the same mathematics, other
    roundings): no backend can meet 1e-9 there, and the report's horizon says so."""
    graph = lowered("mobilenet", 32)
    rng = np.random.default_rng(4)
    batches = [(rng.normal(size=(2, *graph.input_shape)), rng.integers(0, 1000, size=2)) for _ in range(5)]
    lr = 0.01
    one = torch_run(graph, 4, batches, lr)
    two = torch_run(graph, 4, [(x[::-1].copy(), y[::-1].copy()) for x, y in batches], lr)
    for s in two:
        s["logits"] = s["logits"][::-1]
    rel = [worst_relative(p, q) for p, q in zip(one, two, strict=True)]
    assert rel[0] < 1e-9 < rel[4], rel
    assert rel[4] > 1e3 * rel[1] > 0, rel  # growth by orders of magnitude, not a fixed offset
    rep = train_parity(graph, ("torch", "keras"), steps=5, batch=2, dtype="float64", lr=lr, seed=4)
    check_float64(rep)
    assert rep.horizon < 5 and rep.sensitivity[4] > 1e3 * rep.sensitivity[1]
    text = render_training(rep)
    assert f"free-running trajectories are judged for {rep.horizon} of 5 steps" in text
    assert text.splitlines()[-1].startswith("PASS") and f"the first {max(rep.horizon, 1)} of 5 free-running" in text


def _largest_relative_at_step_one(rep: TrainingReport) -> tuple[float, str]:
    return max((d.error / max(d.magnitude, 1e-12), d.quantity) for d in rep.diffs if d.step == 1)


@pytest.mark.slow
def test_float32_training_is_measured_not_judged() -> None:
    """float32 training reports each backend's distance from the float64 run, with no verdict: a
    float32 step amplifies its own roundings as much as anything it amplifies, and the former
    bound failed correct models (issue 19: MobileNet 0.5, 96 px, batch 12; slow tier). What is
    measured still shows a gross error: a wrong momentum convention is 100x further from the
    float64 run at step 1 than a correct backend, on the moving statistic it corrupts."""
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, ("torch", "keras"), steps=2, batch=2, dtype="float32", seed=2)
    assert not rep.verdict and rep.ok and rep.first_failure is None
    assert rep.diffs and not any(d.judged for d in rep.diffs)
    correct, _ = _largest_relative_at_step_one(rep)
    assert 0 < correct < 0.05  # measured 0.8% (chaotic setting: one step amplifies rounding ~1e4x)
    text = render_training(rep)
    assert "measured against: the torch float64 run" in text
    assert text.splitlines()[-1].startswith("NO VERDICT: float32 training is measured, not judged")
    assert "run --dtype float64 to check equivalence" in text
    bug = train_parity(graph, steps=2, batch=2, dtype="float32", seed=2, instances={"keras": _wrong_momentum_keras()})
    worst, quantity = _largest_relative_at_step_one(bug)
    assert bug.ok and worst > 100 * correct and quantity.endswith("_bn.moving_mean"), (worst, quantity)


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


@pytest.mark.slow
def test_wrong_momentum_convention_is_named() -> None:
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, steps=2, batch=2, dtype="float64", instances={"keras": _wrong_momentum_keras()})
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


def _wrong_lr_keras_from_step(first: int):  # type: ignore[no-untyped-def]
    """A Keras backend whose learning rate is 1% too large from its ``first``-th step on (per model)."""
    from archcompiler.backends.keras.backend import KerasBackend

    calls: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    class LateWrongLr(KerasBackend):
        def sgd_step(self, graph, model, x, y, logits, lr):  # type: ignore[no-untyped-def]
            calls[model] = calls.get(model, 0) + 1
            return super().sgd_step(graph, model, x, y, logits, lr * 1.01 if calls[model] >= first else lr)

    return LateWrongLr()


@pytest.mark.slow  # test_wrong_momentum_convention_is_named and ..._learning_rate_... stay fast
def test_a_bug_from_step_3_is_named_at_step_3_in_the_chaotic_regime() -> None:
    """At 32 px, batch 2, lr 0.01 the free runs are unpredictable after step 1 (horizon 1), yet a
    1% learning-rate error that starts at step 3 is named at step 3, on the first updated tensor,
    by the synchronised comparison."""
    graph = lowered("mobilenet", 32)
    rep = train_parity(graph, steps=4, batch=2, dtype="float64", instances={"keras": _wrong_lr_keras_from_step(3)})
    assert rep.horizon < 3
    bad = rep.first_failure
    assert bad is not None and (bad.step, bad.quantity, bad.mode, bad.backend) == (3, "conv1.kernel", "step", "keras")
    assert bad.error > 100 * bad.allowed


@pytest.mark.slow
def test_cli_train_steps(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["parity", str(ROOT / "specs" / "mobilenet_keras.yaml"), "--width", "0.25", "--resolution", "33"]
    assert main([*argv, "--train-steps", "1", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "training parity torch vs keras: mobilenet_keras, 1 SGD steps, batch 2" in out
    assert "dropout and drop path excluded: rate set to 0 at dropout (backends draw different masks)" in out
    assert out.rstrip().endswith("PASS: 139 quantities agree at every one of 1 steps")
    assert main([*argv, "--train-steps", "1", "--batch", "1"]) == 2  # a single-value BatchNorm
    assert "1 value per channel" in capsys.readouterr().err


# -- NaN and infinity: not comparable, not blamed on one backend -------------------------------

TINY = """
archc: 1
name: tiny
input: {size: 8, channels: 3}
classes: 10
defaults: {padding: same, bias: false, activation: relu}
layers:
  - {op: conv, filters: 8, kernel: 3, stride: 2, name: conv1}
  - {op: batchnorm, name: conv1_bn}
  - {op: activation, name: conv1_relu}
  - {op: global_avg_pool, name: pool}
  - {op: dense, units: $classes, name: fc}
"""


def test_a_diverged_run_is_not_comparable_and_blames_no_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lr 1e300: both backends' steps overflow to NaN (issue 19 reported 'max abs diff nan, allowed
    nan' blamed on Keras). The report says both give NaN from that step; it is no PASS either."""
    graph = a.lower(a.load_text(TINY, "tiny.yaml"))
    rep = train_parity(graph, ("torch", "keras"), steps=3, batch=2, dtype="float64", lr=1e300)
    bad = rep.not_comparable
    assert not rep.ok and bad is not None and bad is rep.first_failure
    assert bad.nonfinite in ("NaN", "infinity", "NaN and infinity") and bad.step >= 2
    assert all(d.ok for d in rep.diffs if d.step < bad.step)  # the finite steps before agree
    line = render_training(rep).splitlines()[-1]
    assert line.startswith(f"NOT COMPARABLE: both backends give {bad.nonfinite} at ") and "keras" not in line
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    argv = ["parity", str(spec), "--train-steps", "3", "--lr", "1e300", "--dtype", "float64", "-q"]
    assert main(argv) == 1
    assert "NOT COMPARABLE: both backends give" in capsys.readouterr().out
    # float32 cannot take that step at all: refused in one line before anything is built
    assert main([*argv[:-3], "-q"]) == 2
    assert "learning rate 1e+300: a float32 training step takes a number from 0 to 3.4e+38" in capsys.readouterr().err


# -- the grid ----------------------------------------------------------------------------------

GRID = list(
    itertools.product(
        ("mobilenet", "mobilenet_keras"), (32, 33, 64), (1, 2, 4), ("biased", "unbiased"), ("float64", "float32")
    )
)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "resolution", "batch", "variance_update", "dtype"), GRID)
def test_training_grid(spec: str, resolution: int, batch: int, variance_update: str, dtype: str) -> None:
    """The default lr 0.01: every step agrees from a shared state, the free runs within the horizon."""
    graph = lowered(spec, resolution, variance_update)
    if single_value_bn(graph, batch):
        with pytest.raises(BackendError, match="1 value per channel"):
            train_parity(graph, steps=5, batch=batch, dtype=dtype)
        return
    rep = train_parity(graph, steps=5, batch=batch, dtype=dtype)
    if dtype == "float64":
        check_float64(rep)
    else:  # measured, not judged: a correct model never fails
        assert rep.ok and not rep.verdict and not any(d.judged for d in rep.diffs), rep.first_failure


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "resolution", "batch", "variance_update"),
    list(itertools.product(("mobilenet", "mobilenet_keras"), (32, 33, 64), (1, 2, 4), ("biased", "unbiased"))),
)
def test_stable_training_grid(spec: str, resolution: int, batch: int, variance_update: str) -> None:
    """At lr = 1 / lambda_max the five free-running float64 steps agree to 1e-9 everywhere."""
    graph = lowered(spec, resolution, variance_update)
    if single_value_bn(graph, batch):
        return  # refused alike: test_training_grid
    rep = train_parity(graph, steps=5, batch=batch, dtype="float64", lr=stability_lr(graph, batch))
    check_float64(rep)
    free_run_within_1e9(rep)


V2_V3 = list(itertools.product(("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"), (32, 64), (2, 4)))


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "resolution", "batch"), V2_V3)
def test_training_grid_v2_v3(spec: str, resolution: int, batch: int) -> None:
    """keras.applications' V2 and V3 (alpha 0.35, Keras' moving variance), float64, lr 0.01: every
    step from a shared state, the free runs within the horizon. Float32 is not in this grid: there
    PyTorch's own float32 steps exceed the float32 bound (V2 32 px batch 4 at step 1, 1.3x)."""
    graph = lowered(spec, resolution, width=0.35)
    rep = train_parity(graph, steps=5, batch=batch, dtype="float64")
    # measured: V3's step 1 at 32 px batch 2 amplifies one rounding 4.5e7x (Small), 1.5e8x (Large)
    check_float64(rep, chaotic_step_one=spec != "mobilenet_v2" and (resolution, batch) == (32, 2))


@pytest.mark.slow
def test_v3_small_free_step_two_is_judged_and_agrees() -> None:
    """Found in review: MobileNetV3-Small (0.5, 64 px, batch 4) 'failed' a free step 2 at 2.8e-8
    although every synchronised step passed. The cause was torch's Hardsigmoid gradient (float32's
    1/6 in float64): step 1 already differed by 1.2e4 times what a rounding explains, and the free
    run grew it. With the exact gradient step 1 agrees to 1.1e-13 and the free step 2, within the
    horizon, to 1e-9."""
    graph = lowered("mobilenet_v3_small", 64, width=0.5)
    rep = train_parity(graph, ("torch", "keras"), steps=2, batch=4, dtype="float64", seed=0)
    check_float64(rep)
    free_run_within_1e9(rep)


@pytest.mark.slow
def test_float32_training_of_a_correct_model_never_fails_issue_19() -> None:
    """The issue's case: float32 training parity reported 'FAIL ... conv1.kernel (keras): max abs
    diff 0.000273, allowed 0.000185' for a correct model. Now measured, without a verdict."""
    argv = ["parity", str(ROOT / "specs" / "mobilenet.yaml"), "--width", "0.5", "--resolution", "96"]
    assert main([*argv, "--train-steps", "3", "--batch", "12", "--dtype", "float32", "-q"]) == 0
