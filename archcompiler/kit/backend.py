"""The backend kit: everything a backend does that is not framework glue, written once.

A backend (torch, keras, onnx, tflite, or a plug-in) supplies a handler table and a few small
glue methods (:class:`Glue`); this module turns them into the :class:`Backend` interface:

* verification against the IR: every node's output shape (the first that differs, or whose
  forward fails, is named), then per-node and total parameter counts under cost convention
  "keras" (trainable = weights, biases, BN affine; non-trainable = BN moving statistics);
* weight moving: canonical names and shapes checked first (weights.check), every tensor
  converted to the backend's declared ``weight_layout`` (archcompiler.ir.layouts) and checked
  against the model, all staged, then written, so a failure leaves the model unchanged;
* run/train input checks: an NHWC batch of the IR's input shape (cast to the model's dtype),
  known output names, (N, classes) logits and in-range integer labels for training, no
  training-mode BatchNorm over a single value per channel; activations converted to and from
  the backend's ``activation_layout``;
* dtypes: ``build(graph, dtype)`` (:func:`build`) checks the backend declares the dtype
  (``dtypes``); weights and inputs are cast to the model's dtype (glue ``model_dtype``), so a
  backend supports float64 by building in it and saying so, nothing more;
* atomic publishing of saved files (archcompiler.files).

No framework is imported here; numpy is imported lazily inside functions, so that
``import archcompiler`` stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from archcompiler import ir
from archcompiler.ir.layouts import ActivationLayout, WeightLayout

if TYPE_CHECKING:
    import numpy as np

    from archcompiler.weights import TensorSpec, Weights


class BackendError(Exception):
    """A backend could not do what was asked; the message names the node or tensor."""


class MemoryLimitError(BackendError):
    """A run would hold more than the memory limit (:func:`check_memory`); ``option`` names the
    argument to lower (``"batch"``, ``"train_steps"``), so the CLI can name its flag."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


class UnsupportedOpError(BackendError):
    """An IR op (or an attribute of it) that a backend cannot express exactly.

    Raised instead of approximating (docs/DESIGN.md, style 4).
    """

    def __init__(self, backend: str, node: ir.Node, detail: str = "") -> None:
        what = f"{node.op}" + (f" ({detail})" if detail else "")
        super().__init__(f"backend {backend!r} cannot express {what} at node {node.name!r}")
        self.backend = backend
        self.node = node


Shape = tuple[int, ...]

DTYPES: tuple[str, ...] = ("float32", "float64")
"""Floating-point types a model can be built in. float64 exists for parity's oracle
(docs/DESIGN.md: parity decides equivalence in float64, then judges float32 against it)."""


