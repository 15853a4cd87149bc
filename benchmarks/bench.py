"""`make bench`: one table of timings and memory, each row next to a reference measured in the
same run (ratios, not absolute numbers, are what carries over between machines).

    .venv/bin/python benchmarks/bench.py [--quick] [--json benchmarks/results.json]

Groups (each in its own fresh worker process, so frameworks and thread pools do not mix):

* start-up, with the budgets of issue 20 judged in the table (:data:`BUDGETS`): ``archc summary``
  per process against ``python -c pass``; ``archc build --backend torch`` against ``import
  torch``, one thread each; ``compile()`` in-process and its stages; YAML parsing with libyaml
  against the pure-Python loader;
* static cost: ``archc summary --convention fvcore`` and in-process ``cost(lower(spec))`` against
  fvcore, ptflops, thop and torchinfo counting a hand-written MobileNet (reference_mobilenet.py);
  peers that are not installed are skipped (see benchmarks/README.md);
* build: ``archc build --backend keras`` against a bare ``import tensorflow``; the on-demand
  torch export against ``import torch``;
* inference: the model ``build("torch")`` returns, the generated module (generated/), the
  torch.export program and the optimised build (``build("torch", optimize=True)``), against
  the hand-written nn.Sequential MobileNet; batch 1 and 16, 1 and 2 intra-op threads
  (pinned with torch.set_num_threads), rounds interleaved so load hits all alike, in turns of
  two calls (the first not counted: TORCH_BLOCK);
* timm (issue 21): archc's torch EfficientNet-B0 and MobileNetV4-Conv-Small, built and
  optimised, against timm's tf_efficientnet_b0 and mobilenetv4_conv_small; batch 1 and 16, 1 and
  2 threads, interleaved in turns of two calls; budgets: built at most 1.05x, optimised at most
  1.00x of timm's;
* runtime (issue 22): MobileNet v1 in torch (built, optimised), onnxruntime and LiteRT (archc's
  .onnx and .tflite, float32 and int8 calibrated on synthetic images), in one process against
  onnxruntime running the float32 .onnx; batch 1 and 16, 1 and 2 threads, interleaved; budgets:
  optimised torch at most 1.05x at batch 1, 1.00x at batch 16; the model files' sizes;
* hugepages: the runtime group's torch models against the same reference, in a process started
  with torch's ``THP_MEM_ALLOC_ENABLE=1`` (large allocations in transparent huge pages);
* keras: archc's Keras model against keras.applications.MobileNet;
* parity: ``archc parity`` (torch and keras, 0.25-128) against importing both frameworks;
* memory: peak RSS (getrusage ru_maxrss, one fresh process per number: tracemalloc does not see
  torch's allocations) of a batch-16 forward, and minor page faults per batch-1 forward.

Not run by the tests or CI; 8-15 minutes on a shared 2-core machine (``--quick``: fewer runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")
Row = dict[str, Any]


BUDGETS: dict[str, tuple[str, float]] = {
    "compile('specs/mobilenet.yaml')": ("s", 0.005),
    "archc summary specs/mobilenet.yaml": ("s", 0.5),
    "archc build specs/mobilenet.yaml --backend torch": ("x", 1.4),
}
"""Case -> its budget (issue 20), judged on the median: ``("s", limit)`` at most ``limit``
seconds, ``("x", limit)`` at most ``limit`` times its reference measured in the same run."""

STARTUP_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The start-up group's processes run with one intra-op thread (torch reads these when it is
imported), so a budget does not depend on how many cores other work leaves free."""


def row(group: str, case: str, samples: list[float], unit: str, threads: int | str, ref: str | None = None) -> Row:
    return {
        "group": group,
        "case": case,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
        "unit": unit,
        "threads": threads,
        "reference": ref,
        "budget": BUDGETS.get(case),
    }


