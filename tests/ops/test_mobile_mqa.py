"""mobile_mqa (MobileNetV4's Mobile MQA) without a framework: costs under every convention against
timm's measured counts and hand arithmetic, the op's float64 formula against a per-head numpy
reference written from the paper's definition, its parity bound against measured gains and
float32 roundings, and located errors. The backends and timm's module: tests/backends/test_mobile_mqa_backends.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run

import archcompiler as a
from archcompiler import ir, weights
from archcompiler.analysis.cost import cost
from archcompiler.ops.attention import forward
from archcompiler.parity.inference import node_bound


def spec_text(size: str, channels: int, layer: str) -> str:
    return (
        "archc: 1\nname: mqa\n"
        f"input: {{size: {size}, channels: {channels}}}\n"
        "defaults: {padding: same, bias: false, activation: relu,"
        " batchnorm: {epsilon: 1.0e-5, decay: 0.9, variance_update: unbiased}}\n"
        f"layers:\n  - {layer}\n"
    )


def mqa_graph(tmp_path: Path, size: str, channels: int, **fields: object) -> ir.Graph:
    layer = "{op: mobile_mqa, name: attn, " + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"
    path = tmp_path / "mqa.yaml"
    path.write_text(spec_text(size, channels, layer))
    return a.lower(a.load(path))


def test_costs_are_timms_counts_and_the_hand_formula(tmp_path: Path) -> None:
    # hybrid_medium's stage-3 attention (C 160, 4 heads, d 64, kv_stride 2) at its 16x16 map:
    # timm's block holds 106,400 parameters (family notes, sum(p.numel())), of which the block's
    # pre-norm (2 x 160) and layer scale (160) are not this op's
    g16 = mqa_graph(tmp_path, 16, 160, heads=4, key_dim=64, kv_stride=2)
    torch16 = cost(g16, "torch").node("attn")
    assert torch16.params == 106_400 - 2 * 160 - 160
    keras16 = cost(g16, "keras").node("attn")
    assert (keras16.trainable, keras16.non_trainable) == (torch16.params, 2 * 2 * 160)  # two BNs' statistics
    assert cost(g16, "paper").node("attn").params == torch16.params - 2 * 2 * 160  # no BatchNorm gamma/beta
    # its stride-32 attention (C 256, kv_stride 1: no down conv, no BatchNorm) at 8x8
    g8 = mqa_graph(tmp_path, 8, 256, heads=4, key_dim=64)
    assert cost(g8, "keras").node("attn").params == 256 * 256 + 2 * 256 * 64 + 256 * 256
    # multiply-adds: projections (N = 256 or 64 positions, P = 64 key/value positions) ...
    proj16 = 256 * (160 * 256 + 256 * 160) + 64 * (2 * 9 * 160 + 2 * 160 * 64)
    proj8 = 64 * (256 * 256 + 256 * 256) + 64 * (2 * 256 * 64)
    att16, att8 = (cost(g, "torch").node("attn").macs - p for g, p in ((g16, proj16), (g8, proj8)))
    # ... and the attention products, which torch's FlopCounterMode counts on timm's
    # hybrid_medium at 256 as 41,943,040 MACs of aten.bmm over its 4 + 4 attention blocks
    assert 4 * att16 + 4 * att8 == 41_943_040
    assert att16 == 4 * 256 * 64 * (64 + 64)
    # fvcore adds BatchNorm's two operations per element: two BatchNorms over 8x8x160
    assert cost(g16, "fvcore").node("attn").macs == torch16.macs + 2 * 2 * 64 * 160
    assert cost(g8, "fvcore").node("attn").macs == cost(g8, "paper").node("attn").macs


def per_head_reference(x: np.ndarray, p: dict[str, np.ndarray], heads: int, d: int, dv: int, kv) -> np.ndarray:
    """The paper's formula written head by head (einsum), channels head-major as timm's reshape:
    query channel h * d + i is component i of head h; ``kv(x, path)`` gives the key/value map."""
    b, hh, ww, _ = x.shape
    q = np.einsum("bhwc,co->bhwo", x, p["query_kernel"][0, 0]).reshape(b, hh * ww, heads, d)
    k = np.einsum("bhwc,co->bhwo", kv(x, "key"), p["key_kernel"][0, 0]).reshape(b, -1, d)
    v = np.einsum("bhwc,co->bhwo", kv(x, "value"), p["value_kernel"][0, 0]).reshape(b, -1, dv)
    out = []
    for h in range(heads):
        logits = np.einsum("bnd,bpd->bnp", q[:, :, h], k) / np.sqrt(d)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        out.append(np.einsum("bnp,bpe->bne", e / e.sum(-1, keepdims=True), v))
    o = np.stack(out, axis=2).reshape(b, hh, ww, heads * dv)
    return np.einsum("bhwc,co->bhwo", o, p["output_kernel"][0, 0])


def strided_kv(x: np.ndarray, p: dict[str, np.ndarray], path: str, stride: int, eps: float) -> np.ndarray:
    """3x3 depthwise, stride ``stride``, zero padding 1 (timm's), then BatchNorm at inference."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    hk, wk = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    taps = p[f"{path}_down_kernel"][:, :, :, 0]
    out = np.zeros((x.shape[0], hk, wk, x.shape[3]))
    for i in range(hk):
        for j in range(wk):
            window = padded[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
            out[:, i, j] = (window * taps).sum(axis=(1, 2))
    scale = p[f"{path}_gamma"] / np.sqrt(p[f"{path}_moving_variance"] + eps)
    return (out - p[f"{path}_moving_mean"]) * scale + p[f"{path}_beta"]


def params_of(g: ir.Graph, seed: int = 0) -> dict[str, np.ndarray]:
    w = weights.init(g, seed)
    return {s.param: np.asarray(w[f"attn.{s.param}"], np.float64) for s in g["attn"].weights()}


@pytest.mark.parametrize("stride", [1, 2])
def test_the_formula_is_the_per_head_reference(tmp_path: Path, stride: int) -> None:
    g = mqa_graph(tmp_path, "[7, 9]", 16, heads=4, key_dim=8, value_dim=6, kv_stride=stride)
    p = params_of(g)
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 16))

    def kv(t: np.ndarray, path: str) -> np.ndarray:
        return strided_kv(t, p, path, stride, 1e-5) if stride > 1 else t

    want = per_head_reference(x, p, 4, 8, 6, kv)
    got = forward(g["attn"], p, x)["y"]
    assert got.shape == (2, 7, 9, 16)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    # a head-order mistake (heads interleaved inside the channels) is not the formula
    swapped = p | {"query_kernel": p["query_kernel"].reshape(1, 1, 16, 8, 4).swapaxes(3, 4).reshape(1, 1, 16, 32)}
    assert np.abs(forward(g["attn"], swapped, x)["y"] - want).max() > 1e-3 * np.abs(want).max()


