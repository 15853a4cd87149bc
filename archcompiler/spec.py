"""The spec language: pydantic models of what users write in YAML.

The models are strict (``extra="forbid"``, no string-to-number coercion) so that a typo is an
error with a location instead of a silently ignored key. Layers form a discriminated union on
``op``; a layer with ``block:`` instead calls a reusable block defined under ``blocks:``.

Inside a block, numeric fields may hold ``$param`` references, filled in from the call's
arguments when the block is expanded (lowering validates the result again, so a bad argument
is reported at the call). ``$classes`` is available everywhere.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

REF_RE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME_TEMPLATE_RE = re.compile(r"^(?:[A-Za-z_]|\{index\})(?:[A-Za-z0-9_]|\{index\})*$")
MAX_NAME = 64

ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish")


class Ref(str):
    """A ``$param`` reference inside a block body, resolved when the block is expanded."""

    @property
    def param(self) -> str:
        return self[1:]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_ident(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise PydanticCustomError("identifier", f"expected {what} (a string)")
    if not IDENT_RE.match(v) or len(v) > MAX_NAME:
        raise PydanticCustomError(
            "identifier",
            f"expected {what}: ASCII letters, digits and '_', not starting with a digit, at most {MAX_NAME} characters",
        )
    if keyword.iskeyword(v) or v.startswith("__"):
        raise PydanticCustomError("identifier", f"expected {what}, not a Python keyword or dunder name")
    return v


def _identifier(v: Any) -> str:
    return _check_ident(v, "an identifier")


def _name_template(v: Any) -> str:
    if not isinstance(v, str):
        raise PydanticCustomError("name", "expected a layer name (a string)")
    if not NAME_TEMPLATE_RE.match(v) or len(v) > MAX_NAME:
        raise PydanticCustomError(
            "name",
            "expected a layer name: ASCII letters, digits and '_' (and '{index}', the block instance"
            " number), not starting with a digit",
        )
    probe = v.replace("{index}", "1")
    if keyword.iskeyword(probe) or probe.startswith("__"):
        raise PydanticCustomError("name", "expected a layer name, not a Python keyword or dunder name")
    return v


def _pos_int_ref(v: Any) -> int | Ref:
    if _is_int(v):
        if v <= 0:
            raise PydanticCustomError("positive_int", "expected a positive integer")
        return v
    if isinstance(v, str) and REF_RE.match(v):
        return Ref(v)
    raise PydanticCustomError("positive_int", "expected a positive integer")


def _pair_ref(v: Any) -> int | Ref | tuple[int | Ref, int | Ref]:
    if isinstance(v, list | tuple):
        if len(v) != 2:
            raise PydanticCustomError("pair", "expected a positive integer or a pair [height, width]")
        return (_pos_int_ref(v[0]), _pos_int_ref(v[1]))
    try:
        return _pos_int_ref(v)
    except PydanticCustomError:
        raise PydanticCustomError("pair", "expected a positive integer or a pair [height, width]") from None


def _size(v: Any) -> int | tuple[int, int]:
    """An input size: one positive integer (square) or [height, width].

    A plain ``tuple[int, int]`` field refuses YAML's lists in strict mode, so it is checked here.
    """
    if _is_int(v) and v > 0:
        return v
    if isinstance(v, list | tuple) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v):
        return (v[0], v[1])
    raise PydanticCustomError("size", "expected a positive integer or a pair [height, width] of positive integers")


def _padding_value(v: Any) -> str | int | tuple[int, int, int, int]:
    """Padding outside a block body, where a ``$param`` has nothing to refer to."""
    p = _padding(v)
    if isinstance(p, Ref):
        raise PydanticCustomError("padding", "expected a padding value; '$' parameters only work inside blocks")
    return p


def _nonneg(v: Any) -> int:
    if not _is_int(v) or v < 0:
        raise PydanticCustomError("padding", "expected a non-negative integer")
    return v


def _padding(v: Any) -> str | int | tuple[int, int, int, int] | Ref:
    msg = "expected 'same', 'valid', an integer, [top, bottom, left, right] or [[top, bottom], [left, right]]"
    if isinstance(v, str):
        if v in ("same", "valid"):
            return v
        if REF_RE.match(v):
            return Ref(v)
        raise PydanticCustomError("padding", msg)
    if _is_int(v):
        return _nonneg(v)
    if isinstance(v, list | tuple):
        try:
            if len(v) == 4:
                return tuple(_nonneg(x) for x in v)  # type: ignore[return-value]
            if len(v) == 2 and all(isinstance(x, list | tuple) and len(x) == 2 for x in v):
                (t, b), (left, r) = v
                return (_nonneg(t), _nonneg(b), _nonneg(left), _nonneg(r))
        except PydanticCustomError:
            pass
    raise PydanticCustomError("padding", msg)


def _rate(v: Any) -> float | Ref:
    if isinstance(v, str) and REF_RE.match(v):
        return Ref(v)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        raise PydanticCustomError("rate", "expected a rate from 0 up to (not including) 1")
    return float(v)


_REF_SCHEMA = {"type": "string", "pattern": REF_RE.pattern}
_POS_INT_SCHEMA = {"type": "integer", "minimum": 1}

PosIntRef = Annotated[
    int | str, PlainValidator(_pos_int_ref), WithJsonSchema({"anyOf": [_POS_INT_SCHEMA, _REF_SCHEMA]})
]
PairRef = Annotated[
    Any,
    PlainValidator(_pair_ref),
    WithJsonSchema(
        {
            "anyOf": [
                _POS_INT_SCHEMA,
                _REF_SCHEMA,
                {"type": "array", "items": {"anyOf": [_POS_INT_SCHEMA, _REF_SCHEMA]}, "minItems": 2, "maxItems": 2},
            ]
        }
    ),
]
Size = Annotated[
    int | tuple[int, int],
    PlainValidator(_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {
                    "type": "array",
                    "prefixItems": [{"type": "integer", "exclusiveMinimum": 0}] * 2,
                    "minItems": 2,
                    "maxItems": 2,
                },
            ]
        }
    ),
]
_PADDING_VALUES: list[dict[str, Any]] = [
    {"enum": ["same", "valid"]},
    {"type": "integer", "minimum": 0},
    {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4},
    {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2},
        "minItems": 2,
        "maxItems": 2,
    },
]
_PADDING_DOC = "'same' is TensorFlow's SAME (extra pixel at the bottom/right); lists are explicit per side."
PaddingValue = Annotated[
    Any,
    PlainValidator(_padding_value),
    WithJsonSchema({"anyOf": _PADDING_VALUES, "description": _PADDING_DOC}),
]
Padding = Annotated[
    Any,
    PlainValidator(_padding),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": ["same", "valid"]},
                {"type": "integer", "minimum": 0},
                {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4},
                {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                    "minItems": 2,
                    "maxItems": 2,
                },
                _REF_SCHEMA,
            ],
            "description": "'same' is TensorFlow's SAME (extra pixel at the bottom/right); "
            "lists are explicit per side.",
        }
    ),
]
Rate = Annotated[
    Any,
    PlainValidator(_rate),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 1}, _REF_SCHEMA]}),
]
Identifier = Annotated[
    str, PlainValidator(_identifier), WithJsonSchema({"type": "string", "pattern": IDENT_RE.pattern})
]
NameTemplate = Annotated[
    str, PlainValidator(_name_template), WithJsonSchema({"type": "string", "pattern": NAME_TEMPLATE_RE.pattern})
]
PositiveInt = Annotated[int, Field(gt=0)]
ActivationKind = Literal["relu", "relu6", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "swish"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LayerBase(Model):
    """Fields every layer accepts."""

    name: NameTemplate | None = Field(None, description="Layer name; '{index}' is the block instance number (1-based).")
    inputs: list[NameTemplate] | None = Field(
        None, description="Names of earlier layers this one reads (default: the previous layer)."
    )
    repeat: PositiveInt = Field(1, description="Repeat this layer N times in sequence.")


class ConvLayer(LayerBase):
    """A full convolution (``groups`` > 1 for a grouped one). ``filters`` is scaled by the width multiplier."""

    op: Literal["conv"]
    filters: PosIntRef
    kernel: PairRef
    stride: PairRef = 1
    padding: Padding | None = Field(None, description="Default: defaults.padding.")
    dilation: PairRef = 1
    groups: PosIntRef = 1
    bias: bool | None = Field(None, description="Default: defaults.bias.")
    scale_width: bool = Field(True, description="Apply the width multiplier and rounding rule to filters.")


class DepthwiseConvLayer(LayerBase):
    """One kernel per input channel (times ``multiplier``): the filtering half of a separable conv."""

    op: Literal["depthwise_conv"]
    kernel: PairRef
    stride: PairRef = 1
    padding: Padding | None = None
    dilation: PairRef = 1
    multiplier: PosIntRef = 1
    bias: bool | None = None


class BatchNormLayer(LayerBase):
    """BatchNorm over channels. Unset fields come from defaults.batchnorm."""

    op: Literal["batchnorm"]
    epsilon: Annotated[float, Field(gt=0)] | None = None
    decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    variance_update: Literal["biased", "unbiased"] | None = None


class ActivationLayer(LayerBase):
    op: Literal["activation"]
    kind: ActivationKind | None = Field(None, description="Default: defaults.activation.")


class ZeroPadLayer(LayerBase):
    op: Literal["zero_pad"]
    padding: Padding


class PoolLayer(LayerBase):
    """Windowed pooling without padding (frameworks disagree on what a padded average means)."""

    op: Literal["avg_pool", "max_pool"]
    pool: PairRef
    stride: PairRef | None = Field(None, description="Default: the pool size (as Keras).")


class GlobalPoolLayer(LayerBase):
    op: Literal["global_avg_pool", "global_max_pool"]
    keepdims: bool = False


class FlattenLayer(LayerBase):
    op: Literal["flatten"]


class DenseLayer(LayerBase):
    """Fully connected layer; needs a flat input (after global pooling or flatten)."""

    op: Literal["dense"]
    units: PosIntRef
    bias: bool = True
    scale_width: bool = Field(
        False, description="Apply the width multiplier to units (off: classifiers keep their size)."
    )


class DropoutLayer(LayerBase):
    op: Literal["dropout"]
    rate: Rate


class SoftmaxLayer(LayerBase):
    op: Literal["softmax"]


class AddLayer(LayerBase):
    op: Literal["add"]


class MultiplyLayer(LayerBase):
    op: Literal["multiply"]


class BlockCall(Model):
    """Use of a block defined under ``blocks:``; other keys are the block's arguments."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    block: Identifier
    name: NameTemplate | None = None
    inputs: list[NameTemplate] | None = None
    repeat: PositiveInt = 1


