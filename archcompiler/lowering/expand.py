"""Lowering, stage 1: a validated spec -> a flat list of concrete layers.

Block calls (blocks may call blocks), repeats and ``when:`` guards are unrolled, expressions
evaluated over block parameters, ``$width``, ``$classes`` and ``$index``, names templated
(``{index}``, ``{param}``) and checked for duplicates; each layer is validated again as a concrete
op layer, so a bad argument is reported at the call that passed it. Nothing here knows shapes:
a field or guard that reads the input shape (``$in``, ``$in_h``, ``$in_w``, ``$block_in``) stays a
:class:`Deferred` expression with its parameters bound, which stage 2 (:mod:`.infer`) evaluates
through :meth:`Entry.resolve`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from archcompiler.ir.graph import Span
from archcompiler.language.expr import Expr, ExprError
from archcompiler.language.fields import PLACEHOLDER_RE, LayerBase, _check_ident, as_expr
from archcompiler.language.limits import MAX_ITERATIONS, MAX_LAYERS
from archcompiler.language.loading import LoadedSpec, _message
from archcompiler.language.source import Source, SpecError, did_you_mean, format_path, short_repr
from archcompiler.language.spec import OP_LAYERS, SHAPE_NAMES, BlockCall, BlockDef
from archcompiler.ops import LowerContext, make_divisible
from archcompiler.ops.base import fast_init

BLOCK_INPUT = "_input"
"""Inside a block, ``inputs: [_input]`` names the input of the block instance (for residuals)."""

MAX_BLOCK_DEPTH = 16
"""Longest chain of blocks calling blocks (a real network nests two or three deep)."""

SCALED_FIELDS = ("filters", "units")
"""Fields the width multiplier scales when a layer has ``scale_width: true`` (conv, dense)."""

_SPECIAL = frozenset({"op", "name", "inputs", "repeat", "when"})

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Deferred:
    """An expression that reads the input shape, with everything else it reads bound."""

    expr: Expr
    env: Mapping[str, Any]
    path: Path
    """Where it is written (for errors)."""


@fast_init
@dataclass(frozen=True)
class _Origin:
    """Where a filled-in field value came from, so a bad value is reported where it was written."""

    expr: Expr | None = None
    value: Any = None
    param: str | None = None
    """The block parameter when the field is exactly ``$param``."""
    param_path: Path | None = None


_NO_ORIGIN = _Origin()
"""The origin of a value written as it is (shared: most fields are)."""
_GOOD_NAMES: set[str] = set()
"""Layer names that passed _check_ident (a pure check; networks repeat their names per lowering)."""


@dataclass(slots=True)
class _Checker:
    """Validates a filled-in layer against its op model, mapping errors back to the spec text."""

    source: Source
    layer_path: Path
    call_path: Path
    context: str
    functions: Mapping[str, Callable[..., Any]]

    def err(self, path: Path, message: str) -> SpecError:
        return self.source.error(path, f"{message}{self.context}")

    def evaluate(self, d: Deferred, shape: tuple[int, ...], block_shape: tuple[int, ...] | None = None) -> Any:
        env = dict(d.env)
        env["in"] = shape[-1]
        if len(shape) == 3:
            env["in_h"], env["in_w"] = shape[0], shape[1]
        if block_shape is not None:
            env["block_in"] = block_shape[-1]
        try:
            d.expr.check_names(env)
            return d.expr.evaluate(env, self.functions)
        except ExprError as exc:
            raise self.err(d.path, exc.describe(d.expr)) from None

    def validate(self, op: str, filled: dict[str, Any], origins: Mapping[str, _Origin]) -> LayerBase:
        model = OP_LAYERS[op]
        try:
            layer = _validated(model, op, filled)
        except ValidationError as exc:
            e = dict(exc.errors(include_url=False)[0])
            name = str(e["loc"][0]) if e["loc"] else ""
            e["loc"] = (name,)
            o = origins.get(name)
            where = (*self.layer_path, name)
            if o is not None and o.param is not None:
                used = format_path(where)
                msg = f"{_message(e)} (from ${o.param}, used by {used})"
                raise self.err(o.param_path or self.call_path, msg) from None
            if o is not None and o.expr is not None:
                value = o.value
                if isinstance(value, float) and not value.is_integer() and "integer" in str(e.get("msg", "")):
                    msg = f"expected an integer: {o.expr!r} gives {value!r}, which is not whole"
                    raise self.err(where, msg) from None
                e.pop("input", None)
                raise self.err(where, f"{_message(e)}, got {short_repr(value)} from {o.expr!r}") from None
            raise self.err(where, _message(e)) from None
        if not layer.__dict__.get("scale_width", False):  # not getattr: pydantic's miss path is slow
            return layer
        for name in SCALED_FIELDS:
            o = origins.get(name)
            expr = o.expr if o is not None and o.param is None else None
            rounded = expr is not None and (
                bool(expr.names & {"in", "block_in"}) or expr.calls & {"round_channels", "make_divisible"}
            )
            if rounded:
                raise self.err(
                    (*self.layer_path, name),
                    f"{expr!r} is already a channel count after the width rule; add 'scale_width: false'"
                    " (else alpha is applied twice)",
                )
        return layer


_PLAIN = frozenset({int, str, bool, type(None)})
_VALIDATED: dict[tuple[Any, ...], LayerBase] = {}
_VALIDATED_MAX = 4096


def _plain_key(v: Any) -> Any:
    """A hashable key that tells apart values pydantic's strict mode tells apart (``1``,
    ``1.0``, ``True``, ``-0.0``), or None for anything else."""
    t = type(v)
    if t in _PLAIN:
        return (t, v)
    if t is float:
        return (t, repr(v))
    if t is tuple:
        parts = tuple(_plain_key(x) for x in v)
        return None if None in parts else (t, parts)
    return None


def _validated(model: type[LayerBase], op: str, filled: dict[str, Any]) -> LayerBase:
    """``model.model_validate({"op": op, **filled})``, memoised for plain values.

    A network repeats the same few layers (MobileNet's 84 layers are 12 distinct ones) and
    validation is a pure function of the model and the values, and the models are frozen, so
    one validated layer can serve every repetition, in this lowering and the next."""
    items = [(k, (t, v) if (t := type(v)) in _PLAIN else _plain_key(v)) for k, v in filled.items()]
    if any(key is None for _, key in items):
        return model.model_validate({"op": op, **filled})
    key = (model, op, tuple(items))
    layer = _VALIDATED.get(key)
    if layer is None:
        layer = model.model_validate({"op": op, **filled})
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED[key] = layer
    return layer


@dataclass(frozen=True)
class _Pending:
    """A layer whose fields or guard wait for the input shape."""

    op: str
    fields: Mapping[str, Any]
    origins: Mapping[str, _Origin]
    when: Deferred | None
    checker: _Checker


@fast_init
@dataclass(frozen=True)
class Entry:
    """One concrete layer: its final name, validated op layer, explicit inputs and origin."""

    name: str
    layer: LayerBase | None
    """None while a field or the guard reads the input shape (:meth:`resolve` gives it)."""
    inputs: tuple[str, ...] | None
    """None: what :attr:`follows` names, else the previous layer."""
    span: Span
    context: str = ""
    """Where inside a block it came from, e.g. " (in block 'separable' instance 3, ...)"."""
    follows: str | None = None
    """The layer this one reads by default (a block's first layer reads the block's input)."""
    pending: _Pending | None = None
    block_input: str | None = None
    """The input of the block instance this layer belongs to (``$block_in``)."""

    def error(self, message: str) -> SpecError:
        """A SpecError at the spec entry that made this layer."""
        s = self.span
        return SpecError(f"{self.name}: {message}{self.context}", file=s.file, line=s.line, col=s.col, path=s.path)

    def resolve(self, shape: tuple[int, ...], block_shape: tuple[int, ...] | None = None) -> LayerBase | None:
        """The op layer for a first input of ``shape`` (and a block input of ``block_shape``), or
        None when its ``when:`` is false."""
        p = self.pending
        if p is None:
            return self.layer
        if p.when is not None:
            holds = p.checker.evaluate(p.when, shape, block_shape)
            if not isinstance(holds, bool):
                raise p.checker.err(p.when.path, f"in {p.when.expr!r}: expected true or false, got {short_repr(holds)}")
            if not holds:
                return None
        if self.layer is not None:
            return self.layer
        filled = {k: _finish(v, lambda d: p.checker.evaluate(d, shape, block_shape)) for k, v in p.fields.items()}
        origins = {
            k: _Origin(o.expr, filled[k], o.param, o.param_path) if o.expr is not None else o
            for k, o in p.origins.items()
        }
        return p.checker.validate(p.op, filled, origins)


def whole(v: Any) -> Any:
    """An integral float result (``72 / 16 * 16``) as an int, so integer fields take it; float
    fields take ints too, and a fractional result stays a float for the field to refuse."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _finish(v: Any, evaluate: Callable[[Deferred], Any]) -> Any:
    if isinstance(v, Deferred):
        return whole(evaluate(v))
    if isinstance(v, tuple):
        return tuple(_finish(x, evaluate) for x in v)
    return v


def _has_deferred(v: Any) -> bool:
    return isinstance(v, Deferred) or (isinstance(v, tuple) and any(_has_deferred(x) for x in v))


@dataclass
class _Scope:
    """What names mean at one place of the spec: the top level or one block instance."""

    values: dict[str, Any]
    origin: dict[str, Path]
    """Block parameter -> where its value was written (the call's argument or the default)."""
    block: str | None = None
    number: int | None = None
    """The block instance number ('{index}'), None at the top level or in a block of calls only."""
    block_input: str | None = None
    call_path: Path = ()
    """The top-level layer this came from: the span of the entries it makes."""
    context: str = ""
    prefix: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    owner: str | None = None
    """The numbered block whose instance this scope is part of (Span.block)."""
    member: tuple[int, ...] = ()
    """Where this scope sits inside that block's definition (Span.member)."""
    names_env: dict[str, Any] | None = None
    """``values`` with the instance number as text, for name templates (made once per scope)."""
    span: Span | None = None
    """The span of ``call_path`` when it is the same for every layer made here (a block instance)."""


@dataclass(slots=True)
class _Plan:
    """An op layer of the spec as its expansions read it, made once per lowering."""

    layer: LayerBase
    """Kept alive, so that its id (the key) stays its own."""
    keys: list[tuple[str, Any, Path]]
    """Its fields: (name, value as written, path)."""
    name_path: Path
    inputs_path: Path
    plain: dict[str, Any] | None = None
    """The fields when every one is written as it is (no expression): then validating them gives
    the same layer every time, ``validated``."""
    origins: dict[str, _Origin] = field(default_factory=dict)
    validated: LayerBase | None = None
    refs: list[str | None] = field(default_factory=list)
    """Per field of ``keys``: the parameter it reads when written as exactly ``$param``."""
    layers: dict[tuple[Any, ...], LayerBase] = field(default_factory=dict)
    """The validated layer by the (type, value) of each field read from a parameter, when every
    field is written as it is or as a bare ``$param`` giving an int, str or bool."""


@dataclass
class _Expansion:
    loaded: LoadedSpec
    functions: Mapping[str, Callable[..., Any]]
    entries: list[Entry] = field(default_factory=list)
    seen: dict[str, Entry] = field(default_factory=dict)
    block_index: int = 0
    pending_input: str | None = None
    """A block input not yet read: the next layer made reads it (a guard may drop a block's first layers)."""
    op_counts: Counter[str] = field(default_factory=Counter)
    spans: dict[Path, Span] = field(default_factory=dict)
    reserved: dict[str, str] = field(default_factory=lambda: _reserved())
    input_name: str = ""
    """The spec's input layer's name (no layer may take it)."""
    plans: dict[int, _Plan] = field(default_factory=dict)
    """id(op layer) -> what expanding it needs each time (a block's layers are expanded once per
    instance)."""
    iterations: int = 0
    """Repeat iterations run so far (limits.MAX_ITERATIONS)."""
    fewest: dict[str, int] = field(default_factory=dict)
    """Block -> the fewest iterations one of its instances runs (:meth:`fewest_iterations`)."""

    def span(self, path: Path) -> Span:
        span = self.spans.get(path)
        if span is None:
            line, col = self.loaded.source.locate(path)
            span = self.spans[path] = Span(self.loaded.file, line or 1, col or 1, format_path(path))
        return span

    def err(self, path: Path, message: str, *, key: bool = False) -> SpecError:
        return self.loaded.source.error(path, message, key=key)

    def previous(self) -> str:
        if self.pending_input is not None:
            return self.pending_input
        return self.entries[-1].name if self.entries else self.loaded.spec.input.name

    def add(self, entry: Entry) -> None:
        name = entry.name
        if name in self.seen or name in self.reserved or name == self.input_name or name[:1] == "_":
            self._refuse(entry)
        if len(self.entries) >= MAX_LAYERS:
            self._refuse(entry)
        self.seen[name] = entry
        self.entries.append(entry)
        self.pending_input = None

    def _refuse(self, entry: Entry) -> None:
        """The error for a layer :meth:`add` cannot take (the first of its problems)."""
        reserved = self.reserved
        if entry.name.startswith("_") or entry.name in reserved:
            why = "names starting with '_' are kept for the frameworks' internals"
            if entry.name in reserved:
                why = f"the {reserved[entry.name]} backend's model already has an attribute of that name"
            raise entry.error(f"layer name {entry.name!r} is reserved ({why}); rename the layer")
        if len(self.entries) >= MAX_LAYERS:
            raise entry.error(f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat')")
        if entry.name in self.seen or entry.name == self.loaded.spec.input.name:
            first = self.seen.get(entry.name)
            where = f" (first at line {first.span.line})" if first else " (the input's name)"
            raise entry.error(f"duplicate layer name {entry.name!r}{where}")
        raise AssertionError(f"_refuse: nothing wrong with {entry.name!r}")  # pragma: no cover

    # --- the iteration limit ---------------------------------------------------------------

    def iterate(self, reps: int, body: int, layer: Any, path: Path, scope: _Scope, *, makes_layers: bool) -> None:
        """Count a loop of ``reps`` iterations, each of which runs at least ``body`` more (a
        block instance's layers), before it starts: refused when that would pass
        MAX_ITERATIONS, or when every iteration makes a layer and that would pass MAX_LAYERS."""
        where = (*path, "repeat") if "repeat" in layer.model_fields_set else path
        if makes_layers and len(self.entries) + reps > MAX_LAYERS:
            raise self.err(
                where, f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat'){scope.context}"
            )
        if self.iterations + reps * (1 + body) > MAX_ITERATIONS:
            raise self.err(
                where,
                f"the spec expands to more than {MAX_ITERATIONS:,} repeat iterations (of layers and blocks, those"
                f" 'when:' leaves out included; check 'repeat'){scope.context}",
            )
        self.iterations += reps

    def fewest_iterations(self, block: str) -> int:
        """The fewest iterations one instance of ``block`` runs: its layers' literal repeats, and
        its calls' (each instance one more) unless a ``when:`` may leave them out (an expression
        repeat may give 0). Capped just past the limit; blocks form no cycle (_check_calls)."""
        known = self.fewest.get(block)
        if known is not None:
            return known
        total = 0
        for layer in self.loaded.spec.blocks[block].layers:
            reps = layer.repeat if type(layer.repeat) is int else 0
            if not isinstance(layer, BlockCall):
                total += reps
            elif layer.when is None or layer.when is True:
                total += reps * (1 + self.fewest_iterations(layer.block))
            total = min(total, MAX_ITERATIONS + 1)
        self.fewest[block] = total
        return total

    # --- expressions -----------------------------------------------------------------------

    def evaluate(self, expr: Expr, env: Mapping[str, Any], path: Path, scope: _Scope, *, defer: bool) -> Any:
        """The value of ``expr``, or a :class:`Deferred` when it reads the input shape."""
        try:
            if expr.names & SHAPE_NAMES:
                if not defer:
                    which = ", ".join("$" + n for n in sorted(expr.names & SHAPE_NAMES))
                    raise ExprError(
                        f"{which} is the input shape of a layer: known in layer fields and a layer's when:,"
                        " not here (block arguments, repeat, a block call's when:)"
                    )
                expr.check_names({*env, *SHAPE_NAMES})
                return Deferred(expr, dict(env), path)
            expr.check_names(env)
            return expr.evaluate(env, self.functions)
        except ExprError as exc:
            raise self.err(path, f"{exc.describe(expr)}{scope.context}") from None

    def count(self, value: Any, env: Mapping[str, Any], path: Path, scope: _Scope) -> int:
        """A ``repeat``: a literal positive integer, or an expression giving 0 or more."""
        if not isinstance(value, Expr):
            return int(value)
        n = self.evaluate(value, env, path, scope, defer=False)
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            msg = f"expected a repeat count of 0 or more: {value!r} gives {short_repr(n)}"
            raise self.err(path, msg + scope.context)
        return n  # the limits are checked by iterate()

    def condition(self, value: Any, env: Mapping[str, Any], path: Path, scope: _Scope, *, defer: bool) -> Any:
        if not isinstance(value, Expr):
            return value  # a YAML boolean
        holds = self.evaluate(value, env, path, scope, defer=defer)
        if not isinstance(holds, bool | Deferred):
            raise self.err(path, f"in {value!r}: expected true or false, got {short_repr(holds)}{scope.context}")
        return holds

    def template(self, text: str, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
        """``{index}`` and ``{param}`` in a name (or a string parameter) filled in."""
        filled = text
        for k, placeholder in _placeholders(text):
            v = env.get(k)
            t = type(v)
            if t is not int and (t is not str or "{" in v):  # type: ignore[operator]
                break
            # the common case, without a regex callback: every placeholder names an integer or a
            # string (the checks below would pass), and no value could be read as a placeholder
            filled = filled.replace(placeholder, str(v))
        else:
            return filled

        def fill(m: Any) -> str:
            key = m.group(1)
            if key not in env or env[key] is None:
                where = "an instance number" if key == "index" else "a parameter"
                names = ", ".join(k for k in env if env[k] is not None and k != "width")
                msg = f"'{{{key}}}' in {text!r} is not {where} here{did_you_mean(key, env)} (names: {names})"
                raise self.err(path, msg + scope.context)
            v = env[key]
            if isinstance(v, bool) or not isinstance(v, int | str):
                raise self.err(path, f"'{{{key}}}' in {text!r} is {short_repr(v)}: names take integers and strings")
            return str(v)

        return PLACEHOLDER_RE.sub(fill, text)

    def name(self, text: str, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
        name = self.template(text, env, path, scope) if "{" in text else text
        if name in _GOOD_NAMES:
            return name
        try:
            _check_ident(name, "a layer name")
        except PydanticCustomError as exc:
            raise self.err(path, f"{text!r} gives {name!r}: {exc.message()}{scope.context}") from None
        if len(_GOOD_NAMES) >= _VALIDATED_MAX:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(name)
        return name


@functools.lru_cache(maxsize=1024)
def _placeholders(text: str) -> tuple[tuple[str, str], ...]:
    """The distinct ``{name}`` placeholders of a name template, in order: (name, ``{name}``)."""
    return tuple((k, "{" + k + "}") for k in dict.fromkeys(PLACEHOLDER_RE.findall(text)))


@functools.cache
def _reserved() -> dict[str, str]:
    from archcompiler.kit.registry import reserved_names

    return reserved_names()


def context(loaded: LoadedSpec, width: float) -> LowerContext:
    """What lowering knows besides each layer: the spec's defaults and width rule at ``width``."""
    spec = loaded.spec
    d, r = spec.defaults, spec.rounding
    return LowerContext(
        width=width,
        rounding=r.mode,
        divisor=r.divisor,
        min_channels=r.min,
        padding=d.padding,
        bias=d.bias,
        activation=d.activation,
        bn_epsilon=d.batchnorm.epsilon,
        bn_decay=d.batchnorm.decay,
        bn_variance_update=d.batchnorm.variance_update,
    )


def functions(ctx: LowerContext) -> dict[str, Callable[..., Any]]:
    """The functions expressions may call that depend on the spec: the rounding rule."""

    def divisible(x: float, divisor: float | None = None, low: float | None = None) -> int:
        d = ctx.divisor if divisor is None else divisor
        m = ctx.min_channels if low is None else low
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if not isinstance(d, int) or d <= 0:
            raise ExprError(f"make_divisible: the divisor must be a positive integer, got {d!r}")
        return make_divisible(x, d, None if m is None else int(m))

    return {"round_channels": ctx.round_channels, "make_divisible": divisible}


def expand(loaded: LoadedSpec, width: float | None = None) -> list[Entry]:
    """Every concrete layer of the spec, in order, at width multiplier ``width`` (default: the spec's)."""
    spec = loaded.spec
    alpha = spec.width if width is None else width
    ex = _Expansion(loaded, functions(context(loaded, alpha)), input_name=spec.input.name)
    _check_calls(ex)
    top = _Scope(values={"classes": spec.classes, "width": alpha}, origin={})
    for i, layer in enumerate(spec.layers):
        path: Path = ("layers", i)
        top.call_path = path
        if isinstance(layer, BlockCall):
            _expand_call(ex, layer, path, top)
        else:
            if layer.inputs and BLOCK_INPUT in layer.inputs:
                raise ex.err((*path, "inputs"), f"{BLOCK_INPUT!r} is only meaningful inside a block")
            _expand_op(ex, layer, path, top)
    return ex.entries


def _expand_op(ex: _Expansion, layer: LayerBase, path: Path, scope: _Scope) -> None:
    """One op layer (and its repeats) in ``scope``."""
    top = scope.block is None
    repeat = layer.repeat
    reps = repeat if type(repeat) is int else ex.count(repeat, scope.values, (*path, "repeat"), scope)
    ex.iterate(reps, 0, layer, path, scope, makes_layers=layer.when is None or layer.when is True)
    if layer.when is False:
        return  # counted, and nothing to make
    op: str = layer.op  # type: ignore[attr-defined]
    plan = ex.plans.get(id(layer))
    if plan is None:
        keys = [(key, getattr(layer, key), (*path, key)) for key in layer.model_fields_set - _SPECIAL]
        plan = ex.plans[id(layer)] = _Plan(layer, keys, (*path, "name"), (*path, "inputs"))
        plan.refs = [_bare_ref(value) for _, value, _ in keys]
        if all(type(value) in _PLAIN for _, value, _ in keys):
            plan.plain = {key: value for key, value, _ in keys}
            plan.origins = dict.fromkeys(plan.plain, _NO_ORIGIN)
    keys, refs, name_path, inputs_path, plain = plan.keys, plan.refs, plan.name_path, plan.inputs_path, plan.plain
    # the same for every repeat: made when first needed
    checker: _Checker | None = None
    call_span = scope.span or ex.span(scope.call_path)
    member = None if scope.owner is None else (*scope.member, int(path[-1]))
    for r in range(reps):
        env = {**scope.values, "index": r + 1} if top else scope.values
        when = None
        if layer.when is not None:
            when = ex.condition(layer.when, env, (*path, "when"), scope, defer=True)
            if when is False:
                continue
        filled: dict[str, Any] = {}
        origins: dict[str, _Origin] | None = None
        values: tuple[Any, ...] | None = None
        waits = False
        if plain is not None:  # every field written as it is: the same layer every time
            filled, origins = plain, plan.origins  # shared: nothing changes them
        else:
            found: list[Any] | None = []
            for (key, value, _), ref in zip(keys, refs, strict=True):
                if type(value) in _PLAIN:
                    filled[key] = value
                elif ref is not None and type(v := env.get(ref)) in _AS_IS:
                    # a bare '$param' holding an int, str or bool: what _fill gives, without
                    # the evaluator (no shape name; bound; not a float to check or make whole)
                    filled[key] = v
                    found += (type(v), v)  # type: ignore[operator]
                else:
                    found = None
                    break
            if found is not None:
                values = tuple(found)
            else:  # a field needs the evaluator: every field with where it came from
                filled, origins = _fill_all(ex, keys, refs, env, scope)
                waits = any(_has_deferred(v) for v in filled.values())
        if top:
            names_env = {**env, "index": str(r + 1)}
        elif scope.number is not None:
            if scope.names_env is None:
                scope.names_env = {**env, "index": str(scope.number)}
            names_env = scope.names_env
        else:
            names_env = env
        if layer.name:
            name = ex.name(layer.name, names_env, name_path, scope)
        elif top:
            ex.op_counts[op] += 1
            name = f"{op}_{ex.op_counts[op]}"
        else:
            k = scope.counts[op] = scope.counts.get(op, 0) + 1
            name = f"{scope.prefix}_{op}" + (f"_{k}" if k > 1 else "")
        inputs = None
        if layer.inputs is not None and (r == 0 or not top):
            inputs = tuple([_input_name(ex, x, names_env, inputs_path, scope) for x in layer.inputs])
        follows = ex.pending_input
        pending = None
        resolved = None
        deferred_when = when if isinstance(when, Deferred) else None
        if plain is not None:
            resolved = plan.validated
        elif values is not None:
            resolved = plan.layers.get(values)
        if resolved is None or deferred_when is not None:  # a checker and origins needed
            if origins is None:
                origins = _ref_origins(keys, refs, filled, scope)
            if checker is None:
                checker = _Checker(ex.loaded.source, path, scope.call_path, scope.context, ex.functions)
            if resolved is None and not waits:
                # validation is a function of the values alone: remembered for values every
                # field wrote or took as they are (and by expand._validated across lowerings)
                resolved = checker.validate(op, filled, origins)
                if plain is not None:
                    plan.validated = resolved
                elif values is not None:
                    plan.layers[values] = resolved
        if waits or deferred_when is not None:
            pending = _Pending(op, filled, origins, deferred_when, checker)  # type: ignore[arg-type]
        span = call_span
        if member is not None:
            s = call_span
            span = Span(s.file, s.line, s.col, s.path, scope.owner, scope.number, (*member, r))
        ex.add(Entry(name, resolved, inputs, span, scope.context, follows, pending, scope.block_input))


def _fill_all(
    ex: _Expansion, keys: list[tuple[str, Any, Path]], refs: list[str | None], env: Mapping[str, Any], scope: _Scope
) -> tuple[dict[str, Any], dict[str, _Origin]]:
    """Every field of a layer filled in (:func:`_fill`), and where each value came from."""
    filled: dict[str, Any] = {}
    origins: dict[str, _Origin] = {}
    for (key, value, where), ref in zip(keys, refs, strict=True):
        if type(value) in _PLAIN:  # written as it is: what _fill gives
            filled[key], origins[key] = value, _NO_ORIGIN
        elif ref is not None and type(v := env.get(ref)) in _AS_IS:  # what _fill gives
            filled[key], origins[key] = v, _ref_origin(value, v, ref, scope)
        else:
            filled[key], origins[key] = _fill(ex, value, env, where, scope)
    return filled, origins


def _ref_origins(
    keys: list[tuple[str, Any, Path]], refs: list[str | None], filled: Mapping[str, Any], scope: _Scope
) -> dict[str, _Origin]:
    """The origins of fields each written as it is or as a bare ``$param`` (what _fill_all gives)."""
    return {
        key: _NO_ORIGIN if type(value) in _PLAIN else _ref_origin(value, filled[key], ref, scope)  # type: ignore[arg-type]
        for (key, value, _), ref in zip(keys, refs, strict=True)
    }


def _ref_origin(expr: Expr, value: Any, ref: str, scope: _Scope) -> _Origin:
    """What _fill gives as the origin of ``value``, read by a bare ``$ref``."""
    param_path = scope.origin.get(ref)
    return _Origin(expr, value) if param_path is None else _Origin(expr, value, ref, param_path)


_AS_IS = frozenset({int, str, bool})
"""Parameter values a bare ``$param`` gives unchanged (a float is checked and may become an int)."""


def _bare_ref(value: Any) -> str | None:
    """The parameter a field written as exactly ``$param`` reads, unless it is a shape name
    (which waits for stage 2)."""
    ref = value.ref if isinstance(value, Expr) else None
    return ref if ref not in SHAPE_NAMES else None


def _input_name(ex: _Expansion, text: str, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
    """An ``inputs:`` entry: ``_input`` (the block's input) or a name template."""
    if text == BLOCK_INPUT and scope.block_input:
        return scope.block_input
    return ex.name(text, env, path, scope)


def _fill(ex: _Expansion, value: Any, env: Mapping[str, Any], path: Path, scope: _Scope) -> tuple[Any, _Origin]:
    """A field's value with its expressions evaluated (or deferred), and where it came from."""
    if isinstance(value, Expr):
        v = whole(ex.evaluate(value, env, path, scope, defer=True))
        param = value.ref
        if param is not None and param in scope.origin:
            return v, _Origin(value, v, param, scope.origin[param])
        return v, _Origin(value, v)
    if isinstance(value, tuple) and any(isinstance(x, Expr) for x in value):
        parts = [_fill(ex, x, env, path, scope) for x in value]
        return tuple(p[0] for p in parts), _NO_ORIGIN
    return value, _NO_ORIGIN


def _expand_call(ex: _Expansion, call: BlockCall, path: Path, caller: _Scope) -> None:
    """Unroll one block call (and its repeats) made from ``caller``."""
    spec = ex.loaded.spec
    block: BlockDef | None = spec.blocks.get(call.block)
    if block is None:
        known = ", ".join(spec.blocks) or "none defined"
        raise ex.err(
            (*path, "block"), f"unknown block {call.block!r}{did_you_mean(call.block, spec.blocks)} (blocks: {known})"
        )
    args = dict(call.model_extra or {})
    for arg in args:
        if arg not in block.params:
            raise ex.err(
                (*path, arg),
                f"block {call.block!r} has no parameter {arg!r}{did_you_mean(arg, block.params)}"
                f" (parameters: {', '.join(block.params) or 'none'})",
                key=True,
            )
    if call.when is not None and not ex.condition(call.when, caller.values, (*path, "when"), caller, defer=False):
        return
    repeat = call.repeat
    reps = repeat if type(repeat) is int else ex.count(repeat, caller.values, (*path, "repeat"), caller)
    ex.iterate(reps, ex.fewest_iterations(call.block), call, path, caller, makes_layers=False)
    # Instances are numbered ('{index}', '$index') when the block has layers of its own; a block
    # called inside a numbered instance shares its number (squeeze-excite inside a V3 block), and
    # a block made only of calls takes none (a stage of V2's table).
    numbered = caller.number is None and any(not isinstance(layer, BlockCall) for layer in block.layers)
    for rep in range(reps):
        number = caller.number
        if numbered:
            ex.block_index += 1
            number = ex.block_index
        values: dict[str, Any] = {"classes": caller.values["classes"], "width": caller.values["width"]}
        if number is not None:
            values["index"] = number
        origin: dict[str, Path] = {}
        for p, default in block.params.items():
            if p in args:
                where: Path = (*path, p)
                value, ref = _param(ex, args[p], caller.values, where, caller)
                # an argument that passes the caller's parameter on keeps pointing at its source
                origin[p] = caller.origin.get(ref, where) if ref else where
            elif default is None:
                raise ex.err(path, f"block {call.block!r} needs parameter {p!r}")
            else:
                where = ("blocks", call.block, "params", p)
                value, _ = _param(ex, default, values, where, caller)
                origin[p] = where
            values[p] = value
        label = f" instance {number}" if number is not None else ""
        via = f" via block {caller.block!r}" if caller.block else ""
        context = f" (in block {call.block!r}{label}{via})"
        prefix_env = {**values, "index": str(number)} if number is not None else values
        prefix = ex.name(call.name, prefix_env, (*path, "name"), caller) if call.name else f"{call.block}{number or ''}"
        block_input = ex.previous()
        if call.inputs and rep == 0:
            if len(call.inputs) != 1:
                raise ex.err((*path, "inputs"), "a block call reads exactly one input")
            block_input = _input_name(ex, call.inputs[0], prefix_env, (*path, "inputs"), caller)
        scope = _Scope(values, origin, call.block, number, block_input, caller.call_path, context, prefix)
        scope.span = ex.span(caller.call_path)
        if number is not None:
            scope.names_env = prefix_env  # what _expand_op would make: values, '{index}' as text
        if numbered:
            scope.owner = call.block
        elif number is not None:  # nested in a numbered instance: part of it
            scope.owner, scope.member = caller.owner, (*caller.member, int(path[-1]), rep)
        saved = ex.pending_input
        ex.pending_input = block_input
        made = len(ex.entries)
        for j, layer in enumerate(block.layers):
            lpath: Path = ("blocks", call.block, "layers", j)
            if isinstance(layer, BlockCall):
                _expand_call(ex, layer, lpath, scope)
            else:
                _expand_op(ex, layer, lpath, scope)
        if len(ex.entries) == made:
            ex.pending_input = saved  # the instance made no layer: the next one reads what it would have


def _param(ex: _Expansion, raw: Any, env: Mapping[str, Any], where: Path, scope: _Scope) -> tuple[Any, str | None]:
    """A block argument (evaluated in the caller's scope) or default (in the block's), and the
    parameter it names when it is exactly ``$param``."""
    try:
        expr = as_expr(raw)
    except PydanticCustomError as exc:
        raise ex.err(where, exc.message()) from None
    value = ex.evaluate(expr, env, where, scope, defer=False) if expr is not None else raw
    if isinstance(value, str) and PLACEHOLDER_RE.search(value):
        value = ex.template(value, {k: (str(v) if k == "index" else v) for k, v in env.items()}, where, scope)
    return value, expr.ref if expr is not None else None


def _check_calls(ex: _Expansion) -> None:
    """Blocks calling blocks: every callee exists, no cycle, at most MAX_BLOCK_DEPTH deep."""
    blocks = ex.loaded.spec.blocks
    height: dict[str, int] = {}
    active: list[str] = []

    def visit(b: str) -> int:
        if b in height:
            return height[b]
        active.append(b)
        h = 1
        for j, layer in enumerate(blocks[b].layers):
            if not isinstance(layer, BlockCall):
                continue
            where: Path = ("blocks", b, "layers", j, "block")
            callee = layer.block
            if callee not in blocks:
                known = ", ".join(blocks)
                raise ex.err(where, f"unknown block {callee!r}{did_you_mean(callee, blocks)} (blocks: {known})")
            if callee in active:
                cycle = " -> ".join([*active[active.index(callee) :], callee])
                raise ex.err(where, f"block {b!r} calls {callee!r} again: {cycle} (a cycle)")
            h = max(h, 1 + visit(callee))
            if h > MAX_BLOCK_DEPTH:
                chain = " -> ".join([*active, callee])
                raise ex.err(where, f"blocks nest more than {MAX_BLOCK_DEPTH} deep: {chain} ...")
        active.pop()
        height[b] = h
        return h

    for b in blocks:
        visit(b)