def interleaved(
    cases: dict[str, Callable[[], Any]],
    runs: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    block: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each case (by ``clock``: wall, or ``time.process_time`` for the CPU
    time of this process, steadier on a loaded machine), the cases taking turns every round.

    ``block`` > 1: each turn is ``block`` calls in a row, the first not counted (``runs`` counted
    calls, rounded up to whole turns). For cases with their own thread pools (torch's OpenMP, onnxruntime's, LiteRT's):
    an idle OpenMP team spins for milliseconds after a call, taking a core from whatever runs
    next, which one call after another of another runtime would pay every time."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in cases}
    counted = max(block - 1, 1)
    for _ in range(-(-runs // counted)):
        for k, fn in cases.items():
            if block > 1:
                fn()
            for _ in range(counted):
                t = clock()
                fn()
                out[k].append(clock() - t)
    return out


def process_times(
    cmds: dict[str, list[str]], runs: int, warmup: int = 1, env: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Wall seconds of each command as a fresh process, interleaved (after ``warmup`` rounds
    that fill the page cache and write bytecode caches: PYTHONDONTWRITEBYTECODE is dropped, as
    an installed package has its caches); ``env``: variables added to the environment."""
    extra = {"TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}

    def runner(cmd: list[str]) -> Callable[[], None]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | extra
        return lambda: subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)

    return interleaved({k: runner(c) for k, c in cmds.items()}, runs, warmup=warmup)


# -- workers (each runs in a fresh process) -------------------------------------------------

PEER_SCRIPTS = {
    "fvcore FlopCountAnalysis": "import fvcore.nn as f; a = f.FlopCountAnalysis(m, x); "
    "a.unsupported_ops_warnings(False); a.uncalled_modules_warnings(False); a.total()",
    "ptflops get_model_complexity_info": "import ptflops; ptflops.get_model_complexity_info(m, (3, 224, 224), "
    "as_strings=False, print_per_layer_stat=False)",
    "thop profile": "import thop; thop.profile(m, inputs=(x,), verbose=False)",
    "torchinfo summary": "import torchinfo; torchinfo.summary(m, input_size=(1, 3, 224, 224), verbose=0)",
}
PEER_SETUP = (
    "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, {bench!r}); import torch; "
    "from reference_mobilenet import mobilenet_v1; m = mobilenet_v1().eval(); x = torch.zeros(1, 3, 224, 224); "
)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def peers() -> dict[str, str]:
    mods = {"fvcore": "fvcore", "ptflops": "ptflops", "thop": "thop", "torchinfo": "torchinfo"}
    return {k: v for k, v in PEER_SCRIPTS.items() if _installed(mods[k.split()[0]])}


def worker_static(runs: int) -> list[Row]:
    """Counting MobileNet: archc (no framework) against the torch ecosystem's tools."""
    rows: list[Row] = []
    ref = "archc summary --convention fvcore"
    setup = PEER_SETUP.format(bench=str(ROOT / "benchmarks"))
    cmds = {ref: [str(BIN / "archc"), "summary", SPEC, "--convention", "fvcore"]}
    cmds |= {f"{k} (process)": [sys.executable, "-c", setup + v] for k, v in peers().items()}
    for k, t in process_times(cmds, max(2, runs // 2)).items():
        rows.append(row("static cost, per process", k, t, "s", "default", None if k == ref else ref))

    import warnings

    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import archcompiler as a

    loaded = a.load(SPEC)
    ns: dict[str, Any] = {}
    exec(setup, ns)
    ref_in = "archc lower + cost (fvcore convention)"
    cases: dict[str, Callable[[], Any]] = {ref_in: lambda: a.cost(a.lower(loaded), "fvcore")}
    for k, v in peers().items():
        code = compile(v, k, "exec")
        cases[k] = lambda code=code: exec(code, ns)
    import torch

    torch.set_num_threads(1)
    for k, t in interleaved(cases, runs * 2).items():
        rows.append(row("static cost, in-process", k, t, "s", 1, None if k == ref_in else ref_in))
    return rows


def build_command(backend: str, out: str) -> list[str]:
    return [str(BIN / "archc"), "build", SPEC, "--backend", backend, "-o", out]


def worker_build(runs: int) -> list[Row]:
    """``archc build --backend keras`` against importing TensorFlow, and the on-demand torch
    export against importing torch, each a fresh process (the torch build is a start-up budget)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = "python -c 'import tensorflow'"
        cmds = {
            ref: [sys.executable, "-c", "import tensorflow"],
            "archc build specs/mobilenet.yaml --backend keras": build_command("keras", f"{tmp}/out_keras"),
        }
        for k, t in process_times(cmds, runs).items():
            rows.append(row("build", k, t, "s", "default", None if k == ref else ref))
        subprocess.run(build_command("torch", f"{tmp}/out_torch"), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        ref = "python -c 'import torch'"
        export = [sys.executable, "-m", "archcompiler.backends.torch.export", f"{tmp}/out_torch"]
        cmds = {ref: [sys.executable, "-c", "import torch"], "python -m archcompiler.backends.torch.export": export}
        for k, t in process_times(cmds, 2).items():
            rows.append(row("build", k, t, "s", "default", None if k == ref else ref))
    return rows


def _load_generated(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("generated_mobilenet", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MobilenetV1().eval()


MODEL_NAMES = (
    "hand-written nn.Sequential",
    "archc build('torch')",
    "archc generated module",
    "archc torch.export program",
    "archc build('torch', optimize=True)",
)
"""The torch models timed against each other: MobileNet v1 1.0-224, the archc ones with one set of weights."""


def torch_model(which: str, built: Any = None) -> Any:
    """One of MODEL_NAMES, in eval mode."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from reference_mobilenet import mobilenet_v1

    import archcompiler as a

    if which == MODEL_NAMES[0]:
        return mobilenet_v1().eval()
    built = built if built is not None else a.compile(SPEC).build("torch")
    if which == MODEL_NAMES[1]:
        return built
    if which == MODEL_NAMES[2]:
        generated = _load_generated(ROOT / "generated" / "mobilenet_v1_1_224_torch.py")
        generated.load_state_dict(built.state_dict())
        return generated
    if which == MODEL_NAMES[4]:
        from archcompiler.kit.registry import get_backend

        net = a.compile(SPEC)
        weights = get_backend("torch").get_weights(net.graph, built)  # the same weights, folded
        return net.build("torch", weights=weights, optimize=True)
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(built, (torch.zeros(2, 3, 224, 224),), dynamic_shapes=({0: batch},)).module()


def torch_models() -> dict[str, Any]:
    built = torch_model(MODEL_NAMES[1])
    return {n: torch_model(n, built) for n in MODEL_NAMES}


TORCH_BLOCK = 2
"""Calls per turn in the inference and timm groups, the first not counted (``interleaved``):
each counted forward then starts from the heap its own model leaves, as in a program that runs
one model; after another model's forward it can pay for that one's heap trim in page faults
(docs/performance.md, "Against timm")."""


def worker_inference(runs: int) -> list[Row]:
    import torch

    models = torch_models()
    ref = "hand-written nn.Sequential"
    rows: list[Row] = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch, n in ((1, runs * 4), (16, runs)):
            x = torch.rand(batch, 3, 224, 224)
            with torch.inference_mode():
                cases = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
                for k, t in interleaved(cases, n, block=TORCH_BLOCK).items():
                    ref_name = None if k == ref else f"{ref}, batch {batch}"
                    rows.append(row("inference", f"{k}, batch {batch}", t, "s", threads, ref_name))
    return rows


def worker_keras(runs: int) -> list[Row]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    import archcompiler as a

    ref = "keras.applications.MobileNet"
    models = {
        ref: keras.applications.MobileNet(weights=None),
        "archc build('keras') of mobilenet_keras.yaml": a.compile(KERAS_SPEC).build("keras"),
    }
    rows: list[Row] = []
    for batch, n in ((1, runs * 2), (16, max(3, runs // 2))):
        x = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
        cases = {k: (lambda m=m, x=x: m(x, training=False)) for k, m in models.items()}
        for k, t in interleaved(cases, n).items():
            rows.append(row("keras", f"{k}, batch {batch}", t, "s", 2, None if k == ref else f"{ref}, batch {batch}"))
    return rows


def worker_parity(runs: int) -> list[Row]:
    ref = "python -c 'import torch, keras'"
    cmds = {
        ref: [sys.executable, "-c", "import torch, keras"],
        "archc parity (torch, keras; 0.25-128)": [
            str(BIN / "archc"),
            "parity",
            SPEC,
            "--width",
            "0.25",
            "--resolution",
            "128",
        ],
    }
    return [
        row("parity", k, t, "s", "default", None if k == ref else ref)
        for k, t in process_times(cmds, 2, warmup=0).items()
    ]


def measure_memory(which: str, batch: int) -> dict[str, float]:
    """In this (fresh) process: peak RSS after one forward of ``which`` at ``batch``, what that
    forward added to the RSS before it, and minor page faults per batch-1 forward (after warm-up)."""
    import resource

    import torch

    torch.set_num_threads(1)
    model = torch_model(which)
    x = torch.rand(batch, 3, 224, 224)
    page = os.sysconf("SC_PAGE_SIZE")
    with torch.inference_mode():
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
        model(x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
        one = torch.rand(1, 3, 224, 224)
        model(one)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            model(one)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    return {"peak_mib": peak, "added_mib": peak - rss, "faults": faults}


FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""For the peak-RSS processes: glibc's mmap threshold fixed at its initial 128 KiB. By default
it grows once a large block is freed, after which freed activations may stay in the heap or go
back to the system depending on the order of frees: the built model's peak RSS was 488 and 592 MiB
in fresh processes an hour apart. Fixed, every large tensor is mapped and unmapped, so the RSS
follows the live tensors (two runs agreed within 0.5 MiB)."""


def worker_memory(runs: int) -> list[Row]:
    """One fresh process per measurement (ru_maxrss only grows): peak RSS with the mmap
    threshold fixed (FIXED_MMAP_THRESHOLD), page faults with the allocator as users run it."""
    names = list(MODEL_NAMES[:3])  # the export program's memory is the built model's plus tracing
    ref = names[0]
    rows: list[Row] = []
    results: dict[str, dict[str, list[float]]] = {n: {"peak_mib": [], "added_mib": [], "faults": []} for n in names}
    for _ in range(2):
        for n in names:
            code = f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench; " + (
                f"print(json.dumps(bench.measure_memory({n!r}, 16)))"
            )
            for env, keys in (({**os.environ, **FIXED_MMAP_THRESHOLD}, ("peak_mib", "added_mib")), (None, ("faults",))):
                out = subprocess.run(
                    [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT, env=env
                )
                measured = json.loads(out.stdout.strip().splitlines()[-1])
                for key in keys:
                    results[n][key].append(measured[key])
    for what, key, unit in (
        ("peak RSS, batch 16", "peak_mib", "MiB"),
        ("RSS added by a batch-16 forward", "added_mib", "MiB"),
        ("page faults per batch-1 forward", "faults", "faults"),
    ):
        for n, rs in results.items():
            ref_case = None if n == ref else f"{ref}: {what}"
            rows.append(row("memory", f"{n}: {what}", rs[key], unit, 1, ref_case))
    return rows


def worker_startup(runs: int) -> list[Row]:
    """Start-up, and the three budgets (:data:`BUDGETS`): ``archc summary`` as a process next
    to the interpreter's floor; ``archc build --backend torch`` next to ``import torch``, taking
    turns in one run; in-process, ``compile()`` and its stages, and YAML parsing with libyaml
    against the pure-Python loader. One intra-op thread throughout (:data:`STARTUP_THREADS`).

    The processes run with bytecode caches (PYTHONDONTWRITEBYTECODE dropped, one warm-up run
    writes them), as an installed package has them; without, every run compiles archcompiler's
    sources again (about 0.15 s more CPU here)."""
    rows: list[Row] = []
    ref = "python -c pass"
    cmds = {
        ref: [sys.executable, "-c", "pass"],
        "python -c 'import archcompiler'": [sys.executable, "-c", "import archcompiler"],
        "archc summary specs/mobilenet.yaml": [str(BIN / "archc"), "summary", SPEC],
    }
    for k, t in process_times(cmds, max(9, runs * 2), env=STARTUP_THREADS).items():
        rows.append(row("start-up, per process", k, t, "s", 1, None if k == ref else ref))
    with tempfile.TemporaryDirectory() as tmp:
        ref = "python -c 'import torch'"
        cmds = {
            ref: [sys.executable, "-c", "import torch"],
            "archc build specs/mobilenet.yaml --backend torch": build_command("torch", f"{tmp}/out"),
        }
        for k, t in process_times(cmds, max(5, runs), env=STARTUP_THREADS).items():
            rows.append(row("start-up, per process", k, t, "s", 1, None if k == ref else ref))

    import archcompiler as a
    from archcompiler.language import loading, source
    from archcompiler.lowering import expand, infer

    text = Path(SPEC).read_text(encoding="utf-8")
    src = source.parse_text(text, SPEC)
    loaded = loading.validate(src)
    entries = expand.expand(loaded, 1.0)
    py = "parse_text, pure-Python YAML loader"
    cases: dict[str, Callable[[], Any]] = {
        "compile('specs/mobilenet.yaml')": lambda: a.compile(SPEC),
        "  read + parse (libyaml)": lambda: source.read_source(SPEC),
        "  validate (pydantic)": lambda: loading.validate(src),
        "  expand": lambda: expand.expand(loaded, 1.0),
        "  infer (+ Graph checks)": lambda: infer.infer(loaded, entries, 1.0, (224, 224)),
        py: lambda: source.parse_text(text, SPEC, libyaml=False),
        "parse_text, libyaml": lambda: source.parse_text(text, SPEC, libyaml=True),
    }
    for k, t in interleaved(cases, runs * 100, warmup=20).items():
        ref_in = py if k == "parse_text, libyaml" else None
        rows.append(row("start-up, in-process", k, t, "s", 1, ref_in))
    # CPU time of this process too (wall time swings with load); the budget is judged on the
    # wall-clock median above, what a user waits for
    for k, t in interleaved(cases, runs * 100, warmup=20, clock=time.process_time).items():
        ref_in = f"{py}, CPU time" if k == "parse_text, libyaml" else None
        rows.append(row("start-up, in-process CPU", f"{k}, CPU time", t, "s", 1, ref_in))
    return rows


TIMM_MODELS = (
    ("EfficientNet-B0", "efficientnet.yaml", "b0", "tf_efficientnet_b0"),
    ("MobileNetV4-Conv-Small", "mobilenet_v4.yaml", "conv_small", "mobilenetv4_conv_small"),
)
"""(family, spec, variant, timm model) of issue 21's anchors: timm's own torch models, the
same architectures (parameters and multiply-adds equal: tests/e2e/test_family_timm.py)."""


def timm_cases(family: str) -> tuple[str, str, str]:
    """The timm group's three case names of ``family``: timm's model (the reference), archc's
    build and its optimised build."""
    return (f"{family}: timm", f"{family}: archc build('torch')", f"{family}: archc build('torch', optimize=True)")


def _import_timm() -> Any:
    """timm, with the test suite's torchvision stand-in where no torchvision is installed (this
    machine's torchvision wheel does not load with the CPU torch: tests/stubs/README.md)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        sys.path.append(str(ROOT / "tests" / "stubs"))
    import timm

    return timm


def worker_timm(runs: int) -> list[Row]:
    """Issue 21: archc's torch EfficientNet-B0 and MobileNetV4-Conv-Small, built and optimised,
    against timm's models of the same architectures; batch 1 and 16, 1 and 2 intra-op threads,
    cases interleaved round by round. Skipped (no rows) where timm is not installed."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return []
    import torch

    import archcompiler as a

    timm = _import_timm()
    rows: list[Row] = []
    for family, spec, variant, name in TIMM_MODELS:
        net = a.compile(ROOT / "specs" / spec, variant=variant)
        ref, plain, optimized = timm_cases(family)
        models = {
            ref: timm.create_model(name).eval(),
            plain: net.build("torch"),
            optimized: net.build("torch", optimize=True),
        }
        size = models[ref].pretrained_cfg["input_size"][-1]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch, n in ((1, runs * 10), (16, runs * 4)):
                x = torch.rand(batch, 3, size, size)
                with torch.inference_mode():
                    cases = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
                    for k, t in interleaved(cases, n, warmup=2, block=TORCH_BLOCK).items():
                        ref_name = None if k == ref else f"{ref}, batch {batch}"
                        rows.append(row("timm", f"{k}, batch {batch}", t, "s", threads, ref_name))
    return rows


RUNTIME_BUILDS = {
    "torch": ["--backend", "torch"],
    "torch, optimised": ["--backend", "torch", "--optimize"],
    "onnx": ["--backend", "onnx"],
    "onnx, int8": ["--backend", "onnx", "--quantize", "int8", "--calibration", "synthetic"],
    "tflite": ["--backend", "tflite"],
    "tflite, int8": ["--backend", "tflite", "--quantize", "int8", "--calibration", "synthetic"],
}
"""Issue 22's builds of MobileNet v1 1.0-224, each ``archc build`` with archc's deterministic
weights (the same model in every backend); int8 calibrated on synthetic images."""

RUNTIME_REF = "onnxruntime, archc's .onnx, float32"
RUNTIME_TARGETS = {"batch 1": 1.05, "batch 16": 1.0}
"""Issue 22's target for the optimised torch model against RUNTIME_REF in the same process."""


def _model_file(folder: Path) -> Path:
    """The model file a build wrote: its .tflite, .onnx or torch .pt (not the side files)."""
    for suffix in (".tflite", ".onnx", ".pt"):
        found = sorted(p for p in folder.iterdir() if p.name.endswith(suffix) and ".torchscript." not in p.name)
        if found:
            return found[0]
    raise FileNotFoundError(f"{folder}: no model file")


HUGEPAGES = {"THP_MEM_ALLOC_ENABLE": "1"}
"""torch's switch for transparent huge pages (read once, at its first allocation)."""
GROUP_ENV = {"hugepages": HUGEPAGES}
"""Environment variables a group's worker process starts with."""

RUNTIME_BLOCK = 4
"""Calls per turn in the runtime group, the first not counted (``interleaved``): each runtime's
threads are then measured warm, as in a program that runs one of them."""


def onnxruntime_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPU session of ``path`` on ``threads`` intra-op threads, its idle workers
    not spinning (they would otherwise spin after each run, on the cores the next case needs);
    ``profile_prefix``: with onnxruntime's profiler on, writing there."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _runtime_session(path: Path, threads: int) -> Callable[[Any], Any]:
    """A forward of an .onnx (onnxruntime, NCHW input) or .tflite file (LiteRT with its default
    XNNPACK delegate, NHWC input) on ``threads`` intra-op threads (onnxruntime's without spinning
    while idle, as the other cases run between its calls); the input is a numpy batch
    already in the model's layout, and a LiteRT interpreter is resized to it on first use."""
    import numpy as np

    if path.suffix == ".onnx":
        session = onnxruntime_session(path, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreters: dict[tuple[int, ...], Any] = {}

    def run(x: np.ndarray) -> Any:
        it = interpreters.get(x.shape)
        if it is None:
            it = interpreters[x.shape] = Interpreter(model_path=str(path), num_threads=threads)
            it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
            it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    return run


def _runtime_models(files: dict[str, Path], threads: int) -> dict[str, tuple[Callable[[Any], Any], str]]:
    """Case -> (forward, input layout "torch", "nchw" or "nhwc"), the reference first; only the
    cases whose files were built (the torch ones always)."""
    import archcompiler as a

    net = a.compile(SPEC)
    runtimes = {
        "onnxruntime, archc's .onnx, int8": "onnx, int8",
        "LiteRT, archc's .tflite, float32": "tflite",
        "LiteRT, archc's .tflite, int8": "tflite, int8",
    }
    return {
        RUNTIME_REF: (_runtime_session(files["onnx"], threads), "nchw"),
        "torch, build('torch')": (net.build("torch"), "torch"),
        "torch, build('torch', optimize=True)": (net.build("torch", optimize=True), "torch"),
        **{
            k: (_runtime_session(files[f], threads), "nhwc" if "tflite" in f else "nchw")
            for k, f in runtimes.items()
            if f in files
        },
    }


def worker_runtime(runs: int) -> list[Row]:
    """Issue 22: MobileNet v1 1.0-224 in torch (built, optimised), onnxruntime and LiteRT
    (archc's .onnx and .tflite, float32 and int8), all in this process: batch 1 and 16, 1 and 2
    intra-op threads, cases interleaved round by round, every ratio against onnxruntime running
    archc's float32 .onnx; then each model file's size against the float32 .onnx."""
    return _runtime_rows("runtime", RUNTIME_BUILDS, runs, sizes=True)


def worker_hugepages(runs: int) -> list[Row]:
    """The runtime group's torch models and reference again, in a process started with torch's
    ``THP_MEM_ALLOC_ENABLE=1`` (:data:`GROUP_ENV`): its allocator then asks for transparent huge
    pages for every allocation of 2 MiB or more, which spares the batch-16 forward the page
    faults of fresh activations (docs/performance.md, "Runtimes"). No budget: the target is
    judged on torch as it starts by default."""
    setting = " ".join(f"{k}={v}" for k, v in HUGEPAGES.items())
    if any(os.environ.get(k) != v for k, v in HUGEPAGES.items()):  # rows labelled with a setting they lacked
        raise RuntimeError(f"the hugepages group runs in a process started with {setting}")
    builds = {k: v for k, v in RUNTIME_BUILDS.items() if k == "onnx"}
    return _runtime_rows("runtime, huge pages", builds, runs, suffix=f" ({setting})")


def _runtime_rows(
    group: str, builds: dict[str, list[str]], runs: int, *, suffix: str = "", sizes: bool = False
) -> list[Row]:
    """``builds`` made with ``archc build``, then :func:`_runtime_models`'s cases timed (the case
    names end with ``suffix``); ``sizes``: also each model file's size against the float32 .onnx."""
    import numpy as np
    import torch

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        for key, flags in builds.items():
            out = Path(tmp) / key.replace(", ", "_")
            cmd = [str(BIN / "archc"), "build", SPEC, *flags, "-o", str(out)]
            quiet = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=quiet)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {done.stderr[-2000:]}")
            files[key] = _model_file(out)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            models = _runtime_models(files, threads)
            for batch, n in ((1, runs * 10), (16, runs * 2)):
                x = torch.rand(batch, 3, 224, 224)
                inputs = {"torch": x, "nchw": x.numpy(), "nhwc": np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))}
                with torch.inference_mode():
                    cases = {k: (lambda m=m, x=inputs[layout]: m(x)) for k, (m, layout) in models.items()}
                    for k, t in interleaved(cases, n, warmup=2, block=RUNTIME_BLOCK).items():
                        ref_name = None if k == RUNTIME_REF else f"{RUNTIME_REF}{suffix}, batch {batch}"
                        rows.append(row(group, f"{k}{suffix}, batch {batch}", t, "s", threads, ref_name))
        if sizes:
            ref_size = f"{files['onnx'].name} (float32 .onnx): file size"
            for key, path in files.items():
                case = f"{path.name} ({key}): file size" if key != "onnx" else ref_size
                mib = path.stat().st_size / 2**20
                rows.append(row(group, case, [mib], "MiB", "n/a", None if key == "onnx" else ref_size))
    return rows


BUDGETS |= {
    f"{case}, batch {b}": ("x", limit)
    for family, *_ in TIMM_MODELS
    for case, limit in zip(timm_cases(family)[1:], (1.05, 1.0), strict=True)
    for b in (1, 16)
}
BUDGETS |= {f"torch, build('torch', optimize=True), {b}": ("x", limit) for b, limit in RUNTIME_TARGETS.items()}
"""Issue 21: archc's built models within 1.05x of timm's, the optimised ones faster (at most
1.00x); issue 22: the optimised MobileNet v1 within 1.05x of onnxruntime at batch 1, no slower
at batch 16."""


WORKERS: dict[str, Callable[[int], list[Row]]] = {
    "startup": worker_startup,
    "static": worker_static,
    "build": worker_build,
    "inference": worker_inference,
    "timm": worker_timm,
    "runtime": worker_runtime,
    "hugepages": worker_hugepages,
    "keras": worker_keras,
    "parity": worker_parity,
    "memory": worker_memory,
}


# -- the report ----------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 0.01:
            return f"{value * 1e3:,.2f} ms"
        return f"{value * 1e3:,.1f} ms" if value < 10 else f"{value:,.1f} s"
    if unit == "MiB" and value < 100:
        return f"{value:,.1f} MiB"  # a model file: 4.3 MiB, not 4
    return f"{value:,.0f} {unit}"


def table(rows: list[Row]) -> str:
    by_case = {r["case"]: r for r in rows}
    head = ("group", "case", "median", "min", "max", "ratio", "threads", "budget")
    lines = []
    for r in rows:
        ref = by_case.get(r["reference"]) if r["reference"] else None
        if ref is not None and ref["threads"] != r["threads"]:  # the reference at the row's thread count
            ref = next((x for x in rows if x["case"] == r["reference"] and x["threads"] == r["threads"]), ref)
        r["ratio"] = None if ref is None or not ref["median"] else r["median"] / ref["median"]
        ratio = "ref" if ref is None else "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            (
                r["group"],
                r["case"],
                fmt(r["median"], r["unit"]),
                fmt(r["min"], r["unit"]),
                fmt(r["max"], r["unit"]),
                ratio,
                str(r["threads"]),
                verdict(r),
            )
        )
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("-|-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in lines]
    return "\n".join(out)


def verdict(r: Row) -> str:
    """'' for a row without a budget, else its limit and whether the median keeps it (sets
    ``r["passed"]``)."""
    if not r.get("budget"):
        return ""
    unit, limit = r["budget"]
    if unit == "x":
        value, shown = r.get("ratio"), f"<= {limit:.2f}x"
    else:
        value, shown = r["median"], f"<= {fmt(limit, unit)}"
    r["passed"] = value is not None and value <= limit
    return f"{shown}: {'pass' if r['passed'] else 'FAIL'}" if value is not None else f"{shown}: no reference"


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "keras", "tensorflow-cpu", "fvcore", "ptflops", "thop", "torchinfo"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (about three minutes)")
    ap.add_argument("--only", default=",".join(WORKERS), help="comma-separated groups")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](runs)))
        return
    rows: list[Row] = []
    for name in args.only.split(","):
        t = time.perf_counter()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **GROUP_ENV.get(name, {})}
        res = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--runs", str(runs)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
        )
        if res.returncode != 0:
            print(f"{name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    info = machine()
    text = table(rows)  # also sets each row's ratio
    args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")
    print(f"{info['cpu']}, {info['cores']} cores, load average {info['load_average'][0]:.1f}, {info['date']}")
    print(text)
    print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")


if __name__ == "__main__":
    main()
