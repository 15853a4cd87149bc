"""Checkpoints of other implementations, loaded by their own tensor names (timm's state_dict).

A spec says, as data, how another implementation names its tensors (``checkpoints:``,
:class:`archcompiler.language.spec.Checkpoint`): name patterns over archc's layer or tensor
names, templates that may read the block instance's ``{stage}`` and ``{position}`` (the layer
table's ``starts_stage:``, carried on each node's span), parameter renames (kernel -> weight) and the
tensors to skip (``num_batches_tracked``). This module is the one mechanism that reads it: no
family has Python of its own. Such checkpoints are channels-first (torch's OIHW, depthwise
(C, 1, kh, kw), Linear (out, in)): each tensor goes through :mod:`archcompiler.ir.layouts` into
the canonical layout of :mod:`archcompiler.weights`, and from there into any backend.

Files: ``.safetensors`` and ``.npz`` are read by :func:`archcompiler.weights.load` (nothing
unpickled); ``.pth`` by ``torch.load(weights_only=True)``, torch imported only for that. Which
names a file uses is told from the names themselves (:func:`detect`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcompiler import ir
from archcompiler.ir import layouts
from archcompiler.language.spec import PLACEHOLDER_RE
from archcompiler.weights import FLOAT_DTYPES, WeightError, Weights, check_values, specs, unreadable

if TYPE_CHECKING:
    import numpy as np

    from archcompiler.language.spec import Checkpoint

__all__ = ["SUFFIXES", "convert", "detect", "from_mapping", "from_tensors", "names", "read", "to_numpy"]

SUFFIXES = (".safetensors", ".npz", ".pth")
"""The files a checkpoint is read from."""


def _regex(pattern: str) -> re.Pattern[str]:
    """A name pattern as a regex: ``{x}`` captures one or more letters and digits (so
    ``block{n}_conv`` does not match ``block5_dw_start_conv``), the rest is literal."""
    parts, at = [], 0
    for m in PLACEHOLDER_RE.finditer(pattern):
        parts += [re.escape(pattern[at : m.start()]), f"(?P<{m.group(1)}>[A-Za-z0-9]+)"]
        at = m.end()
    return re.compile("".join([*parts, re.escape(pattern[at:])]))


def _name(fmt: str, cp: Checkpoint, node: ir.Node, param: str) -> str:
    """The checkpoint's name of ``node``'s tensor ``param``: the first pattern that matches the
    tensor's name (``node.param``) or, without a dot, the node's name (the parameter renamed)."""
    span = node.span
    stage = span.stage if span is not None else None
    rules = [*(cp.stage_layers.get(stage[0], {}).items() if stage else ()), *cp.layers.items()]
    tensor = f"{node.name}.{param}"
    for pattern, template in rules:
        whole = "." in pattern
        m = _regex(pattern).fullmatch(tensor if whole else node.name)
        if m is None:
            continue
        values = dict(m.groupdict())
        if stage is not None:
            values |= {"stage": str(stage[0]), "position": str(stage[1])}
        try:
            name = template.format_map(values)
        except KeyError:
            raise WeightError(
                f"checkpoints.{fmt}: template {template!r} reads the stage of layer {node.name!r}, which is in none"
                " (no 'starts_stage:' on a layer-table row before it)"
            ) from None
        return name if whole else f"{name}.{cp.params.get(param, param)}"
    raise WeightError(f"checkpoints.{fmt}: no pattern names archc tensor {tensor!r}")


def names(graph: ir.Graph, fmt: str) -> dict[str, str]:
    """archc's canonical tensor name -> the checkpoint format ``fmt``'s name, every tensor of
    ``graph``; a WeightError when the spec's patterns leave one unnamed or name two alike."""
    if fmt not in graph.checkpoints:
        known = ", ".join(graph.checkpoints) or "none"
        raise WeightError(f"spec {graph.name!r} declares no checkpoint format {fmt!r} (declared: {known})")
    out, error = _naming(graph, fmt)
    if error is not None:
        raise error
    return out


def _naming(graph: ir.Graph, fmt: str) -> tuple[dict[str, str], WeightError | None]:
    """:func:`names` without raising: the tensors named before the first error, and that error
    (so that :func:`detect` can weigh a format whose patterns name some layers only)."""
    cp = graph.checkpoints[fmt]
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for node in graph.nodes:
        for w in node.weights():
            canonical = f"{node.name}.{w.param}"
            try:
                theirs = _name(fmt, cp, node, w.param)
            except WeightError as exc:
                return out, exc
            if theirs in seen:
                return out, WeightError(
                    f"checkpoints.{fmt}: archc tensors {seen[theirs]!r} and {canonical!r} both map to {theirs!r}"
                )
            seen[theirs] = out[canonical] = theirs
    return out, None