class Glue(Protocol):
    """The framework-specific part of a backend; everything else comes from this kit.

    Tensor handles (from ``weight_tensors``) are whatever the framework uses (a torch tensor,
    a Keras variable, an ONNX initializer); the kit only asks ``tensor_shape`` for their shape
    and passes them back to ``read_tensor`` and ``write_tensors``.
    """

    # Read-only, so that the class variables of a Backend subclass satisfy them.
    @property
    def name(self) -> str: ...
    @property
    def weight_layout(self) -> WeightLayout: ...
    @property
    def activation_layout(self) -> ActivationLayout: ...
    @property
    def weight_names(self) -> Mapping[tuple[str, str], str] | None: ...

    def node_shapes(self, graph: ir.Graph, model: Any) -> Iterable[tuple[str, Shape | Exception]]:
        """(node name, per-example output shape in ``activation_layout``), in graph order; an
        exception in place of the shape for a node that could not be computed (the glue may
        stop there)."""
        ...

    def param_counts(self, graph: ir.Graph, model: Any) -> Mapping[str, tuple[int, int]]:
        """Node name -> (trainable, non-trainable) element counts of the part of ``model`` built
        for it (a node left out has none). All at once: a framework may have to walk the whole
        model to attribute its tensors (ONNX initializers)."""
        ...

    def param_totals(self, model: Any) -> tuple[int, int]:
        """(trainable, non-trainable) element counts of the whole model."""
        ...

    def weight_tensors(self, model: Any) -> Mapping[tuple[str, str], Any]:
        """Every weight tensor of ``model`` by (node name, framework tensor name)."""
        ...

    def tensor_shape(self, tensor: Any) -> Shape:
        """One tensor's shape, in the backend's weight layout (default: its ``.shape``)."""
        ...

    def read_tensor(self, tensor: Any) -> np.ndarray:
        """One tensor's values as numpy, in the backend's weight layout."""
        ...

    def write_tensors(self, staged: Sequence[tuple[Any, np.ndarray]]) -> None:
        """Copy each array (already in the backend's layout and shape, and in the model's
        dtype) into its tensor."""
        ...

    def model_dtype(self, model: Any) -> str:
        """The floating-point type ``model`` computes in ("float32" or "float64")."""
        ...

    def forward(self, graph: ir.Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> Mapping[str, Any]:
        """Inference on ``x`` (in ``activation_layout``); the named non-input nodes' outputs as
        numpy-convertible arrays, in ``activation_layout``."""
        ...

    def sgd_step(
        self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float
    ) -> float | tuple[float, Any]:
        """One plain-SGD step (``w -= lr * grad`` in the model's dtype, no momentum, BatchNorm in
        training mode) on mean softmax cross-entropy of node ``logits`` against int64 labels
        ``y``. Returns the loss before the step and, if the backend can, the training-mode
        logits it was computed from (in ``activation_layout``), which training parity compares."""
        ...


# ---------------------------------------------------------------------------------------------
# verification


def verify(backend: Glue, graph: ir.Graph, model: Any) -> None:
    """Check ``model`` against the IR; raise BackendError naming the first mismatch.

    Shapes first (a wrong shape usually explains a wrong count), node by node in graph order,
    then per-node counts, then totals (which catch parameters outside any node).
    """
    from archcompiler.analysis.cost import cost
    from archcompiler.ir.layouts import shape_to

    layout = backend.activation_layout
    shapes = dict(backend.node_shapes(graph, model))
    for node in graph.nodes:
        what = f"node {node.name!r} ({node.op})"
        if node.name not in shapes:
            raise BackendError(f"{what}: the {backend.name} model computes no output for it")
        got = shapes[node.name]
        if isinstance(got, Exception):
            raise BackendError(f"{what}: {backend.name} forward pass failed: {got}") from got
        want = shape_to(node.shape, layout)
        got = tuple(None if d is None else int(d) for d in got)  # a framework may leave a dim unknown
        if got != want:
            native = f" = {want} {layout}" if want != tuple(node.shape) else ""
            mine = f" ({layout})" if native else ""
            raise BackendError(f"{what}: {backend.name} output shape {got}{mine}, but the IR says {node.shape}{native}")
    want_counts = cost(graph, "keras")
    counts = backend.param_counts(graph, model)
    kept = _counters_kept(backend, graph)
    for nc in want_counts.nodes:
        t, f = counts.get(nc.name, (0, 0))
        want_f = nc.non_trainable - kept.get(nc.name, 0)
        if (t, f) != (nc.trainable, want_f):
            raise BackendError(
                f"node {nc.name!r} ({nc.op}): {backend.name} has {t} trainable / {f} non-trainable parameters, "
                f"IR says {nc.trainable} / {want_f}"
            )
    t, f = backend.param_totals(model)
    want_f = want_counts.non_trainable - sum(kept.values())
    if (t, f) != (want_counts.trainable, want_f):
        raise BackendError(
            f"{backend.name} model has {t} trainable / {f} non-trainable parameters in total, "
            f"IR says {want_counts.trainable} / {want_f} (parameters outside any node?)"
        )


def _counters_kept(backend: Glue, graph: ir.Graph) -> dict[str, int]:
    """Per node, the bookkeeping scalars (``RawCost.counters``: Keras Normalization's ``count``)
    that the keras convention counts but ``backend`` does not hold (``keeps_counters`` False)."""
    if getattr(backend, "keeps_counters", False):
        return {}
    return {n.name: c for n in graph.nodes if (c := n.cost(graph.input_shapes(n)).counters)}


# ---------------------------------------------------------------------------------------------
# weights


def tensor_name(backend: Glue, graph: ir.Graph, spec: TensorSpec) -> str:
    """The framework's name for canonical tensor ``spec`` (``weight_names``; None = the same).

    An unmapped parameter is an error, never a guess: guessing ``bias`` for every non-kernel
    tensor would silently mis-wire e.g. a LayerNorm's gamma.
    """
    if backend.weight_names is None:
        return spec.param
    op = graph[spec.node].op
    try:
        return backend.weight_names[(op, spec.param)]
    except KeyError:
        raise BackendError(
            f"backend {backend.name!r} has no tensor name for {spec.name!r} ({op} parameter {spec.param!r}); "
            f"declare ({op!r}, {spec.param!r}) in its weight_names"
        ) from None


def _located(backend: Glue, graph: ir.Graph, model: Any) -> list[tuple[TensorSpec, str, Any]]:
    """(canonical spec, framework name, tensor handle) for every tensor the graph needs."""
    from archcompiler.weights import specs

    tensors = backend.weight_tensors(model)
    out = []
    for spec in specs(graph).values():
        key = (spec.node, tensor_name(backend, graph, spec))
        if key not in tensors:
            has = sorted(name for node, name in tensors if node == spec.node)
            raise BackendError(
                f"{backend.name} model has no tensor {key[1]!r} in node {spec.node!r} for {spec.name!r} "
                f"(the node has {', '.join(has) if has else 'no tensors'})"
            )
        out.append((spec, key[1], tensors[key]))
    return out


def dtype_of(backend: Glue, model: Any) -> str:
    """The model's dtype through the glue; "float32" for a backend without ``model_dtype``."""
    try:
        dtype = str(backend.model_dtype(model))
    except BackendError:
        return "float32"
    if dtype not in DTYPES:
        raise BackendError(f"{backend.name} model computes in {dtype}; archc handles {', '.join(DTYPES)}")
    return dtype


def get_weights(backend: Glue, graph: ir.Graph, model: Any) -> Weights:
    """Every canonical tensor, read from the model, as numpy in canonical layouts (copies), in
    the model's dtype (float32 unless it was built in float64)."""
    import numpy as np

    from archcompiler.ir.layouts import weight_from
    from archcompiler.weights import Weights

    dtype = dtype_of(backend, model)
    out = Weights()
    for spec, name, tensor in _located(backend, graph, model):
        read = np.asarray(backend.read_tensor(tensor), dtype=dtype)
        try:
            arr = weight_from(read, spec.layout, backend.weight_layout, spec.shape)
        except ValueError as exc:
            raise BackendError(f"tensor {spec.name!r} ({backend.name} {name!r} of node {spec.node!r}): {exc}") from None
        if arr.shape != spec.shape:
            raise BackendError(
                f"tensor {spec.name!r}: {backend.name} {name!r} of node {spec.node!r} is {arr.shape}, "
                f"the IR says {spec.shape}"
            )
        # Never a view of framework memory; a layout change has already copied (a third of
        # the time a build spends reading its weights back).
        out[spec.name] = arr.copy() if np.may_share_memory(arr, read) else arr
    return out


def set_weights(backend: Glue, graph: ir.Graph, model: Any, weights: Weights) -> None:
    """Load canonical weights: check names and shapes (weights.check, a WeightError), convert
    and check every tensor against the model, and only then write, so a failure changes nothing."""
    import numpy as np

    from archcompiler.ir.layouts import weight_to
    from archcompiler.weights import check

    check(graph, weights)
    dtype = dtype_of(backend, model)
    staged: list[tuple[Any, np.ndarray]] = []
    for spec, name, tensor in _located(backend, graph, model):
        arr = weight_to(np.asarray(weights[spec.name], dtype=dtype), spec.layout, backend.weight_layout)
        have = tuple(int(d) for d in backend.tensor_shape(tensor))
        if have != arr.shape:
            raise BackendError(
                f"tensor {spec.name!r}: {backend.name} {name!r} of node {spec.node!r} is {have}, "
                f"the converted weight is {arr.shape}"
            )
        staged.append((tensor, arr))
    backend.write_tensors(staged)


# ---------------------------------------------------------------------------------------------
# memory


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_limit() -> int:
    """limits.MAX_MEMORY, or the environment's ``ARCHC_MAX_MEMORY`` (bytes, or with a binary
    unit: 512M, 16G); a value that is not one is a BackendError."""
    import os
    import re

    from archcompiler.language.limits import MAX_MEMORY, MEMORY_ENV

    text = os.environ.get(MEMORY_ENV, "").strip()
    if not text:
        return MAX_MEMORY
    m = re.fullmatch(r"(\d{1,15})\s*([KMGT]?)(?:IB|B)?", text.upper(), re.ASCII)
    if m is None or int(m.group(1)) == 0:
        raise BackendError(f"{MEMORY_ENV}={text!r}: expected a size in bytes such as 8G, 512M or 2000000000")
    return int(m.group(1)) * _UNITS[m.group(2)]


def size_text(n: float) -> str:
    """Bytes as people read them: '3.2 GiB', '512 MiB'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(needed: int, what: str, lower: str, option: str = "batch") -> None:
    """MemoryLimitError when ``needed`` bytes pass :func:`memory_limit`: ``<what> would hold
    about <size>, more than the limit of <limit> (ARCHC_MAX_MEMORY to change it); lower <lower>``."""
    from archcompiler.language.limits import MEMORY_ENV

    limit = memory_limit()
    if needed > limit:
        raise MemoryLimitError(
            f"{what} would hold about {size_text(needed)} of tensors, more than the limit of {size_text(limit)}"
            f" ({MEMORY_ENV} changes it): lower {lower}",
            option,
        )


def activation_values(graph: ir.Graph, names: Iterable[str] | None = None) -> int:
    """Values per example of the named nodes (every node: None), from the IR's shapes."""
    nodes = graph.nodes if names is None else [graph[n] for n in names]
    total = 0
    for node in nodes:
        n = 1
        for d in node.shape:
            n *= d
        total += n
    return total


def run_bytes(graph: ir.Graph, batch: int, itemsize: int, names: Sequence[str]) -> int:
    """What running ``graph`` on ``batch`` examples holds at least: the named nodes' values
    twice (the framework's tensor and its channels-last copy) and the two largest values of
    the graph (one layer's input and output while it computes)."""
    largest = sorted((activation_values(graph, [n.name]) for n in graph.nodes), reverse=True)[:2]
    return batch * itemsize * (2 * activation_values(graph, names) + sum(largest))


# ---------------------------------------------------------------------------------------------
# run and train


def check_input(graph: ir.Graph, x: Any, dtype: str = "float32") -> np.ndarray:
    """``x`` as an NHWC batch of the IR's input shape in ``dtype`` (the model's), or a
    BackendError saying what came (an NCHW batch would otherwise fail deep inside a framework,
    or broadcast silently)."""
    import numpy as np

    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"input is not a {dtype} array: {exc}") from None
    want = tuple(graph.input_shape)
    if arr.shape[1:] != want:
        hint = ""
        if len(want) == 3 and arr.shape[1:] == (want[2], want[0], want[1]):
            hint = " (an NCHW batch? archc takes channels-last)"
        raise BackendError(f"input of shape {arr.shape}; graph {graph.name!r} takes (N, *{want}) NHWC{hint}")
    return arr


