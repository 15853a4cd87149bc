"""`archc build`: verified model plus portable weights, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import archcompiler as a
from archcompiler import weights as W
from archcompiler.kit.registry import get_backend
from archcompiler.tools.cli import main

torch = framework("torch")

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "mobilenet.yaml")
KERAS_SPEC = str(ROOT / "specs" / "mobilenet_keras.yaml")
SMALL = ["--width", "0.25", "--resolution", "96"]
NUMBERS = (ROOT / "docs" / "NUMBERS.md").read_text(encoding="utf-8")

# docs/NUMBERS.md, "How peers count": the PyTorch-style count (BN gamma and beta, FC bias) of
# MobileNet 1.0 (timm's mobilenetv1_100), and the paper's Mult-Adds at 1.0 / 224.
TORCH_PARAMS_1 = 4_231_976
PAPER_MACS_1_224 = 568_740_352
# docs/NUMBERS.md, keras.applications.MobileNet: total / trainable / non-trainable (BN moving
# statistics) at alpha 1, 0.25 and 0.5; the trainable ones are what torch counts (gamma, beta, bias).
KERAS_1 = (4_253_864, 4_231_976, 21_888)
KERAS_0_25 = (475_544, 470_072, 5_472)
KERAS_0_5 = (1_342_536, 1_331_592, 10_944)
PAPER_MACS_0_25_128 = 13_570_048
PAPER_MACS_0_5_160 = 76_524_800


def test_expected_values_are_in_numbers_md() -> None:
    """The constants above are citations: each must appear in docs/NUMBERS.md as printed."""
    cited = (TORCH_PARAMS_1, PAPER_MACS_1_224, PAPER_MACS_0_25_128, PAPER_MACS_0_5_160)
    for n in (*cited, *KERAS_1, *KERAS_0_25, *KERAS_0_5):
        assert f"{n:,}" in NUMBERS, n


def _trainable(state: dict[str, torch.Tensor]) -> int:
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(stats))


def test_build_torch_writes_model_program_and_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's command: default folder build/<name>_<width>_<resolution>_<backend>/, README's counts."""
    monkeypatch.chdir(tmp_path)
    assert main(["build", SPEC, "--backend", "torch"]) == 0
    out = Path("build/mobilenet_v1_1_224_torch")
    assert capsys.readouterr().out == (
        f"built mobilenet_v1 with torch: input 224x224x3 -> output 1000, {TORCH_PARAMS_1:,} params "
        f"({TORCH_PARAMS_1:,} trainable), {PAPER_MACS_1_224:,} MACs, verified against the IR\n"
        f"  wrote {out}/mobilenet_v1.pt\n"
        f"  wrote {out}/mobilenet_v1.py\n"
        f"  wrote {out}/mobilenet_v1.weights.npz\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    w = W.load(out / "mobilenet_v1.weights.npz")
    assert sum(v.size for v in w.values()) == KERAS_1[0]  # portable weights hold the BN moving statistics too
    assert _trainable(torch.load(out / "mobilenet_v1.pt", weights_only=True)) == TORCH_PARAMS_1


@pytest.mark.keras
def test_build_keras_counts_like_keras_applications(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keras = pytest.importorskip("keras")
    out = tmp_path / "out"
    argv = ["build", KERAS_SPEC, "--backend", "keras", "--width", "0.25", "--resolution", "128", "-o", str(out)]
    assert main(argv) == 0
    total, trainable, _ = KERAS_0_25
    head = capsys.readouterr().out.splitlines()[0]
    assert head == (
        f"built mobilenet_keras with keras: input 128x128x3 -> output 1000, {total:,} params ({trainable:,} "
        f"trainable), {PAPER_MACS_0_25_128:,} MACs, verified against the IR"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".archc-build",
        ".archc-lock",
        "mobilenet_keras.keras",
        "mobilenet_keras.weights.npz",
    ]
    assert keras.saving.load_model(out / "mobilenet_keras.keras").count_params() == total


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
    assert net.cost("paper").macs == PAPER_MACS_0_5_160
    model = net.build("torch")
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) == KERAS_0_5[1]
    w = W.init(net.graph, seed=2)
    loaded = net.build("torch", weights=W.save(w, tmp_path / "w.npz"))
    back = get_backend("torch").get_weights(net.graph, loaded)
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert "class " in net.generate("torch")
    built = net.build_to("torch", tmp_path / "api", weights=w)
    assert [f.name for f in built.files] == ["mobilenet_v1.pt", "mobilenet_v1.py", "mobilenet_v1.weights.npz"]
    assert all(f.parent == tmp_path / "api" for f in built.files)
    assert (built.params.params, built.macs) == (KERAS_0_5[1], PAPER_MACS_0_5_160)
    assert _trainable(built.model.state_dict()) == KERAS_0_5[1]
    assert net.generate_to("torch", tmp_path / "gen") == tmp_path / "gen" / "mobilenet_v1_0_5_160_torch.py"


@pytest.mark.parametrize("command", ["build", "generate"])
def test_output_folder_blocked_by_a_file(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file where the output folder should be is bad input (exit 2, one line), found before building."""
    blocker = tmp_path / "taken"
    blocker.write_text("mine\n")
    for out in (blocker, blocker / "sub"):
        assert main([command, SPEC, "--backend", "torch", *SMALL, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"{SPEC}: -o: output folder {str(out)!r}: {str(blocker)!r} is a file, not a folder\n"
    assert blocker.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
