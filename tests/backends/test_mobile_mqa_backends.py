"""mobile_mqa in the backends: timm's MultiQueryAttention2d (the module MobileNetV4's hybrid models
are built from) as the oracle for the torch module, its weights, parameter count and what torch's
flop counter counts; parity of torch, keras, onnx and tflite at odd sizes, float64 within 1e-9
and float32 judged by the float64 oracle, and a head-order mistake that parity catches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_first, framework, timm_oracle

import archcompiler as a
from archcompiler import ir, weights
from archcompiler.analysis.cost import cost
from archcompiler.kit.registry import get_backend
from archcompiler.parity.inference import parity

torch = framework("torch")

SPEC = """archc: 1
name: mqa
input: {{size: {size}, channels: {channels}}}
defaults: {{padding: same, bias: false, activation: relu,
  batchnorm: {{epsilon: 1.0e-5, decay: 0.9, variance_update: unbiased}}}}
layers:
  - {{op: conv, filters: {channels}, kernel: 1, name: stem}}
  - {{op: mobile_mqa, heads: {heads}, key_dim: {key_dim}, value_dim: {value_dim},
     kv_stride: {stride}{extra}, name: attn}}
  - {{op: global_avg_pool, name: pool}}
"""


def mqa_graph(tmp_path: Path, size: str = "[7, 9]", stride: int = 2, extra: str = "", **dims: int) -> ir.Graph:
    fields = {"channels": 16, "heads": 4, "key_dim": 8, "value_dim": 6} | dims
    path = tmp_path / "mqa.yaml"
    path.write_text(SPEC.format(size=size, stride=stride, extra=extra, **fields))
    return a.lower(a.load(path))


def timm_attention(node: ir.MobileMQA) -> object:
    timm = timm_oracle()
    from timm.layers.attention2d import MultiQueryAttention2d

    return MultiQueryAttention2d(
        node.in_channels,
        node.filters,
        num_heads=node.heads,
        key_dim=node.key_dim,
        value_dim=node.value_dim,
        kv_stride=node.kv_stride,
        dw_kernel_size=node.dw_kernel,
    ).eval(), timm


@pytest.mark.torch
@pytest.mark.parametrize(
    ("stride", "dtype", "tol"), [(2, "float32", 1e-5), (2, "float64", 1e-10), (1, "float64", 1e-10)]
)
def test_timms_module_with_archcs_weights_computes_the_same(
    tmp_path: Path, stride: int, dtype: str, tol: float
) -> None:
    graph = mqa_graph(tmp_path, stride=stride)
    node = graph["attn"]
    oracle, _ = timm_attention(node)
    backend = get_backend("torch")
    model = backend.build(graph, dtype)
    backend.set_weights(graph, model, weights.init(graph, 1))
    # archc's module has timm's state_dict keys: timm's module loads them strictly, unrenamed
    oracle.load_state_dict(model.attn.state_dict(), strict=True)
    oracle.to(getattr(torch, dtype))
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 16, 7, 9))).to(getattr(torch, dtype))
    with torch.no_grad():
        want, got = oracle(x), model.attn(x)
    assert got.shape == want.shape == (2, 16, 7, 9)
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()


@pytest.mark.torch
@pytest.mark.parametrize("stride", [2, 1])
def test_counts_are_timms_parameters_and_torchs_flop_counter(tmp_path: Path, stride: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    graph = mqa_graph(tmp_path, size="[9, 7]", stride=stride, heads=2, key_dim=12, value_dim=10)
    node = graph["attn"]
    oracle, _ = timm_attention(node)
    counted = cost(graph, "torch").node("attn")
    assert counted.params == sum(p.numel() for p in oracle.parameters())
    model = get_backend("torch").build(graph).eval()
    x = torch.zeros(1, 16, 9, 7)
    for module in (oracle, model.attn):  # timm's (broadcast SDPA: the math path) and archc's
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
        assert counter.get_total_flops() == 2 * counted.macs, type(module).__name__


@pytest.mark.torch
@pytest.mark.keras
def test_float64_torch_and_keras_agree_within_1e9(tmp_path: Path) -> None:
    report = parity(mqa_graph(tmp_path), ("torch", "keras"), dtype="float64")
    assert report.ok, report.table()
    assert report.diff("attn").error <= 1e-9 * 10


CASES = [
    ("[7, 9]", 2, ""),  # odd map, 4x5 keys and values
    ("[8, 8]", 2, ", padding: same"),  # TF SAME: asymmetric (0, 1) padding on an even map
    ("[9, 7]", 1, ""),  # no down conv
    ("[5, 11]", 3, ", dw_kernel: 5, filters: 12"),  # a wider kernel, another output width
]


@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
@pytest.mark.parametrize(("size", "stride", "extra"), fast_first(CASES))
def test_four_backends_agree_within_the_float32_bound(tmp_path: Path, size: str, stride: int, extra: str) -> None:
    report = parity(mqa_graph(tmp_path, size, stride, extra), ("torch", "keras", "onnx", "tflite"))
    assert report.ok, report.table()
    assert report.diff("attn").error > 0  # float32 really rounded: judged, not skipped
    assert not report.diff("attn").skipped


@pytest.mark.torch
@pytest.mark.keras
def test_parity_catches_a_head_order_mistake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archcompiler.backends.torch import layers

    def head_minor(self, x):  # query channel i * heads + h instead of timm's h * key_dim + i
        b, _, h, w = x.shape
        q = self.query["proj"](x).reshape(b, self.key_dim, self.heads, h * w).permute(0, 3, 2, 1)
        q = q.reshape(b, h * w * self.heads, self.key_dim)
        k = self._key_value(self.key, x)
        v = self._key_value(self.value, x).transpose(1, 2)
        o = (torch.softmax((q * self.scale) @ k, dim=-1) @ v).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.output["proj"](o)

    graph = mqa_graph(tmp_path)
    assert parity(graph, ("keras", "torch")).ok
    monkeypatch.setattr(layers.MobileMQA, "forward", head_minor)
    report = parity(graph, ("keras", "torch"))
    assert not report.ok and report.first_failure is not None
    assert report.first_failure.node == "attn"
