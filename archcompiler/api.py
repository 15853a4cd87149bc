"""The Python API; the ``archc`` command line is a thin shell over it (docs/DESIGN.md).

import archcompiler
net = archcompiler.compile("specs/mobilenet.yaml", width=0.5, resolution=160)
net.cost("paper").macs                    # 76,524,800
model = net.build("torch")                # a verified torch.nn.Module
built = net.build_to("torch")             # ... also written to build/mobilenet_v1_0_5_160/
source = net.generate("keras")            # standalone Keras source

Every sequence the CLI runs (build, verify, load weights, publish; emit and write; parity)
lives here once, so the command line and a script cannot drift apart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ir
from .cost import CostReport, cost
from .fsutil import atomic_write_text
from .loading import LoadedSpec, load
from .lower import lower

if TYPE_CHECKING:
    from .parity import ParityReport
    from .registry import Backend
    from .weights import Weights


class OutputError(Exception):
    """The output folder cannot be written (a file in the way, no permission): bad input, one line."""


def _output_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path, refused up front (before a slow build) if a file is in its way."""
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"output folder {str(out)!r}: {str(p)!r} is a file, not a folder")
            break
    return out


def resolution_label(graph: ir.Graph) -> str:
    """'224' for a square input, '224x160' otherwise (file names and tables)."""
    h, w = graph.resolution
    return str(h) if h == w else f"{h}x{w}"


def _backend(backend: str | Backend) -> Backend:
    """A backend instance from a name (imports its framework) or the instance itself.

    Accepting an instance lets a caller resolve the name first and report a bad one its own
    way (the CLI names the ``--backend`` option)."""
    if isinstance(backend, str):
        from .registry import get_backend

        return get_backend(backend)
    return backend


def _publish(tmp: Path, out: Path) -> list[Path]:
    """Move finished files into ``out``: nothing appears there until everything succeeded."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(tmp.iterdir()):
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
        written.append(target)
    return written


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


@dataclass(frozen=True)
class Compiled:
    """A spec lowered at one width and resolution: the IR plus what can be done with it."""

    loaded: LoadedSpec
    graph: ir.Graph

    @property
    def stem(self) -> str:
        """``<name>_<width>_<resolution>``: names the default build folder and generated modules."""
        g = self.graph
        return f"{g.name}_{g.width:g}_{resolution_label(g)}".replace(".", "_")

    @property
    def default_output(self) -> Path:
        """Where :meth:`build_to` writes when not told: ``build/<stem>`` (relative to the cwd)."""
        return Path("build") / self.stem

    def cost(self, convention: str = "paper") -> CostReport:
        return cost(self.graph, convention)

    def build(self, backend: str | Backend = "torch", *, weights: str | Path | Weights | None = None) -> Any:
        """Instantiate the model in ``backend``, verify it against the IR; optionally load weights
        (a file, read and checked against the IR, or canonical weights)."""
        from .registry import read_weights

        b = _backend(backend)
        model = b.build(self.graph)
        b.verify(self.graph, model)
        if weights is not None:
            w = weights if isinstance(weights, dict) else read_weights(weights, self.graph)
            b.set_weights(self.graph, model, w)
        return model

    def save(self, model: Any, backend: str | Backend, out_dir: str | Path | None = None) -> list[Path]:
        """Write ``model`` in its framework's format plus portable ``<name>.weights.npz``.

        Atomic: everything is written to a temporary folder beside ``out_dir`` and moved in
        only when all of it succeeded, so a failure leaves the output folder untouched."""
        from . import weights as W

        b = _backend(backend)
        out = _output_dir(out_dir if out_dir is not None else self.default_output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.")
        except OSError as exc:
            raise OutputError(f"output folder {str(out)!r}: {exc.strerror or exc}") from exc
        with tmp_dir as tmp:
            b.save(self.graph, model, Path(tmp))
            W.save(b.get_weights(self.graph, model), Path(tmp) / f"{self.graph.name}.weights.npz")
            return _publish(Path(tmp), out)

    def build_to(
        self,
        backend: str | Backend = "torch",
        out_dir: str | Path | None = None,
        *,
        weights: str | Path | Weights | None = None,
    ) -> Built:
        """:meth:`build` then :meth:`save` (default folder :attr:`default_output`): ``archc build``."""
        b = _backend(backend)
        if out_dir is not None:
            _output_dir(out_dir)  # fail before the build, not after it
        model = self.build(b, weights=weights)
        files = self.save(model, b, out_dir)
        return Built(self.graph, b.name, model, tuple(files), self.cost(b.convention), self.cost("paper").macs)

    def generate(self, backend: str | Backend = "torch") -> str:
        """Standalone source code of the model for ``backend``."""
        return _backend(backend).emit(self.graph)

    def generate_to(self, backend: str | Backend = "torch", out_dir: str | Path = "generated") -> Path:
        """Write :meth:`generate`'s source to ``<out_dir>/<stem>_<backend>.py`` (atomically)."""
        b = _backend(backend)
        out = _output_dir(out_dir)
        source = self.generate(b)
        try:
            return atomic_write_text(out / f"{self.stem}_{b.name}.py", source)
        except OSError as exc:
            raise OutputError(f"output folder {str(out)!r}: {exc.strerror or exc}") from exc

    def parity(self, backends: Sequence[str] = ("torch", "keras"), **kwargs: Any) -> ParityReport:
        """Run ``backends`` on the same weights and input, compare every node (archcompiler.parity)."""
        from .parity import parity

        return parity(self.graph, backends, **kwargs)


def compile(
    spec: str | Path | LoadedSpec,
    *,
    width: float | None = None,
    resolution: float | int | tuple[int, int] | None = None,
) -> Compiled:
    """Load (if given a path), validate and lower a spec."""
    loaded = spec if isinstance(spec, LoadedSpec) else load(spec)
    return Compiled(loaded, lower(loaded, width=width, resolution=resolution))


@dataclass(frozen=True)
class Sweep:
    """Costs over a grid of widths x resolutions: ``rows[i][j]`` is width i at resolution j."""

    file: str
    convention: str
    widths: tuple[float, ...]
    rows: tuple[tuple[tuple[ir.Graph, CostReport], ...], ...]


def sweep(
    spec: str | Path | LoadedSpec,
    widths: Sequence[float] | None = None,
    resolutions: Sequence[float | int] | None = None,
    convention: str = "paper",
) -> Sweep:
    """Lower and cost the spec at every width x resolution (default: the spec's own)."""
    loaded = spec if isinstance(spec, LoadedSpec) else load(spec)
    ws = tuple(widths or [loaded.spec.width])
    rs = list(resolutions or [loaded.spec.resolution])
    rows = []
    for w in ws:
        cells = []
        for res in rs:
            g = lower(loaded, width=w, resolution=res)
            cells.append((g, cost(g, convention)))
        rows.append(tuple(cells))
    return Sweep(loaded.file, convention, ws, tuple(rows))
