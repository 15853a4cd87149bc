"""The TFLite backend: archc's Keras build converted with TensorFlow's TFLite converter, run
with LiteRT (``ai_edge_litert``; ``tf.lite`` where it is absent). ``pip install 'archc[tflite]'``.

TensorFlow itself is imported on first use (through the Keras backend's ``_framework``, which
sets KERAS_BACKEND first); a missing one is reported here, at lookup, as the registry expects.
"""

from importlib.util import find_spec

for _package in ("tensorflow", "keras"):
    if find_spec(_package) is None:
        raise ModuleNotFoundError(f"No module named {_package!r}", name=_package)

from archcompiler.backends.tflite.backend import TfliteBackend  # noqa: E402

__all__ = ["TfliteBackend"]
