"""``archc``: a thin shell over the Python API.

Exit status: 0 success, 1 a check that ran and failed (parity), 2 bad input (spec, option,
weights, backend), 141 when stdout was closed early (``archc diagram SPEC | head -1``: the
command ends there, silently, as a Unix filter killed by SIGPIPE). Bad input is always one
line on stderr, never a traceback (``ARCHC_DEBUG=1`` shows it). Frameworks' own output and
Python warnings are held back (:mod:`archcompiler.quiet`) unless ``-v`` or ``ARCHC_VERBOSE=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from archcompiler import quiet
from archcompiler.analysis.cost import CONVENTIONS, parse_budget
from archcompiler.api import INITS, Compiled, Progress, compile, sweep
from archcompiler.language.limits import MAX_SIZE
from archcompiler.language.loading import LoadedSpec, load
from archcompiler.language.source import SpecError
from archcompiler.lowering.features import Outputs
from archcompiler.lowering.heads import Head
from archcompiler.lowering.lower import DEPTH_RANGE, WIDTH_RANGE
from archcompiler.tools import render
from archcompiler.tools.diagram import FORMATS as DIAGRAM_FORMATS
from archcompiler.tools.render import FIT_FORMATS, FORMATS, SUMMARY_FORMATS

if TYPE_CHECKING:
    from archcompiler.kit.registry import Backend


class UsageError(Exception):
    """A bad command-line value: reported like a spec error, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_DECIMAL = re.compile(r"[+-]?(\d{1,12}(\.\d{0,12})?|\.\d{1,12})([eE][+-]?\d{1,3})?", re.ASCII)
_FRACTION = re.compile(r"\d{1,9}/\d{1,9}", re.ASCII)
_PIXELS = re.compile(r"\d{1,5}", re.ASCII)
"""ASCII only and bounded: Fraction('1e2000000000') hangs, '1e999' overflows, and str.isdigit
accepts '٢٢٤' (Arabic-Indic digits)."""


def _multiplier(text: str, bounds: tuple[float, float] = WIDTH_RANGE) -> float:
    """A positive multiplier: 0.75 or 3/4, within the range lowering accepts ((0, 4] for
    width and resolution, (0, 8] for depth)."""
    t = text.strip()
    if _FRACTION.fullmatch(t):
        num, den = (int(p) for p in t.split("/"))
        value = num / den if den else math.inf
    elif _DECIMAL.fullmatch(t):
        value = float(t)
    else:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 0.75 or 3/4, got {text!r}")
    lo, hi = bounds
    if not (math.isfinite(value) and lo < value <= hi):
        raise argparse.ArgumentTypeError(f"expected a multiplier in ({lo:g}, {hi:g}], got {text!r}")
    return value


def _depth(text: str) -> float:
    """A depth multiplier: 1.1 or 11/10, in (0, 8]."""
    return _multiplier(text, DEPTH_RANGE)


def _variant(text: str) -> str:
    """A variant name from a comma-separated list (checked against the spec when it is lowered)."""
    return text.strip()


def _resolution(text: str) -> float | int | tuple[int, int]:
    """'160' is a size in pixels; '224x160' is height x width in pixels; '0.714' or '5/7' is
    the multiplier rho."""
    t = text.strip()
    if _PIXELS.fullmatch(t):
        return _pixels(t, text)
    if "x" in t.lower():
        h, _, w = t.lower().partition("x")
        if not (_PIXELS.fullmatch(h.strip()) and _PIXELS.fullmatch(w.strip())):
            raise argparse.ArgumentTypeError(f"expected a size such as 224x160 (height x width), got {text!r}")
        return (_pixels(h.strip(), text), _pixels(w.strip(), text))
    return _multiplier(t)


def _pixels(digits: str, text: str) -> int:
    value = int(digits)
    if not 1 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected sizes from 1 to {MAX_SIZE} pixels, got {text!r}")
    return value


def _count(text: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"\d{1,6}", t, re.ASCII):
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 999999, got {text!r}")
    return int(t)


def _rate(text: str) -> float:
    t = text.strip()
    value = float(t) if _DECIMAL.fullmatch(t) else math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate from 0 up to (not including) 1, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return value


