"""MobileNet v1 1.0-224: torch variants eager torch cannot be, against onnxruntime running
archc's .onnx in the same process (issue 22; figures in docs/performance.md, "Runtimes").

    .venv/bin/python benchmarks/bench_compile.py [--threads 1] [--rounds 15] [VARIANT ...]

Variants: ``jit`` (torch.jit.trace + freeze + optimize_for_inference: oneDNN fusion), ``jit-cl``
(the same, channels-last), ``compile`` (torch.compile, inductor with ``freezing``), ``compile-max``
(mode ``max-autotune-no-cudagraphs``), ``compile-cl`` (channels-last), ``mkldnn``
(torch.utils.mkldnn.to_mkldnn of the optimised build); always the optimised build
(``build("torch", optimize=True)``) and onnxruntime (its reference). Batch 1 and 16, rounds
interleaved, medians; prints each variant's preparation (compile) time and its largest
difference from the optimised build's output. Not run by ``make bench`` (compiling takes minutes).
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
    if name == "mkldnn":
        from torch.utils import mkldnn

        dense = mkldnn.to_mkldnn(copy.deepcopy(optimized))
        return lambda t: dense(t.to_mkldnn()).to_dense()
    import torch._inductor.config as inductor

    inductor.freezing = True
    inductor.cpp.threads = threads
    mode = "max-autotune-no-cudagraphs" if name == "compile-max" else None
    return torch.compile(plain, mode=mode, dynamic=False)


def onnxruntime_model(net: Any, threads: int, folder: str) -> Any:
    import onnxruntime as ort

    built = net.build_to("onnx", folder)
    path = next(f for f in built.files if f.suffix == ".onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda t: torch.from_numpy(session.run(None, {"input": t.numpy()})[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", default=["jit", "compile"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = a.compile(SPEC)  # archc's deterministic weights in every build
    optimized = net.build("torch", optimize=True)
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
            times: dict[str, list[float]] = {k: [] for k in models}
            with torch.no_grad():
                expected = optimized(x)
                for k, m in models.items():
                    print(f"  {k}: max |difference| {float((m(x) - expected).abs().max()):.1e}")
                for _ in range(rounds):
                    for k, m in models.items():
                        t = time.perf_counter()
                        m(x)
                        times[k].append(time.perf_counter() - t)
            ref = statistics.median(times["onnxruntime"])
            medians = {k: statistics.median(v) for k, v in times.items()}
            cells = [f"{k} {m * 1e3:.2f} ms ({m / ref:.2f}x)" for k, m in medians.items()]
            print(f"{args.threads} thread(s), batch {batch}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
