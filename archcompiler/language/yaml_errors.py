"""PyYAML's syntax errors, worded for people and placed on the line to fix.

PyYAML says what its parser expected in its own token names (``expected <block end>, but
found '<block sequence start>'``) and often at the line *after* the mistake: a key without its
colon (``classes 10``) is read as the start of a longer value and only fails at the next
colon. :func:`explain` reads the error's marks and the lines around them, recognises the
common mistakes (a missing colon, a list item or a key at the wrong indentation, a line
indented under a key that already has its value, a tab, an unclosed bracket or quote) and
says what is wrong, where, and what to write instead. Anything else is PyYAML's message with
its token names translated. The text decides the wording, not the loader: libyaml's errors are
re-read by the pure-Python loader first (:func:`archcompiler.language.source.parse_text`).
"""

from __future__ import annotations

import re

import yaml

Located = tuple[str, int | None, int | None]
"""(message, 1-based line, 1-based column)."""

_TOKENS = {
    "<block end>": "the end of the indented block",
    "<block sequence start>": "a list item",
    "<block mapping start>": "a key",
    "<stream end>": "the end of the file",
    "<stream start>": "the start of the file",
    "<document start>": "a document start ('---')",
    "<document end>": "a document end ('...')",
    "<scalar>": "a value",
    "<alias>": "an alias",
    "<anchor>": "an anchor",
    "<tag>": "a tag",
    "<directive>": "a directive",
    "'?'": "a key",
    "'-'": "a list item ('-')",
}
_KEY = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[^\s\-?:,\[\]{}#&*!|>'\"%@`][^:#]*?) *:(?: |$)")
_ITEM = re.compile(r"^ *-(?: |$)")
_GLUED_DASH = re.compile(r"^ *-[^\s-]")
_MISSING_COLON = re.compile(r"^(?P<dash>- +)?(?P<key>[A-Za-z_][\w.-]*) +(?P<value>\S.*)$")
_GLUED_COLON = re.compile(r"^(?P<dash>- +)?(?P<key>[A-Za-z_][\w.-]*):(?P<value>[^\s:].*)$")


def explain(exc: yaml.MarkedYAMLError, text: str) -> Located:
    """What is wrong, in words, and the line and column to fix."""
    lines = [_code(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    problem, context = exc.problem or "", exc.context or ""
    at, ctx = exc.problem_mark, exc.context_mark
    for explainer in (_missing_colon, _unexpected_colon, _misindented, _tab, _unclosed):
        found = explainer(problem, context, at, ctx, lines)
        if found is not None:
            return found
    return _translated(problem or context or "invalid YAML", context if problem else "", at or ctx, ctx)


# -- the lines around an error ----------------------------------------------------------------


def _code(line: str) -> str:
    """A line without its comment (a '#' after a space, outside quotes) and trailing blanks."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _above(lines: list[str], index: int) -> int | None:
    """The index of the nearest line above ``index`` that holds something."""
    return next((i for i in range(index - 1, -1, -1) if lines[i].strip()), None)


def _key(line: str) -> tuple[str, int] | None:
    """(key, 1-based column) of a ``key:`` or ``- key:`` line."""
    m = _KEY.match(line)
    if m is None:
        return None
    return m["key"].strip(), len(m["indent"]) + len(m["dash"] or "") + 1


def _quoted(text: str, limit: int = 40) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _mark(mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


# -- the common mistakes ----------------------------------------------------------------------


def _no_colon(lines: list[str], i: int) -> Located:
    """Line ``i`` is a key without its ':' (``classes 10``), or without the space after it
    (``name:x``, one plain value to YAML)."""
    line = lines[i]
    glued = _GLUED_COLON.match(line.strip())
    if glued:
        fix = f"{glued['dash'] or ''}{glued['key']}: {glued['value']}"
        return f"{_quoted(line)}: a key's ':' needs a space after it (did you mean {fix!r}?)", i + 1, _indent(line) + 1
    m = _MISSING_COLON.match(line.strip())
    fix = f" (did you mean {(m['dash'] or '') + m['key'] + ': ' + m['value']!r}?)" if m else "; write 'key: value'"
    return f"{_quoted(line)} has no ':' after its key{fix}", i + 1, _indent(line) + 1


def _missing_colon(
    problem: str, context: str, at: yaml.Mark | None, ctx: yaml.Mark | None, lines: list[str]
) -> Located | None:
    """PyYAML: 'could not find expected ':'' after the key's line; the key's line is the one to fix."""
    if problem != "could not find expected ':'" or ctx is None or ctx.line >= len(lines):
        return None
    return _no_colon(lines, ctx.line)


def _continues(line: str, last: str) -> bool:
    """Whether ``line`` can be the start of the plain value that goes on to ``last`` (no key,
    not a list item or a bracket, at the same indentation)."""
    text = line.strip()
    return _key(line) is None and not text.startswith(("-", "[", "{")) and _indent(line) == _indent(last)


def _unexpected_colon(
    problem: str, context: str, at: yaml.Mark | None, ctx: yaml.Mark | None, lines: list[str]
) -> Located | None:
    """PyYAML: 'mapping values are not allowed here', at a ':' that ends a longer value than meant."""
    if problem != "mapping values are not allowed here" or at is None or at.line >= len(lines):
        return None
    cur = lines[at.line]
    if ": " in cur[: at.column].lstrip(" -"):  # 'name: a: b'
        return (
            "a value holding ': ' must be quoted (YAML reads a second key on this line)",
            at.line + 1,
            at.column + 1,
        )
    p = _above(lines, at.line)
    if p is None:
        return None
    prev, here = lines[p], _key(cur)
    if _key(prev) is None:  # 'size 32' or 'name:x' read on into this line's key
        first = p  # the first line of the plain value that read on: a key may miss its colon above
        while not _ITEM.match(lines[first]) and (q := _above(lines, first)) is not None and _continues(lines[q], prev):
            first = q
        return _no_colon(lines, first)
    known = _key(prev)
    if known is not None and not prev.endswith(":") and _indent(cur) + 1 > known[1]:  # its value is given
        name = f"{here[0]!r}" if here else "this line"
        return (
            f"{name} is indented more than {known[0]!r} on line {p + 1}, whose value is already given: "
            f"indent it like {known[0]!r} (column {known[1]})",
            at.line + 1,
            _indent(cur) + 1,
        )
    return None


def _misindented(
    problem: str, context: str, at: yaml.Mark | None, ctx: yaml.Mark | None, lines: list[str]
) -> Located | None:
    """PyYAML: 'expected <block end>, but found ...': a list item or a key at a column that
    belongs to no block above it."""
    if not problem.startswith("expected <block end>, but found") or at is None or at.line >= len(lines):
        return None
    found = problem.rsplit("found ", 1)[1]
    row, col = at.line + 1, at.column + 1
    p = _above(lines, at.line)
    if found in ("'<block sequence start>'", "'-'"):
        if p is not None and _GLUED_DASH.match(lines[p]) and not _ITEM.match(lines[p]):
            prev = lines[p].strip()
            return (
                f"{_quoted(prev)}: a list item's '-' needs a space after it (did you mean {'- ' + prev[1:]!r}?)",
                p + 1,
                _indent(lines[p]) + 1,
            )
        sibling = next((i for i in range(at.line - 1, -1, -1) if _ITEM.match(lines[i])), None)
        if sibling is None:
            where = f" of the mapping from line {ctx.line + 1}" if ctx is not None else ""
            return (
                f"a list item where a key{where} was expected: a list goes under its key, indented "
                "(such as 'layers:' and then '  - op: conv')",
                row,
                col,
            )
        column = _indent(lines[sibling]) + 1
        return (
            f"this list item is at column {col}, the list's items above it (line {sibling + 1}) at column "
            f"{column}: line its '-' up with theirs",
            row,
            col,
        )
    if found in ("'<block mapping start>'", "'?'"):
        key = _key(lines[at.line])
        name = repr(key[0]) if key else "this key"
        options = _columns_above(lines, at.line, col)
        dashes = {_indent(line) + 1 for line in lines[: at.line] if _ITEM.match(line)}
        item = " or make it a list item ('- ')" if col in dashes else ""
        if not options:
            return f"{name} at column {col} lines up with no key above it{item}", row, col
        like = " or ".join(f"{k!r} (line {n}, column {c})" for k, n, c in options)
        return f"{name} at column {col} lines up with no key above it: indent it like {like}{item}", row, col
    if found == "'<scalar>'" and lines[at.line][: at.column].rstrip().endswith(("'", '"')):
        return "text after a quoted value: put the whole value inside the quotes", row, col
    return None


def _columns_above(lines: list[str], index: int, col: int) -> list[tuple[str, int, int]]:
    """The keys of the blocks that enclose line ``index`` (each less indented than the one
    below it), as (key, line, column): the one just deeper than ``col`` and the one just
    shallower, the two places a misplaced key most likely belongs."""
    stack: list[tuple[str, int, int]] = []
    limit = 10**9
    for i in range(index - 1, -1, -1):
        key = _key(lines[i])
        if key is not None and key[1] < limit:
            stack.append((key[0], i + 1, key[1]))
            limit = key[1]
    deeper = [s for s in stack if s[2] > col]
    shallower = [s for s in stack if s[2] < col]
    return [*deeper[-1:], *shallower[:1]]


def _tab(problem: str, context: str, at: yaml.Mark | None, ctx: yaml.Mark | None, lines: list[str]) -> Located | None:
    if problem != "found character '\\t' that cannot start any token":
        return None
    row, col = _mark(at)
    return "a tab character where YAML needs spaces (replace the tab with spaces)", row, col


_CLOSERS = {"sequence": ("[", "]"), "mapping": ("{", "}")}


def _unclosed(
    problem: str, context: str, at: yaml.Mark | None, ctx: yaml.Mark | None, lines: list[str]
) -> Located | None:
    """An unclosed '[', '{' or quote, or a missing comma in a flow collection."""
    if context in ("while scanning a quoted scalar", "while scanning a double-quoted scalar") and (
        "end of stream" in problem
    ):
        row, col = _mark(ctx)
        return "this quote is never closed", row, col
    flow = re.fullmatch(r"while parsing a flow (sequence|mapping)", context)
    if flow is None or ctx is None or at is None:
        return None
    opener, closer = _CLOSERS[flow[1]]
    got = problem.rsplit("got ", 1)[-1]
    if got == "'<stream end>'" or at.line > ctx.line:
        message = f"this {opener!r} is not closed before line {at.line + 1}: a {closer!r} is missing"
        return message, ctx.line + 1, ctx.column + 1
    return (
        f"expected ',' or {closer!r} here, found {_TOKENS.get(got, got)} (is a ',' missing between the items?)",
        at.line + 1,
        at.column + 1,
    )


_CONTEXTS = {
    "while scanning a double-quoted scalar": "in a double-quoted string",
    "while scanning a quoted scalar": "in a quoted string",
    "while scanning a block scalar": "in a '|' or '>' text block",
    "while scanning an anchor": "in an anchor ('&name')",
    "while scanning an alias": "in an alias ('*name')",
    "while parsing a block mapping": "in the mapping that starts at line {line}",
    "while parsing a block collection": "in the list that starts at line {line}",
    "while parsing a flow sequence": "in the '[' list that starts at line {line}",
    "while parsing a flow mapping": "in the '{{' mapping that starts at line {line}",
}
_PHRASES = {
    "the node content": "a value",
    "cannot start any token": "cannot start a key or a value here (quote the value)",
    "found undefined alias": "found an alias whose anchor is defined nowhere above it:",
}


def _translated(problem: str, context: str, mark: yaml.Mark | None, ctx: yaml.Mark | None = None) -> Located:
    """PyYAML's own words with its token names and phrases replaced by what they mean."""
    for token, words in _TOKENS.items():
        problem = problem.replace(f"'{token}'" if not token.startswith("'") else token, words)
        problem = problem.replace(token, words)
    for phrase, words in _PHRASES.items():
        problem = problem.replace(phrase, words)
    where = _CONTEXTS.get(context, "").format(line=ctx.line + 1 if ctx is not None else "?")
    row, col = _mark(mark)
    return f"{problem} ({where})" if where else problem, row, col
