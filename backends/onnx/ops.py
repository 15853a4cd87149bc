"""One ONNX handler per IR op: each appends the ONNX nodes that compute one IR node.

Every IR node's value is an ONNX tensor of the node's name (build.tensor_names: except where
that name is the graph's ``input``/``output``), in NCHW (vectors (N, C)), so any node can be
exposed as a graph output for per-node parity. Helper tensors are named
``<node>/<what>``; ONNX nodes are named after the IR node they belong to (``verify`` counts
parameters per IR node through that prefix). Trained tensors are initializers named by their
canonical name (``<node>.<param>``); every other constant is a ``Constant`` node, so the
initializers are exactly the model's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from archcompiler import ir
from archcompiler.kit.registry import UnsupportedOpError, check_kinds, handler_table

NON_TRAINABLE = "non-trainable"
"""The doc_string of an initializer holding a non-trainable tensor (Normalization's statistics)."""

OPSET = 17
"""HardSwish needs 14, Softmax over one axis 13; 17 is what current runtimes all read."""


@dataclass
class Emitter:
    """The ONNX graph being built: nodes, initializers, and the IR node being emitted."""

    graph: ir.Graph
    weights: Mapping[str, np.ndarray]
    """Canonical name -> channels-first array."""
    tensors: Mapping[str, str]
    """IR node -> the ONNX tensor holding its value (see build.tensor_names)."""
    input_name: str = "input"
    nhwc_input: bool = False
    """The model input is NHWC (a Transpose to NCHW starts the graph); default NCHW."""
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    current: str = ""
    _count: int = 0

    def x(self, node: ir.Node) -> list[str]:
        """The ONNX tensors of ``node``'s inputs."""
        return [self.tensors[i] for i in node.inputs]

    def node(self, op_type: str, inputs: list[str], final: bool = False, **attrs: object) -> str:
        """Append an ONNX node of the current IR node; return its output tensor's name.

        ``final`` marks the node computing the IR node's value (named after the IR node);
        others are helpers named ``<node>/<op><k>``.
        """
        self._count += 1
        helper_name = f"{self.current}/{op_type}{self._count}"
        out = self.tensors[self.current] if final else helper_name
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.current if final else helper_name, **attrs)
        )
        return out

    def const(self, what: str, value: np.ndarray) -> str:
        """A Constant node (not an initializer: constants are not parameters)."""
        out = f"{self.current}/{what}"
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(value, out)))
        return out

    def param(self, name: str, trainable: bool = True) -> str:
        """The initializer of canonical tensor ``name`` (added once); a non-trainable one (not
        BatchNormalization's statistics, which its reader marks) says so in its doc_string."""
        if not any(t.name == name for t in self.initializers):
            tensor = numpy_helper.from_array(np.asarray(self.weights[name], np.float32), name)
            if not trainable:
                tensor.doc_string = NON_TRAINABLE
            self.initializers.append(tensor)
        return name


Handler = Callable[[Emitter, ir.Node], None]


def _conv_attrs(node: ir.Conv2D | ir.DepthwiseConv2D, group: int) -> dict[str, object]:
    top, bottom, left, right = node.padding
    return {
        "kernel_shape": list(node.kernel),
        "strides": list(node.stride),
        "dilations": list(node.dilation),
        # ONNX pads are [x1_begin, x2_begin, x1_end, x2_end] = [top, left, bottom, right]: the
        # IR's explicit (TF-SAME) padding maps exactly, extra pixel at the bottom/right.
        "pads": [top, left, bottom, right],
        "group": group,
    }


def conv2d(e: Emitter, node: ir.Conv2D) -> None:
    inputs = [e.x(node)[0], e.param(f"{node.name}.kernel")]
    if node.use_bias:
        inputs.append(e.param(f"{node.name}.bias"))
    e.node("Conv", inputs, final=True, **_conv_attrs(node, node.groups))


