"""The Python API; the ``archc`` command line is a thin shell over it (docs/DESIGN.md).

import archcompiler
net = archcompiler.compile("specs/mobilenet.yaml", width=0.5, resolution=160)
net.cost("paper").macs                    # 76,524,800
model = net.build("torch")                # a verified torch.nn.Module
built = net.build_to("torch")             # ... also written to build/mobilenet_v1_0_5_160_torch/
source = net.generate("keras")            # standalone Keras source

Every sequence the CLI runs (build, verify, load weights, publish; emit and write; parity)
lives here once, so the command line and a script cannot drift apart.

Errors: every bad argument of :func:`compile`, :func:`sweep`, :func:`fit` and the methods of
:class:`Compiled` (``build``, ``build_to``, ``save``, ``generate``, ``generate_to``, ``parity``,
``latency``, ``load_weights``, ``read_weights``) raises one of four exceptions, named after what is wrong, with a
one-line message naming the argument (archcompiler.arguments): ``SpecError`` (the spec or what
shapes the model: ``width``, ``classes``, ``outputs``, budgets...), ``BackendError`` (how it is
built and run: ``backend``, ``batch``, ``seed``, a model from another backend; its subclass
``MemoryLimitError`` for a run too large to hold), ``WeightError`` (``weights``) and
``OutputError`` (output folders). Never AttributeError, TypeError, ValueError or KeyError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archcompiler import arguments as A
from archcompiler import ir
from archcompiler.analysis.cost import CONVENTIONS, CostReport, cost, summary_html_fragment
from archcompiler.analysis.cost import summary as cost_summary
from archcompiler.analysis.fitting import FitRow
from archcompiler.analysis.optimize import SUFFIX, Optimized, optimize_model, rewrite, rewrite_of
from archcompiler.files import (
    Inputs,
    OutputError,
    atomic_write_text,
    check_folder,
    check_target,
    publish,
    spec_reference,
    staging,
)
from archcompiler.kit.backend import BackendError, require_capabilities
from archcompiler.language.loading import LoadedSpec, load, load_text, validate
from archcompiler.language.source import Source, SpecError
from archcompiler.lowering.features import Outputs
from archcompiler.lowering.heads import Head
from archcompiler.lowering.lower import lower, select_variant
from archcompiler.text import FORMATS, brief, listing

if TYPE_CHECKING:
    from archcompiler.kit.registry import Backend
    from archcompiler.parity.report import ParityReport
    from archcompiler.weights import Weights


Progress = Callable[[str], None]
"""Called with one short line per slow step (build, load weights, write; parity's run)."""


def _quiet(message: str) -> None:
    """The default progress: say nothing (a library does not print)."""


def resolution_label(graph: ir.Graph) -> str:
    """'224' for a square input, '224x160' otherwise (file names and tables)."""
    h, w = graph.resolution
    return str(h) if h == w else f"{h}x{w}"


def _backend(backend: str | Backend, **options: Any) -> Backend:
    """A backend instance from a name (imports its framework; ``options`` given, those not
    None, go to its constructor) or the instance itself.

    Accepting an instance lets a caller resolve the name first and report a bad one its own
    way (the CLI names the ``--backend`` option)."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(backend, str):
        from archcompiler.kit.registry import get_backend

        return get_backend(backend, **options)
    if options:
        raise BackendError(f"{', '.join(options)}: give them to the backend instance, or pass the backend's name")
    from archcompiler.kit.backend import Backend

    if not isinstance(backend, Backend):
        raise BackendError(f"backend: expected a backend name such as 'torch' or a Backend, got {A.kind(backend)}")
    return backend


def _builds_quantized(b: Backend) -> None:
    """``build(quantize=...)`` of a backend whose ``build`` would give its float model is refused."""
    mode = getattr(b, "quantize", None)
    if mode not in (None, "none") and not b.builds_quantized:
        raise BackendError(
            f"{b.name}: build() gives the float model this backend runs and loads weights into; its {mode} model "
            f"is made when it saves: use build_to({b.name!r}, quantize={mode!r}, calibration=...)"
        )


INITS = ("archc", "framework")
"""Where a build without weights gets its weights: ``"archc"`` (the default) loads
archcompiler.weights.training_init(graph, seed), the same tensors in every backend;
``"framework"`` keeps each framework's own random initialisers (builds for different backends
then hold different models)."""

FRAMEWORK_INIT_NOTE = (
    "note: weights from the framework's own random initialisation, not archc's: builds of this spec for "
    "different backends hold different models"
)


def _weights(weights: Any, *, optional: bool = True) -> Any:
    """``weights=``: a file name, or canonical weights (a mapping of tensor names to arrays)."""
    from archcompiler.weights import WeightError

    if weights is None and optional:
        return None
    if isinstance(weights, Mapping):
        return dict(weights)
    A.path(weights, "weights", error=WeightError, what="a weights file name or a mapping of tensor names to arrays")
    return weights


def _folder(out_dir: Any) -> Any:
    """An output folder argument: None (the default folder) or a name (``Path(123)`` is a TypeError)."""
    if out_dir is not None:
        A.path(out_dir, "out_dir", error=OutputError, what="a folder name")
    return out_dir


@dataclass(frozen=True)
class Built:
    """What :meth:`Compiled.build_to` made: the verified model, the files written and its counts."""

    graph: ir.Graph
    backend: str
    model: Any
    files: tuple[Path, ...]
    params: CostReport
    """Counted the way the backend's framework counts (``Backend.convention``)."""
    macs: int
    """Multiply-adds under the paper's convention (what the paper's tables report)."""
    optimized: bool = False
    """Built with ``optimize=True``: ``graph`` is the rewritten ``<name>_optimized`` graph."""
    note: str = ""
    """What the user should know about the model, in one line (empty for most builds): with
    ``init="framework"``, that builds for different backends hold different models."""

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the framework's model and the whole graph.
        folder = brief(str(self.files[0].parent)) if self.files else "no folder"
        optimized = ", optimized" if self.optimized else ""
        return (
            f"<Built {self.graph.name} with {self.backend}{optimized}: {self.params.params:,} params "
            f"({self.params.convention}), {self.macs:,} MACs, {len(self.files)} files in {folder}>"
        )


