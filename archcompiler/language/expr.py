"""Expressions in spec fields: a small language of its own, parsed here and never given to ``eval``.

A field holds an expression when its string starts with ``=`` or contains ``$``::

    filters: "$in * $expansion"                 # $in: the layer's input channels (already rounded)
    filters: "max(1280, round_channels(1280))"  # with '=' or '$' only: "=max(...)" here
    when: "$stride == 1 and $in == $out"

Grammar (lowest precedence first; Python's meaning for each operator)::

    expr    := or ['if' or 'else' expr]
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | compare
    compare := sum [('==' | '!=' | '<' | '<=' | '>' | '>=') sum]     (no chaining)
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/' | '//' | '%') unary)*
    unary   := ('-' | '+') unary | atom
    atom    := NUMBER | 'STRING' | true | false | $NAME | FUNC '(' [expr (',' expr)*] ')' | '(' expr ')'

Values are integers, floats, booleans and strings; arithmetic takes numbers only, ``and`` / ``or``
/ ``not`` / ``if`` take booleans only (so ``$n and 1`` is an error, not a surprise). Errors name
the column inside the expression (1-based, counting the text as written, '=' included).

Every number is checked where it is made (a literal, a ``$name`` read, each operator and function
result, in :func:`_checked`): a float must be finite, an integer within :data:`MAX_INT`. So
``int(1e999)``, ``$in * 1e308 * 10`` or ``make_divisible(8, <400 digits>)`` is an error at the
column that overflowed, and no NaN or infinity ever reaches a field, a guard or Python's
``int()``. Digits are ASCII (``re.ASCII``): ``$in * ٢`` is refused, as everywhere archc reads a
number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from archcompiler.language.source import did_you_mean

MAX_LENGTH = 500
"""Longest expression text: expressions are one-liners; a longer one is a mistake or an attack."""
MAX_DEPTH = 40
"""Deepest nesting of parentheses / operators the recursive-descent parser follows."""
MAX_INT = 2**63 - 1
"""Largest integer magnitude an expression may write or compute: int64, like the integers of a
spec file. Keeps every integer convertible to a float (``$n * 1.5``) and far from Python's
4,300-digit limit on ``int(str)``."""

Value = int | float | bool | str


class ExprError(ValueError):
    """A bad expression; ``column`` is 1-based inside the expression text (0: no position)."""

    def __init__(self, message: str, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def describe(self, text: str) -> str:
        """The one-line message users see: ``in '<text>': <message> at column N``."""
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", text):
            return self.message  # a bare '$name': the field's location says it all
        where = ""
        if self.column:
            where = " at the end" if self.column > len(text) else f" at column {self.column}"
        return f"in {text!r}: {self.message}{where}"


# --- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>\$[A-Za-z_][A-Za-z0-9_]*)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>'[^'\\]*')
    | (?P<op>//|==|!=|<=|>=|[-+*/%()<>,])
    """,
    re.VERBOSE | re.ASCII,
)
KEYWORDS = frozenset({"and", "or", "not", "if", "else", "true", "false"})


@dataclass(frozen=True)
class Token:
    kind: str  # number, name, word, string, op, end
    text: str
    column: int


