"""Glue for the kit's run and train: intermediate outputs and one plain-SGD step.

Intermediate outputs come from a functional sub-model over the requested layers, built once
per (model, outputs) and cached weakly, so parity checks that ask for every node do not
rebuild it. Models are called directly (``model(x, training=...)``): ``model.predict`` adds
per-call overhead (a tf.function per shape, a progress bar) that dominates at these sizes.
Inputs, output names, labels and logits are checked by the kit before these run.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

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


def forward(model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Inference (BatchNorm on moving statistics, dropout off): the named layers' outputs."""
    values = _submodel(model, names)(x, training=False)
    if not isinstance(values, list | tuple):
        values = [values]
    return {n: v.numpy() for n, v in zip(names, values, strict=True)}


def sgd_step(model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float) -> float:
    """One SGD step (momentum 0) on mean sparse softmax cross-entropy; BN in training mode.

    Returns the loss before the step. BatchNorm layers update their moving statistics as a
    side effect of the training-mode call, as in ``model.fit``.
    """
    from ._framework import keras, tf

    sub = _submodel(model, (logits,))
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.0)
    variables = sub.trainable_variables
    with tf.GradientTape() as tape:
        out = sub(tf.convert_to_tensor(x), training=True)
        per_example = keras.losses.sparse_categorical_crossentropy(tf.convert_to_tensor(y), out, from_logits=True)
        loss = keras.ops.mean(per_example)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return float(loss)