@dataclass(frozen=True)
class Asked:
    """What :func:`compile` was asked for besides the variant (None: the spec's or the
    variant's own): what a weights file of another variant is tried with
    (:meth:`Compiled.read_weights`)."""

    width: float | None = None
    resolution: float | int | tuple[int, int] | None = None
    depth: float | None = None
    head: Head | None = None


def _loads_variant(loaded: LoadedSpec, variant: str, asked: Asked, loads: Callable[[ir.Graph], bool]) -> bool:
    """Whether ``loads`` takes the whole model of ``variant`` with ``asked``'s options (False
    where those options do not suit it)."""
    try:
        g = lower(
            loaded, width=asked.width, resolution=asked.resolution, depth=asked.depth, variant=variant, head=asked.head
        )
    except SpecError:
        return False
    return loads(g)


@dataclass(frozen=True)
class Compiled:
    """A spec lowered at one width and resolution: the IR plus what can be done with it."""

    loaded: LoadedSpec
    graph: ir.Graph
    full: ir.Graph | None = None
    """The single-output graph ``graph`` was cut from (``outputs``/``features``), else None:
    weights saved from it load into ``graph`` (:meth:`load_weights`)."""
    asked: Asked | None = None
    """The options it was compiled with (None: unknown; a weights error then names no variant)."""

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed the spec, its source and the graph (32,523 characters).
        cut = f", cut from {len(self.full)} nodes" if self.full is not None else ""
        return f"<Compiled {brief(self.loaded.file)} as {self.graph!r}{cut}>"

    @property
    def stem(self) -> str:
        """``<name>_<width>_<resolution>``: names the default build folder and generated modules.
        The name carries the variant (``efficientnet_b1``); a depth multiplier other than 1 adds
        ``_depth<d>`` and a model cut to ``outputs``/``features`` adds ``_features``, so that no
        two settings overwrite each other's build or committed generated source."""
        g = self.graph
        depth = f"_depth{g.depth_multiplier:g}" if g.depth_multiplier != 1.0 else ""
        cut = "_features" if self.full is not None else ""
        return f"{g.name}_{g.width:g}_{resolution_label(g)}{depth}{cut}".replace(".", "_")

    def _output_stem(self, backend: str | Backend, optimize: bool) -> str:
        """``<stem>[_optimized]_<backend>``: the default build folder and the generated module
        are named alike, and no build of one backend (or of the optimised model) ever replaces
        another's files."""
        name = backend if isinstance(backend, str) else backend.name
        return f"{self.stem}{SUFFIX if optimize else ''}_{name}"

    def default_output_dir(self, backend: str | Backend = "torch", *, optimize: bool = False) -> Path:
        """Where :meth:`build_to` writes when not told: ``build/<stem>[_optimized]_<backend>``
        (relative to the cwd)."""
        return Path("build") / self._output_stem(backend, optimize)

    @property
    def _spec_inputs(self) -> tuple[str, ...]:
        """The files this spec was read from (never an output's target)."""
        return (self.loaded.file,)

    def _check_targets(self, b: Backend, out: Path, optimize: bool, inputs: Inputs) -> None:
        """Before a slow build: every file the build may write into ``out`` (the backend's
        ``file_suffixes``, the portable weights, an optimised build's manifest) can be written:
        not a folder, FIFO or device, not one of ``inputs``. Publishing checks again."""
        name = self.graph.name + (SUFFIX if optimize else "")
        for suffix in (*b.file_suffixes, ".weights.npz", *((".json",) if optimize else ())):
            check_target(out / f"{name}{suffix}", inputs)

    def cost(self, convention: str = "paper") -> CostReport:
        A.choice(convention, "convention", tuple(CONVENTIONS), error=SpecError, file=self.loaded.file)
        return cost(self.graph, convention)

    def summary(self, convention: str = "paper", format: str = "table") -> str:
        """The table ``archc summary`` prints (the same function,
        :func:`archcompiler.analysis.cost.summary`): every layer's output shape, parameters and
        MACs, the totals and the share per layer type. ``convention``: what is counted
        (:data:`~archcompiler.analysis.cost.CONVENTIONS`: ``"torch"`` matches
        ``model.parameters()``, ``"keras"`` ``count_params()``); ``format``: ``"table"``,
        ``"markdown"``, ``"csv"`` or ``"json"``."""
        A.choice(format, "format", FORMATS, error=SpecError, file=self.loaded.file)
        return cost_summary(self.loaded.file, self.cost(convention), format)

    def _repr_html_(self) -> str:
        """The summary as an HTML table, for notebooks (every spec text escaped)."""
        return summary_html_fragment(self.loaded.file, self.cost())

    def build(
        self,
        backend: str | Backend = "torch",
        *,
        weights: str | Path | Weights | None = None,
        optimize: bool = False,
        init: str = "archc",
        seed: int | None = None,
        quantize: str | None = None,
        calibration: Any = None,
        io: str | None = None,
        float_layers: Any = None,
    ) -> Any:
        """Instantiate the model in ``backend``, verify it against the IR and load weights: the
        ``weights`` given (a file, read and checked against the IR, or canonical weights), else
        archc's deterministic init (archcompiler.weights.training_init with ``seed``, default
        0: the same model in every backend), or with ``init="framework"`` none (the framework's
        own random initialisers). ``optimize``: return the inference model of
        archcompiler.analysis.optimize instead (BatchNorm folded, pads merged), checked equal to the
        unoptimised one within 1e-4; it has other weights (see there): :meth:`save`
        recognises it and writes the optimised build's files.

        ``quantize``/``calibration``/``io``/``float_layers`` (as :meth:`build_to`): the quantized
        model of a backend that builds and runs it (``Backend.builds_quantized``: ``"tflite"``,
        whose model then converts to the quantized flatbuffer, ``model.content(graph)``, and runs
        it); ``"onnx"`` quantizes only when it saves (the model it runs and loads weights into
        is float), so there it is refused: use :meth:`build_to`."""
        b = _backend(backend, quantize=quantize, calibration=calibration, io=io, float_layers=float_layers)
        if quantize is not None:  # a Backend instance configured by the caller is the caller's to run
            _builds_quantized(b)
        weights = _weights(weights)
        return self._build(b, weights, A.flag(optimize, "optimize"), init, seed)[1]

    def build_optimized(
        self,
        backend: str | Backend = "torch",
        *,
        weights: str | Path | Weights | None = None,
        init: str = "archc",
        seed: int | None = None,
    ) -> tuple[Optimized, Any]:
        """:meth:`build` with ``optimize=True``, also returning the rewrite (its graph, folded
        weights and what changed)."""
        optimized, model = self._build(_backend(backend), _weights(weights), True, init, seed)
        return optimized, model

    def _build(
        self,
        b: Backend,
        weights: str | Path | Weights | None,
        optimize: bool,
        init: str = "archc",
        seed: int | None = None,
    ) -> tuple[Optimized | None, Any]:
        """(the archcompiler.analysis.optimize.Optimized rewrite or None, the model): the steps
        of :meth:`build_to` up to the optimised model."""
        require_capabilities([b], multi_output=self.graph.multi_output, optimize=optimize)
        initial = self._initial_weights(b, weights, init, seed)
        model = b.build(self.graph)
        b.verify(self.graph, model)
        if initial is not None:
            b.set_weights(self.graph, model, initial)
        if not optimize:
            return None, model
        return optimize_model(b, self.graph, model)

    def _initial_weights(
        self, b: Backend, weights: str | Path | Weights | None, init: str, seed: int | None
    ) -> Weights | None:
        """The canonical weights a build loads: ``weights`` read and checked against the IR
        (:meth:`load_weights`), else archc's training init (``init`` "archc", ``seed`` default 0),
        else None (the framework's own). A seed or init beside given weights, or a seed with the
        framework's init, would be silently ignored: refused."""
        from archcompiler import weights as W

        if init not in INITS:
            raise W.WeightError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
        if weights is not None and (init != "archc" or seed is not None):
            given = "init='framework'" if init != "archc" else f"seed={seed!r}"
            raise W.WeightError(f"weights= and {given} exclude each other: the weights given decide every tensor")
        if init == "framework":
            if seed is not None:
                raise W.WeightError(f"seed={seed!r} applies to archc's init, not init='framework'")
            return None
        if weights is not None:
            return self.read_weights(weights, b)
        return W.training_init(self.graph, 0 if seed is None else seed)

    def load_weights(self, backend: str | Backend, model: Any, weights: str | Path | Weights) -> None:
        """Load canonical weights, or a weights file checked against the IR, into ``model``.

        A file in the building backend's own format (``foreign_weight_suffixes``, e.g. the
        ``.pt`` state_dict ``archc build --backend torch`` writes) is read by that backend;
        others go through archcompiler.kit.registry.read_weights (.npz, .safetensors, .h5).

        A multi-output (feature) model also takes the weights of the whole model it was cut
        from (:attr:`full`): the tensors of the layers its outputs do not need are dropped.
        Weights that fit neither are refused, as ever, with the feature model's error."""
        b = _backend(backend)
        b.set_weights(self.graph, model, self.read_weights(weights, b))

    def read_weights(self, weights: str | Path | Weights, backend: str | Backend | None = None) -> Weights:
        """Canonical weights from a file or a mapping, checked against the IR
        (archcompiler.kit.registry.read_weights; ``backend``, a name or an instance, reads its
        own framework's files).

        Weights of another of the spec's variants are refused, as any that do not fit, and the
        one-line error adds which variant they fit (:meth:`_fitting_variants`)."""
        from archcompiler.kit.registry import read_weights

        source = _weights(weights, optional=False)
        b = None if backend is None else _backend(backend)
        return read_weights(source, self.graph, backend=b, full=self.full, hint=self._fitting_variants)

    def _fitting_variants(self, loads: Callable[[ir.Graph], bool]) -> str | None:
        """The spec's variants whose whole model the weights load into, as the command line
        asks for them: the other variants with every option as given (``--variant X`` is then
        all that changes); else, when ``--width`` or ``--depth`` was given, every variant at its
        own multipliers, said so (``--variant X without --width 0.5``); else None. Lowering is
        cheap (no framework): milliseconds a variant."""
        asked, spec = self.asked, self.loaded.spec
        if asked is None or not spec.variants:
            return None
        others = [v for v in spec.variants if v != self.graph.variant]
        fits = [v for v in others if _loads_variant(self.loaded, v, asked, loads)]
        if fits:
            return f"--variant {' or '.join(fits)}"
        given = [f"--{k} {v:g}" for k, v in (("width", asked.width), ("depth", asked.depth)) if v is not None]
        own = dataclasses.replace(asked, width=None, depth=None)
        fits = [v for v in spec.variants if given and _loads_variant(self.loaded, v, own, loads)]
        return f"--variant {' or '.join(fits)} without {' '.join(given)}" if fits else None

    def save(
        self,
        model: Any,
        backend: str | Backend,
        out_dir: str | Path | None = None,
        *,
        optimized: Optimized | None = None,
        inputs: Inputs = (),
    ) -> list[Path]:
        """Write ``model`` in its framework's format plus portable ``<name>.weights.npz``.

        All or nothing: everything is written to a staging folder inside ``out_dir`` and
        published in one step (files.publish) only when all of it succeeded, so a failure or
        an interruption leaves the previous build there, whole, and no temporary files.
        Publishing replaces only archc's own previous output: a file in the way that archc did
        not write there (or that changed since), that is not a regular file, or that is the
        spec or one of ``inputs`` (files the caller read, such as a weights file) is an
        :class:`OutputError` and nothing is written.
        An optimised model (``build(..., optimize=True)``; ``optimized``: its rewrite, else
        recognised by the graph name the model records) is written as its graph
        ``<name>_optimized``, with the manifest ``<name>_optimized.json`` (the transforms
        applied; the weights are folded, not canonical) beside it."""
        b = _backend(backend)
        _folder(out_dir)
        A.instance(optimized, "optimized", Optimized, error=BackendError)
        if optimized is None:
            optimized = rewrite_of(b, self.graph, model)  # the structure: the weights are the model's
        opt = optimized is not None
        out = check_folder(out_dir if out_dir is not None else self.default_output_dir(b, optimize=opt))
        reads = (*self._spec_inputs, *inputs)
        self._check_targets(b, out, opt, reads)
        return self._publish(b, model, out, optimized, reads)

    def _publish(self, b: Backend, model: Any, out: Path, optimized: Optimized | None, reads: Inputs) -> list[Path]:
        """Stage the model's files (its framework's format, the portable weights, an optimised
        build's manifest) inside ``out`` and publish them in one step (files.publish)."""
        import json

        from archcompiler import weights as W

        g = self.graph if optimized is None else optimized.graph
        try:
            with staging(out) as tmp:
                b.save(self._naming_spec_for(g, out), model, tmp)  # a saved source file names the spec
                W.save(b.get_weights(g, model), tmp / f"{g.name}.weights.npz")
                if optimized is not None:
                    text = json.dumps(optimized.manifest(self.graph), indent=2) + "\n"
                    (tmp / f"{g.name}.json").write_text(text, encoding="utf-8")
                return publish(tmp, out, reads)
        except OSError as exc:
            raise OutputError(f"output folder {str(out)!r}: {exc.strerror or exc}") from exc

    def build_to(
        self,
        backend: str | Backend = "torch",
        out_dir: str | Path | None = None,
        *,
        weights: str | Path | Weights | None = None,
        progress: Progress | None = None,
        optimize: bool = False,
        init: str = "archc",
        seed: int | None = None,
        quantize: str | None = None,
        calibration: Any = None,
        io: str | None = None,
        float_layers: Any = None,
    ) -> Built:
        """:meth:`build` then :meth:`save` (default folder :meth:`default_output_dir`):
        ``archc build``.

        ``progress`` is called with a short line before each slow step (the CLI prints them on
        a terminal). ``optimize``: build and save the optimised model (:meth:`build`). The
        output folder and its targets are checked before the build (:meth:`save`), so that a
        refused target costs no build; a weights file given as a path is one of the inputs
        no target may be. ``init``/``seed``: the initial weights when none are given
        (:meth:`build`); with ``init="framework"`` the result's ``note`` says the backends'
        models differ. ``quantize``/``calibration``/``io``: the quantized file of a named
        backend (``"tflite"``: float16, dynamic or int8; ``"onnx"``: int8), calibrated on
        ``calibration`` (archcompiler.calibration: a folder of images, an .npy/.npz file,
        ``"synthetic"`` or a loaded Calibration); ``float_layers``: IR node names an int8 model
        keeps in float; a backend instance takes them itself."""
        say = A.callback(progress, "progress") or _quiet
        # the backend, and what this build asks of it
        b = _backend(backend, quantize=quantize, calibration=calibration, io=io, float_layers=float_layers)
        weights = _weights(weights)
        require_capabilities([b], multi_output=self.graph.multi_output, optimize=A.flag(optimize, "optimize"))
        # the output: its folder and every target, before any slow step
        out = check_folder(_folder(out_dir) if out_dir is not None else self.default_output_dir(b, optimize=optimize))
        reads = () if weights is None or isinstance(weights, dict) else (weights,)
        self._check_targets(b, out, optimize, (*self._spec_inputs, *reads))
        # the weights: read and checked against the IR, or archc's init (None: the framework's)
        if weights is not None:
            say(f"loading weights from {weights}" if not isinstance(weights, dict) else "loading weights")
        initial = self._initial_weights(b, weights, init, seed)
        # build, verify against the IR, load the weights
        say(f"building {self.graph.name} with {b.name} and verifying it against the IR")
        model = b.build(self.graph)
        b.verify(self.graph, model)
        if initial is not None:
            b.set_weights(self.graph, model, initial)
        # optimise: the rewritten graph built, loaded and checked against the model just built
        optimized = None
        if optimize:
            say("optimizing (BatchNorm folded, pads merged) and checking it against the built model")
            optimized, model = optimize_model(b, self.graph, model)
        # publish the files, then count what was built
        say(f"writing {out}")
        files = self._publish(b, model, out, optimized, reads)
        g = self.graph if optimized is None else optimized.graph
        note = FRAMEWORK_INIT_NOTE if init == "framework" else ""
        return Built(g, b.name, model, tuple(files), cost(g, b.convention), cost(g, "paper").macs, optimize, note)

    def generate(self, backend: str | Backend = "torch", *, optimize: bool = False) -> str:
        """Standalone source code of the model for ``backend``, naming the spec by its file name.
        ``optimize``: of the optimised build's graph ``<name>_optimized``
        (archcompiler.analysis.optimize, as :meth:`build` rewrites it for ``backend``), whose
        weights are the files ``build_to(optimize=True)`` writes."""
        return self._generate(_backend(backend), A.flag(optimize, "optimize"), None)

    def _generate(self, b: Backend, optimize: bool, out_dir: Path | None) -> str:
        graph = self._naming_spec_for(self.graph, out_dir)
        if not optimize:
            return b.emit(graph)
        return b.emit(rewrite(b, graph).graph)

    def _naming_spec_for(self, graph: ir.Graph, out_dir: Path | None) -> ir.Graph:
        """``graph`` with ``source`` as its outputs in ``out_dir`` name the spec: relative to
        that folder, or by file name (files.spec_reference); never an absolute path."""
        file = self.loaded.file
        name = spec_reference(file, out_dir) if out_dir is not None else Path(file).name
        return graph if graph.source == name else dataclasses.replace(graph, source=name)

    def generate_to(
        self, backend: str | Backend = "torch", out_dir: str | Path = "generated", *, optimize: bool = False
    ) -> Path:
        """Write :meth:`generate`'s source to ``<out_dir>/<stem>_<backend>.py`` (atomically);
        ``optimize``: ``<stem>_optimized_<backend>.py``, named like the build's default folder.
        The target is checked first (files.check_target: a regular file or none, not the spec)."""
        b = _backend(backend)
        out = check_folder(A.path(out_dir, "out_dir", error=OutputError, what="a folder name"))
        target = check_target(out / f"{self._output_stem(b, optimize)}.py", self._spec_inputs)
        source = self._generate(b, A.flag(optimize, "optimize"), out)
        try:
            return atomic_write_text(target, source, inputs=self._spec_inputs)
        except OSError as exc:
            raise OutputError(f"output folder {str(out)!r}: {exc.strerror or exc}") from exc

    def latency(self, backend: str | Backend = "torch", *, runs: int = 10, warmup: int = 2) -> float:
        """Median seconds of one batch-1 inference in ``backend`` (eval mode, float32, through
        ``Backend.run``, so the layout conversion is included), after ``warmup`` untimed runs.

        A rough, local number: it is for comparing the settings of one sweep on one machine,
        next to the MACs that predict it, not for publishing."""
        import statistics
        import time

        import numpy as np

        A.integer(runs, "runs", low=1)
        A.integer(warmup, "warmup")
        b = _backend(backend)
        model = b.build(self.graph)
        x = np.random.default_rng(0).normal(size=(1, *self.graph.input_shape)).astype(np.float32)
        for _ in range(warmup):
            b.run(self.graph, model, x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            b.run(self.graph, model, x)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def parity(
        self, backends: Sequence[str] = ("torch", "keras"), *, progress: Progress | None = None, **kwargs: Any
    ) -> ParityReport:
        """Run ``backends`` on the same weights and input, compare every node (archcompiler.parity;
        ``optimize=True``: each backend's optimised model, judged against the unoptimised one)."""
        import inspect

        from archcompiler.parity.inference import parity

        if isinstance(backends, str) or not isinstance(backends, Sequence):
            got = A.kind(backends)
            raise BackendError(f"backends: expected a list of backend names such as ('torch', 'keras'), got {got}")
        A.names(backends, "backends", error=BackendError)
        known = [k for k in inspect.signature(parity).parameters if k not in ("graph", "backends")]
        unknown = next((k for k in kwargs if k not in known), None)
        if unknown is not None:
            raise BackendError(f"parity() takes no argument {unknown!r} (it takes {', '.join(known)})")
        say = A.callback(progress, "progress") or _quiet
        if kwargs.get("train_steps") and self.graph.multi_output:
            raise BackendError(
                f"training parity needs one (N, classes) logits output; this model has {len(self.graph.outputs)}"
            )
        say(f"parity: building and running {self.graph.name} in {', '.join(backends)}")
        report = parity(self.graph, backends, **kwargs)
        say(f"parity: compared {len(report.diffs)} nodes")
        return report


SpecInput = str | Path | Mapping[str, Any] | LoadedSpec
"""What :func:`compile`, :func:`sweep` and :func:`fit` accept: a path, YAML text, a dict or a loaded spec."""

_MAX_DICT_DEPTH = 64


def _plain(value: Any, path: tuple[str | int, ...], depth: int = 0) -> Any:
    """A copy of a user's dict made of what YAML could have produced (str keys; lists, not
    tuples), so that it goes through exactly the validation a file does; anything else is a
    SpecError at its spec path."""
    from archcompiler.language.source import format_path

    if depth > _MAX_DICT_DEPTH:
        raise SpecError(f"nesting is deeper than {_MAX_DICT_DEPTH} levels", file="<dict>", path=format_path(path))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"mapping keys must be strings (got {k!r})", file="<dict>", path=format_path(path))
            out[k] = _plain(v, (*path, k), depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, (*path, i), depth + 1) for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise SpecError(
        f"expected a YAML value (mapping, list, string, number, bool or None), got {type(value).__name__}",
        file="<dict>",
        path=format_path(path),
    )


