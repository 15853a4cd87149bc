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

The result is checked against the graph (archcompiler.weights.check): a missing, extra or
misshapen tensor is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import weights as canonical
from ...ir import Graph

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


def _text(v: object) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def load_keras_weights(path: str | Path, graph: Graph) -> Weights:
    """Canonical weights (plain float32 numpy arrays) for ``graph`` from a Keras .h5 file."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise canonical.WeightError(f"{p}: no such weights file")
    wanted = _canonical_params(graph)
    out: Weights = {}
    try:
        with h5py.File(p, "r") as f:
            if "layers" in f and "layer_names" not in f.attrs:
                _read_keras3(f, wanted, out, p)
            else:
                root = f.get("model_weights", f)
                if "layer_names" not in root.attrs:
                    raise canonical.WeightError(f"{p}: not a Keras weights file (no layer names)")
                _read_legacy(root, wanted, out, p)
    except OSError as exc:
        raise canonical.WeightError(f"{p}: cannot read HDF5 ({exc})") from None
    canonical.check(graph, out, origin=str(p))
    return out


def _read_keras3(f: object, wanted: dict[str, list[str]], out: Weights, p: Path) -> None:
    import h5py

    def visit(_: str, obj: object) -> None:
        if not (isinstance(obj, h5py.Group) and obj.name.endswith("/vars") and "name" in obj.attrs):
            return
        layer = _text(obj.attrs["name"])
        arrays = [obj[str(i)][()] for i in range(len(obj))]
        if layer not in wanted:
            if arrays:
                out[f"{layer}.<{len(arrays)} variables>"] = np.zeros(0)  # reported as unexpected
            return
        params = wanted[layer]
        if len(arrays) != len(params):
            raise canonical.WeightError(
                f"{p}: layer {layer!r} has {len(arrays)} variables, "
                f"the graph expects {len(params)} ({', '.join(params)})"
            )
        for param, arr in zip(params, arrays, strict=True):
            out[f"{layer}.{param}"] = np.asarray(arr, dtype=np.float32)

    f["layers"].visititems(visit)  # type: ignore[index]


def _read_legacy(root: object, wanted: dict[str, list[str]], out: Weights, p: Path) -> None:
    for layer in (_text(n) for n in root.attrs["layer_names"]):  # type: ignore[attr-defined]
        group = root[layer]  # type: ignore[index]
        for wname in (_text(n) for n in group.attrs.get("weight_names", [])):
            var = wname.rsplit("/", 1)[-1].split(":", 1)[0]
            var = _VARIABLE_ALIASES.get(var, var)
            out[f"{layer}.{var}"] = np.asarray(group[wname][()], dtype=np.float32)
