"""An inference-only copy of a built model: BatchNorm folded into the conv before it, symmetric
zero pads merged into the conv after them, optionally channels-last.

The built model stays as it is (one module per IR node, so verification, weight moving and
training keep working); ``optimize(model)`` returns a separate GraphModule for serving, equal to
the original within float32 rounding (tests/backends/test_torch_optimize.py holds it to 1e-4).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .build import GraphModule, Step


def _readers(steps: tuple[Step, ...], outputs: tuple[str, ...]) -> dict[str, list[int]]:
    """Value name -> indices of the steps that read it (the graph outputs count as readers)."""
    out: dict[str, list[int]] = {}
    for k, (_, inputs) in enumerate(steps):
        for i in inputs:
            out.setdefault(i, []).append(k)
    for output in outputs:
        out.setdefault(output, []).append(len(steps))
    return out


def optimize(model: GraphModule, *, channels_last: bool = False) -> GraphModule:
    """A folded eval-mode copy of ``model``; ``channels_last`` also stores weights NHWC (worth it
    where oneDNN has channels-last kernels; measure with benchmarks/bench.py)."""
    model = copy.deepcopy(model).eval()
    steps = list(model.steps)
    modules: dict[str, nn.Module] = dict(model.named_children())
    rename: dict[str, str] = {}
    readers = _readers(tuple(steps), model.outputs)
    keep: list[Step] = []
    for name, inputs in steps:
        inputs = tuple(rename.get(i, i) for i in inputs)
        module = modules[name]
        src = inputs[0] if len(inputs) == 1 else None
        prev = modules.get(src) if src is not None else None
        only_reader = src is not None and len(readers.get(src, ())) == 1 and src not in model.outputs
        if isinstance(module, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d) and only_reader:
            modules[src] = fuse_conv_bn_eval(prev, module)  # conv(x) then BN == conv'(x), in eval
            rename[name] = src
            continue
        if isinstance(module, nn.Conv2d) and isinstance(prev, nn.ZeroPad2d) and only_reader:
            left, right, top, bottom = prev.padding
            if left == right and top == bottom and module.padding == (0, 0) and module.padding_mode == "zeros":
                module.padding = (top, left)
                keep = [s for s in keep if s[0] != src]
                inputs = next(s for s in steps if s[0] == src)[1]
                inputs = tuple(rename.get(i, i) for i in inputs)
                modules.pop(src)
        keep.append((name, inputs))
    used = {n for n, _ in keep}
    out = GraphModule(
        model.graph_name,
        model.input_name,
        tuple(rename.get(o, o) for o in model.outputs),
        keep,
        {n: m for n, m in modules.items() if n in used},
    ).eval()
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out
