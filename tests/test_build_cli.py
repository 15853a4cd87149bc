"""`archc build`: verified model plus portable weights, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archcompiler as a  # noqa: E402
import archcompiler.registry  # noqa: E402
from archcompiler import weights as W  # noqa: E402
from archcompiler.cli import main  # noqa: E402

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
SMALL = ["--width", "0.25", "--resolution", "96"]


def test_build_torch_writes_model_program_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["build", SPEC, "--backend", "torch", *SMALL, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    graph = a.lower(a.load(SPEC), width=0.25, resolution=96)
    torch_params = a.cost(graph, "torch").params
    assert f"{torch_params:,} params" in text and "96x96x3" in text and "verified against the IR" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mobilenet_v1.pt", "mobilenet_v1.pt2", "mobilenet_v1.weights.npz"]
    W.check(graph, W.load(out / "mobilenet_v1.weights.npz"))
    state = torch.load(out / "mobilenet_v1.pt", weights_only=True)
    assert (
        sum(
            v.numel()
            for k, v in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
        == torch_params
    )


def test_build_loads_given_weights(tmp_path: Path) -> None:
    graph = a.lower(a.load(SPEC), width=0.25, resolution=96)
    w = W.init(graph, seed=11)
    src = W.save(w, tmp_path / "in.npz")
    out = tmp_path / "out"
    assert main(["build", SPEC, "--backend", "torch", *SMALL, "--weights", str(src), "-o", str(out)]) == 0
    back = W.load(out / "mobilenet_v1.weights.npz")
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_failed_build_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = a.lower(a.load(SPEC), width=0.25, resolution=96)
    w = W.init(graph)
    w["conv_pw_4.kernel"] = w["conv_pw_4.kernel"][..., :3]
    bad = W.save(w, tmp_path / "bad.npz")
    out = tmp_path / "out"
    assert main(["build", SPEC, "--backend", "torch", *SMALL, "--weights", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "conv_pw_4.kernel" in err and "expected (1, 1, 32, 64)" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_python_api_mirrors_the_cli(tmp_path: Path) -> None:
    net = a.compile(SPEC, width=0.5, resolution=160)
    assert net.cost("paper").macs == 76_524_800  # docs/NUMBERS.md, Table 6/7 grid
    model = net.build("torch")
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) == net.cost("torch").params
    w = W.init(net.graph, seed=2)
    loaded = net.build("torch", weights=W.save(w, tmp_path / "w.npz"))
    back = a.registry.get_backend("torch").get_weights(net.graph, loaded)
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert "class " in net.generate("torch")
