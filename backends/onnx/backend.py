"""OnnxBackend: the archcompiler Backend interface over an onnx.ModelProto and onnxruntime.

Imports onnx and onnxruntime only (no torch, no TensorFlow): the model is written straight
from the IR, so deploying needs neither training framework installed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from archcompiler import ir
from archcompiler import weights as canonical
from archcompiler.cost import cost
from archcompiler.layouts import ActivationLayout, WeightLayout, from_channels_first, to_channels_first
from archcompiler.registry import Backend, BackendError

from .build import INPUT, OUTPUT, build_model, input_layout, nchw, output_tensors, tensor_names, with_outputs
from .ops import HANDLERS, Handler

_SESSIONS: dict[tuple[str, tuple[str, ...]], Any] = {}
"""(model fingerprint, exposed tensors) -> onnxruntime session; a few kept, oldest dropped."""
_MAX_SESSIONS = 4


def _as_model(model: Any) -> onnx.ModelProto:
    if not isinstance(model, onnx.ModelProto):
        raise BackendError(f"expected an onnx.ModelProto built by the onnx backend, got {type(model).__name__}")
    return model


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


class OnnxBackend(Backend):
    """ONNX (opset 17) from the IR, run with onnxruntime. Input ``input`` float32 NCHW with a
    dynamic batch axis (``OnnxBackend(nhwc_input=True)``: NHWC), output ``output`` (N, ...)."""

    name: ClassVar[str] = "onnx"
    optimizable: ClassVar[bool] = True
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    convention: ClassVar[str] = "keras"
    weight_layout: ClassVar[WeightLayout] = "channels_first"
    activation_layout: ClassVar[ActivationLayout] = "channels_first"
    model_suffix: ClassVar[str] = ".onnx"

    def __init__(self, *, nhwc_input: bool = False) -> None:
        self.nhwc_input = nhwc_input

    def build(self, graph: ir.Graph) -> onnx.ModelProto:
        """The model with archc's deterministic initial weights (weights.init, seed 0)."""
        self.check_supported(graph)
        return build_model(graph, self.handlers, canonical.init(graph), nhwc_input=self.nhwc_input)

    # -- verify ---------------------------------------------------------------------------

    def verify(self, graph: ir.Graph, model: Any) -> None:
        """onnx.checker (full check), then every node's inferred shape against the IR, then
        parameters per node and in total against cost convention "keras": initializers read by
        BatchNormalization as mean/variance are the non-trainable statistics, the rest trainable.
        """
        model = _as_model(model)
        try:
            onnx.checker.check_model(model, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise BackendError(f"ONNX model of {graph.name!r} is invalid: {exc}") from None
        shapes = {
            v.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim)
            for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        }
        tensors = tensor_names(graph, input_layout(model) == "NHWC")
        for node in graph.nodes:
            t = tensors[node.name]
            if t not in shapes:
                raise BackendError(f"node {node.name!r}: the ONNX model computes no tensor {t!r} for it")
            got, want = shapes[t], ("batch", *nchw(node.shape))
            if got != want:
                raise BackendError(f"node {node.name!r}: ONNX shape {got} (NCHW) but the IR says {node.shape}")
        for t, shape in zip(output_tensors(graph, tensors), graph.output_shapes, strict=True):
            if shapes.get(t) != ("batch", *nchw(shape)):
                raise BackendError(f"graph output {t!r} is {shapes.get(t)}, IR says {shape}")
        self._verify_counts(graph, model)

    @staticmethod
    def _verify_counts(graph: ir.Graph, model: onnx.ModelProto) -> None:
        sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
        ir_names = {n.name for n in graph.nodes}
        per_node: dict[str, list[int]] = {n.name: [0, 0] for n in graph.nodes}
        for n in model.graph.node:
            owner = n.name.split("/", 1)[0]
            for k, t in enumerate(n.input):
                if t not in sizes:
                    continue
                if owner not in ir_names:
                    raise BackendError(f"ONNX node {n.name!r} reads initializer {t!r} but belongs to no IR node")
                stats = n.op_type == "BatchNormalization" and k >= 3
                per_node[owner][1 if stats else 0] += sizes.pop(t)
        if sizes:
            raise BackendError(f"initializer {next(iter(sizes))!r} is read by no node")
        want = cost(graph, "keras")
        for node in graph.nodes:
            have, ref = per_node[node.name], want.node(node.name)
            if (have[0], have[1]) != (ref.trainable, ref.non_trainable):
                raise BackendError(
                    f"node {node.name!r}: {have[0]} trainable + {have[1]} statistics in ONNX, "
                    f"IR says {ref.trainable} + {ref.non_trainable}"
                )

    # -- weights --------------------------------------------------------------------------

    def get_weights(self, graph: ir.Graph, model: Any) -> canonical.Weights:
        """Initializers by canonical name, converted back to the canonical layouts."""
        inits = {t.name: t for t in _as_model(model).graph.initializer}
        out: canonical.Weights = {}
        for name, spec in canonical.specs(graph).items():
            if name not in inits:
                raise BackendError(f"ONNX model has no initializer {name!r}")
            arr = numpy_helper.to_array(inits[name]).astype(np.float32)
            out[name] = from_channels_first(arr, spec.layout, spec.shape)
        return out

    def set_weights(self, graph: ir.Graph, model: Any, weights: canonical.Weights) -> None:
        """Replace the initializers in place; all are converted and checked before any changes."""
        model = _as_model(model)
        canonical.check(graph, weights)
        index = {t.name: k for k, t in enumerate(model.graph.initializer)}
        staged = []
        for name, spec in canonical.specs(graph).items():
            arr = to_channels_first(np.asarray(weights[name], np.float32), spec.layout)
            if name not in index:
                raise BackendError(f"ONNX model has no initializer {name!r}")
            have = tuple(model.graph.initializer[index[name]].dims)
            if have != arr.shape:
                raise BackendError(f"tensor {name!r}: initializer is {have}, converted weight is {arr.shape}")
            staged.append((index[name], numpy_helper.from_array(arr, name)))
        for k, tensor in staged:
            model.graph.initializer[k].CopyFrom(tensor)

    # -- run ------------------------------------------------------------------------------

    def run(
        self, graph: ir.Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """onnxruntime on NHWC ``x``; the requested nodes' values, channels-last."""
        model = _as_model(model)
        names = list(graph.outputs) if outputs is None else list(outputs)
        for n in names:
            if n not in graph:
                raise BackendError(f"no node named {n!r} in graph {graph.name!r}")
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape[1:] != tuple(graph.input_shape):
            raise BackendError(f"input of shape {arr.shape}; graph {graph.name!r} takes (N, *{graph.input_shape})")
        nhwc = input_layout(model) == "NHWC"
        feed = arr if nhwc or arr.ndim != 4 else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        tensors = tensor_names(graph, nhwc)
        wanted = [tensors[n] for n in names]
        fetch = list(dict.fromkeys(t for t in wanted if t != INPUT))
        values = dict(zip(fetch, _session(model, graph, fetch, names).run(fetch, {INPUT: feed}), strict=True))
        values[INPUT] = feed
        return {n: _to_nhwc(values[t]) for n, t in zip(names, wanted, strict=True)}

    # -- save -----------------------------------------------------------------------------

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        """``<graph.name>.onnx``, written atomically; it loads in any ONNX runtime."""
        model = _as_model(model)
        return [self.publish(Path(out_dir) / f"{graph.name}.onnx", lambda tmp: onnx.save_model(model, tmp))]


def _session(model: onnx.ModelProto, graph: ir.Graph, fetch: list[str], names: list[str]) -> Any:
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
