"""Mobile MQA (MobileNetV4's attention) as one Keras layer of keras ops.

The class body uses only ``keras`` and ``ops`` (keras.ops): the emitter copies it verbatim (by
``ast``) into generated modules, so builder and generated code share one implementation. Every
op it uses (pad, depthwise conv, matmul, softmax, reshape) is a TFLite builtin, so the TFLite
backend converts it without custom ops. Variables are named by their canonical params
(archcompiler/ops/attention.py), so weights move by name as for any layer.
"""

from __future__ import annotations

from archcompiler.backends.keras._framework import keras  # sets KERAS_BACKEND before keras loads

ops = keras.ops


@keras.saving.register_keras_serializable(package="archc")
class MobileMQA(keras.layers.Layer):
    """Multi-query attention over the positions of an (N, H, W, C) map: ``heads`` query heads,
    one key and one value head from a strided depthwise conv and BatchNorm (``kv_stride`` > 1);
    the queries of all heads are rows of one matrix product (they share the keys and values).
    ``variance_update``: which batch variance the BatchNorms' training step folds in."""

    def __init__(
        self,
        filters,
        heads,
        key_dim,
        value_dim,
        kv_stride=1,
        dw_kernel=3,
        padding=((1, 1), (1, 1)),
        epsilon=1e-5,
        momentum=0.9,
        variance_update="unbiased",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters, self.heads, self.key_dim, self.value_dim = filters, heads, key_dim, value_dim
        self.kv_stride, self.dw_kernel = kv_stride, dw_kernel
        self.padding = tuple(tuple(p) for p in padding)
        self.epsilon, self.momentum, self.variance_update = epsilon, momentum, variance_update

    def build(self, input_shape):
        c = input_shape[-1]
        self.in_channels = c

        def kernel(name, shape):
            return self.add_weight(shape=shape, initializer="glorot_uniform", name=name)

        self.query_kernel = kernel("query_kernel", (1, 1, c, self.heads * self.key_dim))
        for path, dim in (("key", self.key_dim), ("value", self.value_dim)):
            if self.kv_stride > 1:
                kernel(f"{path}_down_kernel", (self.dw_kernel, self.dw_kernel, c, 1))
                for name, init, trainable in (
                    ("gamma", "ones", True),
                    ("beta", "zeros", True),
                    ("moving_mean", "zeros", False),
                    ("moving_variance", "ones", False),
                ):
                    self.add_weight(shape=(c,), initializer=init, trainable=trainable, name=f"{path}_{name}")
            kernel(f"{path}_kernel", (1, 1, c, dim))
        self.output_kernel = kernel("output_kernel", (1, 1, self.heads * self.value_dim, self.filters))

    def _variable(self, name):
        return next(v for v in self.weights if v.name == name)

    def _normalize(self, path, x, training):
        """The key/value BatchNorm: moving statistics at inference, batch ones in training."""
        gamma, beta = self._variable(f"{path}_gamma"), self._variable(f"{path}_beta")
        moving_mean, moving_var = self._variable(f"{path}_moving_mean"), self._variable(f"{path}_moving_variance")
        if not training:
            return ops.batch_normalization(x, moving_mean, moving_var, -1, beta, gamma, self.epsilon)
        mean, var = ops.moments(x, axes=[0, 1, 2])
        folded = var
        if self.variance_update == "unbiased":
            n = ops.cast(ops.size(x), x.dtype) / ops.cast(ops.size(mean), x.dtype)
            folded = var * n / ops.maximum(n - 1.0, 1.0)
        moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
        moving_var.assign(moving_var * self.momentum + folded * (1.0 - self.momentum))
        return ops.batch_normalization(x, mean, var, -1, beta, gamma, self.epsilon)

    def _key_value(self, path, x, training):
        """(N, P, dim): the strided depthwise conv and BatchNorm (kv_stride > 1), the projection."""
        if self.kv_stride > 1:
            x = ops.pad(x, ((0, 0), self.padding[0], self.padding[1], (0, 0)))
            x = ops.depthwise_conv(x, self._variable(f"{path}_down_kernel"), self.kv_stride, "valid")
            x = self._normalize(path, x, training)
        y = ops.matmul(x, self._variable(f"{path}_kernel")[0, 0])
        return ops.reshape(y, (-1, y.shape[1] * y.shape[2], y.shape[3]))

    def call(self, x, training=None):
        h, w = x.shape[1], x.shape[2]
        q = ops.matmul(x, self.query_kernel[0, 0])  # (N, H, W, heads * key_dim), head-major
        q = ops.reshape(q, (-1, h * w * self.heads, self.key_dim))  # rows: (position, head)
        k = self._key_value("key", x, training)
        v = self._key_value("value", x, training)
        logits = ops.matmul(q / ops.sqrt(ops.cast(self.key_dim, q.dtype)), ops.transpose(k, (0, 2, 1)))
        o = ops.matmul(ops.softmax(logits, axis=-1), v)
        o = ops.reshape(o, (-1, h, w, self.heads * self.value_dim))
        return ops.matmul(o, self.output_kernel[0, 0])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "heads": self.heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "kv_stride": self.kv_stride,
            "dw_kernel": self.dw_kernel,
            "padding": self.padding,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "variance_update": self.variance_update,
        }
