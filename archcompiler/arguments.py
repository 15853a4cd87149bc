"""Checks of the Python API's arguments, shared by every public function (archcompiler.api).

A wrong type or value is one of the API's documented errors naming the argument, raised before
any work: :class:`~archcompiler.language.source.SpecError` for what shapes the model (``width``,
``classes``, ``outputs``, ``widths``, budgets...), :class:`~archcompiler.kit.backend.BackendError` for
how it is built and run (``backend``, ``batch``, ``seed``, ``runs``, a model from another
backend...), :class:`~archcompiler.weights.WeightError` for ``weights`` and ``OutputError``
for output folders. Never an AttributeError or TypeError from deep inside, and never a value
silently taken for another (``pooling="bogus"`` as no pooling, ``features="no"`` as true).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from archcompiler.kit.backend import BackendError
from archcompiler.language.source import SpecError, short_repr

ARGUMENTS = "<arguments>"
"""Where an argument error is located when no spec file is known yet (the file of SpecError)."""


def fail(error: type[Exception], name: str, message: str, file: str = ARGUMENTS) -> Exception:
    """The error for argument ``name``: a SpecError located at ``name`` in ``file``, else
    ``error("<name>: <message>")``."""
    if error is SpecError:
        return SpecError(message, file=file, path=name)
    return error(f"{name}: {message}")


def kind(value: Any) -> str:
    """How an error shows what it got: ``'text'``, ``int 123``, ``NoneType None``."""
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {short_repr(value)}"


def integer(
    value: Any,
    name: str,
    *,
    low: int = 0,
    high: int | None = None,
    error: type[Exception] = BackendError,
    file: str = ARGUMENTS,
) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low:,}" + (f" to {high:,}" if high is not None else "")
        raise fail(error, name, f"expected a whole number {span}, got {kind(value)}", file)
    return value


def number(
    value: Any,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    error: type[Exception] = BackendError,
    file: str = ARGUMENTS,
) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) within the bounds."""
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok:
        try:
            x = float(value)
        except OverflowError:  # a huge int
            ok = False
        else:
            ok = math.isfinite(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"in {left}{low:g}, {high:g}{right}" if math.isfinite(high) else f"{'>' if low_open else '>='} {low:g}"
        raise fail(error, name, f"expected a finite number {span}, got {kind(value)}", file)
    return float(value)


def flag(value: Any, name: str, *, error: type[Exception] = BackendError, file: str = ARGUMENTS) -> bool:
    """``value`` if it is True or False (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise fail(error, name, f"expected True or False, got {kind(value)}", file)
    return value


def choice(
    value: Any, name: str, choices: Sequence[str], *, error: type[Exception] = BackendError, file: str = ARGUMENTS
) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise fail(error, name, f"expected one of {', '.join(map(repr, choices))}, got {kind(value)}", file)
    return value


def sequence(
    value: Any, name: str, *, error: type[Exception] = SpecError, file: str = ARGUMENTS, what: str = "values"
) -> tuple[Any, ...]:
    """``value`` as a tuple if it is a non-empty list or tuple (a str, a set or one number is not)."""
    if not isinstance(value, list | tuple) or not value:
        raise fail(error, name, f"expected a non-empty list of {what}, got {kind(value)}", file)
    return tuple(value)


def names(value: Any, name: str, *, error: type[Exception] = SpecError, file: str = ARGUMENTS) -> tuple[str, ...]:
    """One name or a non-empty list of names."""
    items = (value,) if isinstance(value, str) else sequence(value, name, error=error, file=file, what="names")
    bad = next((v for v in items if not isinstance(v, str)), None)
    if bad is not None:
        raise fail(error, name, f"expected names (strings), got {kind(bad)}", file)
    return items


def callback(value: Any, name: str) -> Callable[..., Any] | None:
    """None or something callable (a progress function)."""
    if value is not None and not callable(value):
        raise fail(BackendError, name, f"expected a function or None, got {kind(value)}")
    return value  # type: ignore[no-any-return]


def instance(value: Any, name: str, cls: type, *, error: type[Exception] = SpecError, file: str = ARGUMENTS) -> Any:
    """None or an instance of ``cls`` (``head=Head(...)``, ``outputs=Outputs(...)``)."""
    if value is not None and not isinstance(value, cls):
        raise fail(error, name, f"expected None or an instance of {cls.__name__}, got {kind(value)}", file)
    return value


def path(value: Any, name: str, *, error: type[Exception], what: str = "a file or folder name") -> Path:
    """A non-empty str or os.PathLike as a Path (``Path(123)`` would be a TypeError)."""
    ok = isinstance(value, str | os.PathLike)
    if ok:
        try:
            ok = bool(os.fspath(value))
        except TypeError:  # a PathLike whose __fspath__ gives neither str nor bytes
            ok = False
    if not ok:
        raise fail(error, name, f"expected {what}, got {kind(value)}")
    return Path(value)


def mapping(value: Any, name: str, *, error: type[Exception] = BackendError) -> Mapping[Any, Any]:
    """``value`` if it is a Mapping."""
    if not isinstance(value, Mapping):
        raise fail(error, name, f"expected a mapping, got {kind(value)}")
    return value
