"""The torch part of an optimised build (``TorchBackend.tune``), after archcompiler.optimize has
folded BatchNorm into the convs and merged pads in the IR (the one place that folds, for every
backend): what only torch can change, measured in benchmarks/bench.py.

* Channels-last weights: oneDNN's NHWC convolution kernels, on MobileNet v1 1.0-224 on a
  2-core EPYC, took a batch-1 forward from 0.94x to 0.83x of the hand-written reference.
* In-place activations where the value they overwrite has no other reader: one fresh
  activation buffer fewer per layer (at batch 16 each is tens of MiB of page faults).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .build import GraphModule
from .layers import Add

INPLACE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)
"""Activations that can overwrite their input (each has ``inplace``)."""

SAFE_PRODUCERS = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ZeroPad2d, Add)
"""Modules whose output an in-place activation may overwrite: none needs its own output for a
backward, so autograd stays correct too."""


def tune(model: GraphModule, *, channels_last: bool = True) -> GraphModule:
    """An inference copy of ``model`` with in-place activations where safe and, by default,
    channels-last weights (inputs may stay NCHW: the first conv converts them)."""
    model = copy.deepcopy(model).eval()
    producer = {name: model._modules[name] for name, _ in model.steps}
    readers: dict[str, int] = {model.output: 1}
    for _, inputs in model.steps:
        for i in inputs:
            readers[i] = readers.get(i, 0) + 1
    for name, inputs in model.steps:
        module = model._modules[name]
        if isinstance(module, INPLACE) and len(inputs) == 1:
            src = inputs[0]
            if readers[src] == 1 and isinstance(producer.get(src), SAFE_PRODUCERS):
                module.inplace = True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
