"""Lowering, stage 1: a validated spec -> a flat list of concrete layers.

Block calls (blocks may call blocks), repeats and ``when:`` guards are unrolled, expressions
evaluated over block parameters, the spec's ``params:``, ``$width``, ``$depth``, ``$classes``
and ``$index`` (``round_repeats`` scales a repeat by the depth multiplier), names templated
(``{index}``, ``{param}``) and checked for duplicates; each layer is validated again as a concrete
op layer, so a bad argument is reported at the call that passed it. Nothing here knows shapes:
a field or guard that reads the input shape (``$in``, ``$in_h``, ``$in_w``, ``$block_in``) stays a
:class:`Deferred` expression with its parameters bound, which stage 2 (:mod:`.infer`) evaluates
through :meth:`Entry.resolve`.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class _Origin:
    """The expression a filled-in field value came from, so a bad value is reported where it
    was written (a value written as it is has none)."""

    expr: Expr
    value: Any
    param: str | None = None
    """The block parameter when the field is exactly ``$param``."""
    param_path: Path | None = None


@dataclass
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
        """The op layer of ``filled``; a bad value is reported where it was written."""
        try:
            layer = OP_LAYERS[op].model_validate({"op": op, **filled})
        except ValidationError as exc:
            raise self._invalid(exc, origins) from None
        if vars(layer).get("scale_width", False):  # a field of conv and dense only
            self._check_scaled(origins)
        return layer

    def _invalid(self, exc: ValidationError, origins: Mapping[str, _Origin]) -> SpecError:
        """The first validation error, at the field, or at the block argument it came from."""
        e = dict(exc.errors(include_url=False)[0])
        name = str(e["loc"][0]) if e["loc"] else ""
        e["loc"] = (name,)
        o = origins.get(name)
        where = (*self.layer_path, name)
        if o is not None and o.param is not None:
            msg = f"{_message(e)} (from ${o.param}, used by {format_path(where)})"
            return self.err(o.param_path or self.call_path, msg)
        if o is not None:
            value = o.value
            if isinstance(value, float) and not value.is_integer() and "integer" in str(e.get("msg", "")):
                return self.err(where, f"expected an integer: {o.expr!r} gives {value!r}, which is not whole")
            e.pop("input", None)
            return self.err(where, f"{_message(e)}, got {short_repr(value)} from {o.expr!r}")
        return self.err(where, _message(e))

    def _check_scaled(self, origins: Mapping[str, _Origin]) -> None:
        """A scaled field whose expression is already a channel count would be scaled twice."""
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


@dataclass(frozen=True)
class _Pending:
    """A layer whose fields or guard wait for the input shape."""

    op: str
    fields: Mapping[str, Any]
    origins: Mapping[str, _Origin]
    when: Deferred | None
    checker: _Checker


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
    skipped: bool = False
    """Its ``when:`` is false already here: no layer, only a name later layers may read
    (stage 2: what it would have read; :meth:`resolve` gives None)."""

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
        origins = {k: _Origin(o.expr, filled[k], o.param, o.param_path) for k, o in p.origins.items()}
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
    call_span: Span | None = None
    """The span of ``call_path``."""
    context: str = ""
    prefix: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    owner: str | None = None
    """The numbered block whose instance this scope is part of (Span.block)."""
    member: tuple[int, ...] = ()
    """Where this scope sits inside that block's definition (Span.member)."""
    stage: tuple[int, int] | None = None
    """(stage, position in it) of the numbered instance this scope is part of (Span.stage)."""

    def names_env(self, env: Mapping[str, Any], repeat: int) -> Mapping[str, Any]:
        """What name templates read in ``env``: the instance number (at the top level the
        repeat's) as text."""
        if self.block is None:
            return {**env, "index": str(repeat + 1)}
        if self.number is not None:
            return {**env, "index": str(self.number)}
        return env


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
    reserved: dict[str, str] = field(default_factory=lambda: _reserved())
    iterations: int = 0
    """Repeat iterations run so far (limits.MAX_ITERATIONS)."""
    made: int = 0
    """Layers made so far (entries a ``when:`` left out aside)."""
    fewest: dict[str, int] = field(default_factory=dict)
    """Block -> the fewest iterations one of its instances runs (:meth:`fewest_iterations`)."""
    stage: int | None = None
    """The stage the layer table's rows are in (the last ``starts_stage:`` seen), None before any."""
    position: int = -1
    """The last numbered instance's place in :attr:`stage` (from 0)."""

    def span(self, path: Path) -> Span:
        line, col = self.loaded.source.locate(path)
        return Span(self.loaded.file, line or 1, col or 1, format_path(path))

    def err(self, path: Path, message: str, *, key: bool = False) -> SpecError:
        return self.loaded.source.error(path, message, key=key)

    def previous(self) -> str:
        if self.pending_input is not None:
            return self.pending_input
        return self.entries[-1].name if self.entries else self.loaded.spec.input.name

    def add(self, entry: Entry) -> None:
        """Append ``entry``, refused when its name is reserved or taken, or when there are too many."""
        name, reserved = entry.name, self.reserved
        if name.startswith("_") or name in reserved:
            why = "names starting with '_' are kept for the frameworks' internals"
            if name in reserved:
                why = f"the {reserved[name]} backend's model already has an attribute of that name"
            raise entry.error(f"layer name {name!r} is reserved ({why}); rename the layer")
        if len(self.entries) >= MAX_LAYERS:
            raise entry.error(f"the spec expands to more than {MAX_LAYERS:,} layers (check 'repeat')")
        if name in self.seen or name == self.loaded.spec.input.name:
            first = self.seen.get(name)
            where = f" (first at line {first.span.line})" if first else " (the input's name)"
            raise entry.error(f"duplicate layer name {name!r}{where}")
        self.seen[name] = entry
        self.entries.append(entry)
        self.made += 1
        self.pending_input = None

    def skip(self, entry: Entry) -> None:
        """Append a layer its ``when:`` leaves out: not a layer (no limit, no name taken: an
        alternative of the same name may follow), and the next layer still reads what the
        layer before it had to read (a block's input not yet read stays unread)."""
        self.entries.append(entry)

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

        def fill(m: Any) -> str:
            key = m.group(1)
            if key not in env or env[key] is None:
                where = "an instance number" if key == "index" else "a parameter"
                names = ", ".join(k for k in env if env[k] is not None and k not in ("width", "depth"))
                msg = f"'{{{key}}}' in {text!r} is not {where} here{did_you_mean(key, env)} (names: {names})"
                raise self.err(path, msg + scope.context)
            v = env[key]
            if isinstance(v, bool) or not isinstance(v, int | str):
                raise self.err(path, f"'{{{key}}}' in {text!r} is {short_repr(v)}: names take integers and strings")
            return str(v)

        return PLACEHOLDER_RE.sub(fill, text)

    def name(self, text: str, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
        name = self.template(text, env, path, scope) if "{" in text else text
        try:
            _check_ident(name, "a layer name")
        except PydanticCustomError as exc:
            raise self.err(path, f"{text!r} gives {name!r}: {exc.message()}{scope.context}") from None
        return name


def _reserved() -> dict[str, str]:
    """Layer name -> the built-in backend that cannot take it (kit.registry.reserved_names)."""
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


DEPTH_ROUNDING: dict[str, Callable[[float], int]] = {"ceil": math.ceil, "round": round, "floor": math.floor}
"""``depth_rounding:`` -> how ``round_repeats`` rounds depth * n (``round``: Python's, half to even)."""


def round_repeats(n: float, depth: float, rule: str = "ceil") -> int:
    """A stage's ``n`` repeats at depth multiplier ``depth``: ``rule(depth * n)``, at least 1 when
    n >= 1 (EfficientNet: ``int(math.ceil(depth_coefficient * repeats))`` in Keras, timm's
    ``depth_trunc='ceil'``), 0 for n = 0."""
    if n < 0:
        raise ExprError(f"round_repeats: expected a repeat count of 0 or more, got {n!r}")
    if n == 0:
        return 0
    return max(1, DEPTH_ROUNDING[rule](depth * n))


def functions(ctx: LowerContext, depth: float = 1.0, depth_rounding: str = "ceil") -> dict[str, Callable[..., Any]]:
    """The functions expressions may call that depend on the spec: the channel and repeat rounding rules."""

    def divisible(x: float, divisor: float | None = None, low: float | None = None) -> int:
        d = ctx.divisor if divisor is None else divisor
        m = ctx.min_channels if low is None else low
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if not isinstance(d, int) or d <= 0:
            raise ExprError(f"make_divisible: the divisor must be a positive integer, got {d!r}")
        return make_divisible(x, d, None if m is None else int(m))

    def repeats(n: float) -> int:
        return round_repeats(n, depth, depth_rounding)

    return {"round_channels": ctx.round_channels, "make_divisible": divisible, "round_repeats": repeats}


def expand(loaded: LoadedSpec, width: float | None = None, depth: float | None = None) -> list[Entry]:
    """Every concrete layer of the spec, in order, at width multiplier ``width`` and depth
    multiplier ``depth`` (default: the spec's)."""
    spec = loaded.spec
    alpha = spec.width if width is None else width
    d = spec.depth if depth is None else depth
    ex = _Expansion(loaded, functions(context(loaded, alpha), d, spec.depth_rounding))
    _check_calls(ex)
    values = {**spec.params, "classes": spec.classes, "width": alpha, "depth": d}
    for i, layer in enumerate(spec.layers):
        path: Path = ("layers", i)
        top = _Scope(values, origin={}, call_path=path, call_span=ex.span(path))
        if isinstance(layer, BlockCall):
            if layer.starts_stage is not None:
                ex.stage, ex.position = layer.starts_stage, -1
            _expand_call(ex, layer, path, top)
        else:
            if layer.inputs and BLOCK_INPUT in layer.inputs:
                raise ex.err((*path, "inputs"), f"{BLOCK_INPUT!r} is only meaningful inside a block")
            _expand_op(ex, layer, path, top)
    return ex.entries


def _expand_op(ex: _Expansion, layer: LayerBase, path: Path, scope: _Scope) -> None:
    """One op layer (and its repeats) in ``scope``."""
    reps = ex.count(layer.repeat, scope.values, (*path, "repeat"), scope)
    ex.iterate(reps, 0, layer, path, scope, makes_layers=layer.when is None or layer.when is True)
    # the fields written, in the model's order (a set's order would change from run to run,
    # and with it which of two bad expressions is reported)
    written = layer.model_fields_set - _SPECIAL
    fields = [(key, getattr(layer, key)) for key in type(layer).model_fields if key in written]
    checker = _Checker(ex.loaded.source, path, scope.call_path, scope.context, ex.functions)
    for r in range(reps):
        env = {**scope.values, "index": r + 1} if scope.block is None else scope.values
        when = None
        if layer.when is not None:
            when = ex.condition(layer.when, env, (*path, "when"), scope, defer=True)
            if when is False:
                _skip(ex, layer, env, path, scope, r)
                continue
        filled, origins = _fill_fields(ex, fields, env, path, scope)
        names_env = scope.names_env(env, r)
        name = _layer_name(ex, layer, names_env, path, scope)
        inputs = None
        if layer.inputs is not None and (r == 0 or scope.block is not None):
            inputs = tuple(_input_name(ex, x, names_env, (*path, "inputs"), scope) for x in layer.inputs)
        waits = any(_has_deferred(v) for v in filled.values())
        deferred_when = when if isinstance(when, Deferred) else None
        op: str = layer.op  # type: ignore[attr-defined]
        resolved = None if waits else checker.validate(op, filled, origins)
        pending = _Pending(op, filled, origins, deferred_when, checker) if waits or deferred_when else None
        span = _layer_span(ex, path, scope, r)
        ex.add(Entry(name, resolved, inputs, span, scope.context, ex.pending_input, pending, scope.block_input))


def _skip(ex: _Expansion, layer: LayerBase, env: Mapping[str, Any], path: Path, scope: _Scope, repeat: int) -> None:
    """A named layer its ``when:`` leaves out: its name and inputs, so that a later layer may
    name it (docs/spec.md, "when"). A name or input that cannot be made here (a template of a
    parameter the guard rules out) leaves nothing to read."""
    if not layer.name:
        return
    env = scope.names_env(env, repeat)
    try:
        name = ex.name(layer.name, env, (*path, "name"), scope)
        inputs = None
        if layer.inputs is not None and (repeat == 0 or scope.block is not None):
            inputs = tuple(_input_name(ex, x, env, (*path, "inputs"), scope) for x in layer.inputs)
    except SpecError:
        return
    span = _layer_span(ex, path, scope, repeat)
    ex.skip(Entry(name, None, inputs, span, scope.context, ex.pending_input, None, scope.block_input, skipped=True))


def _fill_fields(
    ex: _Expansion, fields: list[tuple[str, Any]], env: Mapping[str, Any], path: Path, scope: _Scope
) -> tuple[dict[str, Any], dict[str, _Origin]]:
    """Every field of a layer filled in (:func:`_fill`), and the origin of each value that an
    expression gave."""
    filled: dict[str, Any] = {}
    origins: dict[str, _Origin] = {}
    for key, value in fields:
        filled[key], origin = _fill(ex, value, env, (*path, key), scope)
        if origin is not None:
            origins[key] = origin
    return filled, origins


def _layer_name(ex: _Expansion, layer: LayerBase, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
    """The layer's ``name:`` filled in, or the default: ``<op>_<k>`` at the top level,
    ``<block prefix>_<op>[_<k>]`` in a block instance."""
    op: str = layer.op  # type: ignore[attr-defined]
    if layer.name:
        return ex.name(layer.name, env, (*path, "name"), scope)
    if scope.block is None:
        ex.op_counts[op] += 1
        return f"{op}_{ex.op_counts[op]}"
    k = scope.counts[op] = scope.counts.get(op, 0) + 1
    return f"{scope.prefix}_{op}" + (f"_{k}" if k > 1 else "")


def _layer_span(ex: _Expansion, path: Path, scope: _Scope, repeat: int) -> Span:
    """The span of the top-level entry a layer came from; inside a numbered block instance,
    also which instance and where in the block's definition (Span.block, instance, member)."""
    s = scope.call_span or ex.span(scope.call_path)
    if scope.owner is None:
        return s
    member = (*scope.member, int(path[-1]), repeat)
    return Span(s.file, s.line, s.col, s.path, scope.owner, scope.number, member, scope.stage)


def _input_name(ex: _Expansion, text: str, env: Mapping[str, Any], path: Path, scope: _Scope) -> str:
    """An ``inputs:`` entry: ``_input`` (the block's input) or a name template."""
    if text == BLOCK_INPUT and scope.block_input:
        return scope.block_input
    return ex.name(text, env, path, scope)


def _fill(ex: _Expansion, value: Any, env: Mapping[str, Any], path: Path, scope: _Scope) -> tuple[Any, _Origin | None]:
    """A field's value with its expressions evaluated (or deferred), and where it came from."""
    if isinstance(value, Expr):
        v = whole(ex.evaluate(value, env, path, scope, defer=True))
        param = value.ref
        if param is not None and param in scope.origin:
            return v, _Origin(value, v, param, scope.origin[param])
        return v, _Origin(value, v)
    if isinstance(value, tuple) and any(isinstance(x, Expr) for x in value):
        parts = [_fill(ex, x, env, path, scope) for x in value]
        return tuple(p[0] for p in parts), None
    return value, None


def _expand_call(ex: _Expansion, call: BlockCall, path: Path, caller: _Scope) -> None:
    """Unroll one block call (and its repeats) made from ``caller``."""
    block = _callee(ex, call, path)
    if call.starts_stage is not None and caller.block is not None:
        raise ex.err(
            (*path, "starts_stage"), "'starts_stage' numbers the layer table's rows; a block's own calls take none"
        )
    if call.when is not None and not ex.condition(call.when, caller.values, (*path, "when"), caller, defer=False):
        return
    reps = ex.count(call.repeat, caller.values, (*path, "repeat"), caller)
    ex.iterate(reps, ex.fewest_iterations(call.block), call, path, caller, makes_layers=False)
    # Instances are numbered ('{index}', '$index') when the block has layers of its own; a block
    # called inside a numbered instance shares its number (squeeze-excite inside a V3 block), and
    # a block made only of calls takes none (a stage of V2's table).
    numbered = caller.number is None and any(not isinstance(layer, BlockCall) for layer in block.layers)
    for rep in range(reps):
        number, stage = caller.number, caller.stage
        if numbered:
            ex.block_index += 1
            number = ex.block_index
            if ex.stage is not None:
                ex.position += 1
                stage = (ex.stage, ex.position)
        scope = _instance(ex, call, block, path, caller, number, rep)
        scope.stage = stage
        saved = ex.pending_input
        ex.pending_input = scope.block_input
        made = ex.made
        for j, layer in enumerate(block.layers):
            lpath: Path = ("blocks", call.block, "layers", j)
            if isinstance(layer, BlockCall):
                _expand_call(ex, layer, lpath, scope)
            else:
                _expand_op(ex, layer, lpath, scope)
        if ex.made == made:
            ex.pending_input = saved  # the instance made no layer: the next one reads what it would have


def _callee(ex: _Expansion, call: BlockCall, path: Path) -> BlockDef:
    """The block ``call`` names, each of its arguments one of the block's parameters."""
    blocks = ex.loaded.spec.blocks
    block: BlockDef | None = blocks.get(call.block)
    if block is None:
        known = ", ".join(blocks) or "none defined"
        raise ex.err(
            (*path, "block"), f"unknown block {call.block!r}{did_you_mean(call.block, blocks)} (blocks: {known})"
        )
    for arg in call.model_extra or {}:
        if arg not in block.params:
            raise ex.err(
                (*path, arg),
                f"block {call.block!r} has no parameter {arg!r}{did_you_mean(arg, block.params)}"
                f" (parameters: {', '.join(block.params) or 'none'})",
                key=True,
            )
    return block


def _instance(
    ex: _Expansion, call: BlockCall, block: BlockDef, path: Path, caller: _Scope, number: int | None, rep: int
) -> _Scope:
    """The scope of one instance of ``block`` (number ``number``, repeat ``rep`` of ``call``)."""
    values, origin = _bind(ex, call, block, path, caller, number)
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
    scope = _Scope(values, origin, call.block, number, block_input, caller.call_path, caller.call_span, context, prefix)
    if caller.number is None and number is not None:
        scope.owner = call.block
    elif number is not None:  # nested in a numbered instance: part of it
        scope.owner, scope.member = caller.owner, (*caller.member, int(path[-1]), rep)
    return scope


def _bind(
    ex: _Expansion, call: BlockCall, block: BlockDef, path: Path, caller: _Scope, number: int | None
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The block's parameter values for one instance, and where each was written."""
    args = call.model_extra or {}
    values: dict[str, Any] = {k: caller.values[k] for k in (*ex.loaded.spec.params, "classes", "width", "depth")}
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
    return values, origin


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
