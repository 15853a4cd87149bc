"""archc's Keras 3 backend (TensorFlow): build, verify, weights, run, train, save, emit.

Importing this package imports no framework: ``KerasBackend`` loads Keras on first access,
and ``load_keras_weights`` (reading Keras .h5 checkpoints into canonical weights) needs only
h5py, so a PyTorch-only user can read Keras checkpoints.

In a process that uses both PyTorch and TensorFlow, import torch first (see _framework.py).

Modules: ``ops`` (the per-op handler table shared by builder and emitter), ``build``
(keras.Model from the IR, verification), ``weights`` (canonical <-> Keras), ``execute``
(inference and a training step), ``bn`` (unbiased-variance BatchNormalization),
``checkpoint`` (Keras .h5 files), ``emit`` (standalone source via Jinja2 templates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archcompiler.backends.keras.backend import KerasBackend
    from archcompiler.backends.keras.checkpoint import load_keras_weights

__all__ = ["KerasBackend", "load_keras_weights"]


def __getattr__(name: str) -> Any:
    if name == "KerasBackend":
        from archcompiler.backends.keras.backend import KerasBackend

        return KerasBackend
    if name == "load_keras_weights":
        from archcompiler.backends.keras.checkpoint import load_keras_weights

        return load_keras_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
