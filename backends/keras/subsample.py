"""Convolutions with both a stride and a dilation, which Keras refuses in one layer.

Output ``i`` of a strided convolution is output ``i * stride`` of the same convolution with
stride 1, so a dilated stride-1 convolution followed by taking every ``stride``-th row and
column gives exactly the IR's strided, dilated convolution (explicit padding comes before, as
for every conv). The subclasses keep Conv2D's and DepthwiseConv2D's variables, so weights map
by layer name as for any conv.

The class bodies use only ``keras``: the emitter copies them verbatim (by ``ast``, with the
mixin they name) into generated modules, so builder and generated code share one implementation.
"""

from __future__ import annotations

from archcompiler.backends.keras._framework import keras  # sets KERAS_BACKEND before keras loads


class Subsample:
    """Mixin for a Keras convolution: run it at stride 1, then keep every ``subsample``-th
    output row and column."""

    def __init__(self, *args, subsample=(1, 1), **kwargs):
        super().__init__(*args, **kwargs)
        self.subsample = tuple(subsample)

    def call(self, inputs):
        return super().call(inputs)[:, :: self.subsample[0], :: self.subsample[1], :]

    def compute_output_shape(self, input_shape):
        n, h, w, c = super().compute_output_shape(input_shape)
        sh, sw = self.subsample
        return (n, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def get_config(self):
        return {**super().get_config(), "subsample": self.subsample}


@keras.saving.register_keras_serializable(package="archc")
class SubsampledConv2D(Subsample, keras.layers.Conv2D):
    """Conv2D at stride 1 (dilated), then every ``subsample``-th output row and column."""


@keras.saving.register_keras_serializable(package="archc")
class SubsampledDepthwiseConv2D(Subsample, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D at stride 1 (dilated), then every ``subsample``-th output row and column."""
