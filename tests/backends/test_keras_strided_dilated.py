"""Keras refuses strides > 1 with dilation_rate > 1; archc builds such a conv by composition
(a dilated stride-1 conv, then every stride-th output), so check, torch and keras agree
(issue 11: this used to pass check and torch and fail in keras)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import weights as W
from archcompiler.kit.registry import get_backend

torch = framework("torch")
F = framework("torch.nn.functional")

pytestmark = pytest.mark.keras

SPEC = """
archc: 1
name: atrous
input: {{size: [{h}, {w}], channels: 3}}
layers:
  - {{op: conv, filters: 4, kernel: 3, stride: 2, dilation: 2, padding: {pad}, bias: true, name: c}}
  - {{op: depthwise_conv, kernel: 3, stride: [2, 1], dilation: [1, 2], multiplier: 2, padding: {pad}, name: dw}}
"""


@pytest.mark.parametrize(("h", "w", "pad"), [(17, 14, "same"), (16, 15, "valid"), (13, 13, "[1, 0, 2, 1]")])
def test_keras_matches_torch_conv2d(h: int, w: int, pad: str) -> None:
    net = a.compile(a.load_text(SPEC.format(h=h, w=w, pad=pad)))
    g = net.graph
    wts = W.init(g, seed=4)
    x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
    keras_b = get_backend("keras")
    got = keras_b.run(g, net.build("keras", weights=wts), x, ["c", "dw"])

    # Oracle: torch.nn.functional.conv2d with the IR's explicit pads, stride and dilation.
    c, dw = g["c"], g["dw"]
    t = torch.from_numpy(x.transpose(0, 3, 1, 2)).double()
    top, bottom, left, right = c.padding
    k = torch.from_numpy(wts["c.kernel"].transpose(3, 2, 0, 1)).double()
    y = F.conv2d(
        F.pad(t, (left, right, top, bottom)), k, torch.from_numpy(wts["c.bias"]).double(), c.stride, 0, c.dilation
    )
    top, bottom, left, right = dw.padding
    kd = wts["dw.kernel"]  # (kh, kw, C, M) -> (C*M, 1, kh, kw), output channel c*M + m
    kd = torch.from_numpy(kd.reshape(3, 3, -1).transpose(2, 0, 1)[:, None]).double()
    z = F.conv2d(F.pad(y, (left, right, top, bottom)), kd, None, dw.stride, 0, dw.dilation, groups=4)
    np.testing.assert_allclose(got["c"], y.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["dw"], z.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    assert net.parity(("torch", "keras")).ok


def test_generated_keras_code_defines_the_composed_layer() -> None:
    net = a.compile(a.load_text(SPEC.format(h=17, w=14, pad="same")))
    src = net.generate("keras")
    assert src.count("class Subsample:") == 1  # the shared mixin, once, before its users
    assert src.index("class Subsample:") < src.index("class SubsampledConv2D(Subsample, keras.layers.Conv2D):")
    assert "class SubsampledDepthwiseConv2D(Subsample, keras.layers.DepthwiseConv2D):" in src
    namespace: dict[str, object] = {"__name__": "generated_atrous"}
    exec(compile(src, "generated_atrous", "exec"), namespace)  # archc's own output, no spec text
    model = namespace["build_model"]()  # type: ignore[operator]
    assert tuple(model.get_layer("dw").output.shape[1:]) == net.graph["dw"].shape


def test_depthwise_with_unequal_strides_builds_by_composition() -> None:
    """Found by the property tests: TensorFlow's depthwise kernel needs equal strides, so a
    (1, 2) stride failed inside keras; it is now composed like stride with dilation."""
    text = "archc: 1\nname: uneven\ninput: {size: 9, channels: 2}\nlayers:\n"
    text += "  - {op: depthwise_conv, kernel: 3, stride: [1, 2]}\n"
    net = a.compile(a.load_text(text))
    assert net.graph.output_shape == (9, 5, 2)
    assert net.parity(("torch", "keras")).ok
    assert net.parity(("torch", "keras"), dtype="float64").ok


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [((3, 3), 2, (1, 3), "same"), ((6, 5), 3, (1, 4), "valid"), ((9, 7), (5, 2), (1, 7), "same")],
)
def test_one_output_column_at_a_wide_stride_on_one_channel(size, kernel, stride, padding) -> None:
    """Found by the property tests: TensorFlow 2.21's oneDNN Conv2D on one input channel, with
    height stride 1 and a wider width stride that leaves one output column, returns garbage
    (values up to 1e25) for a batch of more than one; archc composes it as a stride-1 conv and
    a subsample, checked here against numpy in float64."""
    text = f"archc: 1\nname: column\ninput: {{size: {list(size)}, channels: 1}}\nlayers:\n"
    text += f"  - {{op: conv, filters: 3, kernel: {kernel if isinstance(kernel, int) else list(kernel)}, "
    text += f"stride: {list(stride)}, padding: {padding}, name: c}}\n"
    net = a.compile(a.load_text(text))
    g, wts = net.graph, W.init(net.graph, seed=3)
    x = np.random.default_rng(5).normal(size=(4, *size, 1)).astype(np.float32)
    got = get_backend("keras").run(g, net.build("keras", weights=wts), x, ["c"])["c"]

    top, bottom, left, right = g["c"].padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kernel_ = wts["c.kernel"].astype(np.float64)  # (kh, kw, 1, filters)
    kh, kw = kernel_.shape[:2]
    oh, ow = g["c"].shape[:2]
    want = np.zeros((4, oh, ow, 3))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw, :]
            want[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel_)
    if "c.bias" in wts:
        want += wts["c.bias"]
    assert ow == 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
