"""Field types shared by every part of the spec language (the op layers and the top level).

The models are strict (``extra="forbid"``, no string-to-number coercion) so that a typo is an
error with a location instead of a silently ignored key. Numeric fields may hold an expression
(:mod:`.expr`: a string starting with ``=`` or containing ``$``), parsed here so that a syntax
error is reported at load time with its column; it is evaluated when the layer is expanded
(block parameters, ``$width``, ``$classes``) or, when it reads the input shape (``$in``), while
inferring shapes. Inside a block any field may hold one (see :func:`template_model`).
"""

from __future__ import annotations

import copy
import keyword
import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
)
from pydantic_core import PydanticCustomError

from archcompiler.language.expr import Expr, ExprError, is_expression
from archcompiler.language.limits import EPSILON_RANGE, MAX_FIELD, MAX_SIZE

# Always used with fullmatch: ``match`` with a final ``$`` also accepts a trailing newline
# ('notes\n' became a file name). The anchors stay for the JSON Schema, where ``$`` is the end.
REF_RE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLACEHOLDER = r"\{[A-Za-z_][A-Za-z0-9_]*\}"
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME_TEMPLATE_RE = re.compile(rf"^(?:[A-Za-z_]|{PLACEHOLDER})(?:[A-Za-z0-9_]|{PLACEHOLDER})*$")
MAX_NAME = 64
EXPR_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^=|\$",
    "description": "An expression: '=' first or a '$name' in it, e.g. '$in * $expansion' (docs/spec.md).",
}

Ref = Expr
"""A ``$param`` reference is the simplest expression (kept for older imports)."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    "filters": ("units",),  # Keras Conv2D(filters=...) on a dense layer
    "units": ("filters",),  # Keras Dense(units=...) on a conv
    "out_channels": ("filters", "units"),  # torch Conv2d
    "out_features": ("units",),  # torch Linear
    "features": ("units",),  # flax Dense
    "kernel_size": ("kernel", "pool"),
    "pool_size": ("pool",),
    "strides": ("stride",),
    "dilation_rate": ("dilation",),
    "depth_multiplier": ("multiplier",),
    "use_bias": ("bias",),
    "momentum": ("decay",),
    "eps": ("epsilon",),
    "p": ("rate",),  # torch Dropout(p)
    "activation": ("kind",),
    "keepdim": ("keepdims",),
}
"""Argument names from Keras and torch -> the fields that mean the same here, in order: an
unknown key suggests the first one the layer has (``filters`` on a dense layer: ``units``)."""

SYNONYM_NOTES: dict[str, str] = {"momentum": "Keras momentum = decay, torch momentum = 1 - decay"}
"""What to know besides the name, shown with the suggestion."""

NO_FIELD_NOTES: dict[str, str] = {
    "activation": "an activation is a layer of its own here: {op: activation, kind: ...} after this one"
}
"""What to write instead of a framework's argument that this layer has no field for."""

INFERRED = frozenset({"in_channels", "in_features", "num_features", "input_shape", "input_dim"})
"""Framework arguments archc infers from the layer's input (never written in a spec)."""

VALUE_SYNONYMS: dict[str, str] = {"silu": "swish"}
"""Values from other frameworks that archc names otherwise (compared lower case, without '_')."""


def _folded(word: str) -> str:
    """'kernelSize', 'kernel_size', 'KERNEL-SIZE' -> 'kernelsize': a key as other frameworks spell it."""
    return re.sub(r"[_\-\s]", "", word).lower()


def key_hint(key: str, valid: Iterable[str]) -> str:
    """What an unknown ``key`` most likely means among the ``valid`` keys of its mapping:
    ``" (did you mean 'units'?)"`` from :data:`SYNONYMS` or a different spelling of a valid
    key, a note for a key archc infers, or "" (then a close spelling may still be suggested)."""
    valid = list(valid)
    by_folded = {_folded(v): v for v in valid}
    folded = _folded(key)
    synonyms = next((t for k, t in SYNONYMS.items() if _folded(k) == folded), ())
    target = next((t for t in synonyms if t in valid), None) or by_folded.get(folded)
    if target is not None and target != key:
        note = next((n for k, n in SYNONYM_NOTES.items() if _folded(k) == folded), "")
        return f" (did you mean {target!r}?{' ' + note if note else ''})"
    if folded in {_folded(k) for k in INFERRED}:
        return " (archc infers it from the layer's input: remove it)"
    note = next((n for k, n in NO_FIELD_NOTES.items() if _folded(k) == folded), "")
    return f" ({note})" if note else ""


