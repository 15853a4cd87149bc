"""``mobile_mqa``: MobileNetV4's Mobile MQA, multi-query attention over the spatial positions
whose keys and values are downsampled by a strided depthwise conv (Qin et al. 2024; timm's
``MultiQueryAttention2d`` with ``use_bias=False``, its arithmetic and its weights).

One op, not a composition of IR ops (docs/spec.md, "Mobile MQA"): the key/value BatchNorms and
down convs live inside timm's module, its weights load by one module's names, and the bound of
the attention needs queries, keys and values together.

For an (H, W, C) input, N = H * W positions, P = Hk * Wk key/value positions:

    q = x Wq                       (N, heads * key_dim), head-major channels (timm's reshape)
    k = BN(dw_conv(x)) Wk          (P, key_dim): one key head for every query head
    v = BN(dw_conv(x)) Wv          (P, value_dim)    (no down conv and BN at kv_stride 1)
    o_h = softmax(q_h k^T / sqrt(key_dim)) v        per query head h, (N, value_dim)
    y = [o_1 ... o_heads] Wo       (N, filters)

Every key and value is shared by all heads, so the heads fold into the query rows: q as
(N * heads, key_dim) against k^T is one matrix product, and so is the product with v; that is
what every backend computes (no transposes), and what timm's reshapes compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from archcompiler.language.fields import Epsilon, LayerBase, Padding, PosIntRef
from archcompiler.language.limits import EPSILON_RANGE
from archcompiler.ops.base import (
    LowerContext,
    Node,
    OpError,
    Pad4,
    ParityBound,
    RawCost,
    Shape,
    WeightSpec,
    check_padding,
    image,
    window,
)
from archcompiler.ops.norm import VarianceUpdate

if TYPE_CHECKING:
    import numpy as np

KV_PATHS = ("key", "value")


class MobileMqaLayer(LayerBase):
    """Mobile MQA (MobileNetV4's attention, timm's MultiQueryAttention2d): ``heads`` query heads
    of ``key_dim`` against one key/value head, keys and values downsampled by a ``dw_kernel``
    depthwise conv of stride ``kv_stride`` and a BatchNorm (none at stride 1). No biases."""

    op: Literal["mobile_mqa"]
    heads: PosIntRef
    key_dim: PosIntRef
    value_dim: PosIntRef | None = Field(None, description="Default: key_dim.")
    kv_stride: PosIntRef = 1
    dw_kernel: PosIntRef = 3
    filters: PosIntRef | None = Field(
        None,
        description="Output channels, not width-scaled (round_channels() scales them); default: the input's.",
    )
    padding: Padding | None = Field(
        None, description="Of the key/value down convs. Default: dw_kernel // 2 on every side (timm's)."
    )
    epsilon: Epsilon | None = Field(None, description="Of the key/value BatchNorms. Default: defaults.batchnorm.")
    decay: float | None = Field(None, gt=0, lt=1, description="Default: defaults.batchnorm.")
    variance_update: VarianceUpdate | None = None


@dataclass(frozen=True, kw_only=True)
class MobileMQA(Node):
    """Mobile MQA over an (H, W, C) map; the module docstring has the formula."""

    op: ClassVar[str] = "mobile_mqa"
    spec_layers = (MobileMqaLayer,)
    in_channels: int
    filters: int
    heads: int
    key_dim: int
    value_dim: int
    kv_stride: int = 1
    dw_kernel: int = 3
    kv_padding: Pad4 = (1, 1, 1, 1)
    epsilon: float = 1e-5
    decay: float = 0.9
    variance_update: VarianceUpdate = "unbiased"

    @classmethod
    def attributes_from_spec(cls, layer: MobileMqaLayer, ctx: LowerContext, inputs: Sequence[Shape]) -> dict[str, Any]:
        h, w, c = image(inputs[0], "mobile_mqa")
        k, s = int(layer.dw_kernel), int(layer.kv_stride)
        half = k // 2
        padding = (half,) * 4 if layer.padding is None else ctx.pads(layer.padding, (h, w), (k, k), (s, s))
        return {
            "in_channels": c,
            "filters": c if layer.filters is None else int(layer.filters),
            "heads": int(layer.heads),
            "key_dim": int(layer.key_dim),
            "value_dim": int(layer.key_dim if layer.value_dim is None else layer.value_dim),
            "kv_stride": s,
            "dw_kernel": k,
            "kv_padding": padding,
            "epsilon": ctx.bn_epsilon if layer.epsilon is None else layer.epsilon,
            "decay": ctx.bn_decay if layer.decay is None else layer.decay,
            "variance_update": layer.variance_update or ctx.bn_variance_update,
        }

    @property
    def downsampled(self) -> bool:
        """Whether keys and values pass a strided depthwise conv and a BatchNorm (timm: kv_stride > 1)."""
        return self.kv_stride > 1

    def kv_size(self, h: int, w: int) -> tuple[int, int]:
        """(Hk, Wk): the key/value map of an h x w input."""
        if not self.downsampled:
            return h, w
        k, s = (self.dw_kernel,) * 2, (self.kv_stride,) * 2
        return window("key/value down conv", (h, w, self.in_channels), k, s, self.kv_padding)

    def infer_shape(self, inputs: Sequence[Shape]) -> Shape:
        h, w, c = image(inputs[0], "mobile_mqa")
        if c != self.in_channels:
            raise OpError(f"mobile_mqa expects {self.in_channels} input channels, got {c}")
        sizes = (self.filters, self.heads, self.key_dim, self.value_dim, self.kv_stride, self.dw_kernel)
        if min(sizes) < 1:
            raise OpError("mobile_mqa: filters, heads, key_dim, value_dim, kv_stride and dw_kernel must be positive")
        check_padding(self.kv_padding)
        low, high = EPSILON_RANGE
        if not (low <= self.epsilon <= high and 0 < self.decay < 1 and self.variance_update in ("biased", "unbiased")):
            raise OpError(f"mobile_mqa: bad epsilon {self.epsilon}, decay {self.decay} or {self.variance_update!r}")
        self.kv_size(h, w)  # the down conv fits
        return (h, w, self.filters)

    def weights(self) -> tuple[WeightSpec, ...]:
        """Canonical tensors in Keras' layout, in the Keras layer's variable order (docs/spec.md)."""
        c = self.in_channels

        def projection(param: str, cin: int, cout: int) -> WeightSpec:
            return WeightSpec(param, (1, 1, cin, cout), "conv_kernel", "he", cin, fill="normal_fan_out", fan_out=cout)

        out = [projection("query_kernel", c, self.heads * self.key_dim)]
        for path, dim in zip(KV_PATHS, (self.key_dim, self.value_dim), strict=True):
            if self.downsampled:
                taps = self.dw_kernel * self.dw_kernel
                shape = (self.dw_kernel, self.dw_kernel, c, 1)
                down = WeightSpec(
                    f"{path}_down_kernel", shape, "depthwise_kernel", "he", taps, fill="normal_fan_out", fan_out=taps
                )
                out.append(down)
                out += [
                    WeightSpec(f"{path}_{p}", (c,), init=p, fill=f) for p, f in (("gamma", "ones"), ("beta", "zeros"))
                ]
                stats = (("moving_mean", "zeros"), ("moving_variance", "ones"))
                out += [WeightSpec(f"{path}_{p}", (c,), init=p, trainable=False, fill=f) for p, f in stats]
            out.append(projection(f"{path}_kernel", c, dim))
        out.append(projection("output_kernel", self.heads * self.value_dim, self.filters))
        return tuple(out)  # type: ignore[arg-type]

    def cost(self, inputs: Sequence[Shape]) -> RawCost:
        """Multiply-adds of the projections, down convs and both attention products (what
        torch's FlopCounterMode counts on timm's module, halved); BatchNorm as fvcore counts it."""
        h, w, c = inputs[0]
        n, p = h * w, self.kv_size(h, w)[0] * self.kv_size(h, w)[1]
        q, o = c * self.heads * self.key_dim, self.heads * self.value_dim * self.filters
        kv = c * (self.key_dim + self.value_dim)
        down = 2 * self.dw_kernel * self.dw_kernel * c if self.downsampled else 0
        attention = self.heads * n * p * (self.key_dim + self.value_dim)
        bn = 2 * c if self.downsampled else 0
        return RawCost(
            weights=q + kv + down + o,
            bn_affine=2 * bn,
            bn_stats=2 * bn,
            macs=n * (q + o) + p * (kv + down) + attention,
            bn_ops=2 * bn * p,  # two BatchNorms of P x C, two operations per element
        )

    @property
    def category(self) -> str:
        return "Mobile MQA"

    def parity_bound(self, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> ParityBound:
        """Lipschitz constant and rounding of the whole op from its stages (attention_bound)."""
        return attention_bound(self, params, inputs[0])


# -- numpy: the formula in float64, and the parity bound made from its stages ------------------


def _conv1x1(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return x @ kernel[0, 0]


def _depthwise(node: MobileMQA, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The strided depthwise down conv of an (N, H, W, C) batch, explicit padding, in float64."""
    import numpy as np

    top, bottom, left, right = node.kv_padding
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    hk, wk = node.kv_size(x.shape[1], x.shape[2])
    s, k = node.kv_stride, node.dw_kernel
    out = np.zeros((x.shape[0], hk, wk, x.shape[3]))
    for i in range(k):
        for j in range(k):
            out += padded[:, i : i + s * (hk - 1) + 1 : s, j : j + s * (wk - 1) + 1 : s, :] * kernel[i, j, :, 0]
    return out