def tokenize(text: str) -> list[Token]:
    """Split expression text into tokens (``=`` at the start marks an expression and is skipped)."""
    pos = 1 if text.startswith("=") else 0
    out: list[Token] = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = " (strings use single quotes)" if ch == '"' else ""
            raise ExprError(f"unexpected character {ch!r}{hint}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(text) + 1))
    return out


# --- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    column: int


@dataclass(frozen=True)
class Const(Node):
    value: Value


@dataclass(frozen=True)
class Name(Node):
    name: str  # without '$'


@dataclass(frozen=True)
class Unary(Node):
    op: str  # '-', '+', 'not'
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # arithmetic, comparison, 'and', 'or'
    left: Node
    right: Node


@dataclass(frozen=True)
class Cond(Node):
    test: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


FUNCTIONS: dict[str, tuple[int, int]] = {
    "min": (2, 16),
    "max": (2, 16),
    "int": (1, 1),
    "ceil": (1, 1),
    "floor": (1, 1),
    "round_channels": (1, 1),
    "make_divisible": (1, 3),
    "round_repeats": (1, 1),
}
"""Functions an expression may call, with their fewest and most arguments.

``round_channels(x)``: x channels at the width multiplier under the spec's rounding rule
(``LowerContext.round_channels``); ``make_divisible(x[, divisor[, min]])``: x rounded like V2/V3
without the multiplier (divisor and min default to the spec's ``rounding``); ``int(x)``: truncation
toward zero, as Keras' ``int(filters * alpha)``; ``ceil(x)``, ``floor(x)``: the integer above or
below x; ``round_repeats(n)``: a stage's n repeats at the depth multiplier under the spec's
``depth_rounding`` (``ceil(depth * n)`` by default, as EfficientNet; at least 1 for n >= 1)."""

_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at(self, *texts: str) -> bool:
        t = self.tok
        return t.kind in ("op", "word") and t.text in texts

    def expect(self, text: str) -> Token:
        if not self.at(text):
            raise ExprError(f"expected {text!r}{self._got()}", self.tok.column)
        return self.take()

    def _got(self) -> str:
        return "" if self.tok.kind == "end" else f", got {self.tok.text!r}"

    def parse(self) -> Node:
        node = self.expr()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {self.tok.text!r}", self.tok.column)
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"nested deeper than {MAX_DEPTH} levels", self.tok.column)
        node = self.or_()
        if self.at("if"):
            col = self.take().column
            test = self.or_()
            self.expect("else")
            node = Cond(col, test, node, self.expr())
        self.depth -= 1
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.at("or"):
            col = self.take().column
            node = Binary(col, "or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("and"):
            col = self.take().column
            node = Binary(col, "and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("not"):
            col = self.take().column
            return Unary(col, "not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        node = self.sum()
        if self.at(*_COMPARE):
            t = self.take()
            node = Binary(t.column, t.text, node, self.sum())
            if self.at(*_COMPARE):
                raise ExprError("comparisons cannot be chained (use 'and')", self.tok.column)
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.at("+", "-"):
            t = self.take()
            node = Binary(t.column, t.text, node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.at("*", "/", "//", "%"):
            t = self.take()
            node = Binary(t.column, t.text, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("-", "+"):
            t = self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExprError(f"nested deeper than {MAX_DEPTH} levels", t.column)
            node = Unary(t.column, t.text, self.unary())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "number":
            self.take()
            value = float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
            return Const(t.column, _checked(value, t.column, f"the number {_short(t.text)}"))
        if t.kind == "string":
            self.take()
            return Const(t.column, t.text[1:-1])
        if t.kind == "name":
            self.take()
            return Name(t.column, t.text[1:])
        if t.kind == "word":
            if t.text in ("true", "false"):
                self.take()
                return Const(t.column, t.text == "true")
            if t.text in FUNCTIONS:
                return self.call()
            if t.text in KEYWORDS:
                raise ExprError(f"expected a value, got {t.text!r}", t.column)
            if self.tokens[self.i + 1].text == "(":
                raise ExprError(
                    f"unknown function {t.text!r}{did_you_mean(t.text, FUNCTIONS)} (functions: {', '.join(FUNCTIONS)})",
                    t.column,
                )
            raise ExprError(f"unknown word {t.text!r} (names start with '$': '${t.text}')", t.column)
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        raise ExprError(f"expected a value{self._got()}", t.column)

    def call(self) -> Node:
        t = self.take()
        self.expect("(")
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take()
                args.append(self.expr())
        self.expect(")")
        low, high = FUNCTIONS[t.text]
        if not low <= len(args) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise ExprError(f"{t.text}() takes {want} arguments, got {len(args)}", t.column)
        return Call(t.column, t.text, tuple(args))


# --- the expression object ------------------------------------------------------------------


def is_expression(v: Any) -> bool:
    """Whether a spec value is expression text: a string starting with '=' or containing '$'."""
    return isinstance(v, str) and (v.startswith("=") or "$" in v)


def _names(node: Node) -> set[str]:
    if isinstance(node, Name):
        return {node.name}
    out: set[str] = set()
    for child in _children(node):
        out |= _names(child)
    return out


def _calls(node: Node) -> set[str]:
    out = {node.func} if isinstance(node, Call) else set()
    for child in _children(node):
        out |= _calls(child)
    return out


def _walk(node: Node) -> list[Node]:
    """Nodes in text order (a parent before its children)."""
    out = [node]
    for child in _children(node):
        out.extend(_walk(child))
    return sorted(out, key=lambda n: n.column)


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Cond):
        return (node.test, node.then, node.other)
    if isinstance(node, Call):
        return node.args
    return ()


class Expr(str):
    """Expression text with its parsed tree: a ``str`` (so models dump and print it as written)."""

    tree: Node
    names: frozenset[str]
    """The ``$names`` it reads (without '$')."""
    calls: frozenset[str]

    def __new__(cls, text: str) -> Expr:
        if len(text) > MAX_LENGTH:
            raise ExprError(f"longer than {MAX_LENGTH} characters")
        self = super().__new__(cls, text)
        self.tree = _Parser(text).parse()
        self.names = frozenset(_names(self.tree))
        self.calls = frozenset(_calls(self.tree))
        return self

    @property
    def ref(self) -> str | None:
        """The parameter name when the whole expression is one ``$name``, else None."""
        return self.tree.name if isinstance(self.tree, Name) else None

    def check_names(self, known: Collection[str]) -> None:
        """ExprError (with the column) for the first ``$name`` not in ``known``."""
        if all(n in known for n in self.names):
            return
        for node in _walk(self.tree):
            if isinstance(node, Name) and node.name not in known:
                names = ", ".join("$" + k for k in sorted(known)) or "none"
                hint = did_you_mean(node.name, known)
                raise ExprError(f"unknown parameter '${node.name}'{hint} (names here: {names})", node.column)

    def evaluate(self, env: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None) -> Value:
        """The value over ``env`` (names without '$'); ExprError with a column on failure."""
        tree = self.tree
        if type(tree) is Name and (value := env.get(tree.name)) is not None:
            # a bare '$param' (most block fields): what eval would give
            return _checked(value, tree.column, f"'${tree.name}'")  # type: ignore[no-any-return]
        return _Evaluator(env, functions or {}).eval(tree)


def parse(text: str) -> Expr:
    """Parse expression text (ExprError with a column on a syntax error)."""
    return Expr(text)


# --- evaluation -----------------------------------------------------------------------------


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]} ({len(text)} characters)"


def _checked(value: Any, column: int, what: str) -> Any:
    """``value`` if it is no number, a finite float or an integer within MAX_INT; else an
    ExprError at ``column`` saying that ``what`` (the literal, ``'$name'``, the operator or the
    function that made it) overflowed. The one place numbers are checked (module docstring)."""
    t = type(value)
    if t is float:
        if value != value:
            raise ExprError(f"{what} is not a number (NaN)", column)
        if value in (math.inf, -math.inf):
            raise ExprError(f"{what} overflows: beyond the float range (about 1.8e308)", column)
    elif t is int and not -MAX_INT <= value <= MAX_INT:
        raise ExprError(f"{what} is out of range: an integer beyond 2**63 - 1", column)
    return value


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return type(v).__name__


_ROUNDING: dict[str, Callable[[int | float], int]] = {"int": int, "ceil": math.ceil, "floor": math.floor}
"""The pure functions from a number to an integer (their arguments are finite: :func:`_checked`)."""


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]) -> None:
        self.env = env
        self.functions = functions

    def number(self, node: Node) -> int | float:
        v = self.eval(node)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ExprError(f"expected a number, got {_kind(v)} ({v!r})", node.column)
        return v

    def boolean(self, node: Node) -> bool:
        v = self.eval(node)
        if not isinstance(v, bool):
            raise ExprError(f"expected true or false, got {_kind(v)} ({v!r})", node.column)
        return v

    def eval(self, node: Node) -> Value:
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Name):
            if node.name not in self.env:
                names = ", ".join("$" + k for k in sorted(self.env)) or "none"
                hint = did_you_mean(node.name, self.env)
                raise ExprError(f"unknown parameter '${node.name}'{hint} (names here: {names})", node.column)
            v = self.env[node.name]
            if v is None:
                raise ExprError(f"'${node.name}' is used but has no value", node.column)
            return _checked(v, node.column, f"'${node.name}'")  # type: ignore[no-any-return]
        if isinstance(node, Unary):
            if node.op == "not":
                return not self.boolean(node.operand)
            x = self.number(node.operand)
            return -x if node.op == "-" else x  # within range: MAX_INT is symmetric
        if isinstance(node, Cond):
            return self.eval(node.then) if self.boolean(node.test) else self.eval(node.other)
        if isinstance(node, Call):
            return self.call(node)
        assert isinstance(node, Binary)
        if node.op == "and":
            return self.boolean(node.left) and self.boolean(node.right)
        if node.op == "or":
            return self.boolean(node.left) or self.boolean(node.right)
        if node.op in ("==", "!="):
            a, b = self.eval(node.left), self.eval(node.right)
            if _kind(a) != _kind(b):
                raise ExprError(f"cannot compare {_kind(a)} ({a!r}) with {_kind(b)} ({b!r})", node.column)
            return (a == b) == (node.op == "==")
        a, b = self.number(node.left), self.number(node.right)
        try:
            value = _arith(node, a, b)
        except ArithmeticError:  # OverflowError: a float result Python refuses to round to inf
            value = math.inf
        return _checked(value, node.column, f"'{node.op}'")  # type: ignore[no-any-return]

    def call(self, node: Call) -> Value:
        args = [self.number(a) for a in node.args]
        if node.func == "min":
            return min(args)
        if node.func == "max":
            return max(args)
        if node.func in _ROUNDING:
            return _checked(_ROUNDING[node.func](args[0]), node.column, f"{node.func}()")  # type: ignore[no-any-return]
        fn = self.functions.get(node.func)
        if fn is None:
            raise ExprError(f"{node.func}() is not available here", node.column)
        try:
            value = fn(*args)
        except ExprError as exc:
            raise ExprError(exc.message, exc.column or node.column) from None
        except (ArithmeticError, ValueError):  # e.g. int(inf) inside: its arguments overflow it
            raise ExprError(f"{node.func}() overflows: beyond the float range", node.column) from None
        return _checked(value, node.column, f"{node.func}()")  # type: ignore[no-any-return]


def _arith(node: Binary, a: int | float, b: int | float) -> Value:
    op = node.op
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if b == 0:
        raise ExprError("division by zero", node.column)
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    return a % b  # '%'
