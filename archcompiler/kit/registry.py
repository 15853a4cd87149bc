"""Backends: the interface every framework implements, and lookup by name.

A backend is a table of per-op handlers plus framework glue (sqlglot's per-dialect Generator
with its TRANSFORMS table); the Backend interface and everything shared between backends
(verification, weight layouts, input checks, atomic saving) live in archcompiler.kit and are
re-exported here. Shared code never asks *which* framework it talks to.
Built-in backends live in ``archcompiler.backends.<name>``; third-party packages register in
the ``archcompiler.backends`` entry-point group (``name = "package.module:BackendClass"``).
A plug-in op (archcompiler.ops.registry) gives each built-in backend its handler through the
``archcompiler.handlers.<backend>`` group (``<op> = "package.module:Handler"``), loaded when
that backend's table is made (:func:`handler_table`).
Nothing here imports a framework: a backend's module is imported only when it is asked for.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from archcompiler import ir
from archcompiler.kit.backend import Backend, BackendError, UnsupportedOpError

if TYPE_CHECKING:
    from archcompiler.weights import Weights

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "FOREIGN_WEIGHTS",
    "HANDLER_GROUP",
    "Backend",
    "BackendError",
    "Hint",
    "UnsupportedOpError",
    "available",
    "check_kinds",
    "get_backend",
    "handler_table",
    "read_weights",
    "require",
]

ENTRY_POINT_GROUP = "archcompiler.backends"

BUILTIN: dict[str, str] = {
    "torch": "archcompiler.backends.torch:TorchBackend",
    "keras": "archcompiler.backends.keras:KerasBackend",
    "onnx": "archcompiler.backends.onnx:OnnxBackend",
    "tflite": "archcompiler.backends.tflite:TfliteBackend",
}

FOREIGN_WEIGHTS: dict[str, str] = {".h5": "keras", ".pt": "torch"}
"""Framework weight files a built-in backend reads, by suffix (so that looking one up imports
only that backend). Plug-ins declare theirs in ``Backend.foreign_weight_suffixes``."""


BUILTIN_RESERVED_NAMES: dict[str, str] = {
    "torch": "archcompiler.backends.torch.names:RESERVED",
}
"""Where a built-in backend lists the layer names it cannot take, in a module that imports no
framework (so ``archc check`` refuses them before any framework loads)."""


def reserved_names() -> dict[str, str]:
    """Layer name -> the built-in backend that reserves it. Plug-ins declare theirs in
    ``Backend.reserved_names``, checked when they build."""
    out: dict[str, str] = {}
    for backend, where in BUILTIN_RESERVED_NAMES.items():
        module, _, attr = where.partition(":")
        for name in getattr(importlib.import_module(module), attr):
            out.setdefault(name, backend)
    return out


HANDLER_GROUP = "archcompiler.handlers"
"""Plug-in ops' handlers for backend ``b`` are entry points in group ``archcompiler.handlers.b``,
each named after its op (``clip = "archc_clip.torch_handler:ClipHandler"``)."""

H = TypeVar("H")


def handler_table(backend: str, builtin: Mapping[str, H]) -> dict[str, H]:
    """A built-in backend's handler table: ``builtin`` (its own handlers, keyed by op), which
    must cover every built-in op, then the handlers plug-ins register for their ops
    (:data:`HANDLER_GROUP`). Called when the backend's handler module is imported, so a gap in
    a built-in table, or a plug-in handler for an op nobody registered (or one replacing a
    built-in op's handler: that is what a Backend subclass is for), stops that import with a
    TypeError naming it. An entry point may name a handler or a class to instantiate."""
    missing = sorted(ir.BUILTIN_OPS - set(builtin))
    if missing:
        raise TypeError(f"backend {backend!r} has no handler for the built-in op(s) {', '.join(missing)}")
    table = dict(builtin)
    for ep in sorted(entry_points(group=f"{HANDLER_GROUP}.{backend}"), key=lambda e: (e.name, e.value)):
        where = f"plug-in handler {ep.name!r} of backend {backend!r} ({ep.value})"
        if ep.name not in ir.IR_OPS:
            raise TypeError(f"{where}: no op {ep.name!r} is registered (archcompiler.ops entry points)")
        if ep.name in table:
            raise TypeError(f"{where}: op {ep.name!r} has a handler already; replace one in a Backend subclass")
        try:
            found = ep.load()
        except Exception as exc:
            raise TypeError(f"{where} failed to load: {exc}") from exc
        handler = found() if isinstance(found, type) else found
        if getattr(handler, "op", ep.name) != ep.name:
            raise TypeError(f"{where} is the handler of op {handler.op!r}")
        table[ep.name] = handler
    return table


def check_kinds(backend: str, table: Mapping[str, Any]) -> None:
    """TypeError unless ``table`` (a backend's activation kind -> its class or call) covers
    exactly the IR's activation kinds: checked at the backend's import, so a new kind cannot
    reach a backend that does not know it."""
    kinds = set(get_args(ir.ActivationKind))
    if set(table) != kinds:
        missing, unknown = sorted(kinds - set(table)), sorted(set(table) - kinds)
        raise TypeError(f"backend {backend!r}: activation kinds missing {missing}, unknown {unknown}")


def _external() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every backend: built-ins and installed plug-ins (nothing imported)."""
    return sorted(set(BUILTIN) | set(_external()))


def require(name: str) -> None:
    """Raise BackendError for a name no built-in or plug-in answers to (imports nothing)."""
    if name not in available():
        from archcompiler.language.source import did_you_mean

        names = available()
        raise BackendError(f"unknown backend {name!r}{did_you_mean(name, names)}; available: {', '.join(names)}")


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate backend ``name`` with its ``options`` (e.g. tflite's ``quantize``); its
    framework is imported only now."""
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
        return _instance(name, cls, options)
    ext = _external()
    if name in ext:
        try:
            cls = ext[name].load()
        except ImportError as exc:
            raise BackendError(f"backend {name!r} failed to import: {exc}") from None
        backend = _instance(name, cls, options)
        if not isinstance(backend, Backend):
            raise BackendError(f"backend {name!r} ({ext[name].value}) is not an archcompiler Backend")
        return backend
    raise AssertionError("unreachable: require() checked the name")


def _instance(name: str, cls: Any, options: dict[str, Any]) -> Backend:
    """``cls(**options)``; an option the backend does not take is a BackendError naming it."""
    import inspect

    accepted = inspect.signature(cls).parameters
    for option in options:
        if option not in accepted:
            raise BackendError(f"backend {name!r} takes no option {option!r}")
    return cls(**options)


Hint = Callable[[Callable[[ir.Graph], bool]], "str | None"]
"""What a weights error adds (None: nothing), given a test of whether the weights load into
another graph (:meth:`archcompiler.api.Compiled.read_weights`: which variant they fit)."""


def read_weights(
    source: str | Path | Weights,
    graph: ir.Graph,
    *,
    backend: Backend | None = None,
    full: ir.Graph | None = None,
    hint: Hint | None = None,
) -> Weights:
    """Canonical weights for ``graph``, checked against it, from ``source``: canonical weights
    (a mapping), ``.npz``/``.safetensors`` (by archc's names or, where the spec declares a
    checkpoint format, by its: ``.pth`` too; :mod:`archcompiler.checkpoints`), or a framework
    file (``.h5``, ``.pt``) read by ``backend`` when it declares the suffix, else by the first
    backend that does.

    A graph cut from ``full`` (``outputs``/``features``) also takes ``full``'s weights: the
    tensors of the layers it does not need are dropped. Weights that fit neither are refused
    with ``graph``'s error, followed by what ``hint`` says given a test that reads ``source``
    into other graphs as it was read here (every format alike; a ``.pth`` file read once)."""
    from archcompiler import weights

    read = _reader(source, graph, backend)
    try:
        return _fitted(read, graph, full)
    except weights.WeightError as first:
        said = _hint(read, source, hint)
        if said is None:
            raise
        what = "the weights fit" if isinstance(source, Mapping) else "the file fits"
        raise weights.WeightError(f"{first}; {what} {said}") from None


def _fitted(read: Callable[[ir.Graph], Weights], graph: ir.Graph, full: ir.Graph | None) -> Weights:
    """``read(graph)``, else ``full``'s weights cut to ``graph``'s tensors, else ``graph``'s error."""
    from archcompiler import weights

    try:
        return read(graph)
    except weights.WeightError as first:
        if full is None:
            raise
        try:
            whole = read(full)
        except weights.WeightError:
            raise first from None
        return {name: whole[name] for name in weights.specs(graph)}


def _hint(read: Callable[[ir.Graph], Weights], source: str | Path | Weights, hint: Hint | None) -> str | None:
    """What ``hint`` says, asked whether ``source`` loads into a graph (nothing for a file that
    is not there: it loads into none)."""
    from archcompiler import weights

    if hint is None or not (isinstance(source, Mapping) or Path(source).is_file()):
        return None

    def loads(g: ir.Graph) -> bool:
        try:
            read(g)
        except weights.WeightError:
            return False
        return True

    return hint(loads)


def _reader(
    source: str | Path | Mapping[str, Any], graph: ir.Graph, backend: Backend | None
) -> Callable[[ir.Graph], Weights]:
    """How to read ``source`` for each graph tried (the cut graph and the full one; for a hint,
    other variants): a checkpoint's tensors by another implementation's names (a ``.pth`` file,
    by torch, slow; a ``.npz``/``.safetensors`` whose names are not archc's) are read once, then
    fitted to each graph. Other files (archc's own names, a framework's ``.pt`` or ``.h5``) are
    read by each graph tried, whose layers say how: on a hint, that is once per variant, on the
    error path only."""
    from archcompiler import checkpoints, weights

    if isinstance(source, Mapping) or Path(source).suffix not in checkpoints.SUFFIXES:
        return lambda g: _read_weights(source, g, backend)
    p = Path(source)
    found = functools.cache(lambda: checkpoints.read(p, checkpoints.ignored(graph)))
    if p.suffix != ".pth":
        return lambda g: _read_file(p, g, found)
    if not p.is_file():
        raise weights.WeightError(f"{p}: no such weights file")
    if not graph.checkpoints:
        raise weights.WeightError(
            f"{p}: a .pth file loads by the names of a checkpoint format of the spec (declared: none);"
            " use .npz or .safetensors for archc's own names"
        )
    found()

    def fit(g: ir.Graph) -> Weights:
        w = checkpoints.from_tensors(g, found(), str(p))
        if w is None:
            raise weights.WeightError(
                f"{p}: a .pth file loads by the names of a checkpoint format of the spec"
                f" (declared: {', '.join(g.checkpoints)}); its names are none of them"
            )
        weights.check(g, w, origin=str(p))
        return w

    return fit


def _read_weights(source: str | Path | Mapping[str, Any], graph: ir.Graph, backend: Backend | None) -> Weights:
    """A mapping (archc's names or a checkpoint format's) or a framework file, checked."""
    from archcompiler import checkpoints, weights

    if isinstance(source, Mapping):
        # a state_dict by a checkpoint format's names (timm's), else archc's own
        converted = checkpoints.from_mapping(graph, source) if graph.checkpoints else None
        w = {k: checkpoints.to_numpy(str(k), v) for k, v in source.items()} if converted is None else converted
        weights.check(graph, w)
        return w
    p = Path(source)
    reader = _weights_reader(p, backend)
    if not p.is_file():
        raise weights.WeightError(f"{p}: no such weights file")
    w = reader.read_foreign_weights(p, graph)
    weights.check(graph, w, origin=str(p))
    return w


def _read_file(p: Path, graph: ir.Graph, found: Callable[[], Mapping[str, Any]]) -> Weights:
    """A ``.npz``/``.safetensors`` file by archc's canonical names (names, shapes and dtypes
    checked from the headers first) or, when its names are those of a checkpoint format the spec
    declares (``checkpoints:``, timm's state_dict), by those (:mod:`archcompiler.checkpoints`,
    the tensors ``found`` reads); a file that fits neither gets the canonical load's error."""
    from archcompiler import checkpoints, weights

    try:
        w = weights.load(p, graph)
    except weights.WeightError as first:
        if not graph.checkpoints:
            raise
        converted = checkpoints.from_tensors(graph, found(), str(p))
        if converted is None:
            raise first from None
        w = converted
    weights.check(graph, w, origin=str(p))
    return w


def _weights_reader(p: Path, backend: Backend | None) -> Backend:
    """The backend that reads a framework weights file: ``backend`` when it declares the suffix,
    else the built-in that does (FOREIGN_WEIGHTS), else the first plug-in that does."""
    from archcompiler import weights

    if backend is not None and p.suffix in backend.foreign_weight_suffixes:
        return backend
    candidates = [FOREIGN_WEIGHTS[p.suffix]] if p.suffix in FOREIGN_WEIGHTS else sorted(_external())
    reader = next((b for b in map(get_backend, candidates) if p.suffix in b.foreign_weight_suffixes), None)
    if reader is None:
        raise weights.WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz, .safetensors or .h5)")
    return reader
