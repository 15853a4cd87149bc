"""``archc``: a thin shell over the Python API.

Exit status: 0 success, 1 a check that ran and failed (parity), 2 bad input (spec, option,
weights, backend). Bad input is always one line on stderr, never a traceback
(``ARCHC_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from .cost import CONVENTIONS, CostReport, cost, humanize, parse_budget
from .fsutil import atomic_write_text
from .ir import Graph
from .loading import LoadedSpec, load
from .lower import lower
from .source import SpecError

FORMATS = ("table", "json", "csv", "markdown")


class UsageError(Exception):
    """A bad command-line value: reported like a spec error, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _multiplier(text: str) -> float:
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 0.75 or 3/4, got {text!r}") from None


def _resolution(text: str) -> float | int:
    """'160' is a size in pixels; '0.714' or '5/7' is the multiplier rho."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    return _multiplier(t)


def _list(kind: Any) -> Any:
    def parse(text: str) -> list[Any]:
        items = [s for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return [kind(s) for s in items]

    return parse


def _budget(text: str) -> int:
    try:
        return parse_budget(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive count such as 600M, 4.2M or 1e9, got {text!r}") from None


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _res_label(graph: Graph) -> str:
    h, w = graph.resolution
    return str(h) if h == w else f"{h}x{w}"


# -- rendering ---------------------------------------------------------------------------


def _rows(report: CostReport) -> list[dict[str, Any]]:
    total = report.macs or 1
    return [
        {
            "name": n.name,
            "op": n.op,
            "category": n.category,
            "output_shape": list(n.shape),
            "params": n.params,
            "trainable": n.trainable,
            "non_trainable": n.non_trainable,
            "macs": n.macs,
            "mac_share": n.macs / total,
            "activations": n.activations,
        }
        for n in report.nodes
    ]


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _markdown(headers: list[str], rows: list[list[str]], align: str) -> str:
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [headers, sep, *rows])


def render_summary(loaded: LoadedSpec, report: CostReport, fmt: str) -> str:
    g = report.graph
    rows = _rows(report)
    cats = report.by_category()
    if fmt == "json":
        doc = {
            "spec": loaded.file,
            "name": g.name,
            "width": g.width,
            "resolution": list(g.resolution),
            "rounding": g.rounding,
            "convention": report.convention,
            "input_shape": list(g.input_shape),
            "output_shape": list(g.output_shape),
            "nodes": rows,
            "totals": {
                "params": report.params,
                "trainable": report.trainable,
                "non_trainable": report.non_trainable,
                "macs": report.macs,
                "activations": report.activations,
            },
            "by_category": [
                {
                    "category": c.category,
                    "params": c.params,
                    "macs": c.macs,
                    "param_share": c.param_share,
                    "mac_share": c.mac_share,
                }
                for c in cats
            ],
        }
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        fields = [
            "name",
            "op",
            "category",
            "output_shape",
            "params",
            "trainable",
            "non_trainable",
            "macs",
            "mac_share",
            "activations",
        ]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "output_shape": _shape(r["output_shape"]), "mac_share": f"{r['mac_share']:.6f}"})
        return buf.getvalue().rstrip("\n")
    headers = ["name", "op", "output", "params", "MACs", "share"]
    body = [
        [
            r["name"],
            r["op"],
            _shape(r["output_shape"]),
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{100 * r['mac_share']:.2f}%" if r["macs"] else "",
        ]
        for r in rows
    ]
    cat_headers = ["layer type", "MACs", "MACs %", "params", "params %"]
    cat_rows = [
        [c.category, f"{c.macs:,}", f"{100 * c.mac_share:.2f}%", f"{c.params:,}", f"{100 * c.param_share:.2f}%"]
        for c in cats
    ]
    title = (
        f"{g.name}: {loaded.file}, width {g.width:g}, input {_shape(g.input_shape)}, "
        f"rounding {g.rounding}, convention {report.convention}"
    )
    totals = (
        f"total: {report.params:,} params ({report.trainable:,} trainable, {report.non_trainable:,} non-trainable), "
        f"{report.macs:,} MACs ({humanize(report.macs)}), {report.activations:,} activations"
    )
    render = _markdown if fmt == "markdown" else _table
    return "\n\n".join([title, render(headers, body, "lllrrr"), totals, render(cat_headers, cat_rows, "lrrrr")])


def render_sweep(file: str, grid: list[tuple[float, list[tuple[Graph, CostReport]]]], fmt: str, convention: str) -> str:
    resolutions = [_res_label(g) for g, _ in grid[0][1]]
    if fmt == "json":
        return json.dumps(
            {
                "spec": file,
                "convention": convention,
                "grid": [
                    {"width": w, "resolution": list(g.resolution), "macs": r.macs, "params": r.params}
                    for w, cells in grid
                    for g, r in cells
                ],
            },
            indent=2,
        )
    if fmt == "csv":
        lines = ["width,resolution,macs,params"]
        lines += [f"{w:g},{_res_label(g)},{r.macs},{r.params}" for w, cells in grid for g, r in cells]
        return "\n".join(lines)
    headers = ["width \\ resolution", *resolutions, "params"]
    rows = []
    for w, cells in grid:
        params = {r.params for _, r in cells}
        p = f"{cells[0][1].params:,}" if len(params) == 1 else "varies"
        rows.append([f"{w:g}", *(f"{r.macs:,}" for _, r in cells), p])
    render = _markdown if fmt == "markdown" else _table
    title = f"{file}: multiply-adds by width multiplier and input resolution (convention {convention})"
    return title + "\n\n" + render(headers, rows, "l" + "r" * (len(resolutions) + 1))


# -- commands ----------------------------------------------------------------------------


def _lower(args: argparse.Namespace) -> tuple[LoadedSpec, Graph]:
    loaded = load(args.spec)
    return loaded, lower(loaded, width=args.width, resolution=args.resolution)


def _budget_check(loaded: LoadedSpec, graph: Graph, args: argparse.Namespace) -> None:
    for opt, limit, attr in (("--max-macs", args.max_macs, "macs"), ("--max-params", args.max_params, "params")):
        if limit is None:
            continue
        value = getattr(cost(graph, args.convention), attr)
        if value > limit:
            raise SpecError(
                f"{value:,} {'MACs' if attr == 'macs' else 'parameters'} ({args.convention} convention) at width "
                f"{graph.width:g}, input {_shape(graph.input_shape)} exceed the budget of {limit:,}",
                file=loaded.file,
                path=opt,
            )


def cmd_check(args: argparse.Namespace) -> int:
    loaded, graph = _lower(args)
    _budget_check(loaded, graph, args)
    r = cost(graph, args.convention)
    print(
        f"ok: {loaded.file}: {graph.name}, {len(graph)} nodes, input {_shape(graph.input_shape)} -> "
        f"{_shape(graph.output_shape)}, {r.params:,} params, {r.macs:,} MACs ({args.convention})"
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    loaded, graph = _lower(args)
    _budget_check(loaded, graph, args)
    print(render_summary(loaded, cost(graph, args.convention), args.format))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    loaded = load(args.spec)
    widths = args.width or [loaded.spec.width]
    resolutions = args.resolution or [loaded.spec.resolution]
    grid = []
    for w in widths:
        cells = []
        for res in resolutions:
            g = lower(loaded, width=w, resolution=res)
            cells.append((g, cost(g, args.convention)))
        grid.append((w, cells))
    print(render_sweep(loaded.file, grid, args.format, args.convention))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .registry import available

    print("\n".join(available()))
    return 0


def _backend(loaded: LoadedSpec, name: str) -> Any:
    from .registry import BackendError, get_backend

    try:
        return get_backend(name)
    except BackendError as exc:
        raise SpecError(str(exc), file=loaded.file, path="--backend") from None


def _stem(graph: Graph) -> str:
    return f"{graph.name}_{graph.width:g}_{_res_label(graph)}".replace(".", "_")


def _publish(tmp: Path, out: Path) -> list[Path]:
    """Move finished files into ``out``: nothing appears there until everything succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(tmp.iterdir()):
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
        written.append(target)
    return written


