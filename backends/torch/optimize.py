"""The torch part of an optimised build (``TorchBackend.tune``), after archcompiler.analysis.optimize has
folded BatchNorm into the convs and merged pads in the IR (the one place that folds, for every
backend): what only torch can change, measured with benchmarks/bench_inference.py.

Channels-last weights: oneDNN's NHWC depthwise kernels took MobileNet v1 1.0-224's optimised
batch-1 forward from 0.94x to 0.83x of the hand-written reference (2-core EPYC, one thread).

Packed convolution weights (:class:`PackedConvForward`): torch reorders a conv's weights into
oneDNN's blocked layout on every call, and at batch 1 on one thread it sends 1x1 convs to its
im2col path, which first copies the bias into the output. Packing each weight once and calling
oneDNN's convolution took MobileNet v1's thirteen pointwise convs from 12.0 to 10.5 ms on one
thread and from 10.1 to 6.8 ms on two (batch 1, same machine), the depthwise ones from 1.42 to
1.24 ms. In-place activations need nothing here: the handlers make them wherever safe
(ops.overwritable).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from archcompiler.backends.torch.build import GraphModule
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

MAX_PACKED = 2
"""Packed weights kept per conv, one per input shape and thread count (oneDNN picks the layout
for both: a weight packed for two threads ran MobileNet 3.5x slower on one); more are dropped."""


def packing_available() -> bool:
    """Whether this torch has oneDNN and the two operators the packed forward calls."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_convolution_weight")
        and hasattr(ops, "_convolution_pointwise")
    )


def _observed() -> bool:
    """Whether something watches or rewrites the ops a forward calls (tracing, torch.compile or
    export, a dispatch or function mode such as torch.utils.flop_counter.FlopCounterMode): it
    must see torch's own convolution, not oneDNN's packed one."""
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or is_in_torch_dispatch_mode()
        or torch._C._is_torch_function_mode_enabled()
    )


class PackedConvForward:
    """An ``nn.Conv2d``'s forward that packs its weight for oneDNN once per input shape.

    Installed as the conv's instance ``forward``, so the module stays a plain ``nn.Conv2d``
    (its state_dict, hooks and the counting tools that look up ``type(module)`` are unchanged).
    Only a float32 CPU tensor of the plain tensor type, with nothing recording gradients (input,
    weight or bias) and nothing observing the ops (:func:`_observed`), takes the packed path;
    anything else (float64 parity, autograd, tracing, export, fake tensors, FLOP counters,
    weights made under ``torch.inference_mode``) runs ``nn.Conv2d.forward``.

    A weight is packed per input shape and intra-op thread count, and the packings are used
    only while the weight is the tensor they were packed from (held here, so its memory cannot
    be reused by another) at the same version: ``load_state_dict`` (with or without
    ``assign``), in-place ops on the parameter, a new parameter and dtype round trips repack.
    Edits that bypass the version counter (through ``weight.data`` or a numpy view) are not
    seen: the optimised model's weights are constants, as in ``torch.jit.freeze``; change them
    by building it again (``build(..., weights=..., optimize=True)``).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv
        self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.packed: dict[tuple[Any, ...], torch.Tensor] = {}
        self.source: torch.Tensor | None = None  # the weight the packings were made from
        self.version = -1

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the conv, not the packings (oneDNN tensors have no storage)."""
        return {**self.__dict__, "packed": {}, "source": None, "version": -1}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        weight, bias = conv.weight, conv.bias
        if (
            type(x) is not torch.Tensor
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
            or x.device.type != "cpu"
            or x.dim() != 4
            or weight.is_inference()  # no version counter to tell an update by
            or (
                torch.is_grad_enabled()
                and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
            )
            or _observed()
        ):
            return nn.Conv2d.forward(conv, x)
        source = self.source
        if source is None or source.data_ptr() != weight.data_ptr() or self.version != weight._version:
            self.packed.clear()
            self.source, self.version = weight.detach(), weight._version
        key = (tuple(x.shape), torch.get_num_threads())
        packed = self.packed.get(key)
        if packed is None:
            if len(self.packed) >= MAX_PACKED:
                self.packed.clear()
            packed = torch.ops.mkldnn._reorder_convolution_weight(self.source, *self.geometry, list(x.shape))
            self.packed[key] = packed
        return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, *self.geometry, "none", [], "")


def packable(module: nn.Module) -> bool:
    """A stock 2-D conv with zero padding given as numbers (not ``"same"``)."""
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
        and "forward" not in module.__dict__
    )


def tune(model: GraphModule, *, channels_last: bool = True) -> GraphModule:
    """An inference copy of ``model``, by default with channels-last weights (inputs may stay
    NCHW: the first conv converts them) and packed convolution weights."""
    model = copy.deepcopy(model).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if packing_available():
        for module in model.modules():
            if packable(module):
                module.forward = PackedConvForward(module)
    return model