def test_the_parity_bound_covers_measured_gains_and_float32_rounding(tmp_path: Path) -> None:
    g = mqa_graph(tmp_path, "[7, 9]", 16, heads=4, key_dim=8, value_dim=6, kv_stride=2)
    node, p = g["attn"], params_of(g)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 9, 16))
    bound = node_bound(node, {f"attn.{k}": v for k, v in p.items()}, {"input": x})
    y = forward(node, p, x)["y"]
    # the Lipschitz constant bounds the gain of small perturbations in every direction tried
    for _ in range(20):
        step = 1e-6 * rng.choice([-1.0, 1.0], size=x.shape)
        gain = np.abs(forward(node, p, x + step)["y"] - y).max() / 1e-6
        assert gain <= bound.lipschitz[0]
    # its own rounding bounds the formula computed in float32 throughout, against float64
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    y32 = forward32(node, p32, x.astype(np.float32))
    exact = forward(node, {k: v.astype(np.float64) for k, v in p32.items()}, x.astype(np.float32))["y"]
    assert bound.rounding is not None
    err = np.abs(y32 - exact).max()
    assert 0 < err <= 2.0**-24 * (bound.rounding + np.abs(exact).max())


def forward32(node: ir.MobileMQA, p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The op's formula with every operation rounded to float32 (numpy keeps float32 throughout)."""
    b, h, w, _ = x.shape
    f32 = np.float32
    q = (x @ p["query_kernel"][0, 0]).reshape(b, -1, node.key_dim)
    kv = {}
    for path in ("key", "value"):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        hk, wk = node.kv_size(h, w)
        t = np.zeros((b, hk, wk, x.shape[3]), f32)
        for i in range(3):
            for j in range(3):
                t += (
                    padded[:, i : i + 2 * (hk - 1) + 1 : 2, j : j + 2 * (wk - 1) + 1 : 2]
                    * p[f"{path}_down_kernel"][i, j, :, 0]
                )
        scale = p[f"{path}_gamma"] / np.sqrt(p[f"{path}_moving_variance"] + f32(node.epsilon))
        t = (t - p[f"{path}_moving_mean"]) * scale + p[f"{path}_beta"]
        kv[path] = (t @ p[f"{path}_kernel"][0, 0]).reshape(b, hk * wk, -1)
    logits = (q / np.sqrt(f32(node.key_dim))) @ kv["key"].transpose(0, 2, 1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    o = ((e / e.sum(-1, keepdims=True)) @ kv["value"]).reshape(b, h, w, -1)
    out = o @ p["output_kernel"][0, 0]
    assert out.dtype == np.float32
    return out


def test_bad_uses_are_located_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "{op: mobile_mqa, heads: 0, key_dim: 8, name: attn}": "heads",
        "{op: mobile_mqa, heads: 2, name: attn}": "key_dim",
        "{op: mobile_mqa, heads: 2, key_dim: 8, kv_stride: 2, dw_kernel: 5, padding: valid, name: attn}": "larger than",
    }
    for layer, what in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(spec_text(3, 8, layer))
        code, out, err = run(capsys, "check", str(path))
        assert code == 2, (layer, out, err)
        assert what in err and "bad.yaml:" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 3, err
