"""What several test modules share: the repository's paths, the paper's numbers (docs/NUMBERS.md),
running the command line in-process, and binding a framework without importing it at collection.
tests/ is on sys.path (tests/conftest.py's folder)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from archcompiler.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")
STUBS = ROOT / "tests" / "stubs"
"""Test-only stand-ins (stubs/README.md): a torchvision that lets timm build its models (this
machine's torchvision wheel does not load with the CPU torch build)."""

# docs/NUMBERS.md: exact Mult-Adds of the paper's rule, width x resolution.
PAPER_MACS = {
    (1.0, 224): 568_740_352,
    (1.0, 192): 418_121_728,
    (1.0, 160): 290_675_200,
    (1.0, 128): 186_400_768,
    (0.75, 224): 325_400_448,
    (0.75, 192): 239_273_472,
    (0.75, 160): 166_396_800,
    (0.75, 128): 106_770_432,
    (0.5, 224): 149_497_088,
    (0.5, 192): 109_970_432,
    (0.5, 160): 76_524_800,
    (0.5, 128): 49_160_192,
    (0.25, 224): 41_030_272,
    (0.25, 192): 30_212_608,
    (0.25, 160): 21_059_200,
    (0.25, 128): 13_570_048,
}
PAPER_PARAMS = {1.0: 4_209_088, 0.75: 2_568_144, 0.5: 1_319_648, 0.25: 463_600}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``archc *argv`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class _Deferred(types.ModuleType):
    """A module name bound now and imported at first attribute use (by a test, not by collection)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # pytest probing module globals while collecting (__test__, ...)
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__name__), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        raise TypeError(f"patch the module itself: monkeypatch.setattr('{self.__name__}.{attr}', ...)")


def framework(name: str) -> Any:
    """``torch = framework("torch")`` at a test module's top: skips the module when the package is
    not installed (like pytest.importorskip) but imports it only when a test first uses it, so
    collecting the suite loads no framework (tests/conftest.py refuses that, and checks markers)."""
    if importlib.util.find_spec(name.partition(".")[0]) is None:
        pytest.skip(f"{name.partition('.')[0]} is not installed", allow_module_level=True)
    return _Deferred(name)


def timm_oracle() -> Any:
    """``timm = timm_oracle()`` at a test module's top: timm bound as :func:`framework` binds a
    framework (the module is skipped where timm is not installed; installed with --no-deps by
    ``make setup``: requirements/no-deps.txt). Where no torchvision is installed, the stand-in in
    tests/stubs goes on sys.path, so timm can build its models; a test using it is marked torch."""
    if importlib.util.find_spec("timm") is not None and importlib.util.find_spec("torchvision") is None:
        sys.path.append(str(STUBS))
    return framework("timm")


def fast_first(cases: Sequence[Any], keep: int = 1) -> list[Any]:
    """``@pytest.mark.parametrize`` values whose first ``keep`` run in the fast tier and the rest
    in the slow one (a tuple is one case of several arguments)."""
    slow = pytest.mark.slow
    return [
        c if i < keep else pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=slow) for i, c in enumerate(cases)
    ]


# A small family with variants (tests/language/test_variants.py, tests/lowering/test_scaling.py):
# 'unit' block instances count the repeats, so depth shows as hand arithmetic.
FAMILY = """\
archc: 1
name: fam
input: {size: 16, channels: 3}
classes: 10
params: {drop_rate: 0.2, stem: 8}
variants:
  a: {width: 1.0, depth: 1.0, size: 16}
  b: {width: 2.0, depth: 1.1, size: 20, params: {drop_rate: 0.5}}
  c:
    depth: 2.0
    layers:
      - {op: conv, filters: $stem, kernel: 3}
      - {block: unit, repeat: "=round_repeats(2)"}
      - {op: global_max_pool}
      - {op: dense, units: $classes}
blocks:
  unit:
    params: {filters: 8}
    layers:
      - {op: conv, filters: $filters, kernel: 1}
      - {op: dropout, rate: $drop_rate}
layers:
  - {op: conv, filters: $stem, kernel: 3}
  - {block: unit, repeat: "=round_repeats(3)"}
  - {block: unit, filters: 16, repeat: 1}
  - {op: global_avg_pool}
  - {op: dense, units: $classes}
"""


def family_units(graph: Any) -> int:
    """Block instances: each has one ``unit<k>_conv``."""
    return sum(1 for n in graph if n.name.startswith("unit") and n.name.endswith("_conv"))


def randomise_batchnorm(layer: Any, rng: Any) -> None:
    """Non-trivial statistics for a Keras BatchNormalization layer (gamma, beta, moving mean,
    moving variance), so that a wrong epsilon, order or wiring cannot pass by luck."""
    c = layer.gamma.shape[0]
    layer.set_weights(
        [
            rng.uniform(0.5, 1.5, c).astype("float32"),
            rng.normal(0, 0.2, c).astype("float32"),
            rng.normal(0, 0.2, c).astype("float32"),
            rng.uniform(0.5, 2.0, c).astype("float32"),
        ]
    )
