"""The inference rows of bench.py alone, quicker to rerun while working on the torch backend:
the hand-written reference, build("torch"), the generated module and the optimised build, side
by side in one process, cases interleaved, threads pinned; medians of wall time and of the
calling thread's CPU time (with one intra-op thread the work runs in that thread, and CPU time
does not count the time other processes hold the core), and minor page faults per forward (a
count that load does not change: at batch 16 fresh activation buffers are most of the cost).

    .venv/bin/python benchmarks/bench_inference.py [--threads 1 2] [--batch 1 16] [--runs 40]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from bench import MODEL_NAMES, torch_models

CASES = (MODEL_NAMES[0], MODEL_NAMES[1], MODEL_NAMES[2], MODEL_NAMES[4])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--runs", type=int, default=40, help="rounds at batch 1 (a quarter at batch 16, at least 8)")
    args = parser.parse_args()
    models = {k: m for k, m in torch_models().items() if k in CASES}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            runs = args.runs if batch == 1 else max(8, args.runs // 4)
            x = torch.rand(batch, 3, 224, 224)
            wall: dict[str, list[float]] = {k: [] for k in models}
            cpu: dict[str, list[float]] = {k: [] for k in models}
            faults: dict[str, list[int]] = {k: [] for k in models}
            with torch.inference_mode():
                for m in models.values():
                    m(x), m(x)  # warm-up
                for _ in range(runs):
                    for k, m in models.items():
                        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        c, t = time.thread_time(), time.perf_counter()
                        m(x)
                        wall[k].append(time.perf_counter() - t)
                        cpu[k].append(time.thread_time() - c)
                        faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
            ref_w, ref_c = statistics.median(wall[CASES[0]]), statistics.median(cpu[CASES[0]])
            print(f"threads {threads}, batch {batch}, {runs} rounds")
            for k in models:
                w, c = statistics.median(wall[k]), statistics.median(cpu[k])
                line = f"wall {w * 1e3:8.2f} ms {w / ref_w:5.3f}x   thread cpu {c * 1e3:8.2f} ms {c / ref_c:5.3f}x"
                line += f"   faults {statistics.median(faults[k]):8.0f}"
                print(f"  {k:40s} {line}")


if __name__ == "__main__":
    main()
