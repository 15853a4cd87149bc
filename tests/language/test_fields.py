"""Field definitions (archcompiler/language/fields.py): an unknown key suggests the field that
means the same thing in this op, from the argument names Keras and torch use. The oracle is
the frameworks' documented signatures (keras.layers.Conv2D(filters, kernel_size, strides, ...,
dilation_rate, use_bias), torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, ...),
Linear(in_features, out_features), BatchNorm2d(num_features, eps, momentum), Dropout(p), ...),
written out here, not read from the table under test."""

from __future__ import annotations

import pytest

import archcompiler as a

CONV = {"op": "conv", "filters": 8, "kernel": 3}
# (archc op and its valid fields, framework argument, the archc field it means; None: archc infers it)
FRAMEWORK_ARGUMENTS = [
    (CONV, "kernel_size", "kernel"),  # keras Conv2D, torch Conv2d
    (CONV, "strides", "stride"),  # keras Conv2D
    (CONV, "dilation_rate", "dilation"),  # keras Conv2D
    (CONV, "use_bias", "bias"),  # keras Conv2D
    (CONV, "units", "filters"),  # keras Dense's name, on a conv
    (CONV, "out_channels", "filters"),  # torch Conv2d
    (CONV, "in_channels", None),  # torch Conv2d
    ({"op": "depthwise_conv", "kernel": 3}, "depth_multiplier", "multiplier"),  # keras DepthwiseConv2D
    ({"op": "depthwise_conv", "kernel": 3}, "kernel_size", "kernel"),
    ({"op": "dense", "units": 10}, "filters", "units"),  # keras Conv2D's name, on a dense layer
    ({"op": "dense", "units": 10}, "out_features", "units"),  # torch Linear
    ({"op": "dense", "units": 10}, "in_features", None),  # torch Linear
    ({"op": "dense", "units": 10}, "use_bias", "bias"),  # keras Dense
    ({"op": "batchnorm"}, "momentum", "decay"),  # keras BatchNormalization, torch BatchNorm2d
    ({"op": "batchnorm"}, "eps", "epsilon"),  # torch BatchNorm2d
    ({"op": "batchnorm"}, "num_features", None),  # torch BatchNorm2d
    ({"op": "dropout", "rate": 0.1}, "p", "rate"),  # torch Dropout
    ({"op": "avg_pool", "pool": 2}, "pool_size", "pool"),  # keras AveragePooling2D
    ({"op": "max_pool", "pool": 2}, "kernel_size", "pool"),  # torch MaxPool2d
    ({"op": "max_pool", "pool": 2}, "strides", "stride"),  # keras MaxPooling2D
    ({"op": "global_avg_pool"}, "keepdim", "keepdims"),  # torch mean(keepdim=)
    ({"op": "activation", "kind": "relu"}, "activation", "kind"),  # keras Activation(activation)
]


def _error(layer: dict[str, object]) -> str:
    spec = {"name": "t", "input": {"size": 32}, "layers": [CONV, {"op": "flatten"}, layer]}
    if layer["op"] != "dense":
        spec["layers"] = [layer]
    with pytest.raises(a.SpecError) as info:
        a.compile(spec)
    return str(info.value)


@pytest.mark.parametrize(
    ("layer", "key", "field"), FRAMEWORK_ARGUMENTS, ids=lambda v: v if isinstance(v, str) else None
)
def test_a_frameworks_argument_name_suggests_the_field_of_this_op(layer: dict, key: str, field: str | None) -> None:
    message = _error({**layer, key: 1})
    if field is None:
        assert message.endswith(f"unknown key {key!r} (archc infers it from the layer's input: remove it)")
    else:
        assert f"unknown key {key!r} (did you mean {field!r}?" in message, message


def test_momentum_says_how_the_conventions_differ() -> None:
    assert _error({"op": "batchnorm", "momentum": 0.9}).endswith(
        "(did you mean 'decay'? Keras momentum = decay, torch momentum = 1 - decay)"
    )


def test_other_spellings_of_a_field_are_recognised() -> None:
    assert "(did you mean 'kernel'?)" in _error({**CONV, "kernelSize": 3})
    assert "(did you mean 'stride'?)" in _error({**CONV, "Stride": 2})
    assert "(did you mean 'stride'?)" in _error({**CONV, "strid": 2})  # a typo: the close spelling


def test_an_activation_on_a_conv_says_where_it_goes() -> None:
    assert _error({**CONV, "activation": "relu"}).endswith(
        "unknown key 'activation' (an activation is a layer of its own here: {op: activation, kind: ...} "
        "after this one)"
    )


@pytest.mark.parametrize(
    ("layer", "value", "meant"),
    [
        (CONV, {"padding": "SAME"}, "same"),  # TensorFlow's padding="SAME"
        (CONV, {"padding": "Valid"}, "valid"),
        ({"op": "activation"}, {"kind": "ReLU"}, "relu"),  # torch nn.ReLU
        ({"op": "activation"}, {"kind": "ReLU6"}, "relu6"),
        ({"op": "activation"}, {"kind": "Hardswish"}, "hard_swish"),  # torch nn.Hardswish
        ({"op": "activation"}, {"kind": "hardsigmoid"}, "hard_sigmoid"),  # torch nn.Hardsigmoid
        ({"op": "activation"}, {"kind": "SiLU"}, "swish"),  # torch nn.SiLU
    ],
)
def test_a_value_written_as_a_framework_writes_it_suggests_archcs(layer: dict, value: dict, meant: str) -> None:
    message = _error({**layer, **value})
    assert f"(did you mean {meant!r}?) (got {next(iter(value.values()))!r})" in message, message
