"""The spec language: pydantic models of what users write in YAML.

The models are strict (``extra="forbid"``, no string-to-number coercion) so that a typo is an
error with a location instead of a silently ignored key. Layers form a discriminated union on
``op``; a layer with ``block:`` instead calls a reusable block defined under ``blocks:``. Each
op's own model lives with its op definition (:mod:`archcompiler.ops`); this module assembles
them with the top-level fields.

Fields may hold expressions (:mod:`.expr`) over block parameters, the spec's ``params:``,
``$width``, ``$depth``, ``$classes``, ``$index`` and the layer's input shape (``$in``,
``$in_h``, ``$in_w``); ``variants:`` name sets of those values (:mod:`.variants` applies one
before lowering); inside a block any
field may, and a block's layers may call other blocks. Expansion (:mod:`.expand`) fills them in
and validates the result again, so a bad argument is reported at the call that passed it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PlainValidator, Tag, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from archcompiler.language.fields import (
    IDENT_RE,
    REF_RE,
    Condition,
    Epsilon,
    Identifier,
    LayerBase,
    Model,
    NameTemplate,
    PaddingValue,
    PositiveInt,
    Ref,
    Repeat,
    Size,
    _identifier,
    as_expr,
    template_model,
)
from archcompiler.ops import SPEC_OPS, ActivationKind
from archcompiler.text import listing

__all__ = ["OP_LAYERS", "REF_RE", "BlockCall", "LayerBase", "Ref", "Spec", "Variant", "json_schema", "layer_tag"]


class BlockCall(Model):
    """Use of a block defined under ``blocks:``; other keys are the block's arguments."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    block: Identifier
    name: NameTemplate | None = Field(None, description="Prefix of the names of the block's unnamed layers.")
    inputs: list[NameTemplate] | None = None
    repeat: Repeat = Field(1, description="Instances in sequence (an expression may give 0).")
    when: Condition | None = Field(
        None, description="The block is used only where this holds (parameters, $width, $classes; not $in)."
    )
    starts_stage: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="In the layer table: this row starts stage N of the block instances (checkpoint names read"
        " {stage} and {position}); rows after it continue the stage.",
    )


OP_LAYERS: dict[str, type[LayerBase]] = SPEC_OPS
"""The spec ops a user can write, by their ``op:`` tag (from the op registry)."""


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


def _union(include_block: bool, in_block: bool = False) -> Any:
    members = [Annotated[template_model(model) if in_block else model, Tag(tag)] for tag, model in OP_LAYERS.items()]
    if include_block:
        members.append(Annotated[BlockCall, Tag("block")])
    from typing import Union

    return Annotated[Union[tuple(members)], Discriminator(layer_tag)]  # noqa: UP007


Layer = _union(include_block=True)
BlockLayer = _union(include_block=True, in_block=True)

SHAPE_NAMES = frozenset({"in", "in_h", "in_w", "block_in"})
"""Names bound only in stage 2 of lowering (:mod:`.expand`): the channels, height and width of the
layer's (first) input, and the channels of the block instance's input (squeeze-excite's second
conv restores them)."""

RESERVED_NAMES = SHAPE_NAMES | {"width", "depth", "classes", "index"}
"""The built-in names expressions read: no block parameter may take one (it would be hidden or
would hide the built-in, depending on where it is read)."""


def _param_name(v: Any) -> str:
    if v in RESERVED_NAMES:  # first: 'in' is a Python keyword too, but that is not why
        raise PydanticCustomError(
            "reserved", "{detail}", {"detail": f"{v!r} is a built-in name (${v}), not a parameter name"}
        )
    return _identifier(v)


ParamName = Annotated[
    str,
    PlainValidator(_param_name),
    WithJsonSchema({"type": "string", "pattern": IDENT_RE.pattern, "not": {"enum": sorted(RESERVED_NAMES)}}),
]
"""A block parameter's name: an identifier that is not a built-in name (refused at the key)."""


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
    epsilon: Epsilon = 1e-3
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
    params: dict[ParamName, int | float | str | bool | None] = Field(
        default_factory=dict,
        description="Defaults may be expressions over earlier parameters, $index, $width and $classes;"
        " a string may use '{param}' like a name.",
    )
    layers: list[BlockLayer] = Field(min_length=1)  # type: ignore[valid-type]

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Any]) -> dict[str, Any]:
        for value in params.values():
            as_expr(value)  # a syntax error is reported now, with its column
        return params

    def __repr__(self) -> str:
        # Short on purpose: pydantic's repr printed every layer of the block.
        return f"<BlockDef ({listing(list(self.params))}): {len(self.layers)} layers>"


PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
"""A ``{name}`` in a checkpoint name pattern or template."""

CHECKPOINT_BUILTINS = ("stage", "position")
"""What every checkpoint name template may read besides its pattern's captures: the stage of the
layer's block instance (the layer table's ``starts_stage:``) and the instance's place in that stage."""


def _placeholders(text: str, what: str) -> list[str]:
    names = PLACEHOLDER_RE.findall(text)
    for n in names:
        if not IDENT_RE.fullmatch(n):
            raise ValueError(f"{what} {text!r}: {{{n}}} is not a name")
    if PLACEHOLDER_RE.sub("", text).count("{") or PLACEHOLDER_RE.sub("", text).count("}"):
        raise ValueError(f"{what} {text!r}: unbalanced braces")
    return names


