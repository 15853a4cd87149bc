"""The two ops added through the op registry (concat, rescaling): spec -> IR -> every backend,
checked against numpy formulas (Keras' Concatenate(axis=-1) and Rescaling(scale, offset))."""

from __future__ import annotations

import numpy as np
import pytest

import archcompiler as a
from archcompiler import weights as W

SPEC = """
archc: 1
name: branches
input: {size: [7, 5], channels: 3}
layers:
  - {op: rescaling, scale: 0.00784313725490196, offset: -1.0, name: pre}
  - {op: conv, filters: 4, kernel: 1, padding: valid, name: a}
  - {op: conv, filters: 6, kernel: 1, padding: valid, inputs: [pre], name: b}
  - {op: concat, inputs: [b, a, pre], name: cat}
"""


def reference(x: np.ndarray, w: W.Weights) -> dict[str, np.ndarray]:
    """float64 numpy: Rescaling, then two 1x1 convs on its output, concatenated in inputs order."""
    x = x.astype(np.float64)
    pre = x * (1 / 127.5) - 1.0
    a_ = np.einsum("nhwc,co->nhwo", pre, w["a.kernel"][0, 0].astype(np.float64))
    b_ = np.einsum("nhwc,co->nhwo", pre, w["b.kernel"][0, 0].astype(np.float64))
    return {"pre": pre, "cat": np.concatenate([b_, a_, pre], axis=-1)}


def test_shapes_and_costs() -> None:
    g = a.compile(a.load_text(SPEC)).graph
    assert g["cat"].shape == (7, 5, 6 + 4 + 3)
    report = a.cost(g, "fvcore")
    assert report.node("cat").macs == 0 and report.node("pre").macs == 0
    assert report.node("cat").params == 0 and report.node("pre").params == 0
    assert report.macs == 7 * 5 * 3 * (4 + 6)  # only the two 1x1 convs


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_backends_match_numpy(backend: str) -> None:
    import torch  # noqa: F401  (before tensorflow: the other order can crash; docs/DESIGN.md)

    from archcompiler.kit.registry import get_backend

    net = a.compile(a.load_text(SPEC))
    w = W.init(net.graph, seed=1)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 7, 5, 3)).astype(np.float32)
    b = get_backend(backend)
    model = net.build(backend, weights=w)
    got = b.run(net.graph, model, x, ["pre", "cat"])
    want = reference(x, w)
    for name in ("pre", "cat"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=f"{backend} {name}")


@pytest.mark.torch
@pytest.mark.keras
def test_generated_code_uses_the_ops() -> None:
    net = a.compile(a.load_text(SPEC))
    torch_src, keras_src = net.generate("torch"), net.generate("keras")
    assert "Rescaling(0.00784313725490196, offset=-1.0)" in torch_src
    assert '(Concat(), ("b", "a", "pre"))' in torch_src
    assert "layers.Rescaling(0.00784313725490196, offset=-1.0" in keras_src
    assert "layers.Concatenate(axis=-1" in keras_src


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("{op: concat, inputs: [pre, down]}", "concat needs inputs of one spatial size, got 7x5x3, 4x3x2"),
        ("{op: concat, inputs: [pre]}", "concat needs at least two inputs"),
        ("{op: rescaling, scale: .inf}", "expected a finite number (got inf)"),
    ],
)
def test_bad_uses_are_located_errors(layer: str, message: str) -> None:
    text = (
        "archc: 1\nname: bad\ninput: {size: [7, 5], channels: 3}\nlayers:\n"
        "  - {op: rescaling, scale: 2, name: pre}\n"
        "  - {op: conv, filters: 2, kernel: 1, stride: 2, name: down}\n"
        f"  - {layer}\n"
    )
    with pytest.raises(a.SpecError) as info:
        a.compile(a.load_text(text))
    assert message in str(info.value)
    assert str(info.value).startswith("<spec>:7:")
