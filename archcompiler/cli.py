"""``archc``: a thin shell over the Python API.

Exit status: 0 success, 1 a check that ran and failed (parity), 2 bad input (spec, option,
weights, backend). Bad input is always one line on stderr, never a traceback
(``ARCHC_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NoReturn

from . import render
from .api import Compiled, compile, sweep
from .cost import CONVENTIONS, parse_budget
from .render import FORMATS
from .source import SpecError

if TYPE_CHECKING:
    from .registry import Backend


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


def _compile(args: argparse.Namespace) -> Compiled:
    return compile(args.spec, width=args.width, resolution=args.resolution)


def _budget_check(net: Compiled, args: argparse.Namespace) -> None:
    """Exit 2 over a ``--max-macs`` / ``--max-params`` budget; the error names the option."""
    graph = net.graph
    for opt, limit, attr in (("--max-macs", args.max_macs, "macs"), ("--max-params", args.max_params, "params")):
        if limit is None:
            continue
        value = getattr(net.cost(args.convention), attr)
        if value > limit:
            raise SpecError(
                f"{value:,} {'MACs' if attr == 'macs' else 'parameters'} ({args.convention} convention) at width "
                f"{graph.width:g}, input {render.shape(graph.input_shape)} exceed the budget of {limit:,}",
                file=net.loaded.file,
                path=opt,
            )


def _backend(net: Compiled, name: str) -> Backend:
    """The backend instance, or a bad ``--backend`` as a located one-line error."""
    from .registry import BackendError, get_backend

    try:
        return get_backend(name)
    except BackendError as exc:
        raise SpecError(str(exc), file=net.loaded.file, path="--backend") from None


def cmd_check(args: argparse.Namespace) -> int:
    net = _compile(args)
    _budget_check(net, args)
    print(render.check(net.loaded.file, net.cost(args.convention)))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    net = _compile(args)
    _budget_check(net, args)
    print(render.summary(net.loaded.file, net.cost(args.convention), args.format))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    print(render.sweep(sweep(args.spec, args.width, args.resolution, args.convention), args.format))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .registry import available

    print("\n".join(available()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    net = _compile(args)
    print(render.built(net.build_to(_backend(net, args.backend), args.output, weights=args.weights)))
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from .registry import BackendError, require

    net = _compile(args)
    for name in args.backends:  # unknown names fail here, before any framework is imported
        try:
            require(name)
        except BackendError as exc:
            raise SpecError(str(exc), file=net.loaded.file, path="--backends") from None
    if len(set(args.backends)) < 2:
        raise UsageError("--backends: parity needs at least two backends")
    from .parity import render_training

    if args.batch < 1 or args.train_steps < 0:
        raise UsageError("--batch must be at least 1 and --train-steps at least 0")
    report = net.parity(
        args.backends, atol=args.atol, rtol=args.rtol, seed=args.seed, batch=args.batch, dtype=args.dtype,
        train_steps=args.train_steps, lr=args.lr,
    )  # fmt: skip
    print(render.parity(report, args.seed))
    print(f"judged against: {report.oracle}")
    if report.training is not None:
        print(f"\n{render_training(report.training)}")
    return 0 if report.ok else 1


def cmd_generate(args: argparse.Namespace) -> int:
    net = _compile(args)
    print(render.wrote(net.generate_to(_backend(net, args.backend), args.output or "generated")))
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
    sp.add_argument("--atol", type=float, help="extra absolute slack (default 0)")
    sp.add_argument("--rtol", type=float, help="relative tolerance (float64 default 1e-9; float32: extra slack, 0)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="float32 is judged by float64")
    sp.add_argument("--batch", type=int, default=2, help="batch size (inference and training)")
    sp.add_argument("--train-steps", type=int, default=0, help="also compare N plain-SGD training steps")
    sp.add_argument("--lr", type=float, default=0.01, help="SGD learning rate for --train-steps")
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
        from .api import OutputError
        from .registry import BackendError
        from .weights import WeightError

        if isinstance(exc, BackendError | WeightError | OutputError):
            spec = getattr(args, "spec", "")
            print(f"{spec}: {exc}" if spec else f"archc: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"archc: internal error: {type(exc).__name__}: {exc} (ARCHC_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