def value_hint(value: Any, choices: Iterable[str]) -> str:
    """``" (did you mean 'relu'?)"`` for a choice written as other frameworks write it
    (``ReLU``, ``SAME``, ``hardswish``, ``SiLU``), else ""."""
    if not isinstance(value, str):
        return ""
    folded = _folded(value)
    by_folded = {_folded(c): c for c in choices}
    target = by_folded.get(folded) or by_folded.get(_folded(VALUE_SYNONYMS.get(folded, "")))
    return f" (did you mean {target!r}?)" if target is not None and target != value else ""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_expr(v: Any) -> Expr | None:
    """The parsed expression when ``v`` is expression text, else None; a syntax error is a
    validation error whose message names the column."""
    if isinstance(v, Expr):
        return v
    if not is_expression(v):
        return None
    try:
        return Expr(v)
    except ExprError as exc:
        raise PydanticCustomError("expression", "{detail}", {"detail": exc.describe(v)}) from None


def _check_ident(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise PydanticCustomError("identifier", f"expected {what} (a string)")
    if not IDENT_RE.fullmatch(v) or len(v) > MAX_NAME:
        raise PydanticCustomError(
            "identifier",
            f"expected {what}: ASCII letters, digits and '_', not starting with a digit, at most {MAX_NAME} characters",
        )
    if keyword.iskeyword(v) or v.startswith("__"):
        raise PydanticCustomError("identifier", f"expected {what}, not a Python keyword or dunder name")
    return v


def _identifier(v: Any) -> str:
    return _check_ident(v, "an identifier")


def _check_name_template(v: Any) -> str:
    if not isinstance(v, str):
        raise PydanticCustomError("name", "expected a layer name (a string)")
    if not NAME_TEMPLATE_RE.fullmatch(v) or len(v) > MAX_NAME:
        raise PydanticCustomError(
            "name",
            "expected a layer name: ASCII letters, digits and '_' (and '{index}', the block instance"
            " number, or '{param}', a block parameter), not starting with a digit",
        )
    probe = PLACEHOLDER_RE.sub("x1", v)
    if v.startswith("{index}"):
        # '{index}' first makes a name such as '1x', which no backend can name a layer.
        raise PydanticCustomError("name", "expected a layer name that starts with a letter or '_', not '{index}'")
    if keyword.iskeyword(probe) or probe.startswith("__"):
        raise PydanticCustomError("name", "expected a layer name, not a Python keyword or dunder name")
    return v


def _pos_int_ref(v: Any) -> int | Ref:
    if is_int(v):
        if v <= 0:
            raise PydanticCustomError("positive_int", "expected a positive integer")
        if v > MAX_FIELD:
            raise PydanticCustomError("positive_int", f"expected a positive integer up to {MAX_FIELD:,}")
        return v
    ref = as_expr(v)
    if ref is not None:
        return ref
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
    if is_int(v) and 0 < v <= MAX_SIZE:
        return v
    if isinstance(v, list | tuple) and len(v) == 2 and all(is_int(x) and 0 < x <= MAX_SIZE for x in v):
        return (v[0], v[1])
    raise PydanticCustomError(
        "size", f"expected a size from 1 to {MAX_SIZE} pixels, or a pair [height, width] of such sizes"
    )


def _nonneg(v: Any) -> int | Expr:
    expr = as_expr(v)
    if expr is not None:
        return expr
    if not is_int(v) or v < 0:
        raise PydanticCustomError("padding", "expected a non-negative integer")
    return v


def _padding(v: Any) -> str | int | tuple[int, int, int, int] | Ref:
    msg = "expected 'same', 'valid', an integer, [top, bottom, left, right] or [[top, bottom], [left, right]]"
    if isinstance(v, str):
        if v in ("same", "valid"):
            return v
        ref = as_expr(v)
        if ref is not None:
            return ref
        raise PydanticCustomError("padding", msg + value_hint(v, ("same", "valid")))
    if is_int(v):
        return _nonneg(v)
    if isinstance(v, list | tuple):
        try:
            if len(v) == 4:
                return tuple(_nonneg(x) for x in v)  # type: ignore[return-value]
            if len(v) == 2 and all(isinstance(x, list | tuple) and len(x) == 2 for x in v):
                (t, b), (left, r) = v
                return (_nonneg(t), _nonneg(b), _nonneg(left), _nonneg(r))
        except PydanticCustomError as exc:
            if exc.type == "expression":  # an expression's own error says where in it
                raise
    raise PydanticCustomError("padding", msg)


def _padding_value(v: Any) -> str | int | tuple[int, int, int, int]:
    """Padding in ``defaults``, where an expression has nothing to refer to."""
    if is_expression(v) or (isinstance(v, list | tuple) and any(is_expression(x) for x in _flat(v))):
        raise PydanticCustomError("padding", "expected a padding value; expressions only work in layers")
    return _padding(v)  # type: ignore[no-any-return]


def _flat(v: Any) -> list[Any]:
    out: list[Any] = []
    for x in v:
        out.extend(_flat(x) if isinstance(x, list | tuple) else [x])
    return out


def _rate(v: Any) -> float | Ref:
    ref = as_expr(v)
    if ref is not None:
        return ref
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        raise PydanticCustomError("rate", "expected a rate from 0 up to (not including) 1")
    return float(v)


FLOAT32_MAX = 3.4028234663852886e38
"""Models compute in float32: a larger constant (rescaling's 1e308) is inf there, and keras refuses it."""


def _finite(v: Any) -> float | Ref:
    ref = as_expr(v)
    if ref is not None:
        return ref
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (math.inf, -math.inf):
        raise PydanticCustomError("number", "expected a finite number")
    if abs(v) > FLOAT32_MAX:  # before float(): an int beyond float64 cannot be converted
        raise PydanticCustomError("number", "expected a number within float32 range (magnitude at most 3.4e38)")
    return float(v)


REF_SCHEMA: dict[str, Any] = EXPR_SCHEMA
_POS_INT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_FIELD}
_AMOUNT = {"anyOf": [{"type": "integer", "minimum": 0}, EXPR_SCHEMA]}
_PADDING_VALUES: list[dict[str, Any]] = [
    {"enum": ["same", "valid"]},
    {"type": "integer", "minimum": 0},
    {"type": "array", "items": _AMOUNT, "minItems": 4, "maxItems": 4},
    {
        "type": "array",
        "items": {"type": "array", "items": _AMOUNT, "minItems": 2, "maxItems": 2},
        "minItems": 2,
        "maxItems": 2,
    },
]
_PADDING_DOC = "'same' is TensorFlow's SAME (extra pixel at the bottom/right); lists are explicit per side."

