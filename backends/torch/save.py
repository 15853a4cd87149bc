"""Write a built model as files that load in plain PyTorch, without archc installed.

``<name>.pt``  the state_dict (keys ``<node>.weight`` ...).
``<name>.py``  the emitted source (``archc generate``): a standalone nn.Module whose
               ``load_state_dict(torch.load("<name>.pt"))`` gives the built model back.
``<name>.pt2`` only on request (``TorchBackend(export=True)``, or afterwards
               ``python -m archcompiler.backends.torch.export FOLDER``): a torch.export program,
               ``torch.export.load(p).module()(x_nchw)``. Exporting traces the whole model and
               takes several times as long as everything else in ``archc build`` together, so
               it is not done by default. If export fails, a TorchScript trace
               ``<name>.torchscript.pt`` is written instead (``torch.jit.load``).

Each file is published atomically through the kit (``Backend.publish``): an interrupted save
leaves no half-written file under the final name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from archcompiler.backends.torch.build import GraphModule
from torch import nn

from archcompiler import ir
from archcompiler.ir.layouts import shape_to
from archcompiler.kit.registry import Backend
from archcompiler.quiet import ArchcWarning


def save_model(
    backend: Backend, graph: ir.Graph, model: GraphModule, out_dir: Path, *, source: str | None, export: bool
) -> list[Path]:
    """Write the state_dict, the source (if given) and, if asked, a program into ``out_dir``."""
    model.eval()
    state = model.state_dict()
    paths = [backend.publish(out_dir / f"{graph.name}.pt", lambda tmp: torch.save(state, tmp))]
    if source is not None:
        paths.append(backend.publish(out_dir / f"{graph.name}.py", lambda tmp: Path(tmp).write_text(source)))
    if export:
        example = torch.zeros((2, *shape_to(graph.input_shape, "channels_first")), dtype=torch.float32)
        paths.append(export_program(model, example, out_dir / graph.name, backend.publish))
    return paths


def export_program(
    model: nn.Module, example: torch.Tensor, stem: Path, publish: Callable[[Path, Callable[[str], None]], Path]
) -> Path:
    """``<stem>.pt2`` (torch.export, any batch size), or ``<stem>.torchscript.pt`` if export fails."""
    model.eval()
    try:
        # The batch axis stays dynamic so the program accepts any batch size.
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        return publish(stem.with_name(f"{stem.name}.pt2"), lambda tmp: torch.export.save(program, tmp))
    except Exception as exc:  # export is best-effort by design: fall back, say why
        # the reason last: the command line shows this warning's first line
        warnings.warn(f"torch.export failed, writing a TorchScript trace instead: {exc}", ArchcWarning, stacklevel=2)
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, which is what just failed.
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
        return publish(stem.with_name(f"{stem.name}.torchscript.pt"), lambda tmp: traced.save(tmp))