def _bn_scale(node: MobileMQA, params: Mapping[str, np.ndarray], path: str) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm at inference as x * a + b."""
    import numpy as np

    a = np.asarray(params[f"{path}_gamma"], np.float64) / np.sqrt(
        np.asarray(params[f"{path}_moving_variance"], np.float64) + node.epsilon
    )
    return a, np.asarray(params[f"{path}_beta"], np.float64) - a * np.asarray(params[f"{path}_moving_mean"], np.float64)


def forward(node: MobileMQA, params: Mapping[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage of the op on an (N, H, W, C) batch in float64 (``y`` is the output)."""
    import numpy as np

    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    b, h, w, _ = x.shape
    st: dict[str, np.ndarray] = {"x": x, "q": _conv1x1(x, p["query_kernel"])}
    for path in KV_PATHS:
        t = x
        if node.downsampled:
            t = st[f"{path}_down"] = _depthwise(node, x, p[f"{path}_down_kernel"])
            a, shift = _bn_scale(node, p, path)
            t = st[f"{path}_bn"] = t * a + shift
        st[path] = _conv1x1(t, p[f"{path}_kernel"])
    q = st["q"].reshape(b, h * w * node.heads, node.key_dim)  # rows: position-major, then head
    k = st["key"].reshape(b, -1, node.key_dim)
    v = st["value"].reshape(b, -1, node.value_dim)
    logits = st["logits"] = q @ k.transpose(0, 2, 1) / np.sqrt(node.key_dim)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    st["weights"] = e / e.sum(axis=-1, keepdims=True)
    st["o"] = (st["weights"] @ v).reshape(b, h, w, node.heads * node.value_dim)
    st["y"] = _conv1x1(st["o"], p["output_kernel"])
    return st


