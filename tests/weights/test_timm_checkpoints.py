"""timm's state_dicts load by timm's own names (the spec's ``checkpoints: timm``) into every
backend, and give timm's outputs.

The oracle is timm's model itself, in this process: random weights, random BatchNorm
statistics and affine parameters, saved as timm saves them (``state_dict()`` to
``.safetensors`` or ``.pth``, ``num_batches_tracked`` included); archc's build from that file
must answer as timm's model does on the same input. The error tests need no framework: a file of
timm's names is made from the spec's own mapping (archcompiler.checkpoints.names).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework, timm_oracle

import archcompiler as a
from archcompiler import checkpoints
from archcompiler import weights as W
from archcompiler.ir import layouts
from archcompiler.kit.registry import get_backend, read_weights
from archcompiler.language.source import SpecError
from archcompiler.tools.cli import main

timm = timm_oracle()
torch = framework("torch")

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"


def timm_model(name: str) -> Any:
    """timm's model with random weights and random BatchNorm statistics and affine parameters
    (mean 0 and variance 1 would hide a backend that ignored them)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    return model


def save(model: Any, path: Path) -> Path:
    """timm's state_dict as a user saves it."""
    if path.suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    return path


def timm_output(model: Any, x: np.ndarray) -> np.ndarray:
    torch.set_num_threads(1)
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Within 1e-4 of timm's logits (relative to their magnitude where they pass 1)."""
    assert ours.shape == theirs.shape
    err, scale = float(np.abs(ours - theirs).max()), max(1.0, float(np.abs(theirs).max()))
    assert err <= 1e-4 * scale, (err, scale)


def check(spec: str, variant: str, name: str, backend: str, size: int, tmp_path: Path, suffix: str) -> None:
    model = timm_model(name)
    path = save(model, tmp_path / f"{name}{suffix}")
    # the Keras-named EfficientNets end in a softmax, timm's in logits
    head = {"classifier_activation": "none"} if spec in ("efficientnet.yaml", "efficientnet_v2.yaml") else {}
    compiled = a.compile(SPECS / spec, variant=variant, resolution=size, **head)
    built = compiled.build(backend, weights=path)
    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    (ours,) = get_backend(backend).run(compiled.graph, built, x).values()
    assert_close(ours, timm_output(model, x))


@pytest.mark.slow  # 5 s, most of it importing timm: the fast tier has no room
@pytest.mark.torch
def test_mobilenet_v4_conv_small_loads_timm_names_in_torch(tmp_path: Path) -> None:
    check("mobilenet_v4.yaml", "conv_small", "mobilenetv4_conv_small", "torch", 64, tmp_path, ".safetensors")


