"""Import Keras on the TensorFlow backend, quietly, exactly once.

Keras 3 picks its backend from ``KERAS_BACKEND`` at first import, so it must be set before
anything imports keras (``setdefault``: a user's own setting wins). What TensorFlow prints
while it loads (absl's and oneDNN's log lines, CPU feature notes) is held by
:func:`archcompiler.quiet.framework_output`, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; its
Python logger is set to errors only. ``ARCHC_VERBOSE=1`` (``-v``) leaves all of it as
TensorFlow has it.

In a process that also uses PyTorch, import torch *before* this module: the other order can
crash (two copies of conflicting native libraries). archc's tests import torch first; this
module does not import torch itself, because a Keras-only install need not have it.
"""

from __future__ import annotations

import logging
import os

from archcompiler.kit.registry import BackendError
from archcompiler.quiet import framework_output, verbose

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # after the import too: C++ errors only

try:
    with framework_output():
        import keras
        import tensorflow as tf
except ImportError as exc:
    raise BackendError(
        f"the keras backend needs Keras 3 and TensorFlow ({exc.name} is missing): pip install 'archc[keras]'"
    ) from exc

if not verbose() and tf.get_logger().level == logging.NOTSET:  # unless the user set it
    tf.get_logger().setLevel(logging.ERROR)  # "WARNING:tensorflow: ... retracing" and the like

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the user's env
    raise BackendError(
        f"archc's keras backend needs KERAS_BACKEND=tensorflow, but keras was already loaded with "
        f"{keras.backend.backend()!r}"
    )

__all__ = ["keras", "tf"]
