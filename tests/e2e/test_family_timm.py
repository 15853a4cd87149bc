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

# (spec, variant or None, timm model, another input size), per family; the first of each is fast
FAMILIES: list[list[tuple[str, str | None, str, int]]] = [
    [
        ("efficientnet.yaml", "b0", "tf_efficientnet_b0", 197),
        *[("efficientnet.yaml", f"b{i}", f"tf_efficientnet_b{i}", 224) for i in range(1, 8)],
    ],
    [
        ("efficientnet_v2.yaml", "b0", "tf_efficientnetv2_b0", 224),  # timm's default 192 (train size)
        ("efficientnet_v2.yaml", "b1", "tf_efficientnetv2_b1", 197),
        ("efficientnet_v2.yaml", "b2", "tf_efficientnetv2_b2", 260),
        ("efficientnet_v2.yaml", "b3", "tf_efficientnetv2_b3", 300),
        ("efficientnet_v2.yaml", "s", "tf_efficientnetv2_s", 384),
        ("efficientnet_v2.yaml", "m", "tf_efficientnetv2_m", 224),
        ("efficientnet_v2.yaml", "l", "tf_efficientnetv2_l", 224),
    ],
    [
        ("efficientnet_lite.yaml", "lite0", "tf_efficientnet_lite0", 197),
        ("efficientnet_lite.yaml", "lite1", "tf_efficientnet_lite1", 224),
        ("efficientnet_lite.yaml", "lite2", "tf_efficientnet_lite2", 224),
        ("efficientnet_lite.yaml", "lite3", "tf_efficientnet_lite3", 280),  # TF's size (timm's: 300)
        ("efficientnet_lite.yaml", "lite4", "tf_efficientnet_lite4", 300),  # TF's size (timm's: 380)
    ],
    [
        ("mnasnet.yaml", "small", "mnasnet_small", 197),
        ("mnasnet.yaml", "b1", "mnasnet_100", 197),
        ("mnasnet.yaml", "a1", "semnasnet_100", 256),
    ],
    [
        ("mobilenet_v4.yaml", "conv_small", "mobilenetv4_conv_small", 197),
        ("mobilenet_v4.yaml", "conv_medium", "mobilenetv4_conv_medium", 197),
        ("mobilenet_v4.yaml", "conv_large", "mobilenetv4_conv_large", 224),
        ("mobilenet_v4.yaml", "hybrid_medium", "mobilenetv4_hybrid_medium", 197),
        ("mobilenet_v4.yaml", "hybrid_large", "mobilenetv4_hybrid_large", 224),
    ],
    [("mobilenet_v3_large.yaml", None, "tf_mobilenetv3_large_100", 193)],
]
CASES = [case for family in FAMILIES for case in fast_first(family)]


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


def archc_counts(spec: str, variant: str | None, size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of the spec's variant at input ``size``, torch convention."""
    options: dict[str, Any] = {"variant": variant} if variant is not None else {}
    report = a.compile(ROOT / "specs" / spec, resolution=size, **options).cost("torch")
    return report.params, report.macs


@pytest.mark.parametrize(("spec", "variant", "name", "other"), CASES)
def test_counts_equal_timm(spec: str, variant: str | None, name: str, other: int) -> None:
    """At timm's default input size (pretrained_cfg) and at another size."""
    model = timm.create_model(name).eval()
    default = model.pretrained_cfg["input_size"][-1]
    for size in (default, other):
        assert archc_counts(spec, variant, size) == timm_counts(model, size), (name, size)
