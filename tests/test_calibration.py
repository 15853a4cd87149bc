"""archcompiler.calibration against numpy: what each source reads, how pixels are mapped, the
disjoint split, and every bad source as one located line (exit 2, nothing written). No
framework is imported: the CLI reads the source before it loads a backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, SPEC, run

import archcompiler as a
from archcompiler import calibration as C

V3 = str(ROOT / "specs" / "mobilenet_v3_small.yaml")


@pytest.fixture(scope="module")
def graph():
    return a.compile(SPEC, width=0.25, resolution=32).graph


def pixels(n: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, channels), dtype=np.uint8)


def rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


def test_uint8_array_is_split_disjointly_and_mapped_to_minus_one_one(graph, tmp_path):
    raw = pixels(40)
    np.save(tmp_path / "x.npy", raw)
    got = C.load(tmp_path / "x.npy", graph)
    assert got.calibration.shape == (32, 32, 32, 3) and got.held_out.shape == (8, 32, 32, 3)
    assert got.pixels == "-1..1" and got.calibration.dtype == np.float32
    # Keras' mobilenet preprocess_input ("tf" mode): x / 127.5 - 1; back to pixels exactly
    back = {
        k: np.round((v.astype(np.float64) + 1.0) * 127.5).astype(np.uint8)
        for k, v in vars(got).items()
        if k in ("calibration", "held_out")
    }
    for k in back:
        np.testing.assert_allclose(getattr(got, k), back[k] / 127.5 - 1.0, atol=1e-6)
    assert rows(back["calibration"]) | rows(back["held_out"]) == rows(raw)  # every sample used once
    assert not rows(back["calibration"]) & rows(back["held_out"])  # held-out never calibrates


def test_a_spec_with_its_own_rescaling_gets_raw_pixels_and_pixels_overrides():
    v3 = a.compile(V3, width=0.5, resolution=32).graph
    assert C.default_pixels(v3) == "0..255"
    got = C.load("synthetic", v3)
    assert got.calibration.min() >= 0 and got.calibration.max() <= 255 and got.calibration.max() > 128
    got = C.load("synthetic", v3, pixels="0..1")
    assert got.calibration.max() <= 1.0 and got.pixels == "0..1"


def test_float_arrays_are_used_as_given_and_npz_takes_x(graph, tmp_path):
    x = np.random.default_rng(1).normal(size=(20, 32, 32, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20))
    got = C.load(tmp_path / "d.npz", graph)
    assert got.pixels is None and rows(got.calibration) | rows(got.held_out) == rows(x)
    with pytest.raises(C.CalibrationError, match="float array is used as given"):
        C.load(tmp_path / "d.npz", graph, pixels="0..1")


def test_image_folder_reads_pngs_converts_and_resizes(graph, tmp_path):
    image = pytest.importorskip("PIL.Image")
    raw = pixels(12, seed=2)
    for k, r in enumerate(raw):
        image.fromarray(r).save(tmp_path / f"{k:02d}.png")
    image.fromarray(raw[0][:, :, 0]).resize((64, 48)).save(tmp_path / "zz_gray_big.png")  # L, other size
    (tmp_path / "notes.txt").write_text("ignored")
    got = C.load(tmp_path, graph, pixels="0..255")
    assert len(got.calibration) + len(got.held_out) == 13
    assert rows(raw.astype(np.float32)) < rows(got.calibration) | rows(got.held_out)  # PNG is lossless


def test_synthetic_is_deterministic_smooth_and_disjoint(graph):
    one, two = C.load("synthetic", graph), C.load("synthetic", graph)
    np.testing.assert_array_equal(one.calibration, two.calibration)
    assert len(one.calibration) == C.MAX_CALIBRATION and not rows(one.calibration) & rows(one.held_out)
    assert one.describe()["note"].startswith("synthetic stand-in")
    x = one.calibration
    # smooth: neighbouring pixels differ far less than unrelated ones
    assert np.abs(np.diff(x, axis=1)).mean() < 0.35 * np.abs(x - x[::-1]).mean()


def _bad_sources(tmp: Path) -> dict[str, tuple[str, str]]:
    np.save(tmp / "gray.npy", pixels(20, channels=1))
    np.save(tmp / "nchw.npy", pixels(20).transpose(0, 3, 1, 2))
    np.save(tmp / "few.npy", pixels(11))
    np.save(tmp / "ints.npy", pixels(20).astype(np.int64))
    np.save(tmp / "pickled.npy", np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    (tmp / "text.npy").write_text("not numpy")
    (tmp / "images").mkdir()
    (tmp / "images" / "a.png").write_bytes(b"\x89PNG broken")
    (tmp / "empty").mkdir()
    np.savez(tmp / "two.npz", a=pixels(20), b=pixels(20))
    (tmp / "data.csv").write_text("1,2")
    return {
        "missing": (str(tmp / "nope"), "no such file or folder"),
        "channels": (str(tmp / "gray.npy"), "expected (N, 32, 32, 3) (NHWC)"),
        "layout": (str(tmp / "nchw.npy"), "array of shape (20, 3, 32, 32)"),
        "few": (str(tmp / "few.npy"), "11 samples; at least 12"),
        "dtype": (str(tmp / "ints.npy"), "dtype int64"),
        "pickle": (str(tmp / "pickled.npy"), "pickled objects, which archc never loads"),
        "garbage": (str(tmp / "text.npy"), "not a readable numpy array file"),
        "image": (str(tmp / "images"), "a.png: not a readable image"),
        "empty": (str(tmp / "empty"), "no PNG or JPEG images"),
        "npz": (str(tmp / "two.npz"), "one array, or one named 'x'"),
        "suffix": (str(tmp / "data.csv"), "not a folder of images or an .npy/.npz file"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "channels", "layout", "few", "dtype", "pickle", "garbage", "image", "empty", "npz", "suffix"]
)
def test_bad_source_is_one_located_line_exit_2_nothing_written(capsys, tmp_path, case):
    source, needle = _bad_sources(tmp_path)[case]
    out = tmp_path / "out"
    argv = ["build", SPEC, "--backend", "onnx", "--width", "0.25", "--resolution", "32", "-o", str(out)]
    code, stdout, err = run(capsys, *argv, "--quantize", "int8", "--calibration", source)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith(f"{SPEC}: --calibration: ") and needle in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        ([], "--quantize int8 needs --calibration"),
        (["--quantize", "dynamic", "--io", "int8"], "--io is for --quantize int8"),
        (["--quantize", "dynamic", "--pixels", "0..1"], "--pixels is for --quantize int8"),
        (["--calibration", "synthetic"], "--calibration is for --quantize"),
    ],
)
def test_calibration_options_without_int8_are_refused(capsys, tmp_path, extra, needle):
    argv = ["build", SPEC, "--backend", "tflite", "-o", str(tmp_path / "out")]
    if not extra:
        extra = ["--quantize", "int8"]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2 and needle in err and err.count("\n") == 1