def is_spec_text(spec: str) -> bool:
    """A str is YAML text, not a path, when it has a newline or starts like a spec
    (``archc:`` or a flow mapping ``{``); anything else names a file."""
    head = spec.lstrip()
    return "\n" in spec or head.startswith(("archc:", "{"))


def load_spec(spec: SpecInput) -> LoadedSpec:
    """A validated spec from a path (``str`` or ``Path``), YAML text (located at ``<spec>``) or a
    dict (located at ``<dict>``, by spec path). A ``Path`` is always a path."""
    if isinstance(spec, LoadedSpec):
        return spec
    if isinstance(spec, Path):
        return load(spec)
    if isinstance(spec, str):
        return load_text(spec) if is_spec_text(spec) else load(spec)
    if isinstance(spec, Mapping):
        return validate(Source(file="<dict>", data=_plain(spec, ())))
    raise A.fail(SpecError, "spec", f"expected a spec path, YAML text or a dict, got {A.kind(spec)}")


def compile(
    spec: SpecInput,
    *,
    width: float | None = None,
    resolution: float | int | tuple[int, int] | None = None,
    variant: str | None = None,
    depth: float | None = None,
    classes: int | None = None,
    pooling: str | None = None,
    classifier_activation: str | None = None,
    dropout: float | None = None,
    outputs: Sequence[str] | None = None,
    features: bool = False,
    out_indices: Sequence[int] | None = None,
) -> Compiled:
    """Load (a path, YAML text or a dict: :func:`load_spec`), validate and lower a spec.

    ``variant`` names one of the spec's ``variants:`` (default: its ``variant:``, else none;
    the graph is then named ``<name>_<variant>``); ``width``, ``resolution`` and ``depth``
    override the variant's (or the spec's) multipliers.

    ``classes`` (0: no classifier, like keras.applications' ``include_top=False``),
    ``pooling`` ("avg", "max" or "none", with ``classes=0``), ``classifier_activation``
    ("softmax" or "none") and ``dropout`` change the classifier (:mod:`archcompiler.lowering.heads`).

    ``outputs`` (layer names) makes a model returning those layers' outputs as a list, in
    order; ``features=True`` picks the last layer at each stride, ``out_indices`` some of
    those levels (timm's ``features_only``/``out_indices``; :mod:`archcompiler.lowering.features`)."""
    loaded = load_spec(spec)
    try:  # each checks its own fields
        head = Head(classes, pooling, classifier_activation, dropout)  # type: ignore[arg-type]
        selection = Outputs(outputs, features, out_indices)  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError(exc.message, file=loaded.file, path=exc.path) from None
    graph = lower(loaded, width=width, resolution=resolution, depth=depth, variant=variant, head=head)
    asked = Asked(width, resolution, depth, head)
    if selection.changes_nothing:
        return Compiled(loaded, graph, asked=asked)
    return Compiled(loaded, selection.apply(graph, head), full=graph, asked=asked)