def check_outputs(graph: ir.Graph, outputs: Sequence[str] | None) -> tuple[str, ...]:
    """The node names to return (default: the graph's outputs); an unknown name is an error."""
    names = graph.outputs if outputs is None else tuple(outputs)
    for n in names:
        if n not in graph:
            from archcompiler.language.source import did_you_mean

            raise BackendError(
                f"unknown node {n!r} (not in graph {graph.name!r}){did_you_mean(n, [m.name for m in graph.nodes])}"
            )
    return names


def check_logits(graph: ir.Graph) -> str:
    """The node a training loss reads: it must be a (N, classes) vector, the one output."""
    if graph.multi_output:
        raise BackendError(f"training needs one (N, classes) logits output; graph {graph.name!r} has {graph.outputs}")
    name = graph.logits
    if len(graph[name].shape) != 1:
        raise BackendError(f"training needs (N, classes) logits; node {name!r} is {graph[name].shape}")
    return name


def check_labels(graph: ir.Graph, logits: str, y: Any, batch: int) -> np.ndarray:
    """Integer class labels, one per example, each in [0, classes): int64 numpy."""
    import numpy as np

    arr = np.asarray(y)
    classes = graph[logits].shape[0]
    if arr.shape != (batch,) or not np.issubdtype(arr.dtype, np.integer):
        raise BackendError(f"labels of shape {arr.shape} and dtype {arr.dtype}; expected ({batch},) integer classes")
    bad = arr[(arr < 0) | (arr >= classes)]
    if bad.size:
        raise BackendError(f"label {int(bad[0])} is not a class of node {logits!r} (0..{classes - 1})")
    return arr.astype(np.int64)


