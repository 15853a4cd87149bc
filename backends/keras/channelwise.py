"""archc's Keras layers for per-channel ops keras.layers lacks: ``LayerScale`` (timm's LayerScale2d).

The class bodies use only ``keras``: the emitter copies them verbatim into generated modules.
Registered as ``archc>LayerScale``; a saved ``.keras`` model that uses it loads where this
class (or a generated module defining it) has been imported.
"""

from __future__ import annotations

from archcompiler.backends.keras._framework import keras  # sets KERAS_BACKEND before keras loads


@keras.saving.register_keras_serializable(package="archc")
class LayerScale(keras.layers.Layer):
    """``x * gamma`` over the last (channel) axis, gamma a trainable (channels,) vector filled
    with ``init`` (timm's LayerScale2d, keras.applications.convnext's LayerScale)."""

    def __init__(self, channels, init=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.init = init

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(self.channels,), initializer=keras.initializers.Constant(self.init), name="gamma"
        )

    def call(self, x):
        return x * self.gamma

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "init": self.init}
