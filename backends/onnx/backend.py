"""OnnxBackend: the archcompiler Backend interface over an onnx.ModelProto and onnxruntime.

Imports onnx and onnxruntime only (no torch, no TensorFlow): the model is written straight
from the IR, so deploying needs neither training framework installed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from archcompiler.backends.onnx.build import (
    INPUT,
    OUTPUT,
    build_model,
    input_layout,
    output_tensors,
    owner,
    tensor_names,
    with_outputs,
)
from archcompiler.backends.onnx.ops import HANDLERS, NON_TRAINABLE, Handler
from archcompiler.backends.onnx.quantize import DISABLED_OPTIMIZERS, QuantizedOnnx, quantize
from archcompiler.backends.onnx.quantize import run as run_quantized
from onnx import numpy_helper

from archcompiler import calibration as calib
from archcompiler import ir, quantization
from archcompiler import weights as canonical
from archcompiler.ir.layouts import ActivationLayout, WeightLayout
from archcompiler.kit.registry import Backend, BackendError

_SESSIONS: dict[tuple[str, tuple[str, ...]], Any] = {}
"""(model fingerprint, exposed tensors) -> onnxruntime session; a few kept, oldest dropped."""
_MAX_SESSIONS = 4


def _as_model(model: Any) -> onnx.ModelProto:
    if not isinstance(model, onnx.ModelProto):
        raise BackendError(f"expected an onnx.ModelProto built by the onnx backend, got {type(model).__name__}")
    return model


class OnnxBackend(Backend):
    """ONNX (opset 17) from the IR, run with onnxruntime. Input ``input`` float32 NCHW with a
    dynamic batch axis (``OnnxBackend(nhwc_input=True)``: NHWC), output ``output`` (N, ...).

    ``quantize="int8"`` saves a statically quantized QDQ model instead (backends/onnx/quantize.py:
    per-channel int8 weights, uint8 activations calibrated on ``calibration``, a folder of
    images, an .npy/.npz file, "synthetic" or a loaded archcompiler.calibration.Calibration),
    with ``<name>.quantization.json``, its deviation from the float model on held-out inputs;
    ``float_layers``: IR nodes whose ONNX nodes stay in float (``nodes_to_exclude``).
    The model this backend builds and runs stays the float one (weights, parity)."""

    name: ClassVar[str] = "onnx"
    optimizable: ClassVar[bool] = True
    trains: ClassVar[bool] = False  # an inference runtime: no sgd_step
    multi_output: ClassVar[bool] = True
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    convention: ClassVar[str] = "keras"
    weight_layout: ClassVar[WeightLayout] = "channels_first"
    activation_layout: ClassVar[ActivationLayout] = "channels_first"
    file_suffixes: ClassVar[tuple[str, ...]] = (".onnx", ".quantization.json")
    QUANTIZE: ClassVar[tuple[str, ...]] = ("none", "int8")

    def __init__(
        self,
        *,
        nhwc_input: bool = False,
        quantize: str = "none",
        calibration: Any = None,
        pixels: str | None = None,
        reduce_range: bool = True,
        float_layers: Any = None,
    ) -> None:
        if quantize not in self.QUANTIZE:
            raise BackendError(f"onnx quantize must be one of {', '.join(self.QUANTIZE)}, got {quantize!r}")
        if quantize == "int8" and calibration is None:
            raise BackendError("quantize='int8' needs calibration: a folder of images, .npy/.npz or 'synthetic'")
        self.nhwc_input, self.quantize, self.calibration = nhwc_input, quantize, calibration
        if float_layers is not None and quantize != "int8":
            raise BackendError("float_layers is for quantize='int8': the layers an int8 model keeps in float")
        self.pixels, self.reduce_range, self.float_layers = pixels, reduce_range, float_layers

    def build(self, graph: ir.Graph) -> onnx.ModelProto:
        """The model with archc's initial weights (weights.training_init, seed 0): ONNX has no
        initialisers of its own, so they are its 'framework' init too."""
        self.check_supported(graph)
        return build_model(graph, self.handlers, canonical.training_init(graph), nhwc_input=self.nhwc_input)

    def graph_name(self, model: Any) -> str | None:
        """The name of the graph the model was built from, as build_model recorded it in the
        metadata (optimize.built_optimized)."""
        return {p.key: p.value for p in _as_model(model).metadata_props}.get("archc.graph")

    def model_dtype(self, model: Any) -> str:
        """The element type of the model's input ("float32" for every model this backend builds)."""
        elem = _as_model(model).graph.input[0].type.tensor_type.elem_type
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem))

    # -- verify ---------------------------------------------------------------------------

    def verify(self, graph: ir.Graph, model: Any) -> None:
        """onnx.checker (full check), then the kit's checks: every node's inferred shape against
        the IR, then parameters per node and in total against cost convention "keras":
        initializers read by BatchNormalization as mean/variance are the non-trainable
        statistics, the rest trainable."""
        model = _as_model(model)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise BackendError(f"ONNX model of {graph.name!r} is invalid: {exc}") from None
        seen: set[str] = set()
        for n in model.graph.node:  # onnxruntime refuses a model that names two nodes alike; the checker does not
            if n.name in seen:
                raise BackendError(f"ONNX model of {graph.name!r} is invalid: two nodes are named {n.name!r}")
            seen.add(n.name)
        ir_names = {n.name for n in graph.nodes}
        inits = {t.name for t in model.graph.initializer}
        for n in model.graph.node:
            if owner(n) not in ir_names and (t := next((t for t in n.input if t in inits), None)):
                raise BackendError(f"ONNX node {n.name!r} reads initializer {t!r} but belongs to no IR node")
        super().verify(graph, model)

    def node_shapes(self, graph: ir.Graph, model: Any) -> Iterator[tuple[str, tuple[int | None, ...] | Exception]]:
        """Each node's tensor as onnx shape inference types it (NCHW, batch axis dropped after
        checking it is the dynamic ``batch``); an output node's graph output must agree."""
        model = _as_model(model)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            raise BackendError(f"ONNX model of {graph.name!r} is invalid: {exc}") from None
        shapes = {
            v.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim)
            for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        }
        tensors = tensor_names(graph, input_layout(model) == "NHWC")
        outputs = dict(zip(graph.outputs, output_tensors(graph, tensors), strict=True))
        for node in graph.nodes:
            t = tensors[node.name]
            if t not in shapes:
                return  # the kit names the node the model computes nothing for
            got = shapes[t]
            if got[:1] != ("batch",):
                yield node.name, BackendError(f"ONNX tensor {t!r} is {got}, not (batch, ...) with a dynamic batch axis")
                return
            out = outputs.get(node.name, t)
            if shapes.get(out) != got:
                yield node.name, BackendError(f"graph output {out!r} is {shapes.get(out)}, the node's tensor {got}")
                return
            yield node.name, tuple(d if isinstance(d, int) else None for d in got[1:])

    def param_counts(self, graph: ir.Graph, model: Any) -> dict[str, tuple[int, int]]:
        return _param_counts(_as_model(model))[0]

    def param_totals(self, model: Any) -> tuple[int, int]:
        """All initializers (BatchNormalization statistics non-trainable); one read by no node
        is an error."""
        per_node, unread = _param_counts(_as_model(model))
        if unread:
            raise BackendError(f"initializer {unread[0]!r} is read by no node")
        return sum(t for t, _ in per_node.values()), sum(f for _, f in per_node.values())

    # -- weights: initializers by (owning node, param), replaced in place ------------------

    def weight_tensors(self, model: Any) -> dict[tuple[str, str], onnx.TensorProto]:
        model = _as_model(model)
        inits = {t.name: t for t in model.graph.initializer}
        out: dict[tuple[str, str], onnx.TensorProto] = {}
        for n in model.graph.node:
            node = owner(n)
            for t in n.input:
                if t in inits:
                    out.setdefault((node, t.removeprefix(f"{node}.")), inits[t])
        return out

    def tensor_shape(self, tensor: onnx.TensorProto) -> tuple[int, ...]:
        return tuple(tensor.dims)

    def read_tensor(self, tensor: onnx.TensorProto) -> np.ndarray:
        return numpy_helper.to_array(tensor)

    def write_tensors(self, staged: Sequence[tuple[onnx.TensorProto, np.ndarray]]) -> None:
        converted = [(tensor, numpy_helper.from_array(arr, tensor.name)) for tensor, arr in staged]
        for tensor, new in converted:
            tensor.CopyFrom(new)

    # -- run ------------------------------------------------------------------------------

    def forward(self, graph: ir.Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """onnxruntime on the NCHW batch (given back as NHWC to a model built with
        ``nhwc_input``); the named nodes' tensors, NCHW, from a cached session."""
        model = _as_model(model)
        nhwc = input_layout(model) == "NHWC"
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc and x.ndim == 4 else x
        tensors = tensor_names(graph, nhwc)
        fetch = list(dict.fromkeys(tensors[n] for n in names))
        values = dict(zip(fetch, _session(model, graph, fetch).run(fetch, {INPUT: feed}), strict=True))
        return {n: values[tensors[n]] for n in names}

    # -- save -----------------------------------------------------------------------------

    def quantized(self, graph: ir.Graph, model: Any) -> tuple[QuantizedOnnx, calib.Calibration]:
        """The int8 QDQ model of ``model`` (its weights folded through archc's optimize rewrite)
        and the inputs it was calibrated on."""
        from archcompiler.analysis.optimize import rewrite

        model = _as_model(model)
        inputs = calib.given(self.calibration, graph, self.pixels)
        opt = rewrite(self, graph, self.get_weights(graph, model))
        nhwc = input_layout(model) == "NHWC"
        floats = quantization.float_layers(graph, self.float_layers)
        q = quantize(opt, self.handlers, inputs, nhwc_input=nhwc, reduce_range=self.reduce_range, float_layers=floats)
        return q, inputs

    def quantized_runner(self, graph: ir.Graph, model: Any) -> tuple[Any, frozenset[str]]:
        """(run, nodes) of the int8 QDQ model of ``model``: ``run(x, names)`` gives the named
        nodes' dequantized values with onnxruntime's kernels, for the ``nodes`` whose value a
        tensor of the optimised graph holds (a conv with its BatchNorm folded holds the BN's)."""
        q, _ = self.quantized(graph, model)
        # the quantizer removes a Relu after a conv (its Q/DQ clamps): the conv's tensor is gone
        present = {t for n in q.model.graph.node for t in n.output}
        tensors = tensor_names(q.optimized.graph, input_layout(q.model) == "NHWC")
        held = frozenset(old for new, old in q.optimized.holders().items() if tensors[new] in present)
        return (lambda x, names: run_quantized(q, x, tuple(names))), held - {n.name for n in graph.inputs}

    def quantization_error(self, graph: ir.Graph, model: Any) -> tuple[QuantizedOnnx, dict[str, Any]]:
        """The int8 model and its deviation from the float model of the same weights on the
        held-out inputs (archcompiler.quantization.report)."""
        q, inputs = self.quantized(graph, model)
        report = quantization.report(
            graph,
            lambda x, names: self.run(graph, model, x, names),
            lambda x, names: run_quantized(q, x, names),
            inputs,
            quantize="int8 QDQ (per-channel int8 weights"
            + (", 7-bit range" if self.reduce_range else "")
            + ", uint8 activations, float32 input and output)",
            reference_name="float32 ONNX model of the same weights (onnxruntime)",
            weights=quantization.weights_origin(graph, self.get_weights(graph, model)),
            float_layers=quantization.float_layers(graph, self.float_layers),
        )
        report["size_bytes"] = {"float32": _as_model(model).ByteSize(), "int8": q.model.ByteSize()}
        if report["float_layers"]:
            report["load_with"] = (
                f"onnxruntime.InferenceSession(path, disabled_optimizers={DISABLED_OPTIMIZERS!r}): otherwise "
                "onnxruntime (1.21 and later) quantizes the float layers' weights when it loads the model"
            )
        return q, report

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        """``<graph.name>.onnx``, written atomically; it loads in any ONNX runtime. An int8
        build writes the QDQ model there and ``<graph.name>.quantization.json`` beside it."""
        model = _as_model(model)
        target = Path(out_dir) / f"{graph.name}.onnx"
        if self.quantize == "none":
            return [self.publish(target, lambda tmp: onnx.save_model(model, tmp))]
        q, report = self.quantization_error(graph, model)
        data = q.model.SerializeToString()
        report["sha256"] = hashlib.sha256(data).hexdigest()
        text = json.dumps(report, indent=2)
        return [
            self.publish(target, lambda tmp: Path(tmp).write_bytes(data)),
            self.publish(target.with_suffix(".quantization.json"), lambda tmp: Path(tmp).write_text(text)),
        ]


def _param_counts(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """(trainable, non-trainable) initializer elements per owning IR node (BatchNormalization's
    mean and variance, and initializers marked NON_TRAINABLE, are the non-trainable ones; an
    initializer counts for its first reader),
    and the initializers no node reads."""
    unread = {t.name: t for t in model.graph.initializer}
    per_node: dict[str, tuple[int, int]] = {}
    for n in model.graph.node:
        for k, t in enumerate(n.input):
            if t in unread:
                init = unread.pop(t)
                size = math.prod(init.dims)
                trainable, stats = per_node.get(owner(n), (0, 0))
                is_stat = (n.op_type == "BatchNormalization" and k >= 3) or init.doc_string == NON_TRAINABLE
                per_node[owner(n)] = (trainable, stats + size) if is_stat else (trainable + size, stats)
    return per_node, list(unread)


def _session(model: onnx.ModelProto, graph: ir.Graph, fetch: list[str]) -> Any:
    """An onnxruntime session whose outputs include ``fetch``, cached by model content."""
    import onnxruntime as ort

    data = model.SerializeToString()
    key = (hashlib.sha1(data).hexdigest(), tuple(fetch))
    if key not in _SESSIONS:
        extra = [(t, n) for t, n in zip(fetch, _names_for(fetch, graph, model), strict=True) if t != OUTPUT]
        if extra:
            data = with_outputs(model, [t for t, _ in extra], graph, [n for _, n in extra]).SerializeToString()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        while len(_SESSIONS) >= _MAX_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def _names_for(fetch: list[str], graph: ir.Graph, model: onnx.ModelProto) -> list[str]:
    """The IR node of each fetched tensor (the graph output ``output`` is the output node)."""
    back = {t: n for n, t in tensor_names(graph, input_layout(model) == "NHWC").items()}
    if not graph.multi_output:
        back.setdefault(OUTPUT, graph.output)
    return [back[t] for t in fetch]