@pytest.mark.slow
@pytest.mark.torch
def test_a_state_dict_in_memory_loads_by_timms_names() -> None:
    """``weights=model.state_dict()`` (torch tensors, num_batches_tracked included) through the API."""
    model = timm_model("mobilenetv4_conv_small")
    compiled = a.compile(SPECS / "mobilenet_v4.yaml", variant="conv_small", resolution=64)
    built = compiled.build("torch", weights=model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
    (ours,) = get_backend("torch").run(compiled.graph, built, x).values()
    assert_close(ours, timm_output(model, x))


TORCH_CASES = [
    ("mobilenet_v4.yaml", "conv_medium", "mobilenetv4_conv_medium", 64),
    ("mobilenet_v4.yaml", "conv_large", "mobilenetv4_conv_large", 64),
    ("mobilenet_v4.yaml", "hybrid_medium", "mobilenetv4_hybrid_medium", 64),
    ("mobilenet_v4.yaml", "hybrid_large", "mobilenetv4_hybrid_large", 64),
    ("efficientnet_lite.yaml", "lite0", "tf_efficientnet_lite0", 96),
    ("efficientnet_lite.yaml", "lite4", "tf_efficientnet_lite4", 96),
    ("mnasnet.yaml", "b1", "mnasnet_100", 96),
    ("mnasnet.yaml", "a1", "semnasnet_100", 96),
    ("mnasnet.yaml", "small", "mnasnet_small", 96),
    ("efficientnet.yaml", "b0", "tf_efficientnet_b0", 96),
    ("efficientnet.yaml", "b3", "tf_efficientnet_b3", 96),
    ("efficientnet_v2.yaml", "b0", "tf_efficientnetv2_b0", 96),
    ("efficientnet_v2.yaml", "s", "tf_efficientnetv2_s", 96),
]


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize(("spec", "variant", "name", "size"), TORCH_CASES)
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_checkpoint_in_torch(spec: str, variant: str, name: str, size: int, suffix: str, tmp_path: Path) -> None:
    check(spec, variant, name, "torch", size, tmp_path, suffix)


OTHER_CASES = [
    ("mobilenet_v4.yaml", "conv_small", "mobilenetv4_conv_small", 64),
    ("efficientnet_lite.yaml", "lite0", "tf_efficientnet_lite0", 64),
]


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.onnx
@pytest.mark.tflite
@pytest.mark.parametrize(("spec", "variant", "name", "size"), OTHER_CASES)
@pytest.mark.parametrize("backend", ["keras", "onnx", "tflite"])
def test_timm_checkpoint_in_other_backends(
    spec: str, variant: str, name: str, size: int, backend: str, tmp_path: Path
) -> None:
    check(spec, variant, name, backend, size, tmp_path, ".safetensors")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.keras
@pytest.mark.tflite
def test_cli_builds_tflite_from_timm_safetensors(tmp_path: Path) -> None:
    """The issue's command, end to end: the .tflite it writes answers as timm's model."""
    from archcompiler.backends.tflite.convert import interpreter

    model = timm_model("mobilenetv4_conv_small")
    path = save(model, tmp_path / "model.safetensors")
    out = tmp_path / "out"
    args = ["build", str(SPECS / "mobilenet_v4.yaml"), "--variant", "conv_small", "--backend", "tflite"]
    assert main([*args, "--weights", str(path), "--resolution", "64", "-o", str(out)]) == 0
    (tflite,) = out.glob("*.tflite")
    it = interpreter(tflite.read_bytes())
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    assert_close(it.get_tensor(it.get_output_details()[0]["index"]), timm_output(model, x))


# --- errors: no framework needed -------------------------------------------------------------


@functools.cache
def _timm_named(variant: str) -> tuple[Any, dict[str, np.ndarray]]:
    graph = a.compile(SPECS / "mobilenet_v4.yaml", variant=variant, resolution=64).graph
    names = checkpoints.names(graph, "timm")
    specs = W.specs(graph)
    canonical = W.init(graph)
    return graph, {names[k]: layouts.to_channels_first(v, specs[k].layout) for k, v in canonical.items()}


def timm_named(variant: str = "conv_small") -> tuple[Any, dict[str, np.ndarray]]:
    """mobilenet_v4's graph and archc's deterministic weights under timm's names, channels-first
    (made once per variant; the dict is a copy a test may change)."""
    graph, named = _timm_named(variant)
    return graph, dict(named)


def test_timm_names_cover_every_tensor_once() -> None:
    graph, named = timm_named()
    assert len(named) == len(W.specs(graph))
    assert "blocks.2.0.dw_start.conv.weight" in named and "bn1.running_var" in named


def test_safetensors_of_timm_names_loads_to_the_canonical_weights(tmp_path: Path) -> None:
    graph, named = timm_named()
    path = W.save(W.Weights(named), tmp_path / "m.safetensors")
    got = read_weights(path, graph)
    want = W.init(graph)
    assert list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d.pop("blocks.2.0.pw_exp.conv.weight"),
            "missing timm tensor 'blocks.2.0.pw_exp.conv.weight' (archc",
        ),
        (lambda d: d.update({"blocks.9.0.conv.weight": d["conv_stem.weight"]}), "unexpected timm tensor 'blocks.9.0"),
        (
            lambda d: d.update({"classifier.weight": d["classifier.weight"][:10]}),
            "timm tensor 'classifier.weight' has shape (10, 1280), archc 'classifier.kernel' needs (1000, 1280)",
        ),
    ],
)
def test_a_timm_file_that_does_not_fit_names_both_tensors(change: Any, message: str, tmp_path: Path) -> None:
    graph, named = timm_named()
    change(named)
    path = W.save(W.Weights(named), tmp_path / "m.safetensors")
    with pytest.raises(W.WeightError) as info:
        read_weights(path, graph)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow  # imports torch (6 s): the fast tier has no room
