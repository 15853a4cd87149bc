"""Read Keras weight files into canonical weights, with h5py only (no TensorFlow needed).

So that a PyTorch user can load Keras checkpoints, including keras.applications' published
MobileNet files, without installing TensorFlow. Three layouts are understood, all by *layer
name* (never by position):

* Keras 3 ``*.weights.h5`` (``model.save_weights``): ``layers/<auto name>/vars/<i>``, where
  the ``vars`` group carries the layer's name as an attribute and ``i`` follows the layer's
  variable order (kernel, bias; gamma, beta, moving_mean, moving_variance), which is also
  the canonical order of archcompiler.weights.expected;
* legacy HDF5 weights (Keras 2, and the published ``mobilenet_*_tf.h5`` files): one group
  per layer with a ``weight_names`` attribute such as ``conv_dw_1/depthwise_kernel:0``;
* a legacy whole-model ``.h5`` (the same under ``model_weights``).

Keras' Normalization keeps a third variable after its mean and variance, the ``count`` of
samples ``adapt`` saw (``RawCost.counters``): a scalar inference does not use and archc holds no
tensor for, skipped in both layouts, so keras.applications' EfficientNet files load whole.

The result is checked against the graph (archcompiler.weights.check): a missing, extra or
misshapen tensor is an error naming it. Each dataset's dtype and shape are checked from its
HDF5 metadata before its data is read (a float tensor of the graph's shape, nothing larger), and
datasets of layers the graph does not have are never read; an HDF5 file that is not laid out
like a Keras file is a WeightError, never a KeyError from h5py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from archcompiler import weights as canonical
from archcompiler.ir.graph import Graph

Weights = canonical.Weights

# Keras 2 called the depthwise kernel "depthwise_kernel"; Keras 3 and archc call it "kernel".
_VARIABLE_ALIASES = {"depthwise_kernel": "kernel"}


def _canonical_params(graph: Graph) -> dict[str, list[str]]:
    """Layer name -> its tensors' parameter names, in Keras variable order."""
    out: dict[str, list[str]] = {}
    for name in canonical.expected(graph):
        node, param = name.rsplit(".", 1)
        out.setdefault(node, []).append(param)
    return out


def _counters(graph: Graph) -> dict[str, int]:
    """Layer name -> the bookkeeping scalars Keras keeps after its weights (``RawCost.counters``:
    Normalization's ``count`` of the samples ``adapt`` saw). Inference does not use them and
    archc holds no tensor for them, so a file's copies are skipped, never read."""
    return {n.name: c for n in graph.nodes if (c := n.cost(graph.input_shapes(n)).counters)}


