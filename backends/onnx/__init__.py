"""The ONNX backend: an onnx.ModelProto written straight from the IR, run with onnxruntime.

Importing this package imports onnx and onnxruntime (``pip install 'archc[onnx]'``), never
torch or TensorFlow.
"""

from archcompiler.quiet import framework_output

with framework_output():  # what they print while loading (ARCHC_VERBOSE=1 shows it)
    import onnx  # noqa: F401  (fail at lookup, not first use, when the extra is missing)
    import onnxruntime  # noqa: F401

from archcompiler.backends.onnx.backend import OnnxBackend

__all__ = ["OnnxBackend"]
