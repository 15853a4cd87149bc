"""KerasBackend: the archc Backend interface over the pieces of this package."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...ir import Graph
from ...registry import Backend, BackendError
from . import execute
from .build import build_model, verify_model
from .ops import HANDLERS, Handler
from .weights import Weights, get_weights, set_weights


class KerasBackend(Backend):
    """Keras 3 on TensorFlow: functional keras.Model, NHWC, layer names = IR node names.

    Keras itself loads on the first build/run (``_framework``), not when the backend is looked
    up, so that reading a Keras .h5 checkpoint (h5py only) works without TensorFlow.
    """

    name: ClassVar[str] = "keras"
    convention: ClassVar[str] = "keras"
    handlers: ClassVar[Mapping[str, Handler]] = HANDLERS
    capabilities: ClassVar[frozenset[str]] = frozenset({"build", "weights", "run", "train", "save", "emit"})
    model_suffix: ClassVar[str] = ".keras"
    foreign_weight_suffixes: ClassVar[tuple[str, ...]] = (".h5",)
    """Keras weight files; read with h5py alone, so no TensorFlow is needed (checkpoint.py)."""

    def build(self, graph: Graph) -> Any:
        self.check_supported(graph)
        return build_model(graph, self.handlers)

    def verify(self, graph: Graph, model: Any) -> None:
        verify_model(graph, model)

    def get_weights(self, graph: Graph, model: Any) -> Weights:
        return get_weights(graph, model)

    def set_weights(self, graph: Graph, model: Any, weights: Weights) -> None:
        set_weights(graph, model, weights)

    def run(
        self, graph: Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        return execute.run(graph, model, x, outputs)

    def train_step(self, graph: Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        execute.train_step(graph, model, x, y, lr)

    def save(self, graph: Graph, model: Any, out_dir: Path) -> list[Path]:
        """``<graph.name>.keras``, written atomically (temp file in the same folder, then rename).

        It loads with plain ``keras.saving.load_model``; only a graph with unbiased-variance
        BatchNorm needs archc's registered UnbiasedBatchNormalization importable.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{graph.name}.keras"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{graph.name}.", suffix=".keras")
        os.close(fd)
        try:
            model.save(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
            os.replace(tmp, target)
        except Exception as exc:
            raise BackendError(f"cannot save keras model to {target}: {exc}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return [target]

    def read_foreign_weights(self, path: Path, graph: Graph) -> Weights:
        from .checkpoint import load_keras_weights

        return load_keras_weights(path, graph)

    def emit(self, graph: Graph) -> str:
        """A standalone Keras module (imports only keras) defining ``build_model()``."""
        from .emit import emit_module

        self.check_supported(graph)
        return emit_module(graph, self.handlers)
