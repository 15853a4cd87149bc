"""YAML loading that remembers where every value came from, and error rendering.

Why not ``yaml.safe_load``: it forgets positions, and it reads YAML 1.1 (``1e-3`` is a
string there, ``no`` is ``False``). We compose the node tree with PyYAML's safe composer (over
libyaml when PyYAML has it, about 20x faster; :func:`parse_text` says how positions and
messages stay those of the pure-Python loader), then build plain Python values ourselves with
YAML 1.2 core-schema scalars, refuse any explicit tag (``!!python/object`` and friends never
construct anything), refuse duplicate keys, and record ``path -> (line, col)`` for every node
so schema and lowering errors can point at the text that caused them.

Hostile files are bounded before they cost anything: only regular files of at most
:data:`MAX_SPEC_BYTES` are read, nesting (:data:`MAX_DEPTH`) and value counts
(:data:`MAX_VALUES`) are enforced while PyYAML composes, and numbers must fit int64
(:data:`MAX_INT`) or float64. Each is a one-line :class:`SpecError`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.composer import Composer
from yaml.resolver import Resolver

from archcompiler.language.yaml_errors import explain
from archcompiler.text import brief

PathT = tuple[str | int, ...]

MAX_DEPTH = 64
"""Deepest nesting of YAML collections a spec may use."""
MAX_VALUES = 100_000
"""Most values a spec may expand to (a MobileNet spec has a few hundred)."""
MAX_SPEC_BYTES = 1 << 20
"""Largest spec file read (1 MiB; the shipped specs are about 3 KB). Checked with ``os.stat``
before reading, and at most this many bytes plus one are ever read, so ``/dev/zero`` or a file
growing while it is read cannot exhaust memory."""
MAX_INT = 2**63
"""Integers in a spec must lie in ``[-MAX_INT, MAX_INT)`` (int64). Longer digit strings are
refused before conversion: Python refuses to convert more than 4,300 digits, and converting
long digit strings costs quadratic time."""
_MAX_INT_DIGITS = {10: 19, 16: 16, 8: 21}  # digits (after leading zeros) that can still be < 2**63


class SpecError(Exception):
    """A user-facing error: one line, with a location. The CLI prints it and exits 2."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<spec>",
        line: int | None = None,
        col: int | None = None,
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.path = path

    def __str__(self) -> str:
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}:{self.col or 1}"
        where = f" {self.path}:" if self.path else ""
        return one_line(f"{loc}:{where} {self.message}")


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x85``, ``\\u2028``, ``\\x1b``).

    A spec path names the user's keys as written, so a key such as ``"a\\nb"`` or one holding a
    terminal escape would otherwise split the error over lines or recolour the terminal.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def format_path(path: Sequence[str | int]) -> str:
    """``('layers', 3, 'stride')`` -> ``layers[3].stride``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    # never suggest the word itself (a key valid elsewhere is still unknown here)
    match = difflib.get_close_matches(str(word), [c for c in choices if c != word], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() cut to one short line, for '(got ...)' suffixes.

    Non-ASCII characters are escaped (``ascii()``), so that a look-alike such as a Cyrillic
    'с' in 'сonv' shows as '\\u0441onv' instead of reading exactly like the valid 'conv'.
    """
    text = ascii(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(
    r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
)
_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class _ScalarError(ValueError):
    """A plain scalar that cannot become a value; the builder adds the node's location."""


def _int(text: str) -> int:
    """A YAML 1.2 core-schema integer within :data:`MAX_INT`, converted only once it is short."""
    base, body = (8, text[2:]) if text.startswith("0o") else (16, text[2:]) if text.startswith("0x") else (10, text)
    digits = body.lstrip("+-").lstrip("0")
    if len(digits) <= _MAX_INT_DIGITS[base]:
        value = int(body, base)
        if -MAX_INT <= value < MAX_INT:
            return value
    raise _ScalarError(f"integer out of range (more than 64 bits; got {short_repr(text, 30)})")


def _plain_scalar(text: str) -> Any:
    if _NULL.fullmatch(text):
        return None
    if _BOOL.fullmatch(text):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return _int(text)
    if _FLOAT.fullmatch(text):
        low = text.lower()
        if low.endswith(".inf"):
            return float("-inf") if low.startswith("-") else float("inf")
        if low == ".nan":
            return float("nan")
        value = float(text)
        if math.isinf(value):  # 1e999: only an explicit .inf may mean infinity
            raise _ScalarError(f"number out of range for a 64-bit float (got {short_repr(text, 30)})")
        return value
    return text


@dataclass
class Source:
    """A parsed spec document plus the position of every value in it."""

    file: str
    data: Any
    positions: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathT, tuple[int, int]] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the document and every position in it.
        return f"<Source {brief(self.file)}: {len(self.positions)} values located>"

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int | None, int | None]:
        """Line and column of ``path``, falling back to the nearest enclosing node."""
        p = tuple(path)
        while True:
            if key and p in self.key_positions:
                return self.key_positions[p]
            if p in self.positions:
                return self.positions[p]
            if not p:
                return None, None
            p = p[:-1]
            key = False

    def error(self, path: Sequence[str | int], message: str, *, key: bool = False) -> SpecError:
        line, col = self.locate(path, key=key)
        return SpecError(message, file=self.file, line=line, col=col, path=format_path(path))