def check_batchnorm_batch(graph: ir.Graph, batch: int) -> None:
    """Refuse a training step in which a BatchNorm sees one value per channel (batch 1 at 1x1).

    Its batch variance is then 0 (biased) or 0/0 (unbiased): torch's BatchNorm raises, Keras'
    silently outputs beta. Refusing here, for every backend alike, keeps them equivalent.
    """
    import math

    for node in graph.nodes:
        if isinstance(node, ir.BatchNorm):
            per_channel = batch * math.prod(graph[node.inputs[0]].shape[:-1])
            if per_channel < 2:
                raise BackendError(
                    f"node {node.name!r} (batchnorm) would normalise over {per_channel} value per channel in "
                    f"training (batch {batch}, input {graph[node.inputs[0]].shape}): the batch variance is "
                    "undefined; use a batch of 2 or more"
                )


def require_capabilities(
    backends: Iterable[Any],
    *,
    dtype: str = "float32",
    training: bool = False,
    multi_output: bool = False,
    optimize: bool = False,
) -> None:
    """Refuse, before anything is built, a task some of ``backends`` cannot do: one
    BackendError naming every backend that lacks each capability asked for, read from the
    declarations on its class (``dtypes``, ``trains``, ``multi_output``, ``optimizable``)."""
    if dtype not in DTYPES:
        raise BackendError(f"dtype {dtype!r}: archc builds models in {', '.join(DTYPES)}")
    asked = [
        (dtype != "float32", lambda b: dtype in getattr(b, "dtypes", ("float32",)), f"build models in {dtype}"),
        (training, lambda b: bool(getattr(b, "trains", False)), "take training steps"),
        (multi_output, lambda b: bool(getattr(b, "multi_output", True)), "build models with several outputs"),
        (optimize, lambda b: bool(getattr(b, "optimizable", False)), "build optimized models"),
    ]
    named = list(dict.fromkeys(backends))
    missing = []
    for wanted, can, what in asked:
        lacking = [str(b.name) for b in named if wanted and not can(b)]
        if lacking:
            some = f"backend {lacking[0]!r} cannot" if len(lacking) == 1 else f"backends {_and(lacking)} cannot"
            missing.append(f"{some} {what}")
    if missing:
        raise BackendError("; ".join(missing))