@dataclass(frozen=True)
class Sweep:
    """Costs over a grid of settings x resolutions: ``rows[i][j]`` is setting i (a variant, a
    depth and a width: ``settings[i]``, its width ``widths[i]``) at resolution j."""

    file: str
    convention: str
    widths: tuple[float, ...]
    rows: tuple[tuple[tuple[ir.Graph, CostReport], ...], ...]
    latency: tuple[tuple[float, ...], ...] | None = None
    """Median seconds per batch-1 inference, like ``rows`` (``sweep(latency=backend)``)."""
    latency_backend: str = ""
    settings: tuple[tuple[str, float], ...] = ()
    """(variant, depth multiplier) of each row, like ``widths`` (empty: no variant, depth 1)."""

    @property
    def varies(self) -> bool:
        """Whether rows differ in variant or depth (the tables then name them)."""
        return any(v or d != 1.0 for v, d in self.settings)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass repr printed every graph and cost report of the grid.
        resolutions = [resolution_label(g) for g, _ in self.rows[0]] if self.rows else []
        widths = listing([f"{w:g}" for w in self.widths])
        timed = f", latency in {self.latency_backend}" if self.latency is not None else ""
        return (
            f"<Sweep {brief(self.file)}, convention {self.convention}: widths {widths}"
            f" x resolutions {listing(resolutions)}{timed}>"
        )


