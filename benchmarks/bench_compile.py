"""MobileNet v1 1.0-224: torch variants eager torch cannot be, against onnxruntime running
archc's .onnx in the same process (issue 22; figures in docs/performance.md, "Runtimes").

    .venv/bin/python benchmarks/bench_compile.py [--threads 1] [--rounds 15] [VARIANT ...]

Variants: ``jit`` (torch.jit.trace + freeze + optimize_for_inference: oneDNN fusion), ``jit-cl``
(the same, channels-last), ``compile`` (torch.compile, inductor with ``freezing``), ``compile-max``
(mode ``max-autotune-no-cudagraphs``), ``compile-cl`` (channels-last), ``mkldnn``
(torch.utils.mkldnn.to_mkldnn of the optimised build), ``fuse`` (the optimised build with each
ReLU applied inside the packed conv before it, as a oneDNN post-op) and ``plan`` (``fuse``
writing each conv's output into a buffer kept per input shape and zeroed per call, so no
activation is allocated: what a memory plan such as onnxruntime's arena saves in page faults);
the last two are measurements, not builds archc offers (see docs/performance.md, "Runtimes").
Always the optimised build
(``build("torch", optimize=True)``) and onnxruntime (its reference). Batch 1 and 16, rounds
interleaved in turns of a few calls (bench.py's ``interleaved``, as ``make bench``'s runtime
group: each runtime's threads warm), medians; prints each variant's preparation (compile) time and its largest
difference from the optimised build's output. Not run by ``make bench`` (compiling takes minutes).

``--layers``: instead, each convolution's median time in the optimised build (torch's
profiler) next to the same conv in onnxruntime (its profiler; it fuses each ReLU into the conv
before it, as ``fuse`` does), and the page faults and kernel (system) time of one forward.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench import RUNTIME_BLOCK, interleaved, onnxruntime_session

import archcompiler as a

SPEC = Path(__file__).resolve().parents[1] / "specs" / "mobilenet.yaml"


def variant(name: str, net: Any, optimized: Any, threads: int) -> Any:
    """The model ``name`` runs: a callable taking an NCHW float32 tensor."""
    plain = net.build("torch").eval()
    if name.endswith("-cl"):
        plain = plain.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 224, 224)
    if name.startswith("jit"):
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(plain, x, check_trace=False)))
    if name in ("fuse", "plan"):
        return fused(optimized, planned=name == "plan")
    if name == "mkldnn":
        from torch.utils import mkldnn

        dense = mkldnn.to_mkldnn(copy.deepcopy(optimized))
        return lambda t: dense(t.to_mkldnn()).to_dense()
    import torch._inductor.config as inductor

    inductor.freezing = True
    inductor.cpp.threads = threads
    mode = "max-autotune-no-cudagraphs" if name == "compile-max" else None
    return torch.compile(plain, mode=mode, dynamic=False)


def fused(optimized: Any, *, planned: bool) -> Any:
    """A copy of the optimised build whose packed convs apply the ReLU that alone reads them
    (the ReLU step becomes an identity); ``planned``: into a reused, zeroed output buffer."""
    from torch import nn

    model = copy.deepcopy(optimized)
    modules = model._modules
    for name, inputs in model.steps:
        conv = modules.get(inputs[0]) if len(inputs) == 1 else None
        readers = [n for n, i in model.steps if inputs[0] in i]
        if type(modules[name]) is nn.ReLU and isinstance(conv, nn.Conv2d) and readers == [name]:
            conv.forward = _fused_forward(conv.forward, planned)
            modules[name] = nn.Identity()
    return model


def _fused_forward(packed: Any, planned: bool) -> Any:
    buffers: dict[tuple[Any, ...], torch.Tensor] = {}
    mkldnn = torch.ops.mkldnn

    def forward(x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), torch.get_num_threads())
        if key not in packed.packed:
            buffers[key] = torch.empty_like(packed(x))  # packs the weight for this shape
        weight, bias = packed.packed[key], packed.conv.bias
        if not planned:
            return mkldnn._convolution_pointwise(x, weight, bias, *packed.geometry, "relu", [], "")
        out = buffers[key].zero_()  # out = relu(conv(x) + out): oneDNN's in-place binary post-op
        return mkldnn._convolution_pointwise_.binary(out, x, weight, bias, *packed.geometry, "add", 1.0, "relu", [], "")

    return forward


def onnxruntime_model(net: Any, threads: int, folder: str) -> Any:
    """archc's .onnx of ``net`` in onnxruntime, as a callable taking and returning torch tensors."""
    built = net.build_to("onnx", folder)
    session = onnxruntime_session(next(f for f in built.files if f.suffix == ".onnx"), threads)
    return lambda t: torch.from_numpy(session.run(None, {"input": t.numpy()})[0])


