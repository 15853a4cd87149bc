"""Benchmark: how long the framework-free commands take, end to end and in-process.

Target (issue 2): `archc summary specs/mobilenet.yaml` well under half a second, cold,
as a user runs it. Measured, not asserted in a timed test.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHC = Path(sys.executable).parent / "archc"


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    runs = ap.parse_args().runs
    cases = {
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
        "python -c 'import archcompiler'": [sys.executable, "-c", "import archcompiler"],
        "archc summary specs/mobilenet.yaml": [str(ARCHC), "summary", "specs/mobilenet.yaml"],
        "archc check specs/mobilenet_keras.yaml": [str(ARCHC), "check", "specs/mobilenet_keras.yaml"],
        "archc sweep (4 widths x 4 resolutions)": [
            str(ARCHC),
            "sweep",
            "specs/mobilenet.yaml",
            "--width",
            "1,0.75,0.5,0.25",
            "--resolution",
            "224,192,160,128",
        ],
    }
    print(f"{'command':48} {'median':>8} {'min':>8} {'max':>8}   ({runs} runs, wall clock, cold process)")
    for label, cmd in cases.items():
        t = timed(cmd, runs)
        print(f"{label:48} {statistics.median(t) * 1e3:7.1f}ms {min(t) * 1e3:7.1f}ms {max(t) * 1e3:7.1f}ms")

    sys.path.insert(0, str(ROOT))
    import archcompiler as a

    loaded = a.load(ROOT / "specs" / "mobilenet.yaml")
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        a.cost(a.lower(loaded))
    dt = (time.perf_counter() - t) / n
    print(f"{'in-process lower + cost (mobilenet, 85 nodes)':48} {dt * 1e3:7.2f}ms")
    t = time.perf_counter()
    for _ in range(50):
        a.load(ROOT / "specs" / "mobilenet.yaml")
    print(f"{'in-process load + validate':48} {(time.perf_counter() - t) / 50 * 1e3:7.2f}ms")


if __name__ == "__main__":
    main()