def sweep(
    spec: SpecInput,
    widths: Sequence[float] | None = None,
    resolutions: Sequence[float | int | tuple[int, int]] | None = None,
    convention: str = "paper",
    *,
    latency: str | Backend | None = None,
    runs: int = 10,
    head: Head | None = None,
    outputs: Outputs | None = None,
    progress: Progress | None = None,
    variants: Sequence[str] | None = None,
    depths: Sequence[float] | None = None,
) -> Sweep:
    """Lower and cost the spec at every variant x depth x width (rows) x resolution (columns);
    each left out is the spec's own (or the variant's). With ``latency=backend`` also time
    every setting there (:meth:`Compiled.latency`)."""
    loaded = load_spec(spec)
    ws, rs = _grid(loaded, widths, resolutions, (None,), (None,))
    vs, ds = _scaling(loaded, variants, depths)
    _options(loaded, convention, head, outputs)
    A.integer(runs, "runs", low=1)
    say = A.callback(progress, "progress") or _quiet
    b = None if latency is None else _backend(latency)  # before the grid is lowered
    rows = []
    for v, d, w in ((v, d, w) for v in vs for d in ds for w in ws):
        cells = []
        for res in rs:
            g = lower(loaded, width=w, resolution=res, depth=d, variant=v, head=head, outputs=outputs)
            cells.append((g, cost(g, convention)))
        rows.append(tuple(cells))
    row_widths = tuple(row[0][0].width for row in rows)
    settings = tuple((row[0][0].variant, row[0][0].depth_multiplier) for row in rows)
    if b is None:
        return Sweep(loaded.file, convention, row_widths, tuple(rows), settings=settings)
    times = []
    for row in rows:
        say(f"timing {row[0][0].name} at width {row[0][0].width:g} in {b.name}")
        times.append(tuple(Compiled(loaded, g).latency(b, runs=runs) for g, _ in row))
    return Sweep(loaded.file, convention, row_widths, tuple(rows), tuple(times), b.name, settings)


