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

from archcompiler.kit.registry import BackendError

_SUBMODELS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def _submodel(model: Any, names: tuple[str, ...]) -> Any:
    """A keras.Model sharing ``model``'s layers and variables, outputting layers ``names``."""
    from archcompiler.backends.keras._framework import keras

    cache = _SUBMODELS.setdefault(model, {})
    if names not in cache:
        layers = {layer.name: layer for layer in model.layers}  # get_layer() searches them all each time
        missing = next((n for n in names if n not in layers), None)
        if missing is not None:
            raise BackendError(f"keras model has no layer for a requested node: {missing!r}")
        outs = [layers[n].output for n in names]
        cache[names] = keras.Model(model.input, outs, name=f"{model.name}_outputs")
    return cache[names]


def forward(model: Any, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Inference (BatchNorm on moving statistics, dropout off): the named layers' outputs."""
    values = _submodel(model, names)(x, training=False)
    if not isinstance(values, list | tuple):
        values = [values]
    return {n: v.numpy() for n, v in zip(names, values, strict=True)}


def sgd_step(model: Any, x: np.ndarray, y: np.ndarray, logits: str, lr: float) -> tuple[float, np.ndarray]:
    """One SGD step (momentum 0) on mean sparse softmax cross-entropy; BN in training mode.

    Returns the loss before the step and the training-mode logits. BatchNorm layers update
    their moving statistics as a side effect of the training-mode call, as in ``model.fit``.
    The update is ``w -= lr * grad`` written out, in the variable's dtype: Keras' SGD keeps its
    learning rate in a float32 variable, so in float64 it would step by float32(lr), a 1e-8
    relative difference from torch's (and from a float32 SGD the result is identical).
    """
    from archcompiler.backends.keras._framework import tf

    sub = _submodel(model, (logits,))
    variables = sub.trainable_variables
    with tf.GradientTape() as tape:
        out = sub(tf.convert_to_tensor(x), training=True)
        per_example = keras_loss(tf.convert_to_tensor(y), out)
        loss = tf.reduce_mean(per_example)
    grads = tape.gradient(loss, variables)
    for variable, grad in zip(variables, grads, strict=True):
        variable.assign_sub(tf.constant(lr, dtype=variable.dtype) * grad)  # not tf.cast: float32 first
    return float(loss), np.asarray(out)


def keras_loss(y: Any, logits: Any) -> Any:
    """Per-example softmax cross-entropy of integer labels, as Keras computes it in training."""
    from archcompiler.backends.keras._framework import keras

    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
