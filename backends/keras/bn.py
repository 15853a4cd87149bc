"""BatchNormalization whose moving variance follows PyTorch: updated with the unbiased variance.

Keras updates ``moving_variance`` with the biased batch variance (divide by n); PyTorch with the
unbiased one (divide by n - 1). Normalisation in training uses the biased variance in both.
When the IR says ``variance_update: unbiased`` the Keras backend uses this subclass, so a
training step agrees with PyTorch's to float precision.

The class body uses only ``keras`` and ``keras.ops``: the emitter copies it verbatim (by
``ast``) into generated modules, so builder and generated code share one implementation.
It is registered as ``archc>UnbiasedBatchNormalization``; a saved ``.keras`` model that uses
it loads where this class (or a generated module defining it) has been imported.
"""

from __future__ import annotations

from archcompiler.backends.keras._framework import keras  # sets KERAS_BACKEND before keras loads

ops = keras.ops


@keras.saving.register_keras_serializable(package="archc")
class UnbiasedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization updating the moving variance with the unbiased batch variance."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None or self.renorm:
            raise NotImplementedError("UnbiasedBatchNormalization supports neither masks nor renorm")
        # Statistics in the variables' dtype (float32, or float64 for parity's oracle); at least
        # float32, as Keras' own BatchNormalization does for float16 inputs.
        dtype = "float32" if self.variable_dtype in ("float16", "bfloat16") else self.variable_dtype
        x = ops.cast(inputs, dtype)
        mean, variance = ops.moments(x, axes=self._reduction_axes, synchronized=self.synchronized)
        # Elements per channel: n / (n - 1) turns the biased variance into the unbiased one.
        n = ops.cast(ops.size(x), dtype) / ops.cast(ops.size(mean), dtype)
        unbiased = variance * n / ops.maximum(n - 1.0, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
        outputs = ops.batch_normalization(
            x,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)
