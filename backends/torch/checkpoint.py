"""Read archc's own PyTorch state_dict (``<name>.pt``, what ``archc build --backend torch``
writes) back into canonical weights, so ``--weights model.pt`` works like ``.npz``.

Loaded with ``torch.load(path, weights_only=True)``: the file is a pickle, and only the
restricted unpickler (tensors, plain containers) is safe on a file from elsewhere; anything
else in it is refused with one line, never executed. Keys are mapped back with the backend's
own names (its handlers' ``weight_names``: ``conv1.weight`` is canonical ``conv1.kernel``) and
tensors converted from channels-first with archcompiler.ir.layouts, so a file from a different
graph fails naming the tensor (archcompiler.weights.check, in the caller).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from archcompiler import ir
from archcompiler import weights as canonical
from archcompiler.ir.layouts import weight_from

_BOOKKEEPING = "num_batches_tracked"
"""BatchNorm's step counter: in every torch state_dict, no weight (nothing canonical holds it)."""


def _reason(exc: BaseException) -> str:
    """One line from torch's multi-line, ANSI-coloured refusal: the object it would not unpickle."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found.group(1)}, not only tensors"
    if "WeightsUnpickler error" in text or "invalid load key" in text:
        return "not a file torch.save wrote"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_state_dict(path: str | Path, graph: ir.Graph, names: Mapping[tuple[str, str], str]) -> canonical.Weights:
    """Canonical weights (float32 numpy, canonical layouts) for ``graph`` from a torch state_dict
    file; ``names``: (op, canonical param) -> name inside the node's module (the backend's
    ``weight_names``)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (a pickled object), RuntimeError (not a torch file), ...
        raise canonical.WeightError(
            f"{p}: not a state_dict of tensors (torch.load with weights_only=True refused it: {_reason(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise canonical.WeightError(
            f"{p}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    specs = canonical.specs(graph)
    by_key: dict[str, canonical.TensorSpec] = {}
    for t in specs.values():
        local = names.get((graph[t.node].op, t.param))
        if local is not None:
            by_key[f"{t.node}.{local}"] = t
    out: canonical.Weights = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise canonical.WeightError(f"{p}: state_dict key {key!r} is not a name")
        if key.rsplit(".", 1)[-1] == _BOOKKEEPING:
            continue
        if not isinstance(value, torch.Tensor):
            raise canonical.WeightError(f"{p}: {key!r} is a {type(value).__name__}, not a tensor")
        t = by_key.get(key)
        if t is None:
            raise canonical.WeightError(f"{p}: unexpected tensor {key!r} (no node of {graph.name!r} has it)")
        arr = value.detach().to(torch.float32).numpy()
        try:
            out[t.name] = weight_from(arr, t.layout, "channels_first", t.shape).astype(np.float32)
        except ValueError:
            raise canonical.WeightError(
                f"{p}: tensor {key!r} has shape {tuple(arr.shape)}, which is not {t.name!r} of shape {t.shape}"
            ) from None
    return out