def _text(v: object) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def load_keras_weights(path: str | Path, graph: Graph) -> Weights:
    """Canonical weights (plain float32 numpy arrays) for ``graph`` from a Keras .h5 file."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise canonical.WeightError(f"{p}: no such weights file")
    wanted = _canonical_params(graph)
    shapes = canonical.expected(graph)
    found: dict[str, object] = {}  # canonical name -> its h5py dataset, not read yet
    out: Weights = {}
    try:
        with h5py.File(p, "r") as f:
            if "layers" in f and "layer_names" not in f.attrs:
                _read_keras3(f, wanted, _counters(graph), found, p)
            else:
                root = f.get("model_weights", f)
                if not isinstance(root, h5py.Group) or "layer_names" not in root.attrs:
                    raise canonical.WeightError(f"{p}: not a Keras weights file (no layer names)")
                _read_legacy(root, wanted, _counters(graph), found, p)
            # in the graph's order, so the first fault reported is the one check() would name;
            # stop at a missing tensor and leave it to check()
            for name in shapes:
                if name not in found:
                    break
                out[name] = _array(p, found[name], name, shapes)
            else:
                out.update({n: np.zeros(0, np.float32) for n in found if n not in shapes})  # unexpected, unread
    except canonical.WeightError:
        raise
    except OSError as exc:
        raise canonical.WeightError(f"{p}: cannot read HDF5 ({_first_line(exc)})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # h5py on an unexpected layout
        raise canonical.WeightError(f"{p}: not a Keras weights file ({_first_line(exc)})") from None
    canonical.check(graph, out, origin=str(p))
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().strip('"').splitlines() or [type(exc).__name__])[0][:200]


def _array(p: Path, obj: object, name: str, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    """The dataset ``obj`` as float32, after checking its kind, dtype and shape from the HDF5
    metadata: a string, integer or oversized dataset is refused before its data is read."""
    import h5py

    if not isinstance(obj, h5py.Dataset):
        raise canonical.WeightError(f"{p}: tensor {name!r} is not an HDF5 dataset")
    if obj.dtype.kind != "f" or obj.dtype.itemsize not in (2, 4, 8):
        raise canonical.WeightError(
            f"{p}: tensor {name!r} has dtype {obj.dtype}, expected one of {', '.join(canonical.FLOAT_DTYPES)}"
        )
    if tuple(obj.shape) != shapes[name]:
        raise canonical.WeightError(f"{p}: tensor {name!r} has shape {tuple(obj.shape)}, expected {shapes[name]}")
    return np.asarray(obj[()], dtype=np.float32)


def _read_keras3(
    f: object, wanted: dict[str, list[str]], counters: dict[str, int], found: dict[str, object], p: Path
) -> None:
    import h5py

    layers = f["layers"]  # type: ignore[index]
    if not isinstance(layers, h5py.Group):
        raise canonical.WeightError(f"{p}: not a Keras weights file ('layers' is not a group)")

    def visit(_: str, obj: object) -> None:
        if not (isinstance(obj, h5py.Group) and obj.name.endswith("/vars") and "name" in obj.attrs):
            return
        layer = _text(obj.attrs["name"])
        count = len(obj)
        if layer not in wanted:
            if count:
                found[f"{layer}.<{count} variables>"] = None  # reported as unexpected, never read
            return
        params = wanted[layer]
        extra = counters.get(layer, 0)
        if count not in (len(params), len(params) + extra) or any(str(i) not in obj for i in range(count)):
            also = f" (and {extra} counter{'s' * (extra > 1)})" if extra else ""
            expects = f"{len(params)} ({', '.join(params)}){also}"
            raise canonical.WeightError(f"{p}: layer {layer!r} has {count} variables, the graph expects {expects}")
        for i in range(len(params), count):  # the counters, after the weights: scalars, skipped
            if not (isinstance(obj[str(i)], h5py.Dataset) and obj[str(i)].shape == ()):
                raise canonical.WeightError(f"{p}: layer {layer!r}: variable {i} should be a scalar counter")
        for i, param in enumerate(params):
            found[f"{layer}.{param}"] = obj[str(i)]

    layers.visititems(visit)


def _read_legacy(
    root: object, wanted: dict[str, list[str]], counters: dict[str, int], found: dict[str, object], p: Path
) -> None:
    for layer in (_text(n) for n in root.attrs["layer_names"]):  # type: ignore[attr-defined]
        if layer not in root:  # type: ignore[operator]
            raise canonical.WeightError(f"{p}: layer {layer!r} is listed in layer_names but has no group")
        group = root[layer]  # type: ignore[index]
        for wname in (_text(n) for n in group.attrs.get("weight_names", [])):
            var = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            var = _VARIABLE_ALIASES.get(var, var)
            if wname not in group:
                raise canonical.WeightError(f"{p}: layer {layer!r} lists weight {wname!r} but has no such dataset")
            dataset = group[wname]
            if counters.get(layer) and var not in wanted.get(layer, ()) and getattr(dataset, "shape", None) == ():
                continue  # a counter (Normalization's count): see _counters
            found[f"{layer}.{var}"] = dataset
