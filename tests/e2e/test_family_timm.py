"""The family specs against timm's models built live (the oracle): parameters and multiply-adds.

For each (spec, variant) and its timm model, at the model's default input size (timm's
``pretrained_cfg["input_size"]``) and at another size (an odd one where the family allows):

- parameters: archc's ``torch`` convention equals ``sum(p.numel() for p in model.parameters())``;
- multiply-adds: archc's ``torch`` convention equals half of what torch's ``FlopCounterMode``
  counts running timm's model (one image, eval, no grad). FlopCounterMode counts convolutions
  (bias excluded), matrix products and (some) attention kernels and nothing else (no BatchNorm,
  activation, gate, add, pooling or padding): for convolutional nets that is exactly archc's
  ``paper`` MAC rule, which the ``torch`` convention uses (docs/NUMBERS.md, "Counting
  conventions of the mobile family").

Nothing is copied from archc's output: the expected side is timm's model in this process. The
fast tier keeps one representative; every other row is slow (timm builds B7 or conv_large in
seconds, FlopCounterMode runs them at 600x600). timm runs with the torchvision stand-in
(tests/stubs, :func:`helpers.timm_oracle`); without timm the module is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import fast_first, framework, timm_oracle

import archcompiler as a

timm = timm_oracle()
torch = framework("torch")

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]

# (spec, variant or None, timm model, another input size)
CASES: list[tuple[str, str | None, str, int]] = [
    ("efficientnet.yaml", "b0", "tf_efficientnet_b0", 197),
    *[("efficientnet.yaml", f"b{i}", f"tf_efficientnet_b{i}", 224) for i in range(1, 8)],
    ("mobilenet_v3_large.yaml", None, "tf_mobilenetv3_large_100", 193),
]


def timm_counts(model: Any, size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of a timm model: ``model.parameters()`` and FlopCounterMode / 2."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    flops = counter.get_total_flops()
    assert flops % 2 == 0  # every counted op is 2 x multiply-adds
    return params, flops // 2


def archc_counts(spec: str, variant: str | None, size: int | None) -> tuple[int, int, int]:
    """(parameters, multiply-adds, input size) of the spec's variant at ``size`` (None: its own)."""
    options: dict[str, Any] = {"variant": variant} if variant is not None else {}
    report = a.compile(ROOT / "specs" / spec, resolution=size, **options).cost("torch")
    return report.params, report.macs, report.graph.nodes[0].shape[0]


@pytest.mark.parametrize(("spec", "variant", "name", "other"), fast_first(CASES))
def test_counts_equal_timm(spec: str, variant: str | None, name: str, other: int) -> None:
    """At the variant's own input size (which must be timm's default) and at another size."""
    model = timm.create_model(name).eval()
    default = model.pretrained_cfg["input_size"][-1]
    assert archc_counts(spec, variant, None) == (*timm_counts(model, default), default)
    assert archc_counts(spec, variant, other) == (*timm_counts(model, other), other)
