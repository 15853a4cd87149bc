"""The TFLite backend: archc's Keras build converted with TensorFlow's TFLite converter, run
with LiteRT (``ai_edge_litert``; ``tf.lite`` where it is absent). ``pip install 'archc[tflite]'``.
"""

import tensorflow  # noqa: F401  (the converter; fail at lookup when the extra is missing)

from .backend import TfliteBackend

__all__ = ["TfliteBackend"]
