"""Keras model -> TFLite flatbuffer (TensorFlow's converter), and LiteRT interpreters over it.

Which IR node a TFLite tensor holds is read from the tensor's name: the converter names a
tensor after the Keras ops it computes (``<model scope>/<layer scope>/<op>``), joined by ``;``
when it fused several (conv + BatchNorm + ReLU is one CONV_2D named after all three). Such a
tensor is the value of the *last* IR node among them; the nodes fused into it have no tensor
of their own, and are reported as not exposed rather than guessed.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from archcompiler import ir
from archcompiler.kit.registry import BackendError
from archcompiler.quiet import framework_output

QUANTIZE = ("none", "float16", "dynamic", "int8")
"""float32 (default); float16 weights; dynamic-range int8 weights (activations stay float);
full-integer int8 (weights per channel, activations calibrated, int8 kernels only)."""
IO_TYPES = ("float32", "int8")
"""A full-integer model's input and output tensors: float32 (QUANTIZE/DEQUANTIZE inside) or int8."""


def _representative(calibration: np.ndarray) -> Any:
    """The converter's representative dataset: one sample per step, as its calibrator expects."""

    def samples() -> Any:
        for i in range(len(calibration)):
            yield [np.ascontiguousarray(calibration[i : i + 1], np.float32)]

    return samples


def convert(
    keras_model: Any,
    quantize: str = "none",
    *,
    calibration: np.ndarray | None = None,
    io: str = "float32",
    float_layers: tuple[str, ...] = (),
    graph: ir.Graph | None = None,
) -> bytes:
    """The flatbuffer of ``keras_model`` (float32 unless ``quantize`` says otherwise); int8
    needs ``calibration`` (NHWC model inputs) and takes ``io``, and ``float_layers`` (nodes of
    ``graph``, the model's IR) to keep in float (:func:`_selective`)."""
    from archcompiler.backends.keras._framework import tf

    if quantize not in QUANTIZE:
        raise BackendError(f"tflite quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if calibration is None:
            raise BackendError("tflite int8 needs calibration inputs")
        converter.representative_dataset = _representative(calibration)
        converter._experimental_disable_per_channel = False  # per-channel weights (the default, pinned)
        if float_layers:
            if graph is None or io != "float32":
                raise BackendError("tflite float_layers: a model with float32 input and output (io='float32')")
            return _selective(converter, calibration, graph, keras_model.name, float_layers)
        # an op without an int8 kernel fails the conversion instead of staying float
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # The converter exports a SavedModel first, prints its endpoints to stdout and logs every step.
    with framework_output():
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises bare ConverterErrors/RuntimeErrors
            raise BackendError(f"TFLite conversion of {keras_model.name!r} failed: {exc}") from exc


def _selective(
    converter: Any, calibration: np.ndarray, graph: ir.Graph, model_name: str, float_layers: tuple[str, ...]
) -> bytes:
    """int8 with the ops computing ``float_layers`` left in float, TensorFlow's supported way:
    the quantization debugger calibrates once, its options denylist those ops' output tensors
    (named after the layers, :func:`layer_ops`), and its non-debug model is the one to ship.
    Its input and output stay float32; the other ops are int8 as in :func:`convert`."""
    from archcompiler.backends.keras._framework import tf

    with framework_output():
        try:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_representative(calibration)
            )
            calibrated = interpreter(debugger.calibrated_model)
            ops = layer_ops(graph, calibrated, model_name)
            missing = [n for n in float_layers if n not in ops]
            if missing:
                raise BackendError(f"float_layers: {missing[0]!r} computes nothing in the TFLite model")
            denied = sorted({t for n in float_layers for t in ops[n]})
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denied)
            content = bytes(debugger.get_nondebug_quantized_model())
        except BackendError:
            raise
        except Exception as exc:  # the converter raises bare ConverterErrors/RuntimeErrors
            raise BackendError(f"TFLite conversion of {model_name!r} failed: {exc}") from exc
    _only_denied_in_float(interpreter(content, preserve_all=True), set(denied), model_name)
    return content


