"""Weight glue for the kit: canonical tensor -> state_dict name, and reading/writing tensors.

Layouts (OIHW kernels, (C*M, 1, kh, kw) depthwise, (out, in) linear) are converted by
archcompiler.ir.layouts, because the backend declares ``weight_layout = "channels_first"``; here
is only what is torch's own: the state_dict names (each op's handler states its own,
``Handler.weight_names``) and how a tensor is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def weight_names(handlers: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(IR op, canonical param) -> the tensor's name inside the node's module (nn.Conv2d's
    ``weight``), from each handler's ``weight_names``. A param no handler names is missing
    here, and moving it is an error naming the tensor (the kit never guesses ``bias``)."""
    return {(op, param): name for op, h in handlers.items() for param, name in getattr(h, "weight_names", {}).items()}


def weight_tensors(model: nn.Module) -> dict[tuple[str, str], torch.Tensor]:
    """state_dict tensors (they share storage with the model) by (node, name in the node).

    Submodules are named after IR nodes, which contain no dots, so the first dot splits them.
    """
    out: dict[tuple[str, str], torch.Tensor] = {}
    for key, value in model.state_dict().items():
        node, _, name = key.partition(".")
        out[(node, name)] = value
    return out


def read_tensor(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def write_tensors(staged: Sequence[tuple[torch.Tensor, np.ndarray]]) -> None:
    with torch.no_grad():
        for tensor, arr in staged:
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(arr)))