PosIntRef = Annotated[int | str, PlainValidator(_pos_int_ref), WithJsonSchema({"anyOf": [_POS_INT_SCHEMA, REF_SCHEMA]})]
PairRef = Annotated[
    Any,
    PlainValidator(_pair_ref),
    WithJsonSchema(
        {
            "anyOf": [
                _POS_INT_SCHEMA,
                REF_SCHEMA,
                {"type": "array", "items": {"anyOf": [_POS_INT_SCHEMA, REF_SCHEMA]}, "minItems": 2, "maxItems": 2},
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
                {"type": "integer", "minimum": 1, "maximum": MAX_SIZE},
                {
                    "type": "array",
                    "prefixItems": [{"type": "integer", "minimum": 1, "maximum": MAX_SIZE}] * 2,
                    "minItems": 2,
                    "maxItems": 2,
                },
            ]
        }
    ),
]
PaddingValue = Annotated[
    Any, PlainValidator(_padding_value), WithJsonSchema({"anyOf": _PADDING_VALUES, "description": _PADDING_DOC})
]
Padding = Annotated[
    Any,
    PlainValidator(_padding),
    WithJsonSchema({"anyOf": [*_PADDING_VALUES, REF_SCHEMA], "description": _PADDING_DOC}),
]
Rate = Annotated[
    Any,
    PlainValidator(_rate),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 1}, REF_SCHEMA]}),
]
FiniteRef = Annotated[Any, PlainValidator(_finite), WithJsonSchema({"anyOf": [{"type": "number"}, REF_SCHEMA]})]
Identifier = Annotated[
    str, PlainValidator(_identifier), WithJsonSchema({"type": "string", "pattern": IDENT_RE.pattern})
]
NameTemplate = Annotated[
    str, PlainValidator(_check_name_template), WithJsonSchema({"type": "string", "pattern": NAME_TEMPLATE_RE.pattern})
]
PositiveInt = Annotated[int, Field(gt=0)]
Epsilon = Annotated[float, Field(ge=EPSILON_RANGE[0], le=EPSILON_RANGE[1])]
"""BatchNorm epsilon (limits.EPSILON_RANGE: .inf, 1e300 and 1e-320 are refused)."""


