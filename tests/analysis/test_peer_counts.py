"""The torch ecosystem's counting tools count archc's built model as they count a stock one.

Tools that recognise modules by exact type (ptflops, thop) or trace aten ops (fvcore) used to
miss archc's custom subclasses (padded convs, Keras-style BatchNorm, a global pool written as
``x.mean``). Oracles: the published numbers of docs/NUMBERS.md ("How peers count": 4,231,976
PyTorch parameters, 578,875,904 fvcore flops for MobileNet v1 1.0-224) and each tool's own count
of a plain hand-written MobileNet (benchmarks/reference_mobilenet.py). Each tool is optional:
its test is skipped when it is not installed (`make setup` installs them: benchmarks/README.md).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from helpers import framework

import archcompiler

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # reference_mobilenet, imported in the fixture (it loads torch)

torch = framework("torch")

TORCH_PARAMS = 4_231_976  # docs/NUMBERS.md: timm's mobilenetv1_100, model.parameters()
FVCORE_FLOPS = 578_875_904  # docs/NUMBERS.md: fvcore, BatchNorm and pooling included


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(archc's MobileNet v1 1.0-224, the hand-written reference), eval mode."""
    from reference_mobilenet import mobilenet_v1

    built = archcompiler.compile(ROOT / "specs" / "mobilenet.yaml").build("torch")
    return built.eval(), mobilenet_v1().eval()


def image() -> torch.Tensor:
    return torch.zeros(1, 3, 224, 224)


def test_reference_is_the_published_model(models):
    _, ref = models
    assert sum(p.numel() for p in ref.parameters()) == TORCH_PARAMS


def test_fvcore(models):
    fvcore = pytest.importorskip("fvcore.nn")
    for model in models:
        analysis = fvcore.FlopCountAnalysis(model, image())
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        assert analysis.total() == FVCORE_FLOPS
        assert fvcore.parameter_count(model)[""] == TORCH_PARAMS  # "": the whole model


def test_thop(models):
    thop = pytest.importorskip("thop")
    counts = []
    for model in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, params = thop.profile(model, inputs=(image(),), verbose=False)
        counts.append((int(macs), int(params)))
    assert counts[0] == counts[1]
    assert counts[0][1] == TORCH_PARAMS


def test_ptflops(models):
    ptflops = pytest.importorskip("ptflops")
    counts = [
        ptflops.get_model_complexity_info(m, (3, 224, 224), as_strings=False, print_per_layer_stat=False)
        for m in models
    ]
    assert counts[0] == counts[1]
    assert counts[0][1] == TORCH_PARAMS


def test_torchinfo(models):
    torchinfo = pytest.importorskip("torchinfo")
    stats = [torchinfo.summary(m, input_size=(1, 3, 224, 224), verbose=0) for m in models]
    assert [s.total_params for s in stats] == [TORCH_PARAMS, TORCH_PARAMS]
    assert stats[0].total_mult_adds == stats[1].total_mult_adds
