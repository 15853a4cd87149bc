"""The reference tables of the documentation, made from the code so that they cannot go stale.

docs/spec.md's tables of fields (every op's, a layer's, the top level's) come from the spec
language's pydantic models (their JSON Schema, defaults and descriptions), each op's example
from a spec that uses every op; docs/cli.md's option tables come from the ``archc`` parser;
docs/performance.md's table is the last ``make bench`` run (benchmarks/results.json).
The pages keep each table between two markers::

    <!-- generated: ops -->
    ...
    <!-- end generated: ops -->

``python -m archcompiler.tools.reference [docs]`` rewrites them (``make docs`` does);
``--check`` says which are stale, as tests/tools/test_reference.py does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MARKER = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)", re.S)
EXAMPLES = Path("examples") / "every-op.yaml"
"""A spec (under the docs folder) that uses every op; each op's example is its first line there."""

_EXPRESSION = "expression"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else json.dumps(value)


def _bounds(schema: dict[str, Any], kind: str) -> str:
    low = next(((k, schema[k]) for k in ("minimum", "exclusiveMinimum") if k in schema), None)
    high = next(((k, schema[k]) for k in ("maximum", "exclusiveMaximum") if k in schema), None)
    if low and high:
        left, right = "[" if low[0] == "minimum" else "(", "]" if high[0] == "maximum" else ")"
        return f"{kind} in {left}{_number(low[1])}, {_number(high[1])}{right}"
    if low:
        return f"{kind} {'≥' if low[0] == 'minimum' else '>'} {_number(low[1])}"
    return kind


def kind(schema: dict[str, Any]) -> str:
    """What a field takes, in words, from its JSON Schema."""
    if "$ref" in schema:
        return "a mapping (below)"
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return " or ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return _either(schema.get("anyOf") or schema["oneOf"])
    if schema.get("pattern") == "^=|\\$":
        return _EXPRESSION
    return _typed(schema)


def _either(options: list[dict[str, Any]]) -> str:
    """Alternatives: the values first, then lists of them, an expression last."""
    options = [o for o in options if o.get("type") != "null"]
    if options and all("$ref" in o for o in options):
        return "a layer: `{op: ...}` or `{block: ...}`"
    values = list(dict.fromkeys(kind(o) for o in options if o.get("type") != "array"))
    scalars = set(values) - {_EXPRESSION}
    lists = [_list(o, scalars) for o in options if o.get("type") == "array"]
    parts = [v for v in values if v != _EXPRESSION] + lists + ([f"an {_EXPRESSION}"] if _EXPRESSION in values else [])
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _list(schema: dict[str, Any], scalars: set[str]) -> str:
    """``a list of 2 of them`` when its items are among ``scalars``, else what they are."""
    items = schema.get("prefixItems", [schema.get("items", {})])[0]
    n = schema.get("minItems")
    size = f"{n} " if n is not None and n == schema.get("maxItems") else ""
    if items.get("type") == "array":
        return f"a list of {size}{_list(items, scalars).replace('a list', 'lists', 1)}"
    inner = set(kind(i) for i in items.get("anyOf", [items])) - {_EXPRESSION}
    return f"a list of {size}of them" if size and inner <= scalars else f"a list of {size}({kind(items)})"