def detect(graph: ir.Graph, found: Mapping[str, Any] | list[str]) -> str | None:
    """The checkpoint format whose names ``found`` shares most, None when it holds every canonical
    name of archc's or shares at least as many of those (a file is read as the names it holds).
    A format whose patterns leave tensors unnamed is weighed by the names it does give: when it
    wins, :func:`convert` names the tensor its patterns miss, the error that helps."""
    have = set(found)
    canonical = set(specs(graph))
    if canonical <= have:
        return None
    best, share = None, len(have & canonical)
    for fmt in graph.checkpoints:
        n = len(have & set(_naming(graph, fmt)[0].values()))
        if n > share:
            best, share = fmt, n
    return best


def ignored(graph: ir.Graph) -> set[str]:
    """The last name parts every declared format skips."""
    return {part for cp in graph.checkpoints.values() for part in cp.ignore}


def read(path: str | Path, skip: set[str]) -> dict[str, np.ndarray]:
    """A checkpoint's tensors by their own names (those ending in a ``skip`` part left out)."""
    from archcompiler import weights

    p = Path(path)
    if p.suffix != ".pth":
        return dict(weights.load(p, skip=skip))
    if not p.is_file():
        raise WeightError(f"{p}: no such weights file")
    try:
        import torch
    except ImportError:
        raise WeightError(f"{p}: a .pth file needs torch to read (pip install 'archc[torch]')") from None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is one line
        raise unreadable(p, exc) from None
    tensors = isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors or not all(isinstance(k, str) for k in state):
        raise WeightError(f"{p}: not a state_dict (a mapping of tensor names to tensors)")
    return {k: to_numpy(k, v, str(p)) for k, v in state.items() if k.rsplit(".", 1)[-1] not in skip}


def to_numpy(name: str, value: Any, origin: str = "weights") -> Any:
    """A torch tensor (a state_dict's, a .pth file's) as a numpy array, whatever its device or
    grad; anything else as it is. Its dtype must be float16/32/64, as in a .safetensors file
    (:data:`archcompiler.weights.FLOAT_DTYPES`): a bfloat16 one is refused naming it, not
    widened behind the user's back. Duck-typed (``detach``), so torch is not imported here."""
    if not hasattr(value, "detach"):
        return value
    dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    if dtype not in FLOAT_DTYPES:
        hint = " (convert it: tensor.float())" if dtype == "bfloat16" else ""
        raise WeightError(
            f"{origin}: tensor {name!r} has dtype {dtype}, expected one of {', '.join(FLOAT_DTYPES)}{hint}"
        )
    try:
        return value.detach().cpu().numpy()
    except (TypeError, RuntimeError) as exc:  # a tensor that cannot come to the CPU (meta, a lost device)
        raise unreadable(origin, exc, name) from None


def convert(graph: ir.Graph, fmt: str, found: Mapping[str, np.ndarray], origin: str) -> Weights:
    """Canonical weights of ``graph`` from a checkpoint of format ``fmt`` (channels-first): every
    tensor present, of the shape archc's implies, none left over; errors name both tensors."""
    theirs = names(graph, fmt)
    out = Weights()
    for canonical, t in specs(graph).items():
        name = theirs[canonical]
        want = layouts.channels_first_shape(t.shape, t.layout)
        if name not in found:
            raise WeightError(f"{origin}: missing {fmt} tensor {name!r} (archc {canonical!r}, shape {want})")
        arr = found[name]
        if not hasattr(arr, "shape"):  # a number, a string, a list: not an array
            raise WeightError(f"{origin}: {fmt} tensor {name!r} is a {type(arr).__name__}, not an array")
        check_values(name, arr, origin=origin)
        if tuple(arr.shape) != want:
            raise WeightError(
                f"{origin}: {fmt} tensor {name!r} has shape {tuple(arr.shape)}, archc {canonical!r} needs {want}"
            )  # read_weights adds which variant of the spec the file fits, if one does
        out[canonical] = layouts.from_channels_first(arr, t.layout, t.shape)
    extra = [k for k in found if k not in set(theirs.values())]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise WeightError(
            f"{origin}: unexpected {fmt} tensor {extra[0]!r}{more}: no archc tensor of {graph.name!r} takes it"
        )
    return out


def from_tensors(graph: ir.Graph, found: Mapping[str, Any], origin: str) -> Weights | None:
    """Canonical weights from tensors already read (:func:`read`, names to be skipped left out)
    whose names are one of the spec's formats, else None."""
    fmt = detect(graph, list(found))
    return None if fmt is None else convert(graph, fmt, found, origin)


def from_mapping(graph: ir.Graph, state: Mapping[str, Any]) -> Weights | None:
    """Canonical weights from an in-memory state_dict (arrays or torch tensors, :func:`to_numpy`)
    whose names are one of the spec's formats, else None."""
    skip = ignored(graph)
    kept = [k for k in state if isinstance(k, str) and k.rsplit(".", 1)[-1] not in skip]
    if detect(graph, kept) is None:
        return None
    return from_tensors(graph, {k: to_numpy(k, state[k]) for k in kept}, "weights")
