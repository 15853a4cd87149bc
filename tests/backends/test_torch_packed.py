"""The optimised torch model's packed convolutions (backends/torch/optimize.PackedConvForward):
against torch's own float64 convolution, repacked when the weights change, and out of the way
wherever the packed path does not apply (float64, autograd, copies, export, counting tools)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import weights as W

torch = framework("torch")
F = framework("torch.nn.functional")
optimize = framework("archcompiler.backends.torch.optimize")
pytestmark = pytest.mark.torch


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _packing_available() -> None:
    if not optimize.packing_available():
        pytest.skip("this torch has no oneDNN convolution")


def packed_conv(cin: int = 16, cout: int = 24, kernel: int = 3, stride: int = 1, groups: int = 1) -> torch.nn.Conv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups).eval()
    conv.to(memory_format=torch.channels_last)
    conv.forward = optimize.PackedConvForward(conv)
    return conv


def reference(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """torch's convolution in float64: the oracle the float32 packed result is held to."""
    w, b = conv.weight.detach().double(), conv.bias.detach().double()
    return F.conv2d(x.double(), w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def assert_close_to_float64(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got.double() - want).abs().max()) <= 1e-5 * float(want.abs().max())


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "groups"),
    [(16, 24, 1, 1, 1), (16, 24, 3, 2, 1), (16, 16, 3, 1, 16), (16, 16, 4, 2, 16), (3, 8, 3, 2, 1)],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_conv_computes_the_float64_convolution(
    cin: int, cout: int, kernel: int, stride: int, groups: int, threads: int
) -> None:
    conv = packed_conv(cin, cout, kernel, stride, groups)
    x = torch.randn(2, cin, 15, 15).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            got = conv(x)
    finally:
        torch.set_num_threads(before)
    assert len(conv.forward.packed) == 1, "the packed path was not taken"
    assert_close_to_float64(got, reference(conv, x))


def test_one_packing_per_input_shape_and_thread_count() -> None:
    """Packed once and reused for a shape and thread count; another thread count packs anew."""
    conv = packed_conv()
    x = torch.randn(1, 16, 9, 9)
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            conv(x)
            (first,) = conv.forward.packed.values()
            conv(x)
            assert list(conv.forward.packed.values()) == [first]
            torch.set_num_threads(2)
            conv(x)
    finally:
        torch.set_num_threads(before)
    assert len(conv.forward.packed) == 2


def test_new_weights_are_packed_again() -> None:
    """load_state_dict (and any in-place update) changes the weight's version: a stale packing
    would still compute the old convolution."""
    conv = packed_conv()
    x = torch.randn(1, 16, 11, 11)
    with torch.no_grad():
        conv(x)
        conv.load_state_dict({"weight": torch.randn_like(conv.weight), "bias": torch.randn_like(conv.bias)})
        got = conv(x)
    assert_close_to_float64(got, reference(conv, x))


def test_checkpoints_loaded_with_assign_are_packed_again() -> None:
    """``load_state_dict(assign=True)`` swaps the parameter; cycling through checkpoints would
    let a new weight land where a freed one was, at the same version, if the packed-from weight
    were not held."""
    conv = packed_conv(256, 256)
    x = torch.randn(1, 256, 7, 7)
    checkpoints = [{"weight": torch.randn(256, 256, 3, 3) * (i + 1), "bias": torch.randn(256)} for i in range(4)]
    with torch.no_grad():
        for step in range(12):
            conv.load_state_dict({k: v.clone() for k, v in checkpoints[step % 4].items()}, assign=True)
            assert_close_to_float64(conv(x), reference(conv, x))


def test_a_dtype_round_trip_packs_again() -> None:
    """``half().float()`` frees the float32 weight and makes a new one of the same size: here
    (36 MiB, which glibc maps and unmaps) at the very address, with the same version, unless the
    packed-from weight is held."""
    conv = packed_conv(1024, 1024)
    x = torch.randn(1, 1024, 5, 5)
    with torch.no_grad():
        conv(x)
        conv.half().float()  # the weights are now float16's rounding of the old ones
        assert_close_to_float64(conv(x), reference(conv, x))


