"""Framework-neutral weights: canonical names, layouts, deterministic init, save and load.

One layout for every backend, chosen to be Keras' (channels-last) so that a checkpoint of
keras.applications maps onto it by name alone; a backend converts on the way in and out:

==================  ===============================  =========================================
node                tensor (``<node>.<param>``)       canonical shape
==================  ===============================  =========================================
conv2d              kernel, bias                      (kh, kw, in/groups, out), (out,)
depthwise_conv2d    kernel, bias                      (kh, kw, C, M), (C*M,)
dense               kernel, bias                      (in, out), (out,)
batchnorm           gamma, beta, moving_mean,         (C,) each
                    moving_variance
==================  ===============================  =========================================

Files are ``.npz`` (numpy, always available) or ``.safetensors`` (if installed).
numpy is imported lazily so that ``import archcompiler`` stays cheap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import ir
from .fsutil import atomic_write
from .ops.base import Layout

if TYPE_CHECKING:
    import numpy as np

Weights = dict[str, "np.ndarray"]


class WeightError(ValueError):
    """A weights file that does not fit the graph: names the tensor at fault."""


@dataclass(frozen=True)
class TensorSpec:
    """One canonical tensor of a graph: ``<node>.<param>``, its shape, layout and init rule."""

    node: str
    param: str
    shape: tuple[int, ...]
    layout: Layout
    init: str = "bias"
    fan_in: int = 0
    trainable: bool = True

    @property
    def name(self) -> str:
        return f"{self.node}.{self.param}"


def specs(graph: ir.Graph) -> dict[str, TensorSpec]:
    """Every tensor the graph needs, in node order, keyed by canonical name (from each op's
    :meth:`~archcompiler.ops.Node.weights`)."""
    out: dict[str, TensorSpec] = {}
    for n in graph.nodes:
        for w in n.weights():
            t = TensorSpec(n.name, w.param, tuple(w.shape), w.layout, w.init, w.fan_in, w.trainable)
            out[t.name] = t
    return out


def expected(graph: ir.Graph) -> dict[str, tuple[int, ...]]:
    """Every tensor the graph needs, with its canonical shape, in node order."""
    return {name: t.shape for name, t in specs(graph).items()}


def check(graph: ir.Graph, weights: Weights, *, origin: str = "weights") -> None:
    """Raise WeightError on a missing, unexpected or misshapen tensor (the first, by name)."""
    want = expected(graph)
    for name, shape in want.items():
        if name not in weights:
            raise WeightError(f"{origin}: missing tensor {name!r} (shape {shape})")
        got = tuple(weights[name].shape)
        if got != shape:
            raise WeightError(f"{origin}: tensor {name!r} has shape {got}, expected {shape}")
    extra = [k for k in weights if k not in want]
    if extra:
        raise WeightError(
            f"{origin}: unexpected tensor {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )


def init(graph: ir.Graph, seed: int = 0) -> Weights:
    """Deterministic, non-trivial weights: He-scaled kernels, BN statistics away from 0 and 1.

    Each tensor's stream depends only on the seed and the tensor's name, so adding a layer
    does not change the others. Non-trivial BN statistics matter for parity: with mean 0
    and variance 1 a backend that ignored them would still pass.
    """
    import numpy as np

    out: Weights = {}
    for name, t in specs(graph).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if t.init == "he":
            arr = rng.normal(0.0, np.sqrt(2.0 / max(t.fan_in, 1)), size=t.shape)
        elif t.init == "gamma":
            arr = rng.uniform(0.5, 1.5, size=t.shape)
        elif t.init in ("beta", "moving_mean"):
            arr = rng.normal(0.0, 0.2, size=t.shape)
        elif t.init == "moving_variance":
            arr = rng.uniform(0.5, 2.0, size=t.shape)
        else:  # bias
            arr = rng.normal(0.0, 0.1, size=t.shape)
        out[name] = arr.astype(np.float32)
    return out


def save(weights: Weights, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a failed write leaves nothing behind."""
    import numpy as np

    p = Path(path)
    if p.suffix not in (".npz", ".safetensors"):
        raise WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz or .safetensors)")

    def write(tmp: str) -> None:
        if p.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, tmp)
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, **weights)

    return atomic_write(p, write)


def load(path: str | Path) -> Weights:
    """Read a .npz or .safetensors weights file."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise WeightError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(p)))
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise WeightError(f"{p}: cannot read weights ({exc})") from None
    raise WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz or .safetensors)")
