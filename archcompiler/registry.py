"""Backends: the interface every framework implements, and lookup by name.

A backend is a table of per-op handlers plus capability flags (sqlglot's per-dialect
Generator with its TRANSFORMS table): shared code never asks *which* framework it talks to.
Built-in backends live in ``archcompiler.backends.<name>``; third-party packages register in
the ``archcompiler.backends`` entry-point group (``name = "package.module:BackendClass"``).
Nothing here imports a framework: a backend's module is imported only when it is asked for.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import ir

if TYPE_CHECKING:
    import numpy as np

    from .weights import Weights

ENTRY_POINT_GROUP = "archcompiler.backends"

BUILTIN: dict[str, str] = {
    "torch": "archcompiler.backends.torch:TorchBackend",
    "keras": "archcompiler.backends.keras:KerasBackend",
    "onnx": "archcompiler.backends.onnx:OnnxBackend",
    "tflite": "archcompiler.backends.tflite:TfliteBackend",
}

FOREIGN_WEIGHTS: dict[str, str] = {".h5": "keras"}
"""Framework weight files a built-in backend reads, by suffix (so that looking one up imports
only that backend). Plug-ins declare theirs in ``Backend.foreign_weight_suffixes``."""


class BackendError(Exception):
    """A backend could not do what was asked; the message names the node or tensor."""


class UnsupportedOpError(BackendError):
    """An IR op (or an attribute of it) that a backend cannot express exactly.

    Raised instead of approximating (DESIGN.md, style 4).
    """

    def __init__(self, backend: str, node: ir.Node, detail: str = "") -> None:
        what = f"{node.op}" + (f" ({detail})" if detail else "")
        super().__init__(f"backend {backend!r} cannot express {what} at node {node.name!r}")
        self.backend = backend
        self.node = node


class Backend(ABC):
    """What archc needs from a framework. Arrays crossing this interface are numpy, NHWC."""

    name: ClassVar[str]
    handlers: ClassVar[Mapping[str, Any]]
    """IR op -> handler. Builder and emitter read the same table (see ``ops``)."""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    """Among "build", "weights", "run", "train", "save", "emit"."""
    convention: ClassVar[str] = "torch"
    """The cost convention that counts parameters as this framework does (for reports)."""
    foreign_weight_suffixes: ClassVar[tuple[str, ...]] = ()
    """Framework weight files this backend can read into canonical weights (e.g. ".h5")."""

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(self.handlers)

    def check_supported(self, graph: ir.Graph) -> None:
        for node in graph.nodes:
            if node.op not in self.handlers:
                raise UnsupportedOpError(self.name, node)

    @abstractmethod
    def build(self, graph: ir.Graph) -> Any:
        """A framework model equivalent to ``graph`` (eval mode, float32, random weights)."""

    @abstractmethod
    def verify(self, graph: ir.Graph, model: Any) -> None:
        """Check the model against the IR: output shape of every node, trainable and
        non-trainable parameter counts. Raise BackendError naming the first mismatch."""

    @abstractmethod
    def get_weights(self, graph: ir.Graph, model: Any) -> Weights:
        """The model's weights in canonical names and layouts (archcompiler.weights)."""

    @abstractmethod
    def set_weights(self, graph: ir.Graph, model: Any, weights: Weights) -> None:
        """Load canonical weights; check names and shapes first (weights.check)."""

    @abstractmethod
    def run(
        self, graph: ir.Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Inference on NHWC float32 ``x``; returns the named nodes' outputs (default: the
        graph output), converted to the IR's channels-last layout."""

    def train_step(self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        """One plain-SGD step (BatchNorm in training mode) on softmax cross-entropy of the
        graph's output *logits* (the input of a final softmax) with integer labels ``y``."""
        raise BackendError(f"backend {self.name!r} does not support training")

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        """Write the model in the framework's own format; return the files written."""
        raise BackendError(f"backend {self.name!r} cannot save models")

    def read_foreign_weights(self, path: Path, graph: ir.Graph) -> Weights:
        """Canonical weights from a framework's own weight file (see foreign_weight_suffixes)."""
        raise BackendError(f"backend {self.name!r} reads no foreign weight files")

    def emit(self, graph: ir.Graph) -> str:
        """Standalone source code for the model (Jinja2)."""
        raise BackendError(f"backend {self.name!r} cannot generate source code")


def _external() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every backend: built-ins and installed plug-ins (nothing imported)."""
    return sorted(set(BUILTIN) | set(_external()))


def require(name: str) -> None:
    """Raise BackendError for a name no built-in or plug-in answers to (imports nothing)."""
    if name not in available():
        from .source import did_you_mean

        names = available()
        raise BackendError(f"unknown backend {name!r}{did_you_mean(name, names)}; available: {', '.join(names)}")


def get_backend(name: str) -> Backend:
    """Instantiate backend ``name``; its framework is imported only now."""
    require(name)
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            if isinstance(exc, AttributeError):
                raise BackendError(f"backend {name!r} is broken: {exc}") from None
            raise BackendError(
                f"backend {name!r} needs a package that is not installed ({exc.name}); pip install 'archc[{name}]'"
            ) from None
        return cls()
    ext = _external()
    if name in ext:
        try:
            cls = ext[name].load()
        except ImportError as exc:
            raise BackendError(f"backend {name!r} failed to import: {exc}") from None
        backend = cls()
        if not isinstance(backend, Backend):
            raise BackendError(f"backend {name!r} ({ext[name].value}) is not an archcompiler Backend")
        return backend
    raise AssertionError("unreachable: require() checked the name")


def read_weights(path: str | Path, graph: ir.Graph) -> Weights:
    """Canonical weights from ``.npz``/``.safetensors``, or from a framework file (``.h5``)
    through the first backend that declares its suffix; checked against ``graph``."""
    from . import weights

    p = Path(path)
    if p.suffix in (".npz", ".safetensors"):
        w = weights.load(p)
    else:
        candidates = [FOREIGN_WEIGHTS[p.suffix]] if p.suffix in FOREIGN_WEIGHTS else sorted(_external())
        reader = next(
            (b for b in map(get_backend, candidates) if p.suffix in b.foreign_weight_suffixes),
            None,
        )
        if reader is None:
            raise weights.WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz, .safetensors or .h5)")
        if not p.is_file():
            raise weights.WeightError(f"{p}: no such weights file")
        w = reader.read_foreign_weights(p, graph)
    weights.check(graph, w, origin=str(p))
    return w
