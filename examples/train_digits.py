"""Train a small MobileNet from archc's spec in PyTorch, then deploy it with archc and measure it.

The data is scikit-learn's 8x8 digits (1797 images shipped inside the package: nothing is
downloaded), scaled to [0, 1], upsampled bilinearly to 32x32 and repeated to 3 channels;
a stratified 75/25 split (1347 training, 450 held-out images). The model is
``specs/mobilenet.yaml`` at width 0.25, 32 px, 10 classes (215,642 parameters), built by archc
in torch and trained as it is: SGD with Nesterov momentum, one-cycle schedule, random shifts of
up to 3 px, one thread.

Two catches a user copying this recipe onto another spec will meet:

* The spec says ``batchnorm: {decay: 0.99}`` (Keras' default; torch momentum 0.01). After a few
  hundred steps the running statistics trail the weights so far that eval-mode accuracy is much
  lower than the weights deserve. :func:`recalibrate_batchnorm` recomputes them once after
  training (a plain average over the training images), which costs under a second.
* The last batch of an epoch may hold 3 images: its BatchNorm statistics are noise, so it is
  dropped.

Then the canonical weights go to Keras, ONNX and TFLite (float32, and int8 where the build
supports it) and each runtime's held-out accuracy is printed next to torch's, with how many
held-out predictions differ from torch's.

    .venv/bin/python examples/train_digits.py            # about a minute of training here
    .venv/bin/python examples/train_digits.py --epochs 3 # a quick look (lower accuracy)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "mobilenet.yaml"
WIDTH, SIZE, CLASSES = 0.25, 32, 10


@dataclass
class Digits:
    """The split as NHWC float32 arrays in [0, 1] (what every archc runtime takes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(size: int = SIZE, seed: int = 0) -> Digits:
    """scikit-learn's digits, /16 to [0, 1], upsampled to ``size`` (bilinear, as torch's
    ``interpolate(align_corners=False)``), grey repeated to 3 channels, stratified 75/25."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)

    def up(a: np.ndarray) -> np.ndarray:
        t = F.interpolate(torch.from_numpy(a)[:, None], size=(size, size), mode="bilinear", align_corners=False)
        return np.ascontiguousarray(t.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy())

    return Digits(up(xtr), ytr, up(xte), yte)


def shifted(x: Any, shift: int) -> Any:
    """Each NCHW image translated by up to ``shift`` pixels (zero fill)."""
    import torch
    import torch.nn.functional as F

    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,))
    dx = torch.randint(0, 2 * shift + 1, (n,))
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def recalibrate_batchnorm(model: Any, x: Any, batch: int = 256) -> None:
    """BatchNorm running statistics recomputed as the plain average over ``x`` (torch momentum
    None), the weights unchanged: with the spec's decay 0.99 they trail the weights far after a
    short run (module docstring)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def train(data: Digits, *, epochs: int = 20, seed: int = 0, batch: int = 64, lr: float = 0.1, shift: int = 3) -> Any:
    """archc's torch build of the spec trained on ``data``; returns (compiled logits graph,
    canonical weights). One thread: on a shared 2-core machine two threads were 5x slower."""
    import torch
    import torch.nn.functional as F

    import archcompiler
    from archcompiler.kit.registry import get_backend

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = archcompiler.compile(SPEC, width=WIDTH, resolution=SIZE, classes=CLASSES, classifier_activation="none")
    model = net.build("torch")
    xtr = torch.from_numpy(data.x_train).permute(0, 3, 1, 2).contiguous()  # the torch model is NCHW
    ytr = torch.from_numpy(data.y_train)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5, nesterov=True)
    steps_per_epoch = len(xtr) // batch  # the ragged last batch is dropped
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for k in range(steps_per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            loss = F.cross_entropy(model(shifted(xtr[idx], shift)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    recalibrate_batchnorm(model, xtr)
    return net, get_backend("torch").get_weights(net.graph, model)


@dataclass
class Deployed:
    """One runtime's held-out result: accuracy, and how many predictions differ from torch's."""

    name: str
    accuracy: float
    predictions: np.ndarray = field(repr=False)
    differ_from_torch: int = 0


def deploy_targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, backend, build options) of every runtime the example deploys to; int8 appears
    when this archc has it (``archc build --quantize int8``)."""
    targets: list[tuple[str, str, dict[str, Any]]] = [
        ("torch float32", "torch", {}),
        ("keras float32", "keras", {}),
        ("onnx float32", "onnx", {}),
        ("tflite float32", "tflite", {}),
    ]
    return targets + int8_targets()


def int8_targets() -> list[tuple[str, str, dict[str, Any]]]:
    """The int8 runtimes this archc builds (``archc build --quantize int8``, docs/deployment.md)."""
    from archcompiler.kit.registry import BackendError, get_backend

    out = []
    for backend in ("tflite", "onnx"):
        try:
            get_backend(backend, quantize="int8", calibration="synthetic")
        except (TypeError, BackendError):
            continue  # not in this archc
        out.append((f"{backend} int8", backend, {"quantize": "int8"}))
    return out


def calibration_inputs(data: Digits, samples: int = 200) -> Any:
    """The int8 builds' calibration: ``samples`` training images (never held-out ones), as the
    model takes them (floats in [0, 1], used as given)."""
    from archcompiler.calibration import Calibration

    return Calibration(data.x_train[:samples], data.x_test, "digits training images", None)


def predict(backend: str, options: dict[str, Any], weights: Any, data: Digits) -> np.ndarray:
    """Held-out class predictions of ``backend`` built with ``weights`` (argmax of the logits)."""
    import archcompiler
    from archcompiler.kit.registry import get_backend

    net = archcompiler.compile(SPEC, width=WIDTH, resolution=SIZE, classes=CLASSES, classifier_activation="none")
    quantized = options.get("quantize") == "int8"
    b = get_backend(backend, **({**options, "calibration": calibration_inputs(data)} if quantized else options))
    model = net.build(b, weights=weights)
    # an int8 build is run as it is saved (the ONNX backend's model object stays the float one)
    run = b.quantized_runner(net.graph, model)[0] if quantized else partial(b.run, net.graph, model)
    return np.asarray(run(data.x_test, [net.graph.output])[net.graph.output]).argmax(1)


def deploy(weights: Any, data: Digits, targets: list[tuple[str, str, dict[str, Any]]] | None = None) -> list[Deployed]:
    """Every target's held-out accuracy; the first (torch) is what the others are compared with."""
    results: list[Deployed] = []
    for label, backend, options in targets or deploy_targets():
        pred = predict(backend, options, weights, data)
        acc = float(np.mean(pred == data.y_test))
        differ = int(np.sum(pred != results[0].predictions)) if results else 0
        results.append(Deployed(label, acc, pred, differ))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("build/digits"), help="where the trained weights go")
    a = p.parse_args(argv)
    from archcompiler import weights as W

    data = load_digits_split()
    start = time.perf_counter()
    net, weights = train(data, epochs=a.epochs, seed=a.seed)
    seconds = time.perf_counter() - start
    a.out.mkdir(parents=True, exist_ok=True)
    W.save(weights, a.out / "mobilenet_digits.weights.npz")
    np.savez(a.out / "digits_heldout.npz", x=data.x_test, y=data.y_test)
    np.save(a.out / "digits_calibration.npy", data.x_train)
    print(f"trained {net.graph.name} 0.25-32 on {len(data.x_train)} digits in {seconds:.0f} s ({a.epochs} epochs)")
    print(f"weights: {a.out / 'mobilenet_digits.weights.npz'}")
    results = deploy(weights, data)
    print(f"{'runtime':16s} {'held-out accuracy':>18s} {'predictions unlike torch':>26s}")
    for r in results:
        print(f"{r.name:16s} {r.accuracy:17.2%} {r.differ_from_torch:>12d} of {len(data.y_test)}")
    summary = {r.name: {"accuracy": r.accuracy, "differ_from_torch": r.differ_from_torch} for r in results}
    (a.out / "results.json").write_text(json.dumps({"train_seconds": seconds, "runtimes": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