def test_weights_made_in_inference_mode_take_torch_s_own_convolution() -> None:
    """Inference tensors have no version counter to tell an update by."""
    with torch.inference_mode():
        conv = packed_conv()
        x = torch.randn(1, 16, 9, 9)
        got = conv(x)
    assert not conv.forward.packed
    assert_close_to_float64(got, reference(conv, x))


def test_float64_and_autograd_take_torch_s_own_convolution() -> None:
    conv = packed_conv()
    x = torch.randn(1, 16, 11, 11, requires_grad=True)
    y = conv(x)  # grad mode: must be differentiable
    y.square().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    assert not conv.forward.packed
    conv.double()
    with torch.no_grad():
        got = conv(x.detach().double())
    assert got.dtype == torch.float64 and not conv.forward.packed
    assert torch.equal(got, torch.nn.Conv2d.forward(conv, x.detach().double()))


@pytest.mark.parametrize("trained", ["bias", "input"])
def test_gradients_reach_whatever_requires_them(trained: str) -> None:
    """Frozen weights with a trainable bias (or an input needing its gradient) still record:
    the gradient equals the one torch's own convolution gives."""
    conv = packed_conv()
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(trained == "bias")
    x = torch.randn(2, 16, 9, 9, requires_grad=trained == "input")
    leaf = conv.bias if trained == "bias" else x
    conv(x).square().sum().backward()
    got = leaf.grad.clone()
    leaf.grad = None
    torch.nn.Conv2d.forward(conv, x).square().sum().backward()
    assert got is not None and torch.allclose(got, leaf.grad, rtol=1e-5, atol=1e-4)
    assert not conv.forward.packed


def test_flop_counters_and_tracers_see_torch_s_convolution() -> None:
    """torch.utils.flop_counter (a dispatch mode) counts 2 * multiply-adds of the convolution,
    and a TorchScript trace records aten::_convolution, not oneDNN's packed op."""
    from torch.utils.flop_counter import FlopCounterMode

    conv = packed_conv(16, 24, 3, 2)
    x = torch.randn(2, 16, 15, 15)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        y = conv(x)
    macs = y.numel() * 16 * 3 * 3  # each output value: Cin * k * k multiply-adds
    assert counter.get_total_flops() == 2 * macs
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and not any("mkldnn" in k for k in kinds)


def optimized_mobilenet() -> torch.nn.Module:
    net = a.compile(REPO / "specs/mobilenet.yaml", width=0.25, resolution=64)
    return net.build("torch", weights=W.init(net.graph, seed=3), optimize=True)


def test_optimized_model_keeps_stock_convs_and_survives_copies() -> None:
    """The convs stay nn.Conv2d (counting tools look up type(module)); deepcopy and pickle of a
    model that has run (holding oneDNN tensors, which have no storage) give the same outputs."""
    fast = optimized_mobilenet()
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        type(m) is torch.nn.Conv2d and isinstance(m.forward, optimize.PackedConvForward) for m in convs
    )
    x = torch.randn(2, 3, 64, 64)
    for m in convs:
        m.forward.packed.clear()  # the build's own check has run the model
    with torch.inference_mode():
        want = fast(x)
    assert all(m.forward.packed for m in convs)
    for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        twin_convs = [m for m in twin.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(m.forward.conv is m and not m.forward.packed for m in twin_convs)
        with torch.inference_mode():
            assert torch.equal(twin(x), want)


def test_packing_changes_no_weight_and_no_state_dict_key() -> None:
    fast = optimized_mobilenet()
    plain = copy.deepcopy(fast)
    for m in plain.modules():
        m.__dict__.pop("forward", None)  # back to nn.Conv2d.forward
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        got, want = fast(x), plain(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_optimized_model_exports() -> None:
    """torch.export traces with fake tensors: the packed forward steps aside, and the program
    computes the model."""
    fast = optimized_mobilenet()
    x = torch.randn(2, 3, 64, 64)
    program = torch.export.export(fast, (x,))
    assert not any("mkldnn" in str(n.target) for n in program.graph.nodes)
    with torch.inference_mode():
        want = fast(x)
    got = program.module()(x)
    np.testing.assert_allclose(got.detach().numpy(), want.numpy(), rtol=0, atol=1e-5 * float(want.abs().max()))