def depthwise_conv2d(e: Emitter, node: ir.DepthwiseConv2D) -> None:
    inputs = [e.x(node)[0], e.param(f"{node.name}.kernel")]
    if node.use_bias:
        inputs.append(e.param(f"{node.name}.bias"))
    e.node("Conv", inputs, final=True, **_conv_attrs(node, node.in_channels))


def batchnorm(e: Emitter, node: ir.BatchNorm) -> None:
    c = node.channels
    ins = e.x(node)
    for p, on, default in (("gamma", node.scale, 1.0), ("beta", node.center, 0.0)):
        ins.append(e.param(f"{node.name}.{p}") if on else e.const(p, np.full((c,), default, np.float32)))
    ins += [e.param(f"{node.name}.moving_mean"), e.param(f"{node.name}.moving_variance")]
    # Inference form: (x - mean) / sqrt(var + eps) * gamma + beta with the IR's own epsilon.
    e.node("BatchNormalization", ins, final=True, epsilon=float(node.epsilon))


def _relu6(e: Emitter, x: str) -> None:
    lo, hi = e.const("min", np.array(0.0, np.float32)), e.const("max", np.array(6.0, np.float32))
    e.node("Clip", [x, lo, hi], final=True)


def _gelu(e: Emitter, x: str) -> None:
    """x * (1 + erf(x / sqrt(2))) / 2, the exact form (ONNX's Gelu op needs opset 20)."""
    erf = e.node("Erf", [e.node("Div", [x, e.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    half = e.node("Mul", [x, e.const("half", np.array(0.5, np.float32))])
    e.node("Mul", [half, e.node("Add", [erf, e.const("one", np.array(1.0, np.float32))])], final=True)


ACTIVATIONS: Mapping[str, Callable[[Emitter, str], object]] = {
    "relu": lambda e, x: e.node("Relu", [x], final=True),
    "relu6": _relu6,
    "sigmoid": lambda e, x: e.node("Sigmoid", [x], final=True),
    "tanh": lambda e, x: e.node("Tanh", [x], final=True),
    # PyTorch / Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1) (not Keras 2's 0.2x + 0.5).
    "hard_sigmoid": lambda e, x: e.node("HardSigmoid", [x], final=True, alpha=1.0 / 6.0, beta=0.5),
    "hard_swish": lambda e, x: e.node("HardSwish", [x], final=True),  # x * clip(x / 6 + 1/2, 0, 1)
    "swish": lambda e, x: e.node("Mul", [x, e.node("Sigmoid", [x])], final=True),
    "gelu": _gelu,
}
"""Activation kind -> the ONNX nodes computing it from tensor ``x`` (the last one final)."""
check_kinds("onnx", ACTIVATIONS)


def activation(e: Emitter, node: ir.Activation) -> None:
    if node.kind not in ACTIVATIONS:
        raise UnsupportedOpError("onnx", node, f"activation {node.kind!r}")
    ACTIVATIONS[node.kind](e, e.x(node)[0])


def zero_pad2d(e: Emitter, node: ir.ZeroPad2D) -> None:
    top, bottom, left, right = node.padding
    pads = e.const("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    e.node("Pad", [e.x(node)[0], pads], final=True, mode="constant")


def pool2d(e: Emitter, node: ir.Pool2D) -> None:
    op = "AveragePool" if node.kind == "avg" else "MaxPool"
    e.node(op, e.x(node), final=True, kernel_shape=list(node.kernel), strides=list(node.stride))


def global_pool(e: Emitter, node: ir.GlobalPool) -> None:
    op = "GlobalAveragePool" if node.kind == "avg" else "GlobalMaxPool"
    if node.keepdims:
        e.node(op, e.x(node), final=True)
    else:
        e.node("Flatten", [e.node(op, e.x(node))], final=True, axis=1)


def flatten(e: Emitter, node: ir.Flatten) -> None:
    x = e.x(node)[0]
    if len(e.graph[node.inputs[0]].shape) == 3:
        # The IR flattens in (H, W, C) order: back to NHWC first, so a following dense layer
        # has the same (in, out) matrix as in Keras.
        x = e.node("Transpose", [x], perm=[0, 2, 3, 1])
    e.node("Flatten", [x], final=True, axis=1)


def dense(e: Emitter, node: ir.Dense) -> None:
    inputs = [e.x(node)[0], e.param(f"{node.name}.kernel")]
    if node.use_bias:
        inputs.append(e.param(f"{node.name}.bias"))
    e.node("Gemm", inputs, final=True, transB=1)  # kernel stored (out, in), as torch's Linear


def dropout(e: Emitter, node: ir.Dropout) -> None:
    e.node("Identity", e.x(node), final=True)  # inference: dropout is the identity


def drop_path(e: Emitter, node: ir.DropPath) -> None:
    e.node("Identity", e.x(node), final=True)  # inference: stochastic depth is the identity


def layer_scale(e: Emitter, node: ir.LayerScale) -> None:
    gamma = e.param(f"{node.name}.gamma")  # (C,): broadcast as (C, 1, 1) over NCHW
    if len(node.shape) == 3:
        gamma = e.node("Reshape", [gamma, e.const("shape", np.array([-1, 1, 1], np.int64))])
    e.node("Mul", [e.x(node)[0], gamma], final=True)


def normalization(e: Emitter, node: ir.Normalization) -> None:
    """(x - mean) / max(sqrt(variance), 1e-7), Keras' order of operations."""
    mean = e.param(f"{node.name}.mean", trainable=False)
    variance = e.param(f"{node.name}.variance", trainable=False)
    if len(node.shape) == 3:  # NCHW: broadcast (C,) as (C, 1, 1)
        shape = e.const("shape", np.array([-1, 1, 1], np.int64))
        mean, variance = e.node("Reshape", [mean, shape]), e.node("Reshape", [variance, shape])
    std = e.node("Max", [e.node("Sqrt", [variance]), e.const("epsilon", np.array(1e-7, np.float32))])
    e.node("Div", [e.node("Sub", [e.x(node)[0], mean]), std], final=True)


def rescaling(e: Emitter, node: ir.Rescaling) -> None:
    # x * scale + offset in float32, in that order (Keras' Rescaling); no Add for a zero offset.
    scaled = e.node("Mul", [e.x(node)[0], e.const("scale", np.array(node.scale, np.float32))], final=not node.offset)
    if node.offset:
        e.node("Add", [scaled, e.const("offset", np.array(node.offset, np.float32))], final=True)


def concat(e: Emitter, node: ir.Concat) -> None:
    e.node("Concat", e.x(node), final=True, axis=1)  # channels: axis 1 in NCHW and in (N, C)


def softmax(e: Emitter, node: ir.Softmax) -> None:
    e.node("Softmax", e.x(node), final=True, axis=1)  # the channel axis in NCHW and (N, C)


def add(e: Emitter, node: ir.Add) -> None:
    e.node("Add" if len(node.inputs) == 2 else "Sum", e.x(node), final=True)


def multiply(e: Emitter, node: ir.Multiply) -> None:
    # A squeeze-excite (N, C, 1, 1) broadcasts over (N, C, H, W) under ONNX (numpy) rules.
    e.node("Mul", e.x(node), final=True)


def _mqa_key_value(e: Emitter, node: ir.MobileMQA, path: str, dim: int) -> str:
    """(N, dim, P): the strided depthwise conv and BatchNorm (kv_stride > 1), the projection."""
    x = e.x(node)[0]
    if node.downsampled:
        top, bottom, left, right = node.kv_padding
        kernel = e.param(f"{node.name}.{path}_down_kernel")
        attrs = {
            "kernel_shape": [node.dw_kernel] * 2,
            "strides": [node.kv_stride] * 2,
            "pads": [top, left, bottom, right],
        }
        x = e.node("Conv", [x, kernel], group=node.in_channels, **attrs)
        bn = [e.param(f"{node.name}.{path}_{p}") for p in ("gamma", "beta", "moving_mean", "moving_variance")]
        x = e.node("BatchNormalization", [x, *bn], epsilon=float(node.epsilon))
    x = e.node("Conv", [x, e.param(f"{node.name}.{path}_kernel")], kernel_shape=[1, 1])
    return e.node("Reshape", [x, e.const(f"{path}_shape", np.array([0, dim, -1], np.int64))])


def mobile_mqa(e: Emitter, node: ir.MobileMQA) -> None:
    """Opset-17 nodes only (Conv, BatchNormalization, MatMul, Softmax, Reshape, Transpose): the
    queries of every head are rows (position, head) of one MatMul against the shared keys."""
    h, w, _ = node.shape
    q = e.node("Conv", [e.x(node)[0], e.param(f"{node.name}.query_kernel")], kernel_shape=[1, 1])
    q = e.node("Transpose", [q], perm=[0, 2, 3, 1])  # (N, H, W, heads * key_dim), head-major
    q = e.node("Reshape", [q, e.const("query_shape", np.array([0, -1, node.key_dim], np.int64))])
    q = e.node("Div", [q, e.const("sqrt_key_dim", np.array(np.sqrt(node.key_dim), np.float32))])
    k = _mqa_key_value(e, node, "key", node.key_dim)  # (N, key_dim, P)
    v = e.node("Transpose", [_mqa_key_value(e, node, "value", node.value_dim)], perm=[0, 2, 1])
    attn = e.node("Softmax", [e.node("MatMul", [q, k])], axis=-1)
    o = e.node("MatMul", [attn, v])  # (N, H * W * heads, value_dim)
    o = e.node("Reshape", [o, e.const("output_shape", np.array([0, h, w, node.heads * node.value_dim], np.int64))])
    o = e.node("Transpose", [o], perm=[0, 3, 1, 2])
    e.node("Conv", [o, e.param(f"{node.name}.output_kernel")], final=True, kernel_shape=[1, 1])


def input_(e: Emitter, node: ir.Input) -> None:
    if e.tensors[node.name] != e.input_name:  # NHWC input: the IR's value is its NCHW transpose
        e.node("Transpose", [e.input_name], final=True, perm=[0, 3, 1, 2])


HANDLERS: dict[str, Handler] = handler_table(
    "onnx",
    {
        "input": input_,  # type: ignore[dict-item]
        "conv2d": conv2d,  # type: ignore[dict-item]
        "depthwise_conv2d": depthwise_conv2d,  # type: ignore[dict-item]
        "batchnorm": batchnorm,  # type: ignore[dict-item]
        "activation": activation,  # type: ignore[dict-item]
        "zero_pad2d": zero_pad2d,  # type: ignore[dict-item]
        "pool2d": pool2d,  # type: ignore[dict-item]
        "global_pool": global_pool,  # type: ignore[dict-item]
        "flatten": flatten,  # type: ignore[dict-item]
        "dense": dense,  # type: ignore[dict-item]
        "dropout": dropout,  # type: ignore[dict-item]
        "drop_path": drop_path,  # type: ignore[dict-item]
        "layer_scale": layer_scale,  # type: ignore[dict-item]
        "normalization": normalization,  # type: ignore[dict-item]
        "softmax": softmax,  # type: ignore[dict-item]
        "rescaling": rescaling,  # type: ignore[dict-item]
        "concat": concat,  # type: ignore[dict-item]
        "add": add,  # type: ignore[dict-item]
        "multiply": multiply,  # type: ignore[dict-item]
        "mobile_mqa": mobile_mqa,  # type: ignore[dict-item]
    },
)
"""IR op -> handler: every built-in op (checked at import), then those plug-ins add
(kit.registry.handler_table)."""