def _expression(v: Any) -> Expr:
    expr = as_expr(v)
    if expr is None:
        raise PydanticCustomError("expression", "expected an expression (a string starting with '=' or using '$')")
    return expr


def _condition(v: Any) -> bool | Expr:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and not is_expression(v):
        v = "=" + v  # 'when:' holds an expression whatever its first character
    return _expression(v)


def _repeat(v: Any) -> int | Expr:
    expr = as_expr(v)
    if expr is not None:
        return expr
    if not is_int(v) or v <= 0:
        raise PydanticCustomError("positive_int", "expected a positive integer (or an expression)")
    return v


Condition = Annotated[
    Any,
    PlainValidator(_condition),
    WithJsonSchema(
        {
            "anyOf": [{"type": "boolean"}, {"type": "string"}],
            "description": "Condition: the layer exists only where it holds, e.g. '$stride == 1 and $in == $out'.",
        }
    ),
]
Repeat = Annotated[
    Any, PlainValidator(_repeat), WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, EXPR_SCHEMA]})
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LayerBase(Model):
    """Fields every layer accepts."""

    name: NameTemplate | None = Field(
        None,
        description="Layer name; '{index}' is the block instance number (1-based), '{param}' a block parameter.",
    )
    inputs: list[NameTemplate] | None = Field(
        None, description="Names of earlier layers this one reads (default: the previous layer)."
    )
    repeat: Repeat = Field(1, description="Repeat this layer N times in sequence (an expression may give 0).")
    when: Condition | None = Field(
        None,
        description="The layer exists only where this holds; elsewhere the next layer, and any that names it,"
        " reads what it would have read.",
    )


def _expression_or(v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    expr = as_expr(v)
    return expr if expr is not None else handler(v)


def _schema_with_expression(schema: dict[str, Any]) -> None:
    """JSON Schema of a block-body field: what the op accepts, or an expression."""
    inner = {k: v for k, v in schema.items() if k not in ("title", "description", "default")}
    for k in inner:
        del schema[k]
    schema["anyOf"] = [inner, EXPR_SCHEMA]


_TEMPLATES: dict[type[LayerBase], type[LayerBase]] = {}
_NOT_TEMPLATED = frozenset({"op", "when", "repeat"})


def template_model(model: type[LayerBase]) -> type[LayerBase]:
    """The model of ``model`` as written inside a block: any field may hold an expression
    (``kind: $act``, ``bias: $bias``), checked for syntax now and for type once the block's
    arguments fill it in (expansion validates with ``model`` itself)."""
    if model in _TEMPLATES:
        return _TEMPLATES[model]
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in _NOT_TEMPLATED:
            continue
        new = copy.copy(info)
        new.json_schema_extra = _schema_with_expression  # type: ignore[assignment]
        fields[name] = (Annotated[info.annotation, WrapValidator(_expression_or)], new)  # type: ignore[name-defined]
    template = create_model(  # type: ignore[call-overload]
        model.__name__ + "InBlock", __base__=model, __doc__=model.__doc__, **fields
    )
    _TEMPLATES[model] = template
    return template  # type: ignore[no-any-return]