def cmd_build(args: argparse.Namespace) -> int:
    from . import weights as W
    from .registry import read_weights

    loaded, graph = _lower(args)
    backend = _backend(loaded, args.backend)
    model = backend.build(graph)
    backend.verify(graph, model)
    if args.weights:
        backend.set_weights(graph, model, read_weights(args.weights, graph))
    out = Path(args.output) if args.output else Path("build") / _stem(graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        backend.save(graph, model, Path(tmp))
        W.save(backend.get_weights(graph, model), Path(tmp) / f"{graph.name}.weights.npz")
        written = _publish(Path(tmp), out)
    r = cost(graph, "paper")
    rt = cost(graph, backend.convention)
    print(
        f"built {graph.name} with {args.backend}: input {_shape(graph.input_shape)} -> output "
        f"{_shape(graph.output_shape)}, {rt.params:,} params ({rt.trainable:,} trainable), "
        f"{r.macs:,} MACs, verified against the IR"
    )
    for f in written:
        print(f"  wrote {f}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import parity
    from .registry import BackendError, require

    loaded, graph = _lower(args)
    for name in args.backends:  # unknown names fail here, before any framework is imported
        try:
            require(name)
        except BackendError as exc:
            raise SpecError(str(exc), file=loaded.file, path="--backends") from None
    if len(args.backends) < 2:
        raise UsageError("--backends: parity needs at least two backends")
    rep = parity(graph, args.backends, atol=args.atol, rtol=args.rtol, seed=args.seed)
    headers = ["node", "op", "max abs diff", "max rel diff", "result"]
    rows = [[d.node, d.op, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", "pass" if d.ok else "FAIL"] for d in rep.diffs]
    print(
        f"parity {' vs '.join(rep.backends)}: {graph.name}, width {graph.width:g}, input "
        f"{_shape(graph.input_shape)}, atol {rep.atol:g}, rtol {rep.rtol:g}, seed {args.seed}\n"
    )
    print(_table(headers, rows, "llrrl"))
    lg = rep.diff(rep.logits)
    print(f"\nlogits ({rep.logits}): max abs diff {lg.max_abs:.3g}")
    bad = rep.first_failure
    if bad:
        print(f"FAIL: first divergence at node {bad.node!r} ({bad.op}): max abs diff {bad.max_abs:.3g}")
        return 1
    print(f"PASS: all {len(rep.diffs)} nodes agree")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    loaded, graph = _lower(args)
    backend = _backend(loaded, args.backend)
    source = backend.emit(graph)
    target = atomic_write_text(Path(args.output or "generated") / f"{_stem(graph)}_{args.backend}.py", source)
    print(f"wrote {target}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archc", description="Compile YAML architecture specs into verified PyTorch and Keras models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def spec_cmd(name: str, help_: str, *, multi: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("spec", help="the YAML spec file")
        if multi:
            sp.add_argument("--width", type=_list(_multiplier), help="width multipliers, e.g. 1,0.75,0.5,0.25")
            sp.add_argument("--resolution", type=_list(_resolution), help="sizes or multipliers, e.g. 224,192,160,128")
        else:
            sp.add_argument("--width", type=_multiplier, help="width multiplier alpha (e.g. 0.75 or 3/4)")
            sp.add_argument(
                "--resolution", type=_resolution, help="input size in pixels (160) or multiplier rho (0.714, 5/7)"
            )
        return sp

    def costs(sp: argparse.ArgumentParser, budget: bool = True) -> None:
        sp.add_argument("--convention", choices=list(CONVENTIONS), default="paper", help="counting convention")
        if budget:
            sp.add_argument("--max-macs", type=_budget, help="fail when MACs exceed this (e.g. 300M)")
            sp.add_argument("--max-params", type=_budget, help="fail when parameters exceed this (e.g. 2.5M)")

    sp = spec_cmd("check", "validate a spec (and an optional budget)")
    costs(sp)
    sp.set_defaults(func=cmd_check)

    sp = spec_cmd("summary", "per-layer shapes, parameters and multiply-adds")
    costs(sp)
    sp.add_argument("--format", choices=FORMATS, default="table")
    sp.set_defaults(func=cmd_summary)

    sp = spec_cmd("sweep", "MACs and parameters over widths x resolutions (the paper's Tables 6 and 7)", multi=True)
    costs(sp, budget=False)
    sp.add_argument("--format", choices=FORMATS, default="table")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("schema", help="print the spec language's JSON Schema")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser("backends", help="list the available backends")
    sp.set_defaults(func=cmd_backends)

    sp = spec_cmd("build", "build, verify and save a model in a framework")
    sp.add_argument("--backend", required=True, help="torch, keras or a plug-in (see 'archc backends')")
    sp.add_argument("--weights", help="weights to load: .npz, .safetensors or a Keras .h5")
    sp.add_argument("-o", "--output", help="output folder (default: build/<name>_<width>_<resolution>)")
    sp.set_defaults(func=cmd_build)

    sp = spec_cmd("parity", "run backends on the same weights and input; compare every node")
    sp.add_argument("--backends", type=_list(str), default=["torch", "keras"], help="default: torch,keras")
    sp.add_argument("--atol", type=float, default=1e-5)
    sp.add_argument("--rtol", type=float, default=1e-5)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_parity)

    sp = spec_cmd("generate", "write standalone model source code")
    sp.add_argument("--backend", required=True, help="torch or keras")
    sp.add_argument("-o", "--output", help="output folder (default: generated/)")
    sp.set_defaults(func=cmd_generate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``archc`` console script."""
    args = make_parser().parse_args(argv)
    debug = bool(os.environ.get("ARCHC_DEBUG"))
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"archc: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # backend, weights: still one line, no traceback
        if debug:
            raise
        from .registry import BackendError
        from .weights import WeightError

        if isinstance(exc, BackendError | WeightError):
            spec = getattr(args, "spec", "")
            print(f"{spec}: {exc}" if spec else f"archc: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"archc: internal error: {type(exc).__name__}: {exc} (ARCHC_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
