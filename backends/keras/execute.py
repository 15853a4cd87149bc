"""Inference (any set of intermediate node outputs) and one plain-SGD training step.

Intermediate outputs come from a functional sub-model over the requested layers, built once
per (model, outputs) and cached weakly, so parity checks that ask for every node do not
rebuild it. Models are called directly (``model(x, training=...)``): ``model.predict`` adds
per-call overhead (a tf.function per shape, a progress bar) that dominates at these sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...ir import Graph, Input
from ...registry import BackendError

_SUBMODELS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def _submodel(model: Any, names: tuple[str, ...]) -> Any:
    """A keras.Model sharing ``model``'s layers and variables, outputting layers ``names``."""
    from ._framework import keras

    cache = _SUBMODELS.setdefault(model, {})
    if names not in cache:
        try:
            outs = [model.get_layer(n).output for n in names]
        except ValueError as exc:
            raise BackendError(f"keras model has no layer for a requested node: {exc}") from None
        cache[names] = keras.Model(model.input, outs, name=f"{model.name}_outputs")
    return cache[names]


def as_batch(graph: Graph, x: np.ndarray) -> np.ndarray:
    """float32 NHWC batch of the IR's input shape, or a BackendError saying what came
    (an NCHW batch would otherwise fail deep inside TensorFlow, or broadcast silently)."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape[1:] != tuple(graph.input_shape):
        raise BackendError(f"input of shape {arr.shape}; graph {graph.name!r} takes (N, *{graph.input_shape}) NHWC")
    return arr


def run(graph: Graph, model: Any, x: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Inference (BatchNorm on moving statistics, dropout off) on NHWC float32 ``x``."""
    names = tuple(outputs) if outputs is not None else (graph.output,)
    for n in names:
        if n not in graph:
            raise BackendError(f"unknown node {n!r} (not in graph {graph.name!r})")
    x = as_batch(graph, x)
    result: dict[str, np.ndarray] = {n: x.copy() for n in names if isinstance(graph[n], Input)}
    computed = tuple(n for n in names if n not in result)
    if computed:
        values = _submodel(model, computed)(x, training=False)
        if not isinstance(values, list | tuple):
            values = [values]
        for n, v in zip(computed, values, strict=True):
            result[n] = v.numpy()
    return {n: result[n] for n in names}


def train_step(graph: Graph, model: Any, x: np.ndarray, y: np.ndarray, lr: float) -> float:
    """One SGD step (momentum 0) on mean sparse softmax cross-entropy; BN in training mode.

    Returns the loss before the step. BatchNorm layers update their moving statistics as a
    side effect of the training-mode call, as in ``model.fit``.
    """
    from ._framework import keras, tf

    name = graph.logits
    if len(graph[name].shape) != 1:
        raise BackendError(f"training needs (N, classes) logits; node {name!r} is {graph[name].shape}")
    x = as_batch(graph, x)
    sub = _submodel(model, (name,))
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.0)
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(np.asarray(y, dtype=np.int64))
    variables = sub.trainable_variables
    with tf.GradientTape() as tape:
        logits = sub(x, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return float(loss)