def _and(names: Sequence[str]) -> str:
    """'a', 'a' and 'b', 'a', 'b' and 'c' (quoted)."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def build(backend: Any, graph: ir.Graph, dtype: str = "float32") -> Any:
    """``backend.build`` in ``dtype``: a dtype the backend does not declare (``dtypes``) is a
    named error, and float32 calls ``build(graph)`` so that plug-ins without dtypes still work."""
    if dtype not in DTYPES:
        raise BackendError(f"dtype {dtype!r}: archc builds models in {', '.join(DTYPES)}")
    if dtype == "float32":
        return backend.build(graph)
    require_capabilities([backend], dtype=dtype)
    return backend.build(graph, dtype=dtype)


def run(
    backend: Glue, graph: ir.Graph, model: Any, x: Any, outputs: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Inference through ``backend.forward``: inputs checked and cast to the model's dtype,
    layouts converted both ways, input nodes answered from ``x`` itself, each output's shape
    checked against the IR."""
    import numpy as np

    from archcompiler.ir.layouts import batch_from, batch_to

    names = check_outputs(graph, outputs)
    arr = check_input(graph, x, dtype_of(backend, model))
    where = f"running {graph.name!r} on a batch of {len(arr):,} in {backend.name}"
    check_memory(run_bytes(graph, len(arr), arr.itemsize, names), where, "the batch or the input size")
    result: dict[str, np.ndarray] = {n: arr.copy() for n in names if isinstance(graph[n], ir.Input)}
    computed = tuple(dict.fromkeys(n for n in names if n not in result))
    if computed:
        native = backend.forward(graph, model, batch_to(arr, backend.activation_layout), computed)
        for n in computed:
            out = batch_from(np.asarray(native[n]), backend.activation_layout)
            if out.shape != (len(arr), *graph[n].shape):
                raise BackendError(
                    f"node {n!r}: {backend.name} returned {out.shape} (channels-last), IR says (N, *{graph[n].shape})"
                )
            result[n] = out
    return {n: result[n] for n in names}


