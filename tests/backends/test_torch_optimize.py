"""optimize(): the folded inference copy computes what the built model computes (within 1e-4,
float32 rounding of the folded weights) on MobileNet, Keras' MobileNet and a residual DAG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archcompiler as a  # noqa: E402
from archcompiler import weights as W  # noqa: E402
from archcompiler.registry import get_backend  # noqa: E402

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[2]


def graphs() -> list:
    return [
        a.lower(a.load(REPO / "specs/mobilenet.yaml"), width=0.25, resolution=96),
        a.lower(a.load(REPO / "specs/mobilenet_keras.yaml"), width=0.25, resolution=97),
        a.lower(a.load_text((REPO / "tests/specs/tiny_resnet.yaml").read_text(), "tiny_resnet.yaml")),
    ]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("g", graphs(), ids=lambda g: g.name)
def test_optimized_model_equals_the_built_one(g, channels_last):
    from archcompiler.backends.torch.optimize import optimize

    backend = get_backend("torch")
    model = backend.build(g)
    backend.set_weights(g, model, W.init(g, seed=4))  # non-trivial BatchNorm statistics
    fast = optimize(model, channels_last=channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # every BN follows a conv
    assert len(fast.steps) < len(model.steps)
    shape = g.input_shape
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, shape[2], *shape[:2])).astype(np.float32))
    with torch.no_grad():
        want, got = model(x), fast(x)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, scale)
    assert list(model.state_dict()) != list(fast.state_dict())  # the original is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