def _absmax(a: Any) -> float:
    import numpy as np

    m = float(np.abs(np.asarray(a, np.float64)).max(initial=0.0))
    return float("inf") if m != m else m


K_ROUNDINGS = 16
"""parity.bounds.K_ROUNDINGS (not imported: ops load before parity): roundings per element besides a sum's."""


def _propagate(node: MobileMQA, params: Mapping[str, np.ndarray], st: Mapping[str, np.ndarray], unit: bool) -> float:
    """max over the output of a first-order componentwise error bound (Higham's |fl(AB) - AB| <=
    gamma_n |A| |B|, carried through each stage with absolute values).

    ``unit``: the error of an input that is off by at most 1 everywhere, no rounding (the
    Lipschitz constant); else the op's own rounding alone, in units of u, each stage rounding by
    (16 + its sum's length) times the magnitude of its terms."""
    import numpy as np

    p = {k: np.abs(np.asarray(v, np.float64)) for k, v in params.items()}
    b, h, w, _ = st["x"].shape
    r = 0.0 if unit else 1.0  # rounding on or off

    def project(err: np.ndarray, value: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return err @ kernel[0, 0] + r * (K_ROUNDINGS + kernel.shape[2]) * (np.abs(value) @ kernel[0, 0])

    err_x = np.full(st["x"].shape, 1.0 if unit else 0.0)
    err = {"q": project(err_x, st["x"], p["query_kernel"])}
    for path in KV_PATHS:
        e, value = err_x, st["x"]
        if node.downsampled:
            taps = p[f"{path}_down_kernel"]
            e = _depthwise(node, e, taps) + r * (K_ROUNDINGS + node.dw_kernel**2) * _depthwise(node, abs(value), taps)
            a, shift = (abs(t) for t in _bn_scale(node, params, path))
            down, value = np.abs(st[f"{path}_down"]), st[f"{path}_bn"]
            e = a * e + r * K_ROUNDINGS * (a * down + shift + np.abs(value))
        err[path] = project(e, value, p[f"{path}_kernel"]).reshape(b, -1, p[f"{path}_kernel"].shape[3])
    q, k, v = (
        np.abs(st[n]).reshape(b, -1, d)
        for n, d in (("q", node.key_dim), ("key", node.key_dim), ("value", node.value_dim))
    )
    scale = node.key_dim**-0.5
    e_q = err["q"].reshape(b, -1, node.key_dim)
    e_s = scale * (e_q @ k.transpose(0, 2, 1) + q @ err["key"].transpose(0, 2, 1))
    e_s += r * (K_ROUNDINGS + node.key_dim) * scale * (q @ k.transpose(0, 2, 1))
    weights = st["weights"]
    # softmax: d p_j = p_j (d s_j - sum_l p_l d s_l); its own rounding: of the shifted logits
    # s_j - max s, which exp turns into a relative error of |s_j - max s| u, and relative
    # roundings of exp, the sum of P and the division
    logits = st["logits"]
    shifted = np.abs(logits - logits.max(axis=-1, keepdims=True))
    e_p = weights * (e_s + (weights * e_s).sum(axis=-1, keepdims=True))
    e_p += r * weights * (shifted + K_ROUNDINGS + k.shape[1])
    e_o = e_p @ v + weights @ err["value"] + r * (K_ROUNDINGS + k.shape[1]) * (weights @ v)
    e_o = e_o.reshape(b, h, w, node.heads * node.value_dim)
    return _absmax(project(e_o, st["o"], p["output_kernel"]))


def attention_bound(node: MobileMQA, params: Mapping[str, np.ndarray], x: np.ndarray) -> ParityBound:
    """The op's bound from its stages, each carried componentwise to the output (_propagate):
    the Lipschitz constant with respect to the input, and the op's own rounding in units of u
    (``ParityBound.rounding``), both first order (products of two float32 errors are u squared).

    Through the attention: with s = 1 / sqrt(key_dim), logit errors are s (|dq| |k|^T + |q| |dk|^T);
    softmax turns a logit error d into weight errors p_j |d_j - sum_l p_l d_l| <= p_j (|d_j| +
    sum_l p_l |d_l|) (its Jacobian is diag(p) - p p^T); the output errors are |dP| |v| + P |dv|.
    Projections and convs carry errors through |W|, BatchNorm through |gamma| / sqrt(var + eps).
    """
    st = forward(node, params, x)
    lipschitz = _propagate(node, params, st, unit=True)
    p_len = st["weights"].shape[-1]
    return ParityBound((lipschitz,), max(node.in_channels, p_len), rounding=_propagate(node, params, st, unit=False))