def check_learning_rate(lr: float, dtype: str) -> float:
    """``lr`` as a float, or a BackendError unless it is a number >= 0 that ``dtype`` can hold
    (a float32 step cannot apply lr 1e300: torch refuses it, others would make infinities)."""
    import math

    import numpy as np

    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise BackendError(f"learning rate {lr!r} is not a number") from None
    top = float(np.finfo(dtype).max)
    if not (math.isfinite(value) and 0 <= value <= top):
        raise BackendError(f"learning rate {lr!r}: a {dtype} training step takes a number from 0 to {top:.3g}")
    return value


def train_step(backend: Glue, graph: ir.Graph, model: Any, x: Any, y: Any, lr: float) -> float:
    """One plain-SGD step through ``backend.sgd_step`` after checking logits, input and labels."""
    return train_step_outputs(backend, graph, model, x, y, lr)[0]


def train_step_outputs(
    backend: Glue, graph: ir.Graph, model: Any, x: Any, y: Any, lr: float
) -> tuple[float, np.ndarray | None]:
    """:func:`train_step`, also returning the training-mode logits (N, classes) the loss was
    computed from (None when the glue does not return them)."""
    import numpy as np

    from archcompiler.ir.layouts import batch_from, batch_to

    logits = check_logits(graph)
    dtype = dtype_of(backend, model)
    rate = check_learning_rate(lr, dtype)
    arr = check_input(graph, x, dtype)
    labels = check_labels(graph, logits, y, len(arr))
    check_batchnorm_batch(graph, len(arr))
    got = backend.sgd_step(graph, model, batch_to(arr, backend.activation_layout), labels, logits, rate)
    if not isinstance(got, tuple):
        return float(got), None
    loss, native = got
    return float(loss), batch_from(np.asarray(native), backend.activation_layout)


# ---------------------------------------------------------------------------------------------
# the interface


class OpEntry(Protocol):
    """What every backend's handler table holds at the least: handlers that name their IR op.

    A backend's own Protocol adds what its builder needs (calls.OpHandler: describe the node
    as layer calls; an ONNX handler: emit graph nodes), so the table is typed per backend.
    """

    @property
    def op(self) -> str: ...


