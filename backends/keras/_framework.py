"""Import Keras on the TensorFlow backend, quietly, exactly once.

Keras 3 picks its backend from ``KERAS_BACKEND`` at first import, so it must be set before
anything imports keras. TensorFlow's C++ INFO/WARNING chatter is silenced with
``TF_CPP_MIN_LOG_LEVEL=2`` (errors still print); both are ``setdefault`` so a user's own
setting wins.

In a process that also uses PyTorch, import torch *before* this module: the other order can
crash (two copies of conflicting native libraries). archc's tests import torch first; this
module does not import torch itself, because a Keras-only install need not have it.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ...registry import BackendError

try:
    import keras
    import tensorflow as tf
except ImportError as exc:
    raise BackendError(
        f"the keras backend needs Keras 3 and TensorFlow ({exc.name} is missing): pip install 'archc[keras]'"
    ) from exc

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the user's env
    raise BackendError(
        f"archc's keras backend needs KERAS_BACKEND=tensorflow, but keras was already loaded with "
        f"{keras.backend.backend()!r}"
    )

__all__ = ["keras", "tf"]
