"""Write a built model as files that load in plain PyTorch, without archc installed.

``<name>.pt``  the state_dict (keys ``<node>.weight`` ...), for users who rebuild the module
               (e.g. from the emitted source).
``<name>.pt2`` a torch.export program: ``torch.export.load(p).module()(x_nchw)``. The export
               traces our custom layers down to aten ops, so loading needs no archc code.
               If export fails, a TorchScript trace ``<name>.torchscript.pt`` is written instead
               (``torch.jit.load``).

Each file is published atomically through the kit (``Backend.publish``): an interrupted save
leaves no half-written file under the final name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from archcompiler import ir
from archcompiler.layouts import shape_to
from archcompiler.registry import Backend

from .build import GraphModule


def save_model(backend: Backend, graph: ir.Graph, model: GraphModule, out_dir: Path) -> list[Path]:
    """Write the state_dict and a standalone program into ``out_dir``; return both paths."""
    model.eval()
    state = model.state_dict()
    state_path = backend.publish(out_dir / f"{graph.name}.pt", lambda tmp: torch.save(state, tmp))
    example = torch.zeros((2, *shape_to(graph.input_shape, "channels_first")), dtype=torch.float32)
    try:
        # The batch axis stays dynamic so the program accepts any batch size.
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        program_path = backend.publish(out_dir / f"{graph.name}.pt2", lambda tmp: torch.export.save(program, tmp))
    except Exception as exc:  # export is best-effort by design: fall back, say why
        warnings.warn(f"torch.export failed ({exc}); writing a TorchScript trace instead", stacklevel=2)
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, which is what just failed.
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
        program_path = backend.publish(out_dir / f"{graph.name}.torchscript.pt", lambda tmp: traced.save(tmp))
    return [state_path, program_path]
