"""Write a built model as files that load in plain PyTorch, without archc installed.

``<name>.pt``  the state_dict (keys ``<node>.weight`` ...), for users who rebuild the module
               (e.g. from the emitted source).
``<name>.pt2`` a torch.export program: ``torch.export.load(p).module()(x_nchw)``. The export
               traces our custom layers down to aten ops, so loading needs no archc code.
               If export fails, a TorchScript trace ``<name>.torchscript.pt`` is written instead
               (``torch.jit.load``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from archcompiler import ir

from .build import GraphModule


def _example(graph: ir.Graph, batch: int = 2) -> torch.Tensor:
    s = graph.input_shape
    shape = (batch, s[2], s[0], s[1]) if len(s) == 3 else (batch, *s)
    return torch.zeros(shape, dtype=torch.float32)


def save_model(graph: ir.Graph, model: GraphModule, out_dir: Path) -> list[Path]:
    """Write the state_dict and a standalone program into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    state_path = out_dir / f"{graph.name}.pt"
    torch.save(model.state_dict(), state_path)
    example = _example(graph)
    try:
        # The batch axis stays dynamic so the program accepts any batch size.
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        program_path = out_dir / f"{graph.name}.pt2"
        torch.export.save(program, program_path)
    except Exception as exc:  # export is best-effort by design: fall back, say why
        warnings.warn(f"torch.export failed ({exc}); writing a TorchScript trace instead", stacklevel=2)
        program_path = out_dir / f"{graph.name}.torchscript.pt"
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, which is what just failed.
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
        traced.save(str(program_path))
    return [state_path, program_path]
