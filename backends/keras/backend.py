"""KerasBackend: the handler table plus Keras glue; verification, weight moving, input checks
and atomic saving come from the kit (archcompiler.kit)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from archcompiler.backends.keras import execute
from archcompiler.backends.keras import weights as weight_io
from archcompiler.backends.keras.build import build_model, recursion_room
from archcompiler.backends.keras.ops import HANDLERS, Handler

from archcompiler.ir.graph import Graph
from archcompiler.kit.registry import Backend, BackendError
from archcompiler.weights import Weights


def _numel(variables: Sequence[Any]) -> int:
    total = 0
    for v in variables:
        n = 1
        for d in v.shape:
            n *= int(d)
        total += n
    return total


def _as_model(model: Any) -> Any:
    """``model`` if it is a keras.Model (a torch module given to the keras backend is a
    BackendError, not an AttributeError in the glue)."""
    from archcompiler.backends.keras._framework import keras

    if not isinstance(model, keras.Model):
        raise BackendError(f"expected a model built by the keras backend, got {type(model).__name__}")
    return model


class KerasBackend(Backend):
    """Keras 3 on TensorFlow: functional keras.Model, NHWC, layer names = IR node names.

    Keras itself loads on the first build/run (``_framework``), not when the backend is looked
    up, so that reading a Keras .h5 checkpoint (h5py only) works without TensorFlow.
    """

    name: ClassVar[str] = "keras"
    optimizable: ClassVar[bool] = True
    trains: ClassVar[bool] = True  # sgd_step
    multi_output: ClassVar[bool] = True
    convention: ClassVar[str] = "keras"
    keeps_counters: ClassVar[bool] = True  # Normalization's ``count``
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    foreign_weight_suffixes: ClassVar[tuple[str, ...]] = (".h5",)
    file_suffixes: ClassVar[tuple[str, ...]] = (".keras",)
    """Keras weight files; read with h5py alone, so no TensorFlow is needed (checkpoint.py)."""
    # weight_layout "canonical", activation_layout "channels_last", weight_names None: the
    # canonical conventions are Keras' own (the Backend defaults).

    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")

    def build(self, graph: Graph, dtype: str = "float32") -> Any:
        """A functional model whose layers (variables and computation) are in ``dtype``."""
        self.check_supported(graph)
        return build_model(graph, self.handlers, dtype)

    def graph_name(self, model: Any) -> str:
        """The name of the graph the model was built from (optimize.built_optimized)."""
        return str(_as_model(model).name)

    def model_dtype(self, model: Any) -> str:
        """The dtype of the model's input, which build_model made the layers' dtype too."""
        return str(_as_model(model).inputs[0].dtype)

    # -- glue: verification ----------------------------------------------------------------

    def node_shapes(self, graph: Graph, model: Any) -> Iterator[tuple[str, tuple[int, ...] | Exception]]:
        """The symbolic output shape of the layer named after each node."""
        layers = {layer.name: layer for layer in _as_model(model).layers}  # get_layer() searches them all each time
        for node in graph.nodes:
            layer = layers.get(node.name)
            if layer is None:
                yield node.name, BackendError("keras model has no layer of that name")
                return
            yield node.name, tuple(layer.output.shape[1:])

    def param_counts(self, graph: Graph, model: Any) -> dict[str, tuple[int, int]]:
        return {
            layer.name: (_numel(layer.trainable_weights), _numel(layer.non_trainable_weights))
            for layer in _as_model(model).layers
        }

    def param_totals(self, model: Any) -> tuple[int, int]:
        """As ``model.count_params()`` splits them."""
        model = _as_model(model)
        return _numel(model.trainable_weights), _numel(model.non_trainable_weights)

    # -- glue: weights ---------------------------------------------------------------------

    def weight_tensors(self, model: Any) -> Mapping[tuple[str, str], Any]:
        return weight_io.weight_tensors(_as_model(model))

    def read_tensor(self, tensor: Any) -> np.ndarray:
        return weight_io.read_tensor(tensor)

    def write_tensors(self, staged: Sequence[tuple[Any, np.ndarray]]) -> None:
        weight_io.write_tensors(staged)

    def set_weights(self, graph: Graph, model: Any, weights: Weights) -> None:
        """The kit's, then every layer's ``finalize_state``: keras.layers.Normalization computes
        with copies of its mean and variance made when it is built, which Keras refreshes in
        ``load_weights`` but not when variables are assigned (nor in ``Model.set_weights``)."""
        super().set_weights(graph, model, weights)
        for layer in _as_model(model).layers:
            if callable(refresh := getattr(layer, "finalize_state", None)):
                refresh()

    # -- glue: run and train ---------------------------------------------------------------

    def forward(self, graph: Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        with recursion_room(graph):  # a sub-model exposing the nodes is made on first use
            return execute.forward(_as_model(model), x, names)

    def sgd_step(
        self, graph: Graph, model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float
    ) -> tuple[float, np.ndarray]:
        with recursion_room(graph):
            return execute.sgd_step(_as_model(model), x, y, logits, lr)

    def save(self, graph: Graph, model: Any, out_dir: Path) -> list[Path]:
        """``<graph.name>.keras``, published atomically by the kit.

        It loads with plain ``keras.saving.load_model``; only a graph with unbiased-variance
        BatchNorm or ``mobile_mqa`` needs archc's registered UnbiasedBatchNormalization or
        MobileMQA (backends/keras/attention.py, or a generated module defining it) importable.
        """
        model = _as_model(model)
        with recursion_room(graph):
            return [self.publish(Path(out_dir) / f"{graph.name}.keras", lambda tmp: model.save(tmp))]

    def read_foreign_weights(self, path: Path, graph: Graph) -> Weights:
        from archcompiler.backends.keras.checkpoint import load_keras_weights

        return load_keras_weights(path, graph)

    def emit(self, graph: Graph) -> str:
        """A standalone Keras module (imports only keras) defining ``build_model()``."""
        from archcompiler.backends.keras.emit import emit_module

        self.check_supported(graph)
        return emit_module(graph, self.handlers)
