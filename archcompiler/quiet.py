"""Frameworks' own output kept off the terminal, unless the user asks for it.

TensorFlow, absl, oneDNN and LiteRT write log lines while they load and convert models
(``WARNING: All log messages before absl::InitializeLog() ...``, ``I0000 ... cpu_feature_guard``,
``INFO: Created TensorFlow Lite XNNPACK delegate``), and frameworks and numpy raise Python
warnings. None of it is archc's to say, and it would bury archc's one-line errors. Native
libraries write straight to file descriptor 2, so Python-level filters cannot stop them:
:func:`framework_output` points fd 2 at a temporary file while a framework is imported or does
its first work, and drops what was written (it is attached to an exception raised meanwhile,
as a note). The backends' framework-import modules use it; nothing else needs to.

:func:`command_warnings` is the command line's half: during a command, archc's own warnings
(:class:`ArchcWarning`) are one ``archc: warning: ...`` line each, every other Python warning
is dropped.

``ARCHC_VERBOSE=1`` (``-v`` / ``--verbose`` on the commands that run a framework) lets
everything through, as the frameworks print it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import IO, Any

VERBOSE_ENV = "ARCHC_VERBOSE"
"""Set (to anything but '' or '0') to see the frameworks' own output and every Python warning."""

_NOTE_CHARS = 4000
"""At most this much of what a framework wrote is kept as the note of an exception raised meanwhile."""


class ArchcWarning(UserWarning):
    """A warning archc itself gives (a build that falls back to another format, a file it could
    not write): shown by the command line as one line, while frameworks' warnings are dropped."""


_state = threading.local()
_lock = threading.Lock()
_saved_stderr: int | None = None
"""While fd 2 is held: a descriptor of the real stderr, to put back."""
_holders = 0


def verbose() -> bool:
    """Whether the user asked to see the frameworks' output (``-v`` for this command, or
    :data:`VERBOSE_ENV` in the environment)."""
    flag = getattr(_state, "verbose", None)
    if flag is not None:
        return bool(flag)
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


@contextlib.contextmanager
def verbosity(on: bool) -> Iterator[None]:
    """``-v`` for the duration of one command (on: show; off: the environment decides)."""
    previous = getattr(_state, "verbose", None)
    _state.verbose = True if on else previous
    try:
        yield
    finally:
        _state.verbose = previous


def _hold_stderr(into: IO[bytes]) -> None:
    """Point fd 2 at ``into``; a nested (or another thread's) holder shares the first one's."""
    global _saved_stderr, _holders
    with _lock:
        _holders += 1
        if _holders > 1:
            return
        with contextlib.suppress(OSError):  # no fd 2 at all (closed by the caller): nothing to hold
            _saved_stderr = os.dup(2)
            os.dup2(into.fileno(), 2)


def _release_stderr() -> None:
    global _saved_stderr, _holders
    with _lock:
        _holders -= 1
        if _holders == 0 and _saved_stderr is not None:
            os.dup2(_saved_stderr, 2)
            os.close(_saved_stderr)
            _saved_stderr = None


def _flush(stream: Any) -> None:
    with contextlib.suppress(Exception):  # a closed or replaced stream has nothing to flush
        stream.flush()


@contextlib.contextmanager
def framework_output() -> Iterator[None]:
    """Hold everything a framework writes during the block: fd 2 (native log lines), Python's
    stdout and stderr, and Python warnings. Dropped on success; attached as a note to an
    exception raised in the block. A no-op when :func:`verbose`.

    Process-wide, as the descriptor it holds is: meant for a framework's one-off work (its
    import, a conversion, an interpreter's first allocation), not for every call."""
    if verbose():
        yield
        return
    python_text = io.StringIO()
    with tempfile.TemporaryFile() as native:
        for stream in (sys.stderr, sys.__stderr__):  # what came before goes where it was meant to
            _flush(stream)
        _hold_stderr(native)
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(python_text),
                contextlib.redirect_stderr(python_text),
            ):
                warnings.simplefilter("ignore")
                yield
        except BaseException as exc:
            _flush(sys.__stderr__)
            native.seek(0)
            _note(exc, python_text.getvalue() + native.read().decode("utf-8", "replace"))
            raise
        finally:
            _flush(sys.__stderr__)  # Python-level writes buffered for fd 2 land in the held file
            _release_stderr()


def _note(exc: BaseException, text: str) -> None:
    """Attach the framework's output to ``exc`` (Python >= 3.11; shown with its traceback)."""
    text = text.strip()
    if text and hasattr(exc, "add_note"):
        cut = text if len(text) <= _NOTE_CHARS else "...\n" + text[-_NOTE_CHARS:]
        exc.add_note(f"output of the framework meanwhile:\n{cut}")


def _one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    first = str(message).strip().splitlines()
    print(f"archc: warning: {first[0] if first else category.__name__}", file=sys.stderr)


@contextlib.contextmanager
def command_warnings() -> Iterator[None]:
    """During one command: :class:`ArchcWarning` as one ``archc: warning: ...`` line each; any
    other warning (a framework's, numpy's) dropped. Unchanged when :func:`verbose`."""
    with warnings.catch_warnings():
        if not verbose():
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", ArchcWarning)  # inserted first: takes precedence
            warnings.showwarning = _one_line
        yield