def fit(
    spec: SpecInput,
    *,
    max_macs: int | None = None,
    max_params: int | None = None,
    widths: Sequence[float] | None = None,
    resolutions: Sequence[float | int | tuple[int, int]] | None = None,
    convention: str = "paper",
    search: bool = False,
    head: Head | None = None,
    outputs: Outputs | None = None,
    variants: Sequence[str] | None = None,
    depths: Sequence[float] | None = None,
) -> list[FitRow]:
    """Settings within the budget, ranked MACs descending then params (``archc fit``).

    ``search=False``: every fitting setting of the grid (default: the paper's 4 widths x 4
    resolutions; with ``variants``, each variant's own width and resolution). ``search=True``:
    the front of a fine grid (archcompiler.analysis.fitting.search). ``variants`` and
    ``depths`` add the spec's variants and depth multipliers to the grid."""
    from archcompiler.analysis import fitting as F

    loaded = load_spec(spec)
    for name, budget in (("max_macs", max_macs), ("max_params", max_params)):
        if budget is not None:  # a budget below one fits nothing: a mistake, not an empty answer
            A.number(budget, name, low=1, error=SpecError, file=loaded.file)
    A.flag(search, "search", error=SpecError, file=loaded.file)
    widths, resolutions = _grid(loaded, widths, resolutions, None, None)  # None: fitting's own defaults
    vs, ds = _scaling(loaded, variants, depths)
    _options(loaded, convention, head, outputs)
    run = F.search if search else F.fit
    return run(
        loaded,
        max_macs=max_macs,
        max_params=max_params,
        widths=widths,
        resolutions=resolutions,
        convention=convention,
        head=head,
        outputs=outputs,
        variants=None if variants is None else vs,
        depths=None if depths is None else ds,
    )