class Backend(ABC):
    """What archc needs from a framework. Arrays crossing this interface are numpy, NHWC.

    A subclass declares ``name``, ``handlers`` and its layouts, implements ``build`` and the
    :class:`Glue` methods it supports; verify, weights, run and train come from the kit.
    A plug-in may still override those four wholesale.
    """

    name: ClassVar[str]
    handlers: ClassVar[Mapping[str, OpEntry]]
    """IR op -> handler. Builder and emitter read the instance's table (``self.handlers``), so a
    plug-in subclass can replace one op's handler."""
    convention: ClassVar[str] = "torch"
    """The cost convention that counts parameters as this framework does (for reports)."""
    keeps_counters: ClassVar[bool] = False
    """Whether the framework's models hold the bookkeeping scalars the keras convention counts
    (``RawCost.counters``: Keras Normalization's ``count``); verify expects them only if so."""
    foreign_weight_suffixes: ClassVar[tuple[str, ...]] = ()
    """Framework weight files this backend can read into canonical weights (e.g. ".h5")."""
    file_suffixes: ClassVar[tuple[str, ...]] = ()
    """The files ``save`` may write, as suffixes of the graph's name (".pt": ``<name>.pt``).
    A build checks them before it starts (none may be a folder, a FIFO, a device or an input
    of the command); what ``save`` really writes is checked again when it is published."""
    weight_layout: ClassVar[WeightLayout] = "canonical"
    """Layout of the framework's weight tensors (archcompiler.ir.layouts converts)."""
    activation_layout: ClassVar[ActivationLayout] = "channels_last"
    """Layout of the framework's image batches (NHWC, or NCHW as "channels_first")."""
    weight_names: ClassVar[Mapping[tuple[str, str], str] | None] = None
    """(IR op, canonical param) -> framework tensor name; None: the canonical names are the
    framework's. A canonical tensor missing from a declared table is an error."""
    # -- capabilities: declared here, checked for every named backend before any is built
    # (require_capabilities)
    optimizable: ClassVar[bool] = False
    """Whether ``build(..., optimize=True)`` (``archc build --optimize``) works: it builds the
    rewritten graph of archcompiler.analysis.optimize, so the backend must move weights and run models
    (the result is checked against the unoptimised model). Built-ins say True."""
    trains: ClassVar[bool] = False
    """Whether the backend takes training steps (implements the ``sgd_step`` glue): training
    parity (``archc parity --train-steps``) needs it of every backend."""
    multi_output: ClassVar[bool] = True
    """Whether the backend builds models with several outputs (``--outputs``/``--features``)."""
    asymmetric_padding: ClassVar[bool] = True
    """Whether the framework's convolutions pad each side by its own amount (ONNX, TFLite's
    SAME). False (torch): an optimised build widens such kernels instead (archcompiler.analysis.optimize)."""
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    """The dtypes ``build(graph, dtype=...)`` accepts (float64 is parity's oracle); a backend
    listing "float64" also implements ``model_dtype``. A capability, like the three above."""
    builds_quantized: ClassVar[bool] = False
    """Whether an instance made with ``quantize`` (int8 and the like) builds and runs the
    quantized model itself (TFLite: ``build`` gives the model whose flatbuffer is the int8 one,
    ``run`` runs it), rather than quantizing only when it saves (ONNX: the model it builds, runs
    and loads weights into stays float; ``save`` writes the QDQ model). ``Compiled.build``
    refuses a quantized instance of a backend that does not."""

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(self.handlers)

    reserved_names: ClassVar[frozenset[str]] = frozenset()
    """Layer names this backend's models cannot take (built-ins also list theirs framework-free
    in registry.BUILTIN_RESERVED_NAMES, so that ``archc check`` refuses them early)."""

    def check_supported(self, graph: ir.Graph) -> None:
        """Every op has a handler and no node takes a reserved name; else a named error."""
        for node in graph.nodes:
            if node.op not in self.handlers:
                raise UnsupportedOpError(self.name, node)
            if node.name in self.reserved_names:
                raise BackendError(f"node name {node.name!r} is reserved in the {self.name} backend; rename the layer")

    @abstractmethod
    def build(self, graph: ir.Graph) -> Any:
        """A framework model equivalent to ``graph`` (eval mode, float32, the framework's own
        initial weights: :meth:`Compiled.build` then loads archc's, weights.training_init). A
        backend declaring more ``dtypes`` takes ``dtype="float32"`` as a keyword too; callers
        go through :func:`build` (``Backend.build_in``), which checks it."""

    def build_in(self, graph: ir.Graph, dtype: str = "float32") -> Any:
        """``build`` in ``dtype`` ("float32" or, if declared in ``dtypes``, "float64")."""
        return build(self, graph, dtype)

    # -- the kit ---------------------------------------------------------------------------

    def verify(self, graph: ir.Graph, model: Any) -> None:
        """Check the model against the IR: output shape of every node, trainable and
        non-trainable parameter counts. Raise BackendError naming the first mismatch."""
        verify(self, graph, model)

    def get_weights(self, graph: ir.Graph, model: Any) -> Weights:
        """The model's weights in canonical names and layouts (archcompiler.weights)."""
        return get_weights(self, graph, model)

    def set_weights(self, graph: ir.Graph, model: Any, weights: Weights) -> None:
        """Load canonical weights; check names and shapes first (weights.check)."""
        set_weights(self, graph, model, weights)

    def run(
        self, graph: ir.Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Inference on NHWC float32 ``x``; returns the named nodes' outputs (default: the
        graph's outputs), converted to the IR's channels-last layout."""
        return run(self, graph, model, x, outputs)

    def train_step(self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One plain-SGD step (BatchNorm in training mode) on softmax cross-entropy of the
        graph's *logits* (the input of a final softmax) with integer labels ``y``; returns the
        loss before the step."""
        return train_step(self, graph, model, x, y, lr)

    def train_step_outputs(
        self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float
    ) -> tuple[float, np.ndarray | None]:
        """:meth:`train_step`, also returning the training-mode logits (None if the glue has none)."""
        return train_step_outputs(self, graph, model, x, y, lr)

    def tune(self, graph: ir.Graph, model: Any) -> Any:
        """The framework's own inference-only changes to an optimised model (after the IR
        rewrite; e.g. a memory format), returned as the model to use. Default: none."""
        return model

    def save(self, graph: ir.Graph, model: Any, out_dir: Path) -> list[Path]:
        """Write the model in the framework's own format; return the files written."""
        raise BackendError(f"backend {self.name!r} cannot save models")

    def publish(self, path: Path, write: Callable[[str], None]) -> Path:
        """Write one file of ``save`` atomically (``write(tmp)``, then rename; the temporary
        file keeps the suffix, which some savers require); any failure is a BackendError."""
        from archcompiler.files import OutputError, atomic_write

        try:
            return atomic_write(path, write, suffix=Path(path).suffix)
        except OutputError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot save {self.name} model to {path}: {exc}") from exc

    def read_foreign_weights(self, path: Path, graph: ir.Graph) -> Weights:
        """Canonical weights from a framework's own weight file (see foreign_weight_suffixes)."""
        raise BackendError(f"backend {self.name!r} reads no foreign weight files")

    def emit(self, graph: ir.Graph) -> str:
        """Standalone source code for the model (Jinja2)."""
        raise BackendError(f"backend {self.name!r} cannot generate source code")

    # -- glue (see Glue); the defaults say which capability is missing ----------------------

    def _missing(self, what: str, glue: str) -> BackendError:
        return BackendError(f"backend {self.name!r} cannot {what}: it does not implement {glue}()")

    def node_shapes(self, graph: ir.Graph, model: Any) -> Iterable[tuple[str, Shape | Exception]]:
        raise self._missing("verify models", "node_shapes")

    def param_counts(self, graph: ir.Graph, model: Any) -> Mapping[str, tuple[int, int]]:
        raise self._missing("verify models", "param_counts")

    def param_totals(self, model: Any) -> tuple[int, int]:
        raise self._missing("verify models", "param_totals")

    def weight_tensors(self, model: Any) -> Mapping[tuple[str, str], Any]:
        raise self._missing("move weights", "weight_tensors")

    def tensor_shape(self, tensor: Any) -> Shape:
        return tuple(int(d) for d in tensor.shape)

    def read_tensor(self, tensor: Any) -> np.ndarray:
        raise self._missing("read weights", "read_tensor")

    def write_tensors(self, staged: Sequence[tuple[Any, np.ndarray]]) -> None:
        raise self._missing("write weights", "write_tensors")

    def forward(self, graph: ir.Graph, model: Any, x: np.ndarray, names: tuple[str, ...]) -> Mapping[str, Any]:
        raise self._missing("run models", "forward")

    def model_dtype(self, model: Any) -> str:
        raise self._missing("report its dtype", "model_dtype")

    def sgd_step(
        self, graph: ir.Graph, model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float
    ) -> float | tuple[float, Any]:
        raise BackendError(f"backend {self.name!r} does not support training")