def _only_denied_in_float(it: Any, denied: set[str], model_name: str) -> None:
    """Every op computing float but the denylisted ones and the DEQUANTIZE ops is an error: the
    debugger's quantizer leaves an op without an int8 kernel in float silently, where the plain
    int8 conversion (TFLITE_BUILTINS_INT8 only) fails."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    for op in it._get_ops_details():
        outs = [details[t] for t in op["outputs"]]
        if op["op_name"] == "DEQUANTIZE" or not any(np.dtype(d["dtype"]) == np.float32 for d in outs):
            continue
        if not any(d["name"] in denied for d in outs):
            what = f"op {op['op_name']} ({outs[0]['name']})"
            raise BackendError(f"TFLite int8 of {model_name!r}: {what} has no int8 kernel, it would stay float")


def layer_ops(graph: ir.Graph, it: Any, model_name: str) -> dict[str, set[str]]:
    """IR node -> the output tensor names of the ops that compute it: the ops whose tensor is
    named after it (a conv, its BatchNorm and activation fused into one op are all named), and
    for a node named by none (a BatchNorm folded into its conv's weights), the ops of its
    nearest named input."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    named: dict[str, set[str]] = {}
    for op in it._get_ops_details():  # LiteRT has no public equivalent
        for t in op["outputs"]:
            for segment in details[t]["name"].split(";"):
                node = _layer_of(segment, model_name, graph)
                if node is not None:
                    named.setdefault(node, set()).add(details[t]["name"])
    out: dict[str, set[str]] = {}
    for node in graph.nodes:
        if node.name in named:
            out[node.name] = named[node.name]
        elif node.inputs and node.inputs[0] in out:
            out[node.name] = out[node.inputs[0]]
    return out


def interpreter(content: bytes, *, preserve_all: bool = False) -> Any:
    """A LiteRT interpreter (tf.lite's only where ai_edge_litert is absent).

    ``preserve_all`` keeps every intermediate tensor and runs the builtin kernels without the
    default XNNPACK delegate, whose fused subgraphs would not write intermediates back.

    The interpreter is allocated (at batch 1) here, quietly: LiteRT applies its delegate, and
    says so on stderr, at the first allocation. Its UserWarning that preserving all tensors is
    "intended for debugging" is dropped too: that is what per-node parity is.
    """
    try:
        with framework_output():
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from archcompiler.backends.keras._framework import tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    options: dict[str, Any] = {}
    if preserve_all:
        options["experimental_preserve_all_tensors"] = True
        options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with framework_output():
        it = Interpreter(model_content=content, **options)
        it.allocate_tensors()
    return it


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float ``x`` as the input tensor takes it: unchanged for a float input, else
    ``clip(round(x / scale) + zero_point)`` with the tensor's quantization."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(x, dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(t: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A tensor's real values: float tensors as they are, (q - zero_point) * scale otherwise
    (per-tensor; activations are)."""
    if not np.issubdtype(t.dtype, np.integer):
        return np.array(t)
    scale, zero = detail["quantization"]
    return ((t.astype(np.float64) - zero) * scale).astype(np.float32)


def invoke(it: Any, x: np.ndarray) -> None:
    """Run ``it`` on batch ``x`` (the batch axis is dynamic: resize, then allocate); float
    ``x`` is quantized for an int8 input."""
    inp = it.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        it.resize_tensor_input(inp["index"], list(x.shape), strict=False)
    it.allocate_tensors()
    it.set_tensor(inp["index"], quantize_input(x, inp))
    it.invoke()


def read(it: Any, index: int) -> np.ndarray:
    """Tensor ``index``'s real (dequantized) value, copied out of the interpreter."""
    detail = next(d for d in it.get_tensor_details() if d["index"] == index)
    return dequantize(np.array(it.get_tensor(index)), detail)


def output_indices(graph: ir.Graph, it: Any) -> dict[str, int]:
    """IR output node -> index of the flatbuffer output tensor holding it.

    ``get_output_details()`` does not keep the Keras model's output order (a 3-output model
    lists ``:1, :0, :2``); the serving signature names them ``output_<k>`` by position, so a
    multi-output model is mapped through the signature runner."""
    if not graph.multi_output:
        return {graph.output: int(it.get_output_details()[0]["index"])}
    details = it.get_signature_runner().get_output_details()
    by_position = sorted(details.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[-1]))
    if len(by_position) != len(graph.outputs):
        raise BackendError(f"TFLite model has {len(by_position)} outputs, the IR {len(graph.outputs)}")
    return {o: int(d["index"]) for o, (_, d) in zip(graph.outputs, by_position, strict=True)}


def check_signature(graph: ir.Graph, content: bytes) -> None:
    """The flatbuffer takes (N, *input_shape) and returns (N, *output_shape) for each output,
    in the IR's order, N dynamic."""
    it = interpreter(content)
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != len(graph.outputs):
        raise BackendError(
            f"TFLite model has {len(ins)} inputs and {len(outs)} outputs, expected 1 and {len(graph.outputs)}"
        )
    got_in = tuple(ins[0]["shape_signature"])
    signature = {d["index"]: tuple(d["shape_signature"]) for d in outs}
    got_out = tuple(signature[i] for i in output_indices(graph, it).values())
    want_out = tuple((-1, *s) for s in graph.output_shapes)
    if got_in != (-1, *graph.input_shape) or got_out != want_out:
        raise BackendError(
            f"TFLite model maps {got_in} -> {got_out}, IR says (N, *{graph.input_shape}) -> "
            f"{tuple((None, *s) for s in graph.output_shapes)}"
        )


def _layer_of(segment: str, model_name: str, graph: ir.Graph) -> str | None:
    """The IR node named by one ``<model scope>/<layer scope>/...`` segment, if any."""
    parts = segment.split("/")
    if len(parts) < 3 or not parts[0].startswith(model_name):
        return None
    suffix = parts[0][len(model_name) :]  # Keras numbers the scopes of a trace alike ("_1")
    scope = parts[1]
    candidates = [scope[: -len(suffix)] if suffix and scope.endswith(suffix) else scope, scope]
    candidates.append(re.sub(r"_\d+$", "", scope))
    return next((c for c in candidates if c in graph), None)


def node_tensors(graph: ir.Graph, it: Any, model_name: str) -> dict[str, int]:
    """IR node -> index of the tensor holding its value, for the nodes the model exposes.

    Only op outputs of the right (batched) shape count, so a constant named after a layer (a
    folded kernel or bias) is never taken for its output; among a node's tensors the last one
    computed wins (BatchNorm not fused into a conv is a Mul then an Add).
    """
    details = {d["index"]: d for d in it.get_tensor_details()}
    order = {n.name: k for k, n in enumerate(graph.nodes)}
    out: dict[str, int] = {}
    for op in it._get_ops_details():  # execution order; LiteRT has no public equivalent
        for t in op["outputs"]:
            names = [_layer_of(s, model_name, graph) for s in details[t]["name"].split(";")]
            nodes = [n for n in names if n is not None]
            if not nodes:
                continue
            node = max(nodes, key=order.__getitem__)
            if tuple(details[t]["shape"][1:]) == tuple(graph[node].shape):
                out[node] = int(t)
    out.update(output_indices(graph, it))
    return out