def _learning_rate(text: str) -> float:
    value = _tolerance(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a learning rate > 0 such as 0.01, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    """A finite, non-negative tolerance (nan would make every comparison pass)."""
    t = text.strip()
    value = float(t) if _DECIMAL.fullmatch(t) else math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 such as 1e-5, got {text!r}")
    return value


def _seed(text: str) -> int:
    """A seed numpy accepts: 0 to 2**32 - 1."""
    t = text.strip()
    if not re.fullmatch(r"\d{1,10}", t, re.ASCII) or int(t) >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {2**32 - 1}, got {text!r}")
    return int(t)


def _list(kind: Any) -> Any:
    def parse(text: str) -> list[Any]:
        items = [s for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return [kind(s) for s in items]

    return parse


def _layer_name(text: str) -> str:
    """A name from a comma-separated list: spaces around it go; a newline or NUL stays (and
    then names no layer)."""
    return text.strip(" ")


def _level(text: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,6}", t):
        raise argparse.ArgumentTypeError(f"expected a level index such as 2 or -1, got {text!r}")
    return int(t)


def _budget(text: str) -> int:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} such as 600M, 4.2M or 1e9, got {text!r}") from None


def _version() -> str:
    """The installed distribution's version, else the package's own (a source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("archc")
    except PackageNotFoundError:
        from archcompiler import __version__

        return __version__


def _progress(args: argparse.Namespace) -> Progress | None:
    """Progress lines on stderr, only on a terminal (a log or a pipe stays clean) and not with -q."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None

    def say(message: str) -> None:
        print(f"archc: {message} ...", file=sys.stderr, flush=True)

    return say


def _load(args: argparse.Namespace) -> LoadedSpec:
    """The SPEC argument is always a file name (the API also takes YAML text; the CLI does not)."""
    return load(args.spec)


def _head(args: argparse.Namespace) -> Head | None:
    """The classifier options (--classes, --pooling, --classifier-activation, --dropout)."""
    try:
        return Head(args.classes, args.pooling, args.classifier_activation, args.dropout)
    except SpecError as exc:  # the option types check the values first: not reached in practice
        raise UsageError(f"--{exc.path.replace('_', '-')}: {exc.message}") from None


def _outputs(args: argparse.Namespace) -> Outputs | None:
    """What the model returns (--outputs, --features, --out-indices); None: the spec's output."""
    given = (getattr(args, "outputs", None), getattr(args, "features", False), getattr(args, "out_indices", None))
    if given == (None, False, None):
        return None
    try:
        return Outputs(
            None if args.outputs is None else tuple(args.outputs),
            args.features,
            None if args.out_indices is None else tuple(args.out_indices),
        )
    except SpecError:
        raise UsageError("--outputs: exclusive with --features/--out-indices (name layers or ask for levels)") from None


def _compile(args: argparse.Namespace) -> Compiled:
    head = _head(args)
    outputs = _outputs(args) or Outputs()
    return compile(
        _load(args),
        width=args.width,
        resolution=args.resolution,
        variant=args.variant,
        depth=args.depth,
        classes=head.classes,
        pooling=head.pooling,
        classifier_activation=head.classifier_activation,
        dropout=head.dropout,
        outputs=outputs.names,
        features=outputs.features,
        out_indices=outputs.out_indices,
    )


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


_WHOLE_PROCESS = False
"""True when ``main`` runs as the ``archc`` program (``argv`` from the command line), not as a
call from a longer-lived process (the tests), whose objects it must not pin."""


def _freeze_imports() -> None:
    """Move every object alive now, nearly all of them modules and what they define (pydantic's
    models, a framework's functions and types), into the collector's permanent generation
    (``gc.freeze``), when archc is the whole process.

    They live until exit anyway, but every full collection walks them all: after ``import
    torch`` one takes about 0.1 s, and a build's allocations trigger such collections during
    the import and again at exit. Frozen, the collector walks only what the build itself made.
    Nothing is skipped or left unchecked, and cyclic garbage made later is still collected.
    It pays for two budgets (benchmarks/bench.py): without it, ``archc build --backend torch``
    took 1.49x ``import torch``'s CPU time (budget 1.4x; 1.20x with it), and ``archc summary``
    0.37 s of CPU instead of 0.34 s, 0.50 s instead of 0.42 s wall (budget 0.5 s)."""
    if _WHOLE_PROCESS:
        import gc

        gc.freeze()


def _backend(net: Compiled, name: str, **options: Any) -> Backend:
    """The backend instance, or a bad ``--backend`` (or option) as a located one-line error."""
    from archcompiler.kit.registry import BackendError, get_backend

    try:
        backend = get_backend(name, **options)
    except BackendError as exc:
        raise SpecError(str(exc), file=net.loaded.file, path="--backend") from None
    _freeze_imports()  # the framework was imported just now
    return backend


def _capable(net: Compiled, backends: Sequence[Backend], option: str, **needs: Any) -> None:
    """What the command asks of ``backends`` (kit.require_capabilities: dtype, training, several
    outputs, optimised builds), checked for all of them before anything is built: one located
    line naming every backend that lacks it."""
    from archcompiler.kit.backend import require_capabilities
    from archcompiler.kit.registry import BackendError

    try:
        require_capabilities(backends, **needs)
    except BackendError as exc:
        raise SpecError(str(exc), file=net.loaded.file, path=option) from None


def cmd_check(args: argparse.Namespace) -> int:
    net = _compile(args)
    _budget_check(net, args)
    print(render.check(net.loaded.file, net.cost(args.convention)))
    return 0


def _file_target(option: str, path: str | None, args: argparse.Namespace) -> None:
    """Refuse ``path`` (given with ``option``) before any work if archc may not write it:
    not a regular file, the spec itself, an empty or multi-line name (files.check_file)."""
    from archcompiler.files import OutputError, check_file

    if path is None:
        return
    try:
        check_file(path, [args.spec])
    except OutputError as exc:
        raise OutputError(f"{option} {exc}") from None


def _folder_target(option: str, path: str | None) -> None:
    """Refuse an output folder given with ``option`` before any work (files.check_folder): an
    empty or multi-line name, a file or FIFO in its way."""
    from archcompiler.files import OutputError, check_folder

    if path is None:
        return
    try:
        check_folder(path)
    except OutputError as exc:
        raise OutputError(f"{option}: {exc}") from None


def _emit(text: str, output: str | None, args: argparse.Namespace) -> None:
    """Print ``text``, or write it atomically to ``output`` (``-o``) and say so."""
    if output is None:
        print(text)
        return
    from archcompiler.files import OutputError, atomic_write_text

    try:
        path = atomic_write_text(output, text + "\n", inputs=[args.spec])
    except OutputError as exc:
        raise OutputError(f"-o {exc}") from None
    except OSError as exc:
        raise OutputError(f"-o {output}: {exc.strerror or exc}") from None
    print(render.wrote(path))


def cmd_summary(args: argparse.Namespace) -> int:
    if args.output is not None and args.format != "html":
        raise UsageError("-o: only --format html writes a file; redirect the other formats")
    _file_target("-o", args.output, args)
    net = _compile(args)
    _budget_check(net, args)
    _emit(render.summary(net.loaded.file, net.cost(args.convention), args.format), args.output, args)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from archcompiler.tools.plot import PLOT_SUFFIXES

    if args.plot is not None and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot: expected a .png or .svg file name, got {args.plot!r}")
    if args.plot is None and (args.max_macs is not None or args.max_params is not None):
        raise UsageError(
            "--max-macs/--max-params on sweep draw budget lines: use them with --plot (or see 'archc fit')"
        )
    _file_target("--plot", args.plot, args)
    loaded = _load(args)
    latency = None
    if args.latency is not None:
        from archcompiler.kit.registry import BackendError, get_backend

        try:
            latency = get_backend(args.latency)
        except BackendError as exc:
            raise SpecError(str(exc), file=loaded.file, path="--latency") from None
    grid = sweep(
        loaded,
        args.width,
        args.resolution,
        args.convention,
        latency=latency,
        progress=_progress(args),
        head=_head(args),
        outputs=_outputs(args),
        variants=args.variant,
        depths=args.depth,
    )
    print(render.sweep(grid, args.format))
    if args.plot is not None:
        from archcompiler.files import OutputError
        from archcompiler.tools.plot import PlotUnavailable, sweep_plot

        try:
            path = sweep_plot(grid, args.plot, max_macs=args.max_macs, max_params=args.max_params, inputs=[args.spec])
        except PlotUnavailable as exc:
            raise UsageError(str(exc)) from None
        except OutputError as exc:
            raise OutputError(f"--plot {exc}") from None
        except OSError as exc:
            raise OutputError(f"--plot {args.plot}: {exc.strerror or exc}") from None
        sys.stdout.flush()  # the table first, then the note, also when both go to one pipe
        print(render.wrote(path), file=sys.stderr)
    return 0


def _budget_text(args: argparse.Namespace) -> str:
    parts = [f"--max-macs {args.max_macs:,}"] if args.max_macs is not None else []
    parts += [f"--max-params {args.max_params:,}"] if args.max_params is not None else []
    return " and ".join(parts) + f" ({args.convention} convention)"


def cmd_fit(args: argparse.Namespace) -> int:
    from archcompiler.api import fit

    if args.max_macs is None and args.max_params is None:
        raise UsageError("fit: give a budget, --max-macs and/or --max-params")
    loaded = _load(args)
    rows = fit(
        loaded,
        max_macs=args.max_macs,
        max_params=args.max_params,
        widths=args.width,
        resolutions=args.resolution,
        convention=args.convention,
        search=args.search,
        head=_head(args),
        outputs=_outputs(args),
        variants=args.variant,
        depths=args.depth,
    )
    budget = _budget_text(args)
    if not rows:
        if args.format == "json":
            print("[]")
        where = "the fine grid" if args.search else "the grid"
        print(f"{loaded.file}: no setting on {where} fits the budget {budget}", file=sys.stderr)
        return 1
    print(render.fit(loaded.file, rows, args.format, budget=budget, search=args.search))
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from archcompiler.tools.diagram import render as draw

    net = _compile(args)
    print(draw(net.graph, args.format, collapse_blocks=args.collapse_blocks))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from archcompiler.language.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from archcompiler.kit.registry import available

    print("\n".join(available()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.weights is not None and (args.init is not None or args.seed is not None):
        given = "--init" if args.init is not None else "--seed"
        raise UsageError(f"--weights and {given} exclude each other: the weights file decides every tensor")
    if args.init == "framework" and args.seed is not None:
        raise UsageError("--seed chooses archc's initial weights; --init framework keeps the framework's own")
    _folder_target("-o", args.output)
    net = _compile(args)
    options: dict[str, Any] = _quantize_options(net, args)
    if args.input_layout is not None:
        options["nhwc_input"] = args.input_layout == "nhwc"
    backend = _backend(net, args.backend, **options)
    _capable(
        net,
        [backend],
        "--optimize" if args.optimize else "--backend",
        multi_output=net.graph.multi_output,
        optimize=args.optimize,
    )
    built = net.build_to(
        backend,
        args.output,
        weights=args.weights,
        progress=_progress(args),
        optimize=args.optimize,
        init=args.init or "archc",
        seed=args.seed,
    )
    print(render.built(built))
    return 0


def _quantize_options(net: Compiled, args: argparse.Namespace) -> dict[str, Any]:
    """The backend options of ``--quantize``, ``--calibration``, ``--pixels`` and ``--io``; the
    calibration source is read here, before any framework is imported (a bad one: one line)."""
    from archcompiler import calibration

    given = [
        (o, v)
        for o, v in (
            ("--calibration", args.calibration),
            ("--pixels", args.pixels),
            ("--io", args.io),
            ("--float-layers", args.float_layers),
        )
    ]
    if args.quantize != "int8":
        extra = next((o for o, v in given if v is not None and (o != "--calibration" or args.quantize is None)), None)
        if extra is not None:
            raise UsageError(f"{extra} is for --quantize int8")
    elif args.calibration is None:
        raise UsageError("--quantize int8 needs --calibration: a folder of images, an .npy/.npz file or 'synthetic'")
    options: dict[str, Any] = {}
    if args.quantize is not None:
        options["quantize"] = args.quantize
    if args.io is not None:
        options["io"] = args.io
    if args.float_layers is not None:
        options["float_layers"] = _float_layers(net, args)
    if args.calibration is not None:
        try:
            options["calibration"] = calibration.load(args.calibration, net.graph, pixels=args.pixels)
        except calibration.CalibrationError as exc:
            raise SpecError(str(exc), file=net.loaded.file, path="--calibration") from None
    return options


def _float_layers(net: Compiled, args: argparse.Namespace) -> list[str]:
    """``--float-layers``, checked against the graph before any framework is imported."""
    from archcompiler.kit.registry import BackendError
    from archcompiler.quantization import float_layers

    if getattr(args, "io", None) == "int8":
        raise UsageError("--float-layers needs float32 input and output: leave out --io int8")
    try:
        return list(float_layers(net.graph, args.float_layers))
    except BackendError as exc:
        raise SpecError(str(exc).removeprefix("float_layers: "), file=net.loaded.file, path="--float-layers") from None


def cmd_parity(args: argparse.Namespace) -> int:
    from archcompiler.kit.registry import BackendError, require
    from archcompiler.parity.quantization import QUANTIZED, is_quantized

    net = _compile(args)
    for name in args.backends:  # unknown names fail here, before any framework is imported
        try:
            require(name.removesuffix(QUANTIZED))
        except BackendError as exc:
            raise SpecError(str(exc), file=net.loaded.file, path="--backends") from None
    if any(is_quantized(b) for b in args.backends):
        return _quantization_report(args, net)
    extra = {"--calibration": args.calibration, "--weights": args.weights, "--float-layers": args.float_layers}
    extra["--format json"] = args.format if args.format != "table" else None
    flag = next((f for f, v in extra.items() if v is not None), None)
    if flag is not None:
        raise UsageError(f"{flag} is for a quantization report: name an int8 runtime in --backends (tflite-int8)")
    if len(set(args.backends)) < 2:
        raise UsageError("--backends: parity needs at least two backends")
    if args.optimize and args.train_steps:
        raise UsageError("--optimize: the optimised models are for inference; --train-steps compares training")
    from archcompiler.kit.backend import MemoryLimitError
    from archcompiler.parity.report import render as render_parity
    from archcompiler.parity.report import render_training
    from archcompiler.parity.runs import ordered

    backends = {name: _backend(net, name) for name in ordered(args.backends)}  # torch before TensorFlow
    asking = [
        option
        for option, asks in (
            (f"--dtype {args.dtype}", args.dtype != "float32"),
            ("--train-steps", args.train_steps > 0),
            ("--optimize", args.optimize),
            ("--outputs/--features", net.graph.multi_output),
        )
        if asks
    ]
    _capable(
        net,
        list(backends.values()),
        "--backends" + (f" with {', '.join(asking)}" if asking else ""),
        dtype=args.dtype,
        training=args.train_steps > 0,
        multi_output=net.graph.multi_output,
        optimize=args.optimize,
    )
    try:
        report = net.parity(
            args.backends,
            atol=args.atol,
            rtol=args.rtol,
            seed=args.seed,
            batch=args.batch,
            dtype=args.dtype,
            train_steps=args.train_steps,
            lr=args.lr,
            progress=_progress(args),
            optimize=args.optimize,
            instances=backends,
        )
    except MemoryLimitError as exc:  # estimated before anything is built: name the flag to lower
        flag = {"batch": "--batch", "train_steps": "--train-steps"}.get(exc.option, "--batch")
        raise SpecError(str(exc), file=net.loaded.file, path=flag) from None
    print(render_parity(report, args.seed))
    if report.training is not None:
        print(f"\n{render_training(report.training)}")
    return 0 if report.ok else 1


def _quantization_report(args: argparse.Namespace, net: Compiled) -> int:
    """``archc parity --backends torch,tflite-int8 --calibration SOURCE``: per-layer loss of each
    quantized runtime against the float one (archcompiler.parity.quantization); a measurement,
    so it exits 0 whatever it finds."""
    from archcompiler import weights as W
    from archcompiler.calibration import CalibrationError, load
    from archcompiler.parity.quantization import is_quantized, measure
    from archcompiler.quantization import weights_origin

    quantized = [b for b in args.backends if is_quantized(b)]
    floats = [b for b in args.backends if not is_quantized(b)]
    if len(floats) > 1:
        raise UsageError(f"--backends: one float reference for int8 runtimes, got {', '.join(floats)}")
    if args.calibration is None:
        raise UsageError("--calibration: int8 runtimes need calibration inputs (images folder, .npy/.npz, synthetic)")
    if args.optimize or args.train_steps or args.dtype != "float32":
        raise UsageError("--optimize, --train-steps and --dtype are for float parity, not int8 runtimes")
    try:
        inputs = load(args.calibration, net.graph)
    except CalibrationError as exc:
        raise UsageError(f"--calibration {exc}") from None
    if args.weights is None:
        weights, origin = W.training_init(net.graph, 0), "weights: archc's initial weights (no --weights): untrained"
    else:
        weights = net_weights(net, args.weights)
        origin = f"weights: {args.weights}: {weights_origin(net.graph, weights)}"
    floats_kept = _float_layers(net, args) if args.float_layers is not None else []
    say = _progress(args)
    if say is not None:
        say(f"parity: int8 report of {net.graph.name} in {', '.join(quantized)} on {len(inputs.held_out)} inputs")
    reference = (floats or ["torch"])[0]
    reports = measure(
        net.graph, weights, inputs, quantized, reference=reference, notes=[origin], float_layers=floats_kept
    )
    if args.format == "json":
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        print("\n\n".join(r.text() for r in reports))
    return 0


def net_weights(net: Compiled, path: str) -> Any:
    """The canonical weights in ``path``, checked against the spec's graph."""
    return net.read_weights(path)


def cmd_generate(args: argparse.Namespace) -> int:
    _folder_target("-o", args.output)
    net = _compile(args)
    backend = _backend(net, args.backend)
    if args.optimize:
        _capable(net, [backend], "--optimize", optimize=True)
    out = args.output if args.output is not None else "generated"  # -o '' is refused, not the default
    print(render.wrote(net.generate_to(backend, out, optimize=args.optimize)))
    return 0


Commands = argparse._SubParsersAction
"""What ``add_subparsers`` returns: each ``_add_*`` function adds its command to it."""


def make_parser() -> argparse.ArgumentParser:
    """The ``archc`` parser: one sub-command per ``_add_*`` function below, in help order."""
    p = _Parser(prog="archc", description="Compile YAML architecture specs into verified PyTorch and Keras models.")
    p.add_argument("--version", action="version", version=f"archc {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    adders = [_add_check, _add_summary, _add_sweep, _add_fit, _add_diagram, _add_schema, _add_backends]
    adders += [_add_build, _add_parity, _add_generate]
    for add in adders:
        add(sub)
    return p


def _spec_command(sub: Commands, name: str, help_: str, *, multi: bool = False) -> argparse.ArgumentParser:
    """A command on one spec: the spec, its variant, width, resolution and depth (lists of
    them with ``multi``), the classifier options and the outputs options."""
    sp: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    sp.add_argument("spec", help="the YAML spec file")
    if multi:
        sp.add_argument("--variant", type=_list(_variant), help="the spec's variants, e.g. b0,b1,b2,b3")
        sp.add_argument("--width", type=_list(_multiplier), help="width multipliers, e.g. 1,0.75,0.5,0.25")
        sp.add_argument(
            "--resolution", type=_list(_resolution), help="sizes or multipliers, e.g. 224,192,160,128 or 224x160"
        )
        sp.add_argument("--depth", type=_list(_depth), help="depth multipliers, e.g. 1,1.1,1.2")
    else:
        sp.add_argument("--variant", help="one of the spec's variants (its width, depth, size and params)")
        sp.add_argument("--width", type=_multiplier, help="width multiplier alpha (e.g. 0.75 or 3/4)")
        sp.add_argument(
            "--resolution",
            type=_resolution,
            help="input size in pixels (160, or 224x160 for height x width) or multiplier rho (0.714, 5/7)",
        )
        sp.add_argument("--depth", type=_depth, help="depth multiplier: round_repeats(n) in the spec (e.g. 1.1)")
    head = sp.add_argument_group("classifier (as keras.applications' include_top, pooling, classes)")
    head.add_argument("--classes", type=_count, help="number of classes; 0 drops the classifier")
    head.add_argument("--pooling", choices=["avg", "max", "none"], help="with --classes 0: pool the features")
    head.add_argument("--classifier-activation", choices=["softmax", "none"], help="the classifier's output")
    head.add_argument("--dropout", type=_rate, help="the classifier's dropout rate")
    out = sp.add_argument_group("outputs (a multi-output feature extractor, as timm's features_only)")
    out.add_argument("--outputs", type=_list(_layer_name), help="return these layers, in order (names as in 'summary')")
    out.add_argument("--features", action="store_true", help="return the last layer at each stride (2..32)")
    out.add_argument(
        "--out-indices",
        type=_list(_level),
        help="these feature levels (0 = stride 2; negative from the deepest: --out-indices=-2,-1)",
    )
    return sp


def _verbose_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"also show the frameworks' own log lines and warnings (as {quiet.VERBOSE_ENV}=1 does)",
    )


def _cost_options(sp: argparse.ArgumentParser, budget: bool = True) -> None:
    sp.add_argument("--convention", choices=list(CONVENTIONS), default="paper", help="counting convention")
    if budget:
        sp.add_argument("--max-macs", type=_budget, help="fail when MACs exceed this (e.g. 300M)")
        sp.add_argument("--max-params", type=_budget, help="fail when parameters exceed this (e.g. 2.5M)")


def _add_check(sub: Commands) -> None:
    sp = _spec_command(sub, "check", "validate a spec (and an optional budget)")
    _cost_options(sp)
    sp.set_defaults(func=cmd_check)


def _add_summary(sub: Commands) -> None:
    sp = _spec_command(sub, "summary", "per-layer shapes, parameters and multiply-adds")
    _cost_options(sp)
    sp.add_argument("--format", choices=SUMMARY_FORMATS, default="table")
    sp.add_argument("-o", "--output", help="with --format html: write the page to this file")
    sp.set_defaults(func=cmd_summary)


def _add_sweep(sub: Commands) -> None:
    help_ = "MACs and parameters over widths x resolutions (the paper's Tables 6 and 7)"
    sp = _spec_command(sub, "sweep", help_, multi=True)
    _cost_options(sp, budget=False)
    sp.add_argument("--format", choices=FORMATS, default="table")
    sp.add_argument("--plot", metavar="FILE", help="also draw MACs against params into FILE.png or FILE.svg")
    sp.add_argument("--max-macs", type=_budget, help="with --plot: draw this MACs budget as a line")
    sp.add_argument("--max-params", type=_budget, help="with --plot: draw this parameter budget as a line")
    sp.add_argument(
        "--latency",
        metavar="BACKEND",
        help="also time every setting in BACKEND (median of 10 batch-1 runs, this machine; a panel in --plot)",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    _verbose_option(sp)
    sp.set_defaults(func=cmd_sweep)


def _add_fit(sub: Commands) -> None:
    sp = _spec_command(sub, "fit", "the widths and resolutions that fit a budget, largest first", multi=True)
    _cost_options(sp)
    sp.add_argument(
        "--search",
        action="store_true",
        help="scan a fine grid (alpha 0.1..1.4 by 0.05, 96..320 px by 8) and print the front of what fits",
    )
    sp.add_argument("--format", choices=FIT_FORMATS, default="table")
    sp.set_defaults(func=cmd_fit)


def _add_diagram(sub: Commands) -> None:
    sp = _spec_command(
        sub, "diagram", "the graph as a Mermaid or Graphviz DOT diagram or an SVG drawing, shapes on the edges"
    )
    sp.add_argument("--format", choices=DIAGRAM_FORMATS, default="mermaid")
    sp.add_argument("--collapse-blocks", action="store_true", help="draw each block instance as one box")
    sp.set_defaults(func=cmd_diagram)


def _add_schema(sub: Commands) -> None:
    sub.add_parser("schema", help="print the spec language's JSON Schema").set_defaults(func=cmd_schema)


def _add_backends(sub: Commands) -> None:
    sub.add_parser("backends", help="list the available backends").set_defaults(func=cmd_backends)


def _add_build(sub: Commands) -> None:
    sp = _spec_command(sub, "build", "build, verify and save a model in a framework")
    sp.add_argument("--backend", required=True, help="torch, keras or a plug-in (see 'archc backends')")
    sp.add_argument(
        "--weights",
        help="weights to load: .npz, .safetensors (archc's names, or timm's where the spec maps them), timm's .pth,"
        " a Keras .h5 or archc's torch .pt",
    )
    sp.add_argument(
        "-o",
        "--output",
        help="output folder (default: build/<name>[_<variant>]_<width>_<resolution>[_depth<d>]_<backend>)",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sp.add_argument(
        "--quantize",
        choices=["float16", "dynamic", "int8"],
        help="tflite: float16, dynamic or int8; onnx: int8 (the deviation from float32 on held-out inputs is "
        "written to <name>.quantization.json)",
    )
    sp.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="int8: calibration inputs, a folder of PNG/JPEG images, an .npy/.npz NHWC array or 'synthetic' "
        "(a stand-in); a fifth is held out to measure the model",
    )
    sp.add_argument(
        "--pixels",
        choices=["0..255", "0..1", "-1..1"],
        help="the model input range pixels are mapped to (default 0..255 when the spec starts with a rescaling "
        "layer, else -1..1)",
    )
    sp.add_argument("--io", choices=["float32", "int8"], help="tflite int8: the input and output tensors' type")
    _float_layers_option(sp, "int8")
    sp.add_argument("--input-layout", choices=["nchw", "nhwc"], help="onnx: the input's layout (default nchw)")
    sp.add_argument(
        "--optimize",
        action="store_true",
        help="inference build: BatchNorm folded into the convs, pads merged (files named <name>_optimized)",
    )
    sp.add_argument(
        "--init",
        choices=INITS,
        help="without --weights: archc's deterministic init, the same model in every backend (default), or "
        "each framework's own random init (the backends' models then differ)",
    )
    sp.add_argument("--seed", type=_seed, help="the seed of archc's init (default 0)")
    _verbose_option(sp)
    sp.set_defaults(func=cmd_build)


def _add_parity(sub: Commands) -> None:
    sp = _spec_command(
        sub,
        "parity",
        "run backends on the same weights and input; compare every node (with an int8 runtime: a per-layer "
        "quantization report on held-out inputs, docs/deployment.md)",
    )
    sp.add_argument(
        "--backends",
        type=_list(str),
        default=["torch", "keras"],
        help="default: torch,keras; a float reference and int8 runtimes (tflite-int8, onnx-int8) for the "
        "quantization report",
    )
    sp.add_argument("--atol", type=_tolerance, help="extra absolute slack (default 0)")
    sp.add_argument("--rtol", type=_tolerance, help="relative tolerance (float64: 1e-9; float32: slack, 0)")
    sp.add_argument("--seed", type=_seed, default=0)
    sp.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="float32 is judged by float64")
    sp.add_argument("--batch", type=_positive, default=2, help="batch size (inference and training)")
    sp.add_argument("--train-steps", type=_count, default=0, help="also compare N plain-SGD training steps")
    sp.add_argument("--lr", type=_learning_rate, default=0.01, help="SGD learning rate for --train-steps")
    sp.add_argument(
        "--optimize",
        action="store_true",
        help="compare each backend's optimised model (as build --optimize) against the unoptimised reference",
    )
    sp.add_argument(
        "--calibration",
        help="with an int8 runtime in --backends (tflite-int8): calibration inputs, a folder of images, .npy/.npz "
        "or 'synthetic'; a disjoint part is held out to measure on",
    )
    sp.add_argument("--weights", help="with an int8 runtime: the weights to measure (default: archc's untrained init)")
    _float_layers_option(sp, "with an int8 runtime")
    sp.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="with an int8 runtime: json prints one object per runtime (docs/deployment.md)",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    _verbose_option(sp)
    sp.set_defaults(func=cmd_parity)


def _float_layers_option(sp: argparse.ArgumentParser, when: str) -> None:
    sp.add_argument(
        "--float-layers",
        metavar="NAME[,NAME...]",
        type=_list(str.strip),
        help=f"{when}: layers (IR node names, as 'archc summary' lists them) the int8 model keeps in float",
    )


def _add_generate(sub: Commands) -> None:
    sp = _spec_command(sub, "generate", "write standalone model source code")
    sp.add_argument("--backend", required=True, help="torch or keras")
    sp.add_argument("-o", "--output", help="output folder (default: generated/)")
    sp.add_argument(
        "--optimize",
        action="store_true",
        help="the optimised build's source (as build --optimize; file <stem>_optimized_<backend>.py)",
    )
    _verbose_option(sp)
    sp.set_defaults(func=cmd_generate)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so staging folders are removed on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``archc`` console script."""
    global _WHOLE_PROCESS
    _WHOLE_PROCESS = argv is None
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed stdout shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        return _output_closed()


SIGPIPE_STATUS = 128 + 13
"""The exit status when the reader of stdout went away: a shell's status for a command
killed by SIGPIPE, which archc leaves ignored (as Python does) so that it can clean up."""


def _output_closed() -> int:
    """The reader of our output is gone (``| head -1``): end silently. In the ``archc``
    process, stdout and stderr are pointed at /dev/null first, so that the interpreter's
    flush at exit (and a framework's last words) cannot fail again (Python docs, "Note on
    SIGPIPE")."""
    if _WHOLE_PROCESS:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # not a real descriptor
                os.dup2(devnull, stream.fileno())
        os.close(devnull)
    return SIGPIPE_STATUS


def _main(argv: Sequence[str] | None) -> int:
    _freeze_imports()  # archc's own modules, before a framework's import adds to the heap
    args = make_parser().parse_args(argv)
    debug = bool(os.environ.get("ARCHC_DEBUG"))
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        with quiet.verbosity(getattr(args, "verbose", False)), quiet.command_warnings():
            return int(args.func(args))
    except BrokenPipeError:
        raise  # main's: no message
    except KeyboardInterrupt as exc:
        what = str(exc) or "SIGINT"
        print(f"archc: interrupted ({what}); earlier output is unchanged", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"archc: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # backend, weights: still one line, no traceback
        if debug:
            raise
        from archcompiler.files import OutputError
        from archcompiler.kit.registry import BackendError
        from archcompiler.weights import WeightError

        if isinstance(exc, BackendError | WeightError | OutputError):
            spec = getattr(args, "spec", "")
            print(f"{spec}: {exc}" if spec else f"archc: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"archc: internal error: {type(exc).__name__}: {exc} (ARCHC_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
