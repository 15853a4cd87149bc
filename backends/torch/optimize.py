"""The torch part of an optimised build (``TorchBackend.tune``), after archcompiler.optimize has
folded BatchNorm into the convs and merged pads in the IR (the one place that folds, for every
backend): what only torch can change, measured with benchmarks/bench_inference.py.

Channels-last weights: oneDNN's NHWC depthwise kernels took MobileNet v1 1.0-224's optimised
batch-1 forward from 0.94x to 0.83x of the hand-written reference (2-core EPYC, one thread).
In-place activations need nothing here: the handlers make them wherever safe (ops.overwritable).
"""

from __future__ import annotations

import copy

import torch

from .build import GraphModule


def tune(model: GraphModule, *, channels_last: bool = True) -> GraphModule:
    """An inference copy of ``model``, by default with channels-last weights (inputs may stay
    NCHW: the first conv converts them)."""
    model = copy.deepcopy(model).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model
