"""Inputs for quantized builds: calibration samples and held-out samples, disjoint.

A full-integer model needs the ranges of its activations, measured on inputs like the ones it
will see (calibration); the quantization report needs other inputs of the same kind to measure
the error on (held-out). Both come from one SOURCE, split here, once for every backend (each
backend only converts):

* a folder of PNG/JPEG images (read with Pillow, the ``images`` extra), converted to the
  model's channels and resized to its resolution (bilinear);
* an ``.npy`` file or an ``.npz`` file (its one array, or the array named ``x``), NHWC, shaped
  like the model input: uint8 arrays are pixels, float arrays are taken as the model's input
  as they are (already preprocessed); never unpickled;
* ``synthetic``: smooth random images (8x8 uniform noise, upsampled). A stand-in only: it
  exercises every channel and gives ranges of the right order, but not natural images'
  statistics, so an int8 model calibrated on it is a test artefact, not one to ship.

Pixels (images, uint8 arrays, synthetic) are mapped linearly from 0..255 to the model's input
range: 0..255 when the spec starts with its own ``rescaling`` layer (the model preprocesses),
else -1..1 (MobileNet's training preprocessing, Keras' ``preprocess_input``), unless
``pixels`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archcompiler import ir

SYNTHETIC = "synthetic"
PIXEL_RANGES: dict[str, tuple[float, float]] = {"0..255": (0.0, 255.0), "0..1": (0.0, 1.0), "-1..1": (-1.0, 1.0)}
"""The input range pixels 0..255 are mapped to (``--pixels``)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_CALIBRATION = 8
MIN_HELD_OUT = 4
MAX_CALIBRATION = 100
"""Calibration samples used at most by default (TFLite's guide: ~100-500; more costs conversion time)."""
MAX_HELD_OUT = 64
SPLIT_SEED = 0


class CalibrationError(ValueError):
    """A calibration source that cannot be used: one line naming it and what is wrong."""


@dataclass(frozen=True)
class Calibration:
    """Model inputs (N, *input_shape) float32: ``calibration`` for the ranges, ``held_out``
    (disjoint samples of the same source) for measuring the quantized model."""

    calibration: np.ndarray
    held_out: np.ndarray
    source: str
    pixels: str | None
    """The range pixels were mapped to; None for a float array (taken as given)."""

    @property
    def synthetic(self) -> bool:
        return self.source == SYNTHETIC

    def describe(self) -> dict[str, Any]:
        """What the quantization report says about its inputs."""
        out: dict[str, Any] = {
            "source": self.source,
            "calibration_samples": len(self.calibration),
            "held_out_samples": len(self.held_out),
            "preprocessing": f"pixels 0..255 -> {self.pixels}" if self.pixels else "float array used as given",
        }
        if self.synthetic:
            out["note"] = "synthetic stand-in inputs (smooth random images), not data the model is meant for"
        return out


def default_pixels(graph: ir.Graph) -> str:
    """0..255 when the model's first layer is a ``rescaling`` (it preprocesses itself), else -1..1."""
    readers = [n for n in graph.nodes if graph.inputs[0].name in n.inputs]
    return "0..255" if readers and all(n.op == "rescaling" for n in readers) else "-1..1"


def _pixels(graph: ir.Graph, pixels: str | None) -> str:
    if pixels is None:
        return default_pixels(graph)
    if pixels not in PIXEL_RANGES:
        raise CalibrationError(f"pixels must be one of {', '.join(PIXEL_RANGES)}, got {pixels!r}")
    return pixels


def _scale(raw: np.ndarray, pixels: str) -> np.ndarray:
    lo, hi = PIXEL_RANGES[pixels]
    return (raw.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)).astype(np.float32)