OP_LAYERS: dict[str, type[LayerBase]] = {
    "conv": ConvLayer,
    "depthwise_conv": DepthwiseConvLayer,
    "batchnorm": BatchNormLayer,
    "activation": ActivationLayer,
    "zero_pad": ZeroPadLayer,
    "avg_pool": PoolLayer,
    "max_pool": PoolLayer,
    "global_avg_pool": GlobalPoolLayer,
    "global_max_pool": GlobalPoolLayer,
    "flatten": FlattenLayer,
    "dense": DenseLayer,
    "dropout": DropoutLayer,
    "softmax": SoftmaxLayer,
    "add": AddLayer,
    "multiply": MultiplyLayer,
}
"""The spec ops a user can write, by their ``op:`` tag."""


def layer_tag(v: Any) -> str | None:
    """Discriminator: the ``op`` value, or ``"block"`` for a block call."""
    if isinstance(v, dict):
        if "op" in v:
            return v["op"] if isinstance(v["op"], str) else None
        if "block" in v:
            return "block"
        return None
    if isinstance(v, BaseModel):
        return getattr(v, "op", None) or ("block" if isinstance(v, BlockCall) else None)
    return None


def _union(include_block: bool) -> Any:
    members = [Annotated[model, Tag(tag)] for tag, model in OP_LAYERS.items()]
    if include_block:
        members.append(Annotated[BlockCall, Tag("block")])
    from typing import Union

    return Annotated[Union[tuple(members)], Discriminator(layer_tag)]  # noqa: UP007


