"""TfliteBackend: the verified Keras build, converted with TensorFlow's TFLite converter and
run with LiteRT. Weights move through the Keras model; the flatbuffer is converted lazily
and again after every weight change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from archcompiler.backends.keras import KerasBackend
from archcompiler.backends.keras.build import recursion_room
from archcompiler.backends.tflite.convert import (
    QUANTIZE,
    check_signature,
    convert,
    interpreter,
    invoke,
    node_tensors,
    output_indices,
)

from archcompiler import ir
from archcompiler import weights as canonical
from archcompiler.kit.registry import Backend, BackendError


@dataclass(eq=False)
class TfliteModel:
    """A Keras model and its flatbuffers (one per quantization mode, converted on demand)."""

    keras_model: Any
    quantize: str = "none"
    _content: dict[str, bytes] = field(default_factory=dict, repr=False)

    def content(self, graph: ir.Graph, quantize: str | None = None) -> bytes:
        mode = self.quantize if quantize is None else quantize
        if mode not in self._content:
            with recursion_room(graph):  # the converter saves the Keras model first
                data = convert(self.keras_model, mode)
            check_signature(graph, data)
            self._content[mode] = data
        return self._content[mode]

    def invalidate(self) -> None:
        self._content.clear()


def _as_model(model: Any) -> TfliteModel:
    if not isinstance(model, TfliteModel):
        raise BackendError(f"expected a model built by the tflite backend, got {type(model).__name__}")
    return model


class TfliteBackend(Backend):
    """TFLite via the Keras backend. ``TfliteBackend(quantize="float16" | "dynamic")`` converts
    with reduced-precision weights; its deviation from float32 is measured
    (:meth:`quantization_error`) and written next to the model by :meth:`save`."""

    name: ClassVar[str] = "tflite"
    optimizable: ClassVar[bool] = True
    trains: ClassVar[bool] = False  # an inference runtime: no sgd_step
    multi_output: ClassVar[bool] = True
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    convention: ClassVar[str] = "keras"
    handlers: ClassVar[Mapping[str, Any]] = KerasBackend.handlers
    file_suffixes: ClassVar[tuple[str, ...]] = (".tflite", ".quantization.json")

    def __init__(self, *, quantize: str = "none") -> None:
        if quantize not in QUANTIZE:
            raise BackendError(f"tflite quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        self.quantize = quantize
        self._keras = KerasBackend()

    def build(self, graph: ir.Graph) -> TfliteModel:
        return TfliteModel(self._keras.build(graph), self.quantize)

    def verify(self, graph: ir.Graph, model: Any) -> None:
        """The Keras model against the IR (every node's shape, both parameter counts); the
        flatbuffer's input/output signature is checked when it is converted."""
        self._keras.verify(graph, _as_model(model).keras_model)

    def get_weights(self, graph: ir.Graph, model: Any) -> canonical.Weights:
        return self._keras.get_weights(graph, _as_model(model).keras_model)

    def set_weights(self, graph: ir.Graph, model: Any, weights: canonical.Weights) -> None:
        m = _as_model(model)
        self._keras.set_weights(graph, m.keras_model, weights)
        m.invalidate()

    # -- run ------------------------------------------------------------------------------

    def exposed(self, graph: ir.Graph, model: Any) -> frozenset[str]:
        """The nodes whose values the converted model holds as tensors of their own (the
        input and output always); the others were fused into a later op by the converter."""
        m = _as_model(model)
        it = interpreter(m.content(graph), preserve_all=True)  # allocated: shapes (batch 1) are known
        names = set(node_tensors(graph, it, m.keras_model.name))
        return frozenset(names | {n.name for n in graph.inputs})

    def graph_name(self, model: Any) -> str:
        """The name of the graph the model was built from (optimize.built_optimized)."""
        return self._keras.graph_name(_as_model(model).keras_model)

    def model_dtype(self, model: Any) -> str:
        return self._keras.model_dtype(_as_model(model).keras_model)

    def forward(self, graph: ir.Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """LiteRT inference (through the kit's run: NHWC ``x`` checked). Nodes other than the
        outputs come from an interpreter that preserves all tensors; a node the converter fused
        away is a BackendError."""
        m = _as_model(model)
        inner = [n for n in names if n not in graph.outputs]
        it = interpreter(m.content(graph), preserve_all=bool(inner))
        invoke(it, np.ascontiguousarray(x))
        tensors = node_tensors(graph, it, m.keras_model.name) if inner else {}
        tensors.update(output_indices(graph, it))
        missing = [n for n in inner if n not in tensors]
        if missing:
            raise BackendError(
                f"TFLite model exposes no tensor for node {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": the converter fused it into a later op; see TfliteBackend.exposed()"
            )
        return {n: np.array(it.get_tensor(tensors[n])) for n in names}

    def quantization_error(self, graph: ir.Graph, model: Any, x: np.ndarray | None = None) -> dict[str, Any]:
        """How far this backend's quantized model is from the float32 conversion of the same
        weights, on ``x`` (default: 8 fixed standard-normal NHWC images)."""
        m = _as_model(model)
        if x is None:
            x = np.random.default_rng(0).normal(size=(8, *graph.input_shape)).astype(np.float32)
        results = {}
        for mode in ("none", m.quantize):
            it = interpreter(m.content(graph, mode))
            invoke(it, np.asarray(x, np.float32))
            # every output, flattened per example and side by side (a feature model has several)
            outs = [np.array(it.get_tensor(i), dtype=np.float64) for i in output_indices(graph, it).values()]
            results[mode] = outs[0] if len(outs) == 1 else np.concatenate([o.reshape(len(o), -1) for o in outs], 1)
        # The converter leaves small tensors (dynamic: < 1024 elements) in float32: say how many it reduced.
        reduced = [d for d in it.get_tensor_details() if np.dtype(d["dtype"]) in (np.float16, np.int8)]
        ref, got = results["none"], results[m.quantize]
        d = np.abs(got - ref)
        report: dict[str, Any] = {
            "quantize": m.quantize,
            "reference": "float32 TFLite conversion of the same weights",
            "output": graph.output if not graph.multi_output else list(graph.outputs),
            "batch": int(ref.shape[0]),
            "max_abs_diff": float(d.max(initial=0.0)),
            "mean_abs_diff": float(d.mean()) if d.size else 0.0,
            "max_abs_output": float(np.abs(ref).max(initial=0.0)),
            "quantized_tensors": len(reduced),
            "size_bytes": {"float32": len(m.content(graph, "none")), m.quantize: len(m.content(graph, m.quantize))},
        }
        if ref.ndim == 2 and not graph.multi_output:
            report["top1_agreement"] = float(np.mean(ref.argmax(1) == got.argmax(1)))
        return report

    # -- save -----------------------------------------------------------------------------

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        """``<graph.name>.tflite`` (atomically); a quantized model also gets
        ``<graph.name>.quantization.json``, its measured deviation from float32."""
        m = _as_model(model)
        data = m.content(graph)
        target = Path(out_dir) / f"{graph.name}.tflite"
        written = [self.publish(target, lambda tmp: Path(tmp).write_bytes(data))]
        if m.quantize != "none":
            report = self.quantization_error(graph, m)
            report["sha256"] = hashlib.sha256(data).hexdigest()
            text = json.dumps(report, indent=2)
            written.append(
                self.publish(target.with_suffix(".quantization.json"), lambda tmp: Path(tmp).write_text(text))
            )
        return written