class _Diverges(Exception):
    """libyaml read the text differently from PyYAML, or may have: parse_text re-reads it in Python."""


class _Builder:
    def __init__(self, file: str, libyaml: bool = False) -> None:
        self.file = file
        self.libyaml = libyaml
        self.positions: dict[PathT, tuple[int, int]] = {}
        self.key_positions: dict[PathT, tuple[int, int]] = {}
        self.count = 0  # values built so far, aliases counted each time they are expanded
        self.open: set[int] = set()  # ids of the collections being built (to catch alias cycles)

    def _err(self, node: yaml.Node, path: PathT, message: str) -> SpecError:
        return SpecError(
            message,
            file=self.file,
            line=node.start_mark.line + 1,
            col=node.start_mark.column + 1,
            path=format_path(path),
        )

    def build(self, node: yaml.Node, path: PathT, depth: int = 0) -> Any:
        if id(node) in self.open:
            raise self._err(node, path, "a YAML alias refers to a collection that contains it (a cycle)")
        if depth > MAX_DEPTH:
            raise self._err(node, path, f"nesting is deeper than {MAX_DEPTH} levels")
        self.count += 1
        if self.count > MAX_VALUES:
            # aliases of aliases ("billion laughs") would otherwise expand exponentially
            raise self._err(node, path, f"the spec expands to more than {MAX_VALUES:,} values (YAML aliases?)")
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        explicit = node.tag if node.tag not in _STANDARD_TAGS else None
        if isinstance(node, yaml.ScalarNode):
            if explicit is not None:
                raise self._err(node, path, f"YAML tags are not allowed (got {node.tag!r})")
            if self.libyaml and not node.value and not node.style:
                raise _Diverges  # a value left out ('k: ,'): libyaml places the null elsewhere
            # plain style is None from PyYAML's parser and '' from libyaml's
            if not node.style or node.tag != "tag:yaml.org,2002:str":
                # a plain scalar resolves by the YAML 1.2 core schema; an explicit standard tag
                # such as !!int "3" is honoured through the same rules
                try:
                    return _plain_scalar(node.value)
                except _ScalarError as exc:
                    raise self._err(node, path, str(exc)) from None
            return node.value
        if explicit is not None:
            raise self._err(node, path, f"YAML tags are not allowed (got {node.tag!r})")
        self.open.add(id(node))
        try:
            return self._build_collection(node, path, depth)
        finally:
            self.open.discard(id(node))

    def _build_collection(self, node: yaml.Node, path: PathT, depth: int) -> Any:
        if self.libyaml and node.flow_style:
            _check_flow(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._err(key_node, path, "mapping keys must be plain names")
                if key_node.tag not in _STANDARD_TAGS:
                    raise self._err(key_node, path, f"YAML tags are not allowed (got {key_node.tag!r})")
                key = key_node.value
                if self.libyaml and not key and not key_node.style:
                    raise _Diverges  # a left-out key ('? '), placed as a left-out value may be
                if key == "<<":
                    raise self._err(key_node, path, "YAML merge keys ('<<') are not supported; use a block")
                key_path = (*path, key)
                if key in out:
                    raise self._err(key_node, key_path, f"duplicate key {key!r}")
                mark = key_node.start_mark
                self.key_positions[key_path] = (mark.line + 1, mark.column + 1)
                out[key] = self.build(value_node, key_path, depth + 1)
            return out
        raise self._err(node, path, "unsupported YAML node")  # pragma: no cover


def _check_flow(node: yaml.Node) -> None:
    """Refuse what libyaml reads differently from PyYAML in a flow collection: PyYAML ends a
    plain scalar there at '?' (YAML 1.1), libyaml reads on (``{op: a?b}``)."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
    for item in items:
        if isinstance(item, yaml.ScalarNode) and not item.style and "?" in item.value:
            raise _Diverges


def _is_null(node: yaml.Node) -> bool:
    """A plain null scalar (empty, '~' or 'null') with no explicit tag."""
    return (
        isinstance(node, yaml.ScalarNode)
        and not node.style
        and node.tag == "tag:yaml.org,2002:null"
        and _NULL.fullmatch(node.value) is not None
    )


class _Resolver(Resolver):
    """PyYAML's safe resolver without timestamps (below)."""


# YAML 1.2's core schema has no timestamps: a plain ``2001-12-14`` is a string, as ``no`` is.
# PyYAML (YAML 1.1) would tag it ``timestamp``, which the builder refuses as a tag. Dropping
# that implicit resolver makes it a plain string for every loader (libyaml resolves through
# this same Python resolver); an explicit ``!!timestamp`` is still refused as a tag.
_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


class _Bounded(Composer):
    """PyYAML's composer with :data:`MAX_DEPTH` and :data:`MAX_VALUES` enforced while composing.

    The composer recurses once per nesting level (about three Python frames each), so 5,000
    nested ``[`` would end in RecursionError before our builder could count levels; and every
    node costs about a kilobyte, so the count is capped before the tree is complete.
    """

    file: str

    def _bound(self, file: str) -> None:
        self.file = file
        self.depth = 0
        self.nodes = 0

    def _refuse(self, mark: yaml.Mark, message: str) -> SpecError:
        return SpecError(message, file=self.file, line=mark.line + 1, col=mark.column + 1)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark  # type: ignore[attr-defined]
        if self.depth > MAX_DEPTH:
            raise self._refuse(mark, f"nesting is deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_VALUES:
            raise self._refuse(mark, f"the spec has more than {MAX_VALUES:,} values")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _BoundedLoader(_Bounded, _Resolver, yaml.SafeLoader):
    """The pure-Python reader, scanner and parser: the reference, and the one that words errors."""

    def __init__(self, text: str, file: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._bound(file)


try:  # present when PyYAML was built with libyaml
    from yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - a PyYAML without libyaml
    _CParser = None

LIBYAML: bool = _CParser is not None
"""Whether :func:`parse_text` uses libyaml by default (tests flip it to run the corpus under both)."""

C_COMPOSE_MAX = 1000
"""Most indicator characters (``[{-:?,.``) a text may hold for libyaml's own composer to build
its nodes. That composer recurses in C and counts nothing, but every collection starts at one
of these characters and every node but the first follows one, so below this bound its depth
and node count are small; a larger text is composed in Python from libyaml's events, under
the depth and value limits (:class:`_Bounded`)."""

_INDICATORS = "[{-:?,."

if _CParser is not None:

    class _CLoader(_CParser, _Resolver):  # type: ignore[misc, valid-type]
        """libyaml's scanner, parser and composer, with the safe loader's tag resolver."""

        def __init__(self, text: str, file: str) -> None:
            _CParser.__init__(self, text)
            Resolver.__init__(self)

    class _BoundedCLoader(_Bounded, _CParser, _Resolver):  # type: ignore[misc, valid-type]
        """libyaml's scanner and parser under the bounded Python composer."""

        def __init__(self, text: str, file: str) -> None:
            _CParser.__init__(self, text)
            Resolver.__init__(self)
            Composer.__init__(self)
            self._bound(file)


Mode = Literal["python", "libyaml", "libyaml-events"]


def _mode(text: str) -> Mode:
    """The fastest way to compose ``text`` that reads it as PyYAML's reader does.

    A tab or a byte-order mark anywhere sends the text to the pure-Python loader: PyYAML
    refuses a tab between tokens where libyaml takes it for a space, and libyaml does not count
    a BOM inside the text as a column. Otherwise libyaml composes it (:data:`C_COMPOSE_MAX`)."""
    if "\t" in text or "\ufeff" in text:
        return "python"
    if len(text) <= C_COMPOSE_MAX or sum(map(text.count, _INDICATORS)) <= C_COMPOSE_MAX:
        return "libyaml"
    return "libyaml-events"


def _compose(text: str, file: str, mode: Mode = "python") -> list[yaml.Node]:
    """Every document's root node, composed within the depth and size limits."""
    if mode == "libyaml":
        loader: Any = _CLoader(text, file)
    elif mode == "libyaml-events":
        loader = _BoundedCLoader(text, file)
    else:
        loader = _BoundedLoader(text, file)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    except RecursionError:  # a safety net: the depth limit should stop any nesting long before this
        mark = loader.get_mark() if mode == "python" else yaml.Mark(file, 0, 0, 0, None, None)
        raise SpecError("nesting is too deep", file=file, line=mark.line + 1, col=mark.column + 1) from None
    finally:
        loader.dispose()


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def parse_text(text: str, file: str = "<spec>", *, libyaml: bool | None = None) -> Source:
    """Parse YAML text into a Source. Raises SpecError with the YAML error's position.

    With libyaml (``libyaml=None``: when :data:`LIBYAML`) the text is scanned in C; if that
    fails for any reason the text is parsed again by the pure-Python loader, whose error is
    the one raised, so every message (wording, line and column) is the pure-Python loader's by
    construction. Valid text gives the same values and positions either way
    (tests/language/test_yaml_loaders.py checks the corpus and mutated specs under both).
    """
    if libyaml is None:
        libyaml = LIBYAML
    mode = _mode(text) if libyaml and _CParser is not None else "python"
    if mode != "python":
        try:
            return _parse(text, file, mode)
        except Exception:  # any failure is re-done by the reference loader below
            pass
    return _parse(text, file, "python")


def _parse(text: str, file: str, mode: Mode) -> Source:
    """:func:`parse_text` with one loader and no fallback."""
    try:
        nodes = _compose(text, file, mode)
    except yaml.reader.ReaderError as exc:
        # a control character such as NUL; PyYAML's own message spans two lines
        line, col = _line_col(text, exc.position)
        raise SpecError(
            f"not valid YAML: control character U+{exc.character:04X} is not allowed", file=file, line=line, col=col
        ) from None
    except yaml.MarkedYAMLError as exc:
        message, line, col = explain(exc, text)  # in words, at the line to fix
        raise SpecError(f"not valid YAML: {message}", file=file, line=line, col=col) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}", file=file, line=1, col=1) from None
    # A document holding only null ('---' alone, or '~') is as empty as no document at all.
    nodes = [n for n in nodes if n is not None and not _is_null(n)]
    if not nodes:
        raise SpecError(
            "the spec is empty (expected a mapping with 'name', 'input' and 'layers')", file=file, line=1, col=1
        )
    if len(nodes) > 1:
        second = nodes[1]
        raise SpecError(
            "a spec file holds one YAML document, found several",
            file=file,
            line=second.start_mark.line + 1,
            col=second.start_mark.column + 1,
        )
    builder = _Builder(file, libyaml=mode != "python")
    data = builder.build(nodes[0], ())
    if not isinstance(data, dict):
        raise SpecError(
            f"the spec must be a mapping with 'name', 'input' and 'layers' (got {type(data).__name__})",
            file=file,
            line=nodes[0].start_mark.line + 1,
            col=nodes[0].start_mark.column + 1,
        )
    return Source(file=file, data=data, positions=builder.positions, key_positions=builder.key_positions)


def file_kind(mode: int) -> str:
    """What a non-regular file is (from ``st_mode``), for messages such as 'is a FIFO, not a spec file'."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes_bounded(path: str | Path, limit: int = MAX_SPEC_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or a SpecError.

    Only regular files: reading ``/dev/zero`` never ends and opening a FIFO blocks until
    someone writes. The file is opened non-blocking and checked again on the open descriptor
    (it may have been swapped since ``os.stat``), and at most ``limit + 1`` bytes are read.
    Whole-file problems carry the file name but no line: there is no text to point into.
    """
    name = str(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(f"is {file_kind(st.st_mode)}, not a spec file", file=name)
        if st.st_size > limit:
            raise SpecError(f"is {st.st_size:,} bytes; a spec file may have at most {limit:,}", file=name)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            now = os.fstat(fh.fileno())
            if not stat.S_ISREG(now.st_mode):
                raise SpecError(f"is {file_kind(now.st_mode)}, not a spec file", file=name)
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise SpecError("no such file", file=name) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", file=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", file=name) from None
    if len(raw) > limit:  # it grew after os.stat
        raise SpecError(f"is more than {limit:,} bytes, the most a spec file may have", file=name)
    return raw


def read_source(path: str | Path) -> Source:
    """Read and parse a spec file; a missing, unreadable, special or oversized file is a SpecError too."""
    name = str(path)
    raw = read_bytes_bounded(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # point at the first bad byte (everything before it decoded, so columns are characters)
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[start : exc.start].decode("utf-8")) + 1
        raise SpecError(f"not UTF-8 text (got byte 0x{raw[exc.start]:02x})", file=name, line=line, col=col) from None
    return parse_text(text, name)
