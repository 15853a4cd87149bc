"""IR graph -> onnx.ModelProto, and the per-node bookkeeping verify and run need."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from archcompiler.backends.onnx.ops import OPSET, Emitter, Handler
from onnx import TensorProto, helper

from archcompiler import ir
from archcompiler import weights as canonical
from archcompiler.ir.layouts import to_channels_first
from archcompiler.kit.registry import UnsupportedOpError

INPUT = "input"
OUTPUT = "output"
BATCH = "batch"
LAYOUT_KEY = "archc.input_layout"
"""metadata_props key recording whether the model input is NCHW or NHWC (run reads it)."""
IR_VERSION = 8
"""The ONNX IR version that goes with opset 17; newer ones are refused by older runtimes."""


def nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """IR per-example (H, W, C) -> (C, H, W); vectors unchanged."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


def value_info(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    """A float32 tensor with a dynamic batch axis."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])


GRAPH_NAMES = (INPUT, OUTPUT)
"""The model's own value names. An IR node of either name that is not that value gets
``<name>.value`` (a layer name has no '.'), so no layer name can collide with them."""
OUTPUT_NODE = f"{OUTPUT}.identity"
"""The ONNX node that copies the output node's value to ``output`` (no layer's name: it has a '.')."""


def tensor_names(graph: ir.Graph, nhwc_input: bool) -> dict[str, str]:
    """IR node -> the ONNX tensor holding its value: the node's own name, except that an
    untransposed input node *is* the graph input ``input``, an output node named ``output`` *is*
    the graph output, and any other node named like one of :data:`GRAPH_NAMES` gets
    ``<name>.value`` (an NHWC input's transposed value, a layer called ``output``...)."""
    out: dict[str, str] = {}
    for n in graph.nodes:
        if isinstance(n, ir.Input) and not (nhwc_input and len(n.shape) == 3):
            out[n.name] = INPUT
        elif n.name == OUTPUT and graph.outputs == (n.name,) and not isinstance(n, ir.Input):
            out[n.name] = OUTPUT
        else:
            out[n.name] = f"{n.name}.value" if n.name in GRAPH_NAMES else n.name
    return out


def output_tensors(graph: ir.Graph, tensors: Mapping[str, str]) -> list[str]:
    """The model's graph outputs: ``output`` for a single-output graph; for a multi-output one
    (feature maps), each output node's own tensor, in order, so the names say which is which."""
    return [OUTPUT] if not graph.multi_output else [tensors[o] for o in graph.outputs]


def channels_first_weights(graph: ir.Graph, weights: canonical.Weights) -> dict[str, np.ndarray]:
    """Canonical weights (checked) -> channels-first arrays by canonical name."""
    canonical.check(graph, weights)
    return {
        n: to_channels_first(np.asarray(weights[n], np.float32), t.layout) for n, t in canonical.specs(graph).items()
    }


def build_model(
    graph: ir.Graph, handlers: Mapping[str, Handler], weights: canonical.Weights, *, nhwc_input: bool = False
) -> onnx.ModelProto:
    """The whole graph as one ONNX model: input ``input`` (N, C, H, W) or (N, H, W, C), output
    ``output`` (N, ...) = the IR output node (several outputs: :func:`output_tensors`), weights
    as initializers."""
    if len(graph.inputs) != 1:
        raise UnsupportedOpError("onnx", graph.inputs[1], "more than one graph input")
    tensors = tensor_names(graph, nhwc_input)
    e = Emitter(graph, channels_first_weights(graph, weights), tensors, INPUT, nhwc_input)
    for node in graph.nodes:
        if node.op not in handlers:
            raise UnsupportedOpError("onnx", node)
        e.current = node.name
        handlers[node.op](e, node)
    if not graph.multi_output and tensors[graph.output] != OUTPUT:
        e.nodes.append(helper.make_node("Identity", [tensors[graph.output]], [OUTPUT], name=OUTPUT_NODE))
    outs = output_tensors(graph, tensors)
    shape = graph.input_shape
    in_shape = tuple(shape) if nhwc_input or len(shape) != 3 else nchw(shape)
    onnx_graph = helper.make_graph(
        e.nodes,
        graph.name,
        [value_info(INPUT, in_shape)],
        [value_info(t, nchw(s)) for t, s in zip(outs, graph.output_shapes, strict=True)],
        initializer=e.initializers,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="archc", ir_version=IR_VERSION
    )
    model.doc_string = f"{graph.name} (width {graph.width:g}, {graph.resolution[0]}x{graph.resolution[1]}) by archc"
    helper.set_model_props(model, {LAYOUT_KEY: "NHWC" if nhwc_input else "NCHW", "archc.graph": graph.name})
    return model


def owner(node: onnx.NodeProto) -> str:
    """The IR node an ONNX node was emitted for (its name, up to the first ``/``)."""
    return node.name.split("/", 1)[0]


def input_layout(model: onnx.ModelProto) -> str:
    """The model input's layout, "NCHW" or "NHWC", as build_model recorded it in the metadata."""
    props = {p.key: p.value for p in model.metadata_props}
    return props.get(LAYOUT_KEY, "NCHW")


def with_outputs(model: onnx.ModelProto, tensors: list[str], graph: ir.Graph, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (the values of IR nodes ``names``)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    for t, n in zip(tensors, names, strict=True):
        if t not in existing:
            out.graph.output.append(value_info(t, nchw(graph[n].shape)))
            existing.add(t)
    return out