def synthetic_pixels(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """(n, *shape) smooth random pixels in 0..255: 8x8 uniform noise, bilinearly upsampled
    (numpy only), so neighbouring pixels correlate as in images."""
    rng = np.random.default_rng(seed)
    if len(shape) != 3:
        return rng.uniform(0, 255, size=(n, *shape)).astype(np.float32)
    h, w, c = shape
    small = rng.uniform(0, 255, size=(n, 8, 8, c))
    ys, xs = np.linspace(0, 7, h), np.linspace(0, 7, w)
    y0, x0 = np.minimum(ys.astype(int), 6), np.minimum(xs.astype(int), 6)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    rows = small[:, y0] * (1 - fy) + small[:, y0 + 1] * fy
    return (rows[:, :, x0] * (1 - fx) + rows[:, :, x0 + 1] * fx).astype(np.float32)


def _read_images(folder: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Every PNG/JPEG in ``folder`` (sorted by name) as (n, H, W, C) uint8."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CalibrationError(f"{folder}: reading images needs Pillow: pip install 'archc[images]'") from None
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise CalibrationError(f"{folder}: images need a model input of HxWx1 or HxWx3, this one is {shape}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise CalibrationError(f"{folder}: no PNG or JPEG images in this folder")
    h, w, c = shape
    out = np.empty((len(files), h, w, c), np.uint8)
    for k, f in enumerate(files):
        try:
            with Image.open(f) as img:
                img = img.convert("RGB" if c == 3 else "L").resize((w, h), Image.Resampling.BILINEAR)
                out[k] = np.asarray(img, np.uint8).reshape(h, w, c)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise CalibrationError(f"{f}: not a readable image ({exc})") from None
    return out


def _read_array(path: Path) -> np.ndarray:
    """The array in an .npy file, or an .npz file's one array (or the one named ``x``)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        why = "it holds pickled objects, which archc never loads" if "pickle" in str(exc) else str(exc)
        raise CalibrationError(f"{path}: not a readable numpy array file ({why})") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        try:
            names = list(data.files)
            if len(names) != 1 and "x" not in names:
                raise CalibrationError(f"{path}: holds arrays {names}; give it one array, or one named 'x'")
            return data["x" if "x" in names else names[0]]
        except (OSError, ValueError, EOFError) as exc:
            raise CalibrationError(f"{path}: not a readable numpy array file ({exc})") from None


def _check_array(path: Path, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.ndim != 1 + len(shape) or tuple(arr.shape[1:]) != tuple(shape):
        layout = " (NHWC)" if len(shape) == 3 else ""
        want = ", ".join(map(str, shape))
        raise CalibrationError(f"{path}: array of shape {arr.shape}, expected (N, {want}){layout}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise CalibrationError(f"{path}: array of dtype {arr.dtype}, expected uint8 pixels or floats")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise CalibrationError(f"{path}: the array holds NaN or infinite values")


def _split(x: np.ndarray, where: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out): a fixed permutation, held-out first (a fifth, 4..64), the rest
    calibration (at most ``samples``); too few samples for both is an error."""
    n = len(x)
    if n < MIN_CALIBRATION + MIN_HELD_OUT:
        raise CalibrationError(
            f"{where}: {n} samples; at least {MIN_CALIBRATION + MIN_HELD_OUT} are needed "
            f"({MIN_CALIBRATION} for calibration, {MIN_HELD_OUT} held out to measure the quantized model)"
        )
    held = min(MAX_HELD_OUT, max(MIN_HELD_OUT, n // 5))
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return x[order[held:][:samples]], x[order[:held]]


def load(
    source: str | Path, graph: ir.Graph, *, pixels: str | None = None, samples: int = MAX_CALIBRATION
) -> Calibration:
    """The calibration and held-out inputs of ``graph`` from ``source`` (see the module)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_CALIBRATION:
        raise CalibrationError(f"samples must be an integer >= {MIN_CALIBRATION}, got {samples!r}")
    if not isinstance(source, str | Path):
        raise CalibrationError(f"calibration: expected a folder, an .npy/.npz file or 'synthetic', got {source!r}")
    shape = tuple(graph.input_shape)
    chosen = _pixels(graph, pixels)
    if str(source) == SYNTHETIC:
        raw = synthetic_pixels(shape, samples + samples // 4, seed=1)  # a fifth held out
        cal, held = _split(raw, SYNTHETIC, samples)
        return Calibration(_scale(cal, chosen), _scale(held, chosen), SYNTHETIC, chosen)
    path = Path(source)
    if not path.exists():
        raise CalibrationError(f"{path}: no such file or folder (give a folder of images, .npy/.npz or 'synthetic')")
    if path.is_dir():
        arr = _read_images(path, shape)
    elif path.suffix.lower() in (".npy", ".npz"):
        arr = _read_array(path)
        _check_array(path, arr, shape)
    else:
        raise CalibrationError(f"{path}: not a folder of images or an .npy/.npz file")
    cal, held = _split(arr, str(path), samples)
    if arr.dtype == np.uint8:
        return Calibration(_scale(cal, chosen), _scale(held, chosen), str(path), chosen)
    if pixels is not None:
        raise CalibrationError(f"{path}: a float array is used as given; pixels= applies to images and uint8 arrays")
    return Calibration(cal.astype(np.float32), held.astype(np.float32), str(path), None)


def held_out_only(graph: ir.Graph, pixels: str | None = None) -> Calibration:
    """Synthetic inputs for measuring a build quantized without calibration data (float16,
    dynamic-range weights): the same stand-in as ``load("synthetic", ...)``."""
    return load(SYNTHETIC, graph, pixels=pixels)


def given(calibration: Any, graph: ir.Graph, pixels: str | None = None) -> Calibration:
    """A backend's ``calibration`` option as inputs of ``graph``: a loaded Calibration (its
    input shape checked), a source for :func:`load`, or None (the synthetic stand-in, for
    measuring builds quantized without calibration)."""
    if calibration is None:
        return held_out_only(graph, pixels)
    if isinstance(calibration, Calibration):
        shape = tuple(graph.input_shape)
        if tuple(calibration.calibration.shape[1:]) != shape:
            raise CalibrationError(
                f"{calibration.source}: samples of shape {calibration.calibration.shape[1:]}, the model takes {shape}"
            )
        return calibration
    return load(calibration, graph, pixels=pixels)