def _scaling(loaded: LoadedSpec, variants: Any, depths: Any) -> tuple[Any, Any]:
    """``variants`` and ``depths`` of :func:`sweep` and :func:`fit` as tuples ((None,): the
    spec's own), each variant checked now (an unknown one is an error even where a search
    would skip a setting that does not lower)."""
    f = loaded.file
    vs = (None,) if variants is None else A.names(variants, "variants", file=f)
    ds = (None,) if depths is None else A.sequence(depths, "depths", file=f, what="depth multipliers")
    for v in vs:
        if v is not None:
            select_variant(loaded, v)
    return vs, ds


def _grid(
    loaded: LoadedSpec, widths: Any, resolutions: Any, default_widths: Any, default_resolutions: Any
) -> tuple[Any, Any]:
    """``widths`` and ``resolutions`` as tuples (None: the defaults); an empty list or a single
    number is an error, not the defaults (each value is checked when lowered)."""
    f = loaded.file
    ws = default_widths if widths is None else A.sequence(widths, "widths", file=f, what="width multipliers")
    rs = (
        default_resolutions
        if resolutions is None
        else A.sequence(resolutions, "resolutions", file=f, what="sizes or multipliers")
    )
    return ws, rs


def _options(loaded: LoadedSpec, convention: Any, head: Any, outputs: Any) -> None:
    """``convention``, ``head`` and ``outputs`` of :func:`sweep` and :func:`fit`."""
    f = loaded.file
    A.choice(convention, "convention", tuple(CONVENTIONS), error=SpecError, file=f)
    A.instance(head, "head", Head, file=f)
    A.instance(outputs, "outputs", Outputs, file=f)
