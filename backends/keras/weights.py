"""Weight glue for the kit: Keras variables by (layer name, variable name).

The canonical layout *is* Keras' (archcompiler.weights) and canonical names are
``<layer>.<variable>``, so the backend declares ``weight_layout = "canonical"`` and no name
table: moving weights is a lookup by layer and variable name, no transposes. This works on
any Keras model whose layer names follow the IR, including keras.applications.MobileNet
itself for specs/mobilenet_keras.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def weight_tensors(model: Any) -> dict[tuple[str, str], Any]:
    """Every variable of every layer, by (layer name, variable name)."""
    return {(layer.name, v.name): v for layer in model.layers for v in layer.weights}


def read_tensor(variable: Any) -> np.ndarray:
    return np.asarray(variable.numpy())


def write_tensors(staged: Sequence[tuple[Any, np.ndarray]]) -> None:
    for variable, arr in staged:
        variable.assign(arr)
