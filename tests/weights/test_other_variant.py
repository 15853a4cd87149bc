"""Weights of another of the spec's variants: refused with the one-line error of any weights
that do not fit, plus which variant they fit (archcompiler.api.Compiled.read_weights).

The spec here is one 1x1 convolution without bias, so the tensor each variant needs is known
by hand: a (1, 1, 3, F) kernel in Keras' layout, F the variant's filters (make_divisible 8 of
filters x width). timm's and Keras' own files of another variant: tests/weights/
test_timm_checkpoints.py and test_pretrained.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archcompiler as a
from archcompiler import weights as W

TINY = """\
archc: 1
name: tiny
input: {size: 8, channels: 3}
rounding: {mode: make_divisible, divisor: 8}
params: {filters: 8}
layers:
  - {op: conv, filters: $filters, kernel: 1, bias: false, name: stem}
variant: narrow
variants:
  narrow: {}             # 8 filters
  wide: {params: {filters: 16}}
  doubled: {width: 2.0}  # 8 x 2 = 16 filters
"""


def kernel_file(filters: int, tmp_path: Path) -> Path:
    """archc's own weights file of a 1x1 conv from 3 channels to ``filters``."""
    return W.save(W.Weights({"stem.kernel": np.ones((1, 1, 3, filters), np.float32)}), tmp_path / "w.safetensors")


def refusal(weights: object, **options: object) -> str:
    with pytest.raises(W.WeightError) as info:
        a.compile(TINY, **options).read_weights(weights)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_variants_the_file_fits_are_named(tmp_path: Path) -> None:
    path = kernel_file(16, tmp_path)
    assert refusal(path).endswith(
        "tensor 'stem.kernel' has shape (1, 1, 3, 16), expected (1, 1, 3, 8); the file fits --variant wide or doubled"
    )
    assert refusal(path, variant="narrow").endswith("; the file fits --variant wide or doubled")
    mapping = {"stem.kernel": np.ones((1, 1, 3, 16), np.float32)}
    assert refusal(mapping).endswith("; the weights fit --variant wide or doubled")
    # the variant named loads it, as the message says
    assert a.compile(TINY, variant="wide").read_weights(path)["stem.kernel"].shape == (1, 1, 3, 16)


def test_the_options_given_are_kept_or_the_message_says_which_to_drop(tmp_path: Path) -> None:
    """With --width given, a variant is named as fitting only as asked: with that width (then
    --variant is all that changes), else at its own width, said so."""
    # narrow and doubled at width 3 (the width given replaces doubled's) have 24 filters:
    # changing --variant alone loads the file
    message = refusal(kernel_file(24, tmp_path), variant="wide", width=3.0)
    assert message.endswith("; the file fits --variant narrow or doubled")
    # at width 3 no variant has 16 filters; wide and doubled have at their own widths
    message = refusal(kernel_file(16, tmp_path), width=3.0)
    assert message.endswith("expected (1, 1, 3, 24); the file fits --variant wide or doubled without --width 3")
    # at width 1.5 every variant has 16 filters or more (make_divisible(12, 8) is 16)
    assert refusal(kernel_file(8, tmp_path), variant="wide", width=1.5).endswith(
        "; the file fits --variant narrow without --width 1.5"
    )


def test_weights_of_no_variant_get_the_error_alone(tmp_path: Path) -> None:
    assert refusal(kernel_file(32, tmp_path)).endswith("has shape (1, 1, 3, 32), expected (1, 1, 3, 8)")
    assert refusal(tmp_path / "absent.safetensors").endswith("absent.safetensors: no such weights file")
    # a spec without variants: nothing to suggest
    plain = TINY.split("variant: narrow")[0]
    with pytest.raises(W.WeightError, match=r"expected \(1, 1, 3, 8\)$"):
        a.compile(plain).read_weights(kernel_file(16, tmp_path))
