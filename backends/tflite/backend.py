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
    IO_TYPES,
    QUANTIZE,
    check_signature,
    convert,
    interpreter,
    invoke,
    node_tensors,
    output_indices,
    read,
)

from archcompiler import calibration as calib
from archcompiler import ir, quantization
from archcompiler import weights as canonical
from archcompiler.kit.registry import Backend, BackendError


@dataclass(eq=False)
class TfliteModel:
    """A Keras model and its flatbuffers (one per quantization mode, converted on demand)."""

    keras_model: Any
    quantize: str = "none"
    calibration: calib.Calibration | None = None
    io: str = "float32"
    float_layers: tuple[str, ...] = ()
    """IR nodes an int8 conversion keeps in float."""
    _content: dict[str, bytes] = field(default_factory=dict, repr=False)

    def content(self, graph: ir.Graph, quantize: str | None = None) -> bytes:
        mode = self.quantize if quantize is None else quantize
        if mode not in self._content:
            samples = self.calibration.calibration if self.calibration is not None else None
            floats = self.float_layers if mode == "int8" else ()
            with recursion_room(graph):  # the converter saves the Keras model first
                data = convert(
                    self.keras_model, mode, calibration=samples, io=self.io, float_layers=floats, graph=graph
                )
            check_signature(graph, data)
            self._content[mode] = data
        return self._content[mode]

    def as_float(self) -> TfliteModel:
        """The float32 conversion of the same Keras model (sharing the converted files)."""
        return TfliteModel(self.keras_model, "none", None, "float32", (), self._content)

    def invalidate(self) -> None:
        self._content.clear()


def _as_model(model: Any) -> TfliteModel:
    if not isinstance(model, TfliteModel):
        raise BackendError(f"expected a model built by the tflite backend, got {type(model).__name__}")
    return model


class TfliteBackend(Backend):
    """TFLite via the Keras backend. ``TfliteBackend(quantize="float16" | "dynamic")`` converts
    with reduced-precision weights; ``quantize="int8"`` to a full-integer model calibrated on
    ``calibration`` (archcompiler.calibration: a folder of images, an .npy/.npz file,
    "synthetic", or a loaded Calibration), with float32 or int8 input and output tensors
    (``io``), the ops of the IR nodes ``float_layers`` left in float (float32 io only). Its
    deviation from float32 on held-out inputs is measured (:meth:`quantization_error`) and
    written next to the model by :meth:`save`."""

    name: ClassVar[str] = "tflite"
    optimizable: ClassVar[bool] = True
    trains: ClassVar[bool] = False  # an inference runtime: no sgd_step
    multi_output: ClassVar[bool] = True
    builds_quantized: ClassVar[bool] = True
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    convention: ClassVar[str] = "keras"
    handlers: ClassVar[Mapping[str, Any]] = KerasBackend.handlers
    file_suffixes: ClassVar[tuple[str, ...]] = (".tflite", ".quantization.json")

    def __init__(
        self,
        *,
        quantize: str = "none",
        calibration: Any = None,
        io: str = "float32",
        pixels: str | None = None,
        float_layers: Any = None,
    ) -> None:
        if quantize not in QUANTIZE:
            raise BackendError(f"tflite quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        if io not in IO_TYPES:
            raise BackendError(f"tflite io must be one of {', '.join(IO_TYPES)}, got {io!r}")
        if io != "float32" and quantize != "int8":
            raise BackendError(f"io={io!r} is for quantize='int8' (a full-integer model)")
        if quantize == "int8" and calibration is None:
            raise BackendError("quantize='int8' needs calibration: a folder of images, .npy/.npz or 'synthetic'")
        if float_layers is not None and (quantize != "int8" or io != "float32"):
            raise BackendError("float_layers is for quantize='int8' with io='float32' (float ops need float tensors)")
        self.quantize, self.calibration, self.io, self.pixels = quantize, calibration, io, pixels
        self.float_layers = float_layers
        self._keras = KerasBackend()

    def build(self, graph: ir.Graph) -> TfliteModel:
        inputs = calib.given(self.calibration, graph, self.pixels) if self.quantize != "none" else None
        floats = quantization.float_layers(graph, self.float_layers)
        return TfliteModel(self._keras.build(graph), self.quantize, inputs, self.io, floats)

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
        return {n: read(it, tensors[n]) for n in names}

    def quantized_runner(self, graph: ir.Graph, model: Any) -> tuple[Any, frozenset[str]]:
        """(run, nodes) of the model as this backend's quantized build computes it: ``run(x,
        names)`` gives the named nodes' dequantized values on NHWC ``x``, for the ``nodes`` it
        keeps as tensors (archcompiler.parity.quantization measures them)."""
        return (lambda x, names: self.run(graph, model, x, names)), self.exposed(graph, model)

    def quantization_error(self, graph: ir.Graph, model: Any) -> dict[str, Any]:
        """How far this backend's quantized model is from the float32 conversion of the same
        weights, on held-out inputs (archcompiler.quantization.report), with the file sizes."""
        m = _as_model(model)
        inputs = m.calibration if m.calibration is not None else calib.held_out_only(graph, self.pixels)
        out = quantization.report(
            graph,
            lambda x, names: self.run(graph, m.as_float(), x, names),
            lambda x, names: self.run(graph, m, x, names),
            inputs,
            quantize=m.quantize if m.quantize != "int8" else f"int8 (per-channel weights, {m.io} input and output)",
            reference_name="float32 TFLite conversion of the same weights",
            weights=quantization.weights_origin(graph, self.get_weights(graph, m)),
            float_layers=m.float_layers if m.quantize == "int8" else (),
        )
        out["size_bytes"] = {"float32": len(m.content(graph, "none")), m.quantize: len(m.content(graph))}
        return out

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