@pytest.mark.torch
def test_cli_refuses_a_timm_file_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line, exit status 2, nothing written."""
    _, named = timm_named()
    named.pop("blocks.2.0.pw_exp.conv.weight")
    path = W.save(W.Weights(named), tmp_path / "m.safetensors")
    args = ["build", str(SPECS / "mobilenet_v4.yaml"), "--variant", "conv_small", "--resolution", "64"]
    code = main([*args, "--backend", "torch", "--weights", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "missing timm tensor 'blocks.2.0.pw_exp.conv.weight' (archc" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow  # imports torch and timm, builds three timm models (10 s)
@pytest.mark.torch
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_cli_names_the_variant_a_timm_file_fits(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """timm's mobilenetv4_conv_medium given to --variant conv_small: the one-line error of the
    first tensor that does not fit, then the variant the file fits (without the --width given,
    when that is what it takes); a file of no variant (timm's model with 10 classes): the error
    alone. Exit status 2, nothing written."""
    medium = save(timm_model("mobilenetv4_conv_medium"), tmp_path / f"medium{suffix}")
    ten = save(timm.create_model("mobilenetv4_conv_small", num_classes=10), tmp_path / f"ten{suffix}")

    def refusal(path: Path, *options: str) -> str:
        out = tmp_path / "out"
        args = ["build", str(SPECS / "mobilenet_v4.yaml"), *options, "--resolution", "64", "--backend", "torch"]
        code = main([*args, "--weights", str(path), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists(), err
        return err.strip()

    err = refusal(medium, "--variant", "conv_small")
    assert "missing timm tensor 'blocks.0.0.conv.weight' (archc 'block2_conv.kernel'" in err, err
    assert err.endswith("; the file fits --variant conv_medium"), err
    err = refusal(medium, "--variant", "conv_medium", "--width", "0.75")
    assert "timm tensor 'blocks.0.0.conv_pwl.weight' has shape (48, 128, 1, 1)" in err, err  # timm's 48 filters
    assert err.endswith("; the file fits --variant conv_medium without --width 0.75"), err
    err = refusal(ten, "--variant", "conv_small")
    assert err.endswith(
        "timm tensor 'classifier.weight' has shape (10, 1280), archc 'classifier.kernel' needs (1000, 1280)"
    ), err  # no variant has 10 classes: nothing is suggested
    assert (
        main(
            [
                "build",
                str(SPECS / "mobilenet_v4.yaml"),
                "--variant",
                "conv_medium",
                "--resolution",
                "64",
                "--backend",
                "torch",
                "--weights",
                str(medium),
                "-o",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )


@pytest.mark.slow  # compiles a second variant (2 s)
def test_the_wrong_variant_is_named(tmp_path: Path) -> None:
    _, named = timm_named("conv_medium")
    path = W.save(W.Weights(named), tmp_path / "m.safetensors")
    graph = a.compile(SPECS / "mobilenet_v4.yaml", variant="conv_small", resolution=64).graph
    with pytest.raises(W.WeightError, match=r"missing timm tensor 'blocks\.0\.0\.conv\.weight' \(archc 'block2_conv"):
        read_weights(path, graph)


def test_a_pth_of_other_names_is_refused(tmp_path: Path) -> None:
    graph = a.compile(SPECS / "mobilenet.yaml").graph
    path = tmp_path / "m.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(W.WeightError, match="declared: none"):
        read_weights(path, graph)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"block{n}_conv": "blocks.{stage}.{i}.conv"}, "reads {i}, which pattern 'block{n}_conv' does not capture"),
        ({"block{stage}_conv": "x"}, "{stage} is built in"),
        ({"block{n}_{n}": "x"}, "captures a name twice"),
    ],
)
def test_checkpoint_rules_are_checked_by_the_schema(rules: dict[str, str], message: str, tmp_path: Path) -> None:
    body = "".join(f"\n      {k!r}: {v!r}" for k, v in rules.items())
    spec = tmp_path / "m.yaml"
    spec.write_text((SPECS / "mobilenet.yaml").read_text() + f"\ncheckpoints:\n  timm:\n    layers:{body}\n")
    with pytest.raises(SpecError) as info:
        a.compile(spec)
    assert message in str(info.value) and "checkpoints.timm.layers" in str(info.value)


SMALL = """\
archc: 1
name: small
input: {size: 8, channels: 3}
blocks:
  unit:
    params: {filters: null}
    layers:
      - {op: conv, filters: $filters, kernel: 1, name: "unit{index}_conv"}
  pair:
    params: {filters: null}
    layers:
      - {block: unit, filters: $filters, %s}
layers:
  - {block: unit, filters: 4}
  - {block: unit, starts_stage: 0, filters: 4, repeat: 2}
  - {block: unit, starts_stage: 1, filters: 4}
  - {block: unit, filters: 4}
checkpoints:
  theirs:
    layers:
      "unit{n}_conv": "blocks.{stage}.{position}.conv"
"""


def test_starts_stage_numbers_the_rows_and_positions_restart_per_stage() -> None:
    """A row's starts_stage begins a stage (repeats count as positions); rows after it continue
    it; a layer before any stage has none, and a template that reads it is refused naming it."""
    graph = a.compile(SMALL % "repeat: 1").graph
    spans = {n.name: n.span.stage for n in graph.nodes if n.span is not None and n.name.startswith("unit")}
    assert spans == {
        "unit1_conv": None,
        "unit2_conv": (0, 0),
        "unit3_conv": (0, 1),
        "unit4_conv": (1, 0),
        "unit5_conv": (1, 1),
    }
    with pytest.raises(W.WeightError, match=r"layer 'unit1_conv', which is in none \(no 'starts_stage:'"):
        checkpoints.names(graph, "theirs")


def test_starts_stage_is_for_the_layer_table_only() -> None:
    first = "  - {block: unit, filters: 4}\n  - {block: unit, starts"
    text = SMALL.replace(first, first.replace("unit", "pair", 1), 1) % "starts_stage: 3"
    with pytest.raises(SpecError, match="'starts_stage' numbers the layer table's rows"):
        a.compile(text)


# --- which names a file or mapping uses; tensors of any dtype or device -----------------------

TWO = """\
archc: 1
name: two
input: {size: 8, channels: 3}
layers:
  - {op: conv, filters: 4, kernel: 1, name: stem}
  - {op: conv, filters: 4, kernel: 1, name: other}
checkpoints:
  theirs:
    params: {kernel: weight}
    layers:
      stem: conv_stem
%s"""

BOTH = TWO % "      other: conv_other\n"


def test_archc_names_load_when_the_patterns_name_some_layers_only(tmp_path: Path) -> None:
    """archc's own names are canonical whatever the spec's patterns cover; a canonical file's own
    error is the one shown, and a file by the format's names is told which tensor has no name."""
    graph = a.compile(TWO % "").graph
    want = W.init(graph)
    got = read_weights(dict(want), graph)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    bad = W.save(W.Weights({**want, "other.kernel": want["other.kernel"][..., :2]}), tmp_path / "bad.npz")
    with pytest.raises(W.WeightError, match=r"tensor 'other\.kernel' has shape \(1, 1, 4, 2\), expected"):
        read_weights(bad, graph)
    theirs = W.save(W.Weights({"conv_stem.weight": np.ones((4, 3, 1, 1), np.float32)}), tmp_path / "t.npz")
    with pytest.raises(W.WeightError, match=r"checkpoints\.theirs: no pattern names archc tensor 'other\.kernel'"):
        read_weights(theirs, graph)


def test_a_missing_pth_is_no_such_file(tmp_path: Path) -> None:
    graph = a.compile(SPECS / "mobilenet.yaml").graph
    with pytest.raises(W.WeightError, match=r"m\.pth: no such weights file"):
        read_weights(tmp_path / "m.pth", graph)


def test_a_pth_is_read_once_for_a_cut_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut graph refuses the full graph's tensors, the full graph takes them: one read."""
    net = a.compile(BOTH, outputs=["stem"])
    full = W.init(net.full)
    found = {
        "conv_stem.weight": np.moveaxis(full["stem.kernel"], (2, 3), (1, 0)).copy(),
        "conv_other.weight": np.moveaxis(full["other.kernel"], (2, 3), (1, 0)).copy(),
    }
    reads: list[Path] = []
    monkeypatch.setattr(checkpoints, "read", lambda p, skip: reads.append(p) or dict(found))
    path = tmp_path / "m.pth"
    path.write_bytes(b"read by the stub")
    got = read_weights(path, net.graph, full=net.full)
    assert list(got) == ["stem.kernel"] and np.array_equal(got["stem.kernel"], full["stem.kernel"])
    assert reads == [path]


@pytest.mark.slow  # imports torch (6 s)
@pytest.mark.torch
def test_torch_tensors_of_any_dtype_device_or_grad(tmp_path: Path) -> None:
    """float16 and tensors that require grad load; bfloat16 (file or mapping) and a tensor that
    cannot come to the CPU are one line naming the tensor."""
    net = a.compile(BOTH)
    conv = {"conv_stem.weight": torch.randn(4, 3, 1, 1), "conv_other.weight": torch.randn(4, 4, 1, 1)}
    half = {k: torch.nn.Parameter(v.half()) for k, v in conv.items()}
    got = read_weights(half, net.graph)
    want = half["conv_stem.weight"].detach().numpy().transpose(2, 3, 1, 0)
    assert got["stem.kernel"].dtype == np.float16 and np.array_equal(got["stem.kernel"], want)
    bf16 = {k: v.bfloat16() for k, v in conv.items()}
    torch.save(bf16, tmp_path / "m.pth")
    for source in (bf16, tmp_path / "m.pth"):
        with pytest.raises(W.WeightError, match=r"tensor 'conv_stem\.weight' has dtype bfloat16, expected one of"):
            read_weights(source, net.graph)
    meta = {**conv, "conv_other.weight": torch.empty(4, 4, 1, 1, device="meta")}
    with pytest.raises(W.WeightError, match=r"weights: tensor 'conv_other\.weight': cannot read"):
        read_weights(meta, net.graph)
    canonical = {k: torch.from_numpy(v).bfloat16() for k, v in W.init(net.graph).items()}
    with pytest.raises(W.WeightError, match=r"tensor 'stem\.kernel' has dtype bfloat16"):
        read_weights(canonical, net.graph)