OpLayer = _union(include_block=False)
Layer = _union(include_block=True)


class InputSpec(Model):
    size: Size = Field(description="Input height and width at resolution multiplier 1 (one number for square).")
    channels: PositiveInt = 3
    name: Identifier = "input"


class Rounding(Model):
    """How alpha * channels becomes an integer: Keras' MobileNet truncates, V2/V3 and timm make_divisible(8)."""

    mode: Literal["truncate", "make_divisible"] = "truncate"
    divisor: PositiveInt = 8
    min: PositiveInt | None = Field(
        None, description="Smallest width (default: 1 for truncate, divisor for make_divisible)."
    )


class BatchNormDefaults(Model):
    epsilon: Annotated[float, Field(gt=0)] = 1e-3
    decay: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.99, description="Moving-average decay: Keras momentum; torch momentum is 1 - decay."
    )
    variance_update: Literal["biased", "unbiased"] = Field(
        "biased", description="Batch variance used to update the moving variance (Keras: biased, torch: unbiased)."
    )


class Defaults(Model):
    padding: PaddingValue = "same"
    bias: bool = False
    activation: ActivationKind = "relu"
    batchnorm: BatchNormDefaults = BatchNormDefaults()


class BlockDef(Model):
    """A reusable group of layers with named parameters (``null`` default = required)."""

    doc: str = ""
    params: dict[Identifier, int | float | str | bool | None] = Field(default_factory=dict)
    layers: list[OpLayer] = Field(min_length=1)  # type: ignore[valid-type]


class Spec(Model):
    """An archc architecture spec (version 1)."""

    archc: Literal[1] = Field(1, description="Spec language version.")
    name: Identifier
    description: str = ""
    input: InputSpec
    classes: PositiveInt | None = Field(None, description="Number of classes; '$classes' in layers refers to it.")
    width: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="Width multiplier alpha.")
    resolution: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="Resolution multiplier rho.")
    rounding: Rounding = Rounding()
    defaults: Defaults = Defaults()
    blocks: dict[Identifier, BlockDef] = Field(default_factory=dict)
    layers: list[Layer] = Field(min_length=1)  # type: ignore[valid-type]
    output: NameTemplate | None = Field(None, description="Output layer (default: the last).")


ALL_FIELD_NAMES: frozenset[str] = frozenset(
    name
    for model in (*OP_LAYERS.values(), BlockCall, InputSpec, Rounding, BatchNormDefaults, Defaults, BlockDef, Spec)
    for name in model.model_fields
)
"""For did-you-mean suggestions on unknown keys."""


def json_schema() -> dict[str, Any]:
    """The spec language's JSON Schema, for editors (yaml-language-server) and docs."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archc spec"
    return schema