def _check_rules(rules: dict[str, str]) -> dict[str, str]:
    """Each pattern's captures are distinct and not built-in; each template reads only them and
    :data:`CHECKPOINT_BUILTINS`."""
    for pattern, template in rules.items():
        captures = _placeholders(pattern, "pattern")
        if len(set(captures)) != len(captures):
            raise ValueError(f"pattern {pattern!r} captures a name twice")
        clash = sorted(set(captures) & set(CHECKPOINT_BUILTINS))
        if clash:
            raise ValueError(f"pattern {pattern!r}: {{{clash[0]}}} is built in (the block's stage or position)")
        unknown = [n for n in _placeholders(template, "template") if n not in (*captures, *CHECKPOINT_BUILTINS)]
        if unknown:
            raise ValueError(
                f"template {template!r} reads {{{unknown[0]}}}, which pattern {pattern!r} does not capture"
                f" (built in: {', '.join(CHECKPOINT_BUILTINS)})"
            )
    return rules


class Checkpoint(Model):
    """How another implementation's checkpoint names archc's tensors (timm's state_dict): data
    that archcompiler.checkpoints reads to load such a file by its own names (docs/spec.md)."""

    layers: dict[str, str] = Field(
        min_length=1,
        description="archc tensor or layer name pattern -> the checkpoint's name; '{x}' captures letters and"
        " digits, templates read the captures, {stage} and {position}; the first pattern that matches wins.",
    )
    stage_layers: dict[Annotated[int, Field(ge=0, strict=False)], dict[str, str]] = Field(
        default_factory=dict, description="Patterns for the layers of one stage only, tried before 'layers'."
    )
    params: dict[str, str] = Field(
        default_factory=dict, description="archc parameter -> the checkpoint's (kernel: weight), for layer patterns."
    )
    ignore: list[str] = Field(
        default_factory=list, description="Last name parts of the checkpoint's tensors to skip (num_batches_tracked)."
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, rules: dict[str, str]) -> dict[str, str]:
        return _check_rules(rules)

    @field_validator("stage_layers")
    @classmethod
    def _stage_layers(cls, stages: dict[int, dict[str, str]]) -> dict[int, dict[str, str]]:
        for rules in stages.values():
            _check_rules(rules)
        return stages


ParamValue = int | float | str | bool
"""A spec-level named value (``params:``): a literal that expressions read as ``$name``."""

Multiplier = Annotated[float, Field(gt=0, le=4)]
DepthMultiplier = Annotated[float, Field(gt=0, le=8)]


class Variant(Model):
    """One named variant of a family (EfficientNet's b0..b7): the values it sets, as data.

    Anything left out keeps the spec's top-level value; explicit ``width``/``depth``/
    ``resolution`` arguments (``--width`` ...) override the variant's."""

    description: str = ""
    width: Multiplier | None = Field(None, description="Width multiplier alpha of this variant.")
    depth: DepthMultiplier | None = Field(None, description="Depth multiplier of this variant (round_repeats).")
    resolution: Multiplier | None = Field(None, description="Resolution multiplier rho of this variant.")
    size: Size | None = Field(None, description="Input size in pixels of this variant (replaces input.size).")
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict, description="Values of the spec's params: for this variant (each must exist there)."
    )
    layers: list[Layer] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="A layer table replacing the top-level one (sharing blocks:)."
    )

    def __repr__(self) -> str:
        # Short on purpose, as Spec's.
        table = f", {len(self.layers)} layers" if self.layers else ""
        return f"<Variant width {self.width}, depth {self.depth}, size {self.size}{table}>"


class Spec(Model):
    """An archc architecture spec (version 1)."""

    archc: Literal[1] = Field(1, description="Spec language version.")
    name: Identifier
    description: str = ""
    input: InputSpec
    classes: PositiveInt | None = Field(None, description="Number of classes; '$classes' in layers refers to it.")
    width: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="Width multiplier alpha.")
    resolution: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="Resolution multiplier rho.")
    depth: DepthMultiplier = Field(1.0, description="Depth multiplier: '$depth', and round_repeats(n) scales repeats.")
    depth_rounding: Literal["ceil", "round", "floor"] = Field(
        "ceil",
        description="How round_repeats(n) rounds depth * n: ceil (EfficientNet), round (Python's) or floor;"
        " at least 1 for n >= 1.",
    )
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict, description="Named values every expression reads as '$name' (a variant may override)."
    )
    variants: dict[Identifier, Variant] = Field(
        default_factory=dict, description="Named variants (--variant NAME): width, depth, resolution, size, params."
    )
    variant: Identifier | None = Field(None, description="The variant used when none is asked for.")
    rounding: Rounding = Rounding()
    defaults: Defaults = Defaults()
    blocks: dict[Identifier, BlockDef] = Field(default_factory=dict)
    layers: list[Layer] = Field(min_length=1)  # type: ignore[valid-type]
    output: NameTemplate | None = Field(None, description="Output layer (default: the last).")
    checkpoints: dict[Identifier, Checkpoint] = Field(
        default_factory=dict,
        description="Checkpoint formats whose files load by their own tensor names (timm: a state_dict).",
    )

    def __repr__(self) -> str:
        # Short on purpose: pydantic's repr printed every layer and block (3,090 characters for MobileNet).
        blocks = f", blocks {listing(list(self.blocks))}" if self.blocks else ""
        return f"<Spec {self.name}: {len(self.layers)} layers{blocks}>"


ALL_FIELD_NAMES: frozenset[str] = frozenset(
    name
    for model in (
        *OP_LAYERS.values(),
        BlockCall,
        InputSpec,
        Rounding,
        BatchNormDefaults,
        Defaults,
        BlockDef,
        Variant,
        Checkpoint,
        Spec,
    )
    for name in model.model_fields
)
"""For did-you-mean suggestions on unknown keys."""


def json_schema() -> dict[str, Any]:
    """The spec language's JSON Schema, for editors (yaml-language-server) and docs."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archc spec"
    return schema