def _typed(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if t == "integer":
        return _bounds(schema, "integer")
    if t == "number":
        return _bounds(schema, "number")
    if t == "boolean":
        return "`true` or `false`"
    if t == "string":
        return "a name" if "pattern" in schema else "text"
    if t == "array":
        return _list(schema, set())
    if t == "object":
        values = [kind(v) for v in schema.get("patternProperties", {}).values()]
        value = values[0].replace("a mapping", "mappings") if values else ""
        return f"a mapping of names to {value}" if values else "a mapping"
    return "any value"


def _default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return "empty"
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def fields_table(model: type[BaseModel], *, skip: tuple[str, ...] = ()) -> str:
    """A Markdown table of ``model``'s fields: name, what it takes, default, meaning."""
    schema = model.model_json_schema()
    rows = ["| field | takes | default | meaning |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        meaning = prop.get("description") or model.model_fields[name].description or ""
        takes = _cell(kind(prop))
        rows.append(f"| `{name}` | {takes} | {_cell(_default(model, name))} | {_cell(meaning)} |")
    return "\n".join(rows)


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def examples(spec_text: str) -> dict[str, str]:
    """The first layer line of each op in a spec written one layer per line (``- {op: ...}``)."""
    found: dict[str, str] = {}
    for line in spec_text.splitlines():
        m = re.match(r"\s*- (\{op: (\w+).*\})\s*(?:#.*)?$", line)
        if m:
            found.setdefault(m.group(2), m.group(1))
    return found


def op_models() -> dict[str, type[BaseModel]]:
    """Each op model of the spec language by its first ``op:`` tag (``avg_pool`` also stands
    for ``max_pool``, which the same model reads)."""
    from archcompiler.ops import SPEC_OPS

    out: dict[str, type[BaseModel]] = {}
    for tag, model in SPEC_OPS.items():
        if model not in out.values():
            out[tag] = model
    return out


COMMON = ("op", "name", "inputs", "repeat", "when")
"""The fields every layer takes (their own table); an op's table lists the rest."""


def op(tag: str, example_layers: dict[str, str]) -> str:
    """An op's generated part: the IR op it lowers to and how many inputs it reads, its own
    fields, and an example layer of each of its tags."""
    from typing import get_args

    from archcompiler.ops import NODE_FOR_LAYER

    model = op_models()[tag]
    tags = get_args(model.model_fields["op"].annotation)
    missing = [t for t in tags if t not in example_layers]
    if missing:
        raise ValueError(f"docs/{EXAMPLES}: no example of op {missing[0]!r} (add a layer that uses it)")
    node = NODE_FOR_LAYER[model]
    low, high = node.arity
    reads = {(1, 1): "one input", (0, 0): "no input"}.get((low, high)) or (
        f"{low} or more inputs" if high is None else f"{low} to {high} inputs"
    )
    out = [f"Spec `op: {' | '.join(tags)}`, IR op `{node.op}`; reads {reads}.", ""]
    if any(n not in COMMON for n in model.model_fields):
        out += [fields_table(model, skip=COMMON), ""]
    out += ["```yaml", *(f"- {example_layers[t]}" for t in tags), "```"]
    return "\n".join(out)


def spec_fields() -> str:
    """The top level of a spec and every mapping in it, one table each."""
    from archcompiler.language.spec import (
        BatchNormDefaults,
        BlockCall,
        BlockDef,
        Checkpoint,
        Defaults,
        InputSpec,
        Rounding,
        Spec,
        Variant,
    )

    parts = []
    for title, model in [
        ("The spec", Spec),
        ("`input`", InputSpec),
        ("`rounding`", Rounding),
        ("`defaults`", Defaults),
        ("`defaults.batchnorm`", BatchNormDefaults),
        ("`blocks.<name>`", BlockDef),
        ("`variants.<name>`", Variant),
        ("`checkpoints.<format>`", Checkpoint),
        ("A block call (`- {block: <name>, ...}`)", BlockCall),
    ]:
        parts += [f"#### {title}", "", _first_line(model.__doc__), "", fields_table(model), ""]
    return "\n".join(p for i, p in enumerate(parts) if p or parts[i - 1]).rstrip("\n")


def layer_fields() -> str:
    from archcompiler.language.fields import LayerBase

    return fields_table(LayerBase)


def _option_value(action: argparse.Action) -> str:
    if action.nargs == 0 or not action.option_strings:
        return ""
    if action.choices:
        return " or ".join(f"`{c}`" for c in action.choices)
    return f"`{action.metavar or action.dest.upper()}`"


def _options(actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | value | default | what |", "|---|---|---|---|"]
    for action in actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flags = ", ".join(f"`{f}`" for f in action.option_strings) or f"`{action.dest.upper()}`"
        default = "" if action.default in (None, False) or action.nargs == 0 else f"`{_plain(action.default)}`"
        rows.append(f"| {flags} | {_cell(_option_value(action))} | {default} | {_cell(action.help or '')} |")
    return rows


SHARED_GROUPS = ("classifier", "outputs")
"""Option groups every command that takes a SPEC has: one table each, before the commands."""


def cli() -> str:
    """Every ``archc`` command: what it does and a table of its options, from the parser; the
    option groups all commands share come first."""
    from archcompiler.tools.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = list(sub.choices.items())
    out: list[str] = []
    shared: set[int] = set()
    for title in SHARED_GROUPS:
        groups = [g for _, c in commands for g in c._action_groups if (g.title or "").startswith(title)]
        out += [f"### {groups[0].title[0].upper()}{groups[0].title[1:]}", ""]
        out += ["Every command that takes a SPEC has these options.", "", *_options(groups[0]._group_actions), ""]
        shared |= {id(a) for g in groups for a in g._group_actions}
    for name, command in commands:
        description = command.description or ""
        out += [f"### archc {name}", "", description[:1].upper() + description[1:].rstrip(".") + ".", ""]
        own = [a for a in command._actions if id(a) not in shared]
        out += [*_options(own), ""] if len(own) > 1 else []
    return "\n".join(out).rstrip("\n")


def _plain(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def bench(results: Path) -> str:
    """The last ``make bench`` run (benchmarks/results.json) as a table: the machine, then each
    case's median and its ratio to the reference measured in the same run."""
    import importlib.util

    script = results.parent / "bench.py"
    loaded = importlib.util.spec_from_file_location("archc_bench", script)
    if loaded is None or loaded.loader is None:
        raise ValueError(f"{script}: cannot load make bench's script")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    run = json.loads(results.read_text(encoding="utf-8"))
    m = run["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    head = (
        f"{m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.1f}, {m['date']}; "
        f"Python {m['python']}, {versions}."
    )
    rows = ["| group | case | median | ratio | reference | threads |", "|---|---|---|---|---|---|"]
    for r in run["rows"]:
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        case = r["case"] if not r["case"].startswith(" ") else "· " + r["case"].strip()  # a stage of the row above
        cells = [r["group"], case, module.fmt(r["median"], r["unit"]), ratio, r["reference"] or ""]
        rows.append("| " + " | ".join(_cell(str(c)) for c in [*cells, r["threads"]]) + " |")
    return head + "\n\n" + "\n".join(rows)


def blocks(docs: Path) -> dict[str, Callable[[], str]]:
    """Each generated block's name and how it is made: one per op (``op-conv``), the layer and
    spec fields, the command line."""

    def example_layers() -> dict[str, str]:
        return examples((docs / EXAMPLES).read_text(encoding="utf-8"))

    made: dict[str, Callable[[], str]] = {
        f"op-{tag}": (lambda tag=tag: op(tag, example_layers())) for tag in op_models()
    }
    results = docs.parent / "benchmarks" / "results.json"
    return {
        **made,
        "layer-fields": layer_fields,
        "spec-fields": spec_fields,
        "cli": cli,
        "bench": lambda: bench(results),
    }


def sync(docs: Path, *, check: bool = False) -> list[str]:
    """Rewrite the generated blocks of every page under ``docs`` (``check``: only compare);
    returns ``page: block`` for each block that was stale, and ``missing: block`` for each
    block no page has (a new op that is not documented). An unknown block name is an error."""
    makers = blocks(docs)
    made: dict[str, str] = {}
    stale = []
    for page in sorted(docs.glob("*.md")):
        text = page.read_text(encoding="utf-8")

        def fill(m: re.Match[str], page: Path = page) -> str:
            name = m.group("name")
            if name not in makers:
                raise ValueError(f"{page}: unknown generated block {name!r} (known: {', '.join(makers)})")
            if name not in made:
                made[name] = makers[name]()
            body = made[name] + "\n"
            if body != m.group("body"):
                stale.append(f"{page.name}: {name}")
            return m.group(1) + body + m.group(4)

        new = MARKER.sub(fill, text)
        if new != text and not check:
            page.write_text(new, encoding="utf-8")
    return stale + [f"missing: {name}" for name in makers if name not in made]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Rewrite (or --check) the generated tables of the docs pages.")
    ap.add_argument("docs", nargs="?", default="docs", type=Path)
    ap.add_argument("--check", action="store_true", help="only say which tables are stale (exit 1 if any)")
    args = ap.parse_args(argv)
    stale = sync(args.docs, check=args.check)
    missing = [s.removeprefix("missing: ") for s in stale if s.startswith("missing: ")]
    for s in stale:
        if not s.startswith("missing: "):
            print(f"{'stale' if args.check else 'updated'}: {s}")
    for name in missing:
        print(f"missing: no page has the block {name!r} (add '<!-- generated: {name} -->' and its end marker)")
    return 1 if missing or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