def layers(net: Any, optimized: Any, threads: int, batch: int, rounds: int) -> None:
    """Print each conv's median time in both runtimes, then one forward's page faults."""
    import json
    import resource

    from torch.profiler import profile

    x = torch.rand(batch, 3, 224, 224)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        optimized(x)
        with profile() as prof:
            for _ in range(rounds):
                optimized(x)
        convs = [e.cpu_time_total / 1e3 for e in prof.events() if e.name == "mkldnn::_convolution_pointwise"]
        path = next(f for f in net.build_to("onnx", tmp).files if f.suffix == ".onnx")
        session = onnxruntime_session(path, threads, profile_prefix=f"{tmp}/ort")
        for _ in range(rounds + 1):
            session.run(None, {"input": x.numpy()})
        runs: dict[str, list[float]] = {}
        for event in json.loads(Path(session.end_profiling()).read_text()):
            args = event.get("args", {})
            if event.get("cat") == "Node" and args.get("op_name") == "Conv" and event["name"].endswith("_kernel_time"):
                runs.setdefault(event["name"].removesuffix("_kernel_time"), []).append(event["dur"] / 1e3)
        n = len(convs) // rounds
        torch_ms = [statistics.median(convs[i::n]) for i in range(n)]
        ort_ms = [statistics.median(v[1:]) for v in runs.values()]  # the first run warms up
        print(f"{threads} thread(s), batch {batch}: conv, torch ms, onnxruntime ms, ratio")
        for name, t, o in zip(runs, torch_ms, ort_ms, strict=True):
            print(f"  {name.removesuffix('_relu_nchwc')}: {t:.3f} {o:.3f} {t / o:.2f}x")
        print(f"  all convs: {sum(torch_ms):.2f} {sum(ort_ms):.2f} {sum(torch_ms) / sum(ort_ms):.2f}x")
        for label, run in (
            ("torch", lambda: optimized(x)),
            ("onnxruntime", lambda: session.run(None, {"input": x.numpy()})),
        ):
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            faults, system = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
            print(
                f"  {label}: one forward {wall * 1e3:.1f} ms, {faults} page faults, {system * 1e3:.1f} ms system time"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", default=["jit", "compile"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--layers", action="store_true", help="per-conv times against onnxruntime's, and page faults")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = a.compile(SPEC)  # archc's deterministic weights in every build
    optimized = net.build("torch", optimize=True)
    if args.layers:
        for batch, rounds in ((1, args.rounds * 4), (16, args.rounds)):
            layers(net, optimized, args.threads, batch, rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = {"onnxruntime": onnxruntime_model(net, args.threads, tmp), "optimised build": optimized}
        for name in args.variants:
            start = time.perf_counter()
            models[name] = variant(name, net, optimized, args.threads)
            with torch.no_grad():
                for batch in (1, 16):
                    models[name](torch.rand(batch, 3, 224, 224))  # compiles, once per shape
            print(f"{name}: prepared in {time.perf_counter() - start:.1f} s", flush=True)
        for batch, rounds in ((1, args.rounds * 4), (16, args.rounds)):
            x = torch.rand(batch, 3, 224, 224)
            with torch.no_grad():
                expected = optimized(x)
                for k, m in models.items():
                    print(f"  {k}: max |difference| {float((m(x) - expected).abs().max()):.1e}")
                cases = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
                times = interleaved(cases, rounds, warmup=0, block=RUNTIME_BLOCK)
            ref = statistics.median(times["onnxruntime"])
            medians = {k: statistics.median(v) for k, v in times.items()}
            cells = [f"{k} {m * 1e3:.2f} ms ({m / ref:.2f}x)" for k, m in medians.items()]
            print(f"{args.threads} thread(s), batch {batch}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
