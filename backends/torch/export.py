"""Export a built model folder to a torch.export program, on demand.

    python -m archcompiler.backends.torch.export build/mobilenet_v1_1_224_torch

reads ``<name>.py`` (the emitted module ``archc build`` writes) and ``<name>.pt`` (its
state_dict) and writes ``<name>.pt2`` beside them: ``torch.export.load(p).module()`` then runs
in plain PyTorch. ``archc build`` does not export by default because tracing takes several
times as long as the whole build (see benchmarks/).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from archcompiler.backends.torch.save import export_program
from torch import nn

from archcompiler.files import atomic_write


def load_folder(folder: Path) -> tuple[nn.Module, tuple[int, ...], Path]:
    """The model class of the folder's one ``.py``, its ``.pt`` weights loaded; (model, input
    shape (C, H, W), path stem)."""
    sources = sorted(p for p in folder.glob("*.py") if p.with_suffix(".pt").exists())
    if len(sources) != 1:
        raise SystemExit(f"{folder}: expected one <name>.py with its <name>.pt, found {len(sources)}")
    src = sources[0]
    spec = importlib.util.spec_from_file_location(f"_archc_export_{src.stem}", src)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    classes = [v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == mod.__name__]
    model = [c for c in classes if issubclass(c, nn.Module)][-1]().eval()  # the model class is last
    model.load_state_dict(torch.load(src.with_suffix(".pt"), weights_only=True))
    return model, tuple(mod.INPUT_SHAPE), src.with_suffix("")


def main(argv: list[str] | None = None) -> int:
    prog = "python -m archcompiler.backends.torch.export"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="an `archc build --backend torch` output folder")
    folder = ap.parse_args(argv).folder
    model, shape, stem = load_folder(folder)

    def publish(path: Path, write: Callable[[str], None]) -> Path:
        return atomic_write(path, write, suffix=path.suffix)

    out = export_program(model, torch.zeros((2, *shape)), stem, publish)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
