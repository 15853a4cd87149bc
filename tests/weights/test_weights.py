"""Canonical weights: names and layouts, checks, deterministic init, atomic save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archcompiler as a
from archcompiler import weights as W

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph() -> a.Graph:
    return a.lower(a.load(ROOT / "specs" / "mobilenet_keras.yaml"), width=0.25, resolution=96)


def test_expected_layouts_are_keras(graph: a.Graph) -> None:
    e = W.expected(graph)
    # Keras layouts (kh, kw, in, out), depthwise (kh, kw, C, M), per docs/NUMBERS.md's structure:
    assert e["conv1.kernel"] == (3, 3, 3, 8)  # int(32 * 0.25)
    assert e["conv_dw_1.kernel"] == (3, 3, 8, 1)
    assert e["conv_pw_1.kernel"] == (1, 1, 8, 16)
    assert e["conv_preds.kernel"] == (1, 1, 256, 1000) and e["conv_preds.bias"] == (1000,)
    assert e["conv1_bn.moving_variance"] == (8,)
    assert "conv1.bias" not in e
    # the canonical tensor count equals the parameter count Keras reports for the model
    assert sum(int(np.prod(s)) for s in e.values()) == a.cost(graph, "keras").params


def test_check_names_the_tensor(graph: a.Graph) -> None:
    w = W.init(graph)
    W.check(graph, w)
    missing = dict(w)
    del missing["conv_dw_3.kernel"]
    with pytest.raises(W.WeightError, match=r"missing tensor 'conv_dw_3\.kernel'"):
        W.check(graph, missing)
    extra = {**w, "conv_dw_99.kernel": np.zeros(3, np.float32)}
    with pytest.raises(W.WeightError, match=r"unexpected tensor 'conv_dw_99\.kernel'"):
        W.check(graph, extra)
    bad = {**w, "conv1_bn.gamma": np.zeros(9, np.float32)}
    with pytest.raises(W.WeightError, match=r"'conv1_bn\.gamma' has shape \(9,\), expected \(8,\)"):
        W.check(graph, bad)


def test_init_is_deterministic_and_non_trivial(graph: a.Graph) -> None:
    w1, w2, w3 = W.init(graph, 0), W.init(graph, 0), W.init(graph, 1)
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert not np.array_equal(w1["conv1.kernel"], w3["conv1.kernel"])
    assert all(v.dtype == np.float32 for v in w1.values())
    mv = w1["conv_pw_5_bn.moving_variance"]
    mm = w1["conv_pw_5_bn.moving_mean"]
    assert mv.min() > 0 and np.abs(mv - 1).max() > 0.1 and np.abs(mm).max() > 0.05


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip(graph: a.Graph, tmp_path: Path, suffix: str) -> None:
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    w = W.init(graph, 5)
    p = W.save(w, tmp_path / f"w{suffix}")
    back = W.load(p)
    assert set(back) == set(w)
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert sorted(x.name for x in tmp_path.iterdir()) == [f"w{suffix}"]  # no temp files left


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"."):  # the writer fails half-way: nothing may remain
        W.save({"a.kernel": object()}, tmp_path / "w.safetensors")  # type: ignore[dict-item]
    with pytest.raises(W.WeightError, match="unknown weights format"):
        W.save({}, tmp_path / "w.pickle")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(W.WeightError, match="no such weights file"):
        W.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(W.WeightError, match="cannot read weights"):
        W.load(junk)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_load_with_graph_checks_headers_before_reading_data(
    graph: a.Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    w = W.init(graph)
    p = W.save({**w, "conv_dw_2.kernel": np.zeros((3, 3, 9, 1), np.float32)}, tmp_path / f"w{suffix}")
    assert W.load(p)["conv_dw_2.kernel"].shape == (3, 3, 9, 1)  # without a graph there is no shape to compare

    def no_data(*args: object) -> None:
        raise AssertionError("tensor data was read before the headers were checked")

    monkeypatch.setattr(W, "_finish", no_data)
    with pytest.raises(W.WeightError, match=r"tensor 'conv_dw_2\.kernel' has shape \(3, 3, 9, 1\), expected"):
        W.load(p, graph)


def test_load_without_graph_still_checks_values(tmp_path: Path) -> None:
    np.savez(tmp_path / "v.npz", **{"bn.moving_variance": -np.ones(4), "c.kernel": np.ones((2, 3), np.float16)})
    with pytest.raises(W.WeightError, match=r"v\.npz: tensor 'bn\.moving_variance' has negative values"):
        W.load(tmp_path / "v.npz")
    np.savez(tmp_path / "ok.npz", **{"bn.moving_variance": np.zeros(4), "c.kernel": np.ones((2, 3), np.float16)})
    back = W.load(tmp_path / "ok.npz")
    assert back["c.kernel"].dtype == np.float16 and back["bn.moving_variance"].dtype == np.float64


# -- the training init every build starts from ------------------------------------------------

GOOG = """
archc: 1
name: goog
input: {size: 8, channels: 64}
classes: 1000
defaults: {padding: same, bias: false, activation: relu}
layers:
  - {op: conv, filters: 256, kernel: 3, groups: 4, bias: true, name: grouped}
  - {op: batchnorm, name: grouped_bn}
  - {op: depthwise_conv, kernel: 5, multiplier: 2, name: dw}
  - {op: conv, filters: 1024, kernel: 1, name: pw}
  - {op: global_avg_pool, name: pool}
  - {op: dense, units: $classes, name: fc}
"""


def test_training_init_is_the_tensorflow_reference_scheme() -> None:
    """The TF reference MnasNet/EfficientNet init as timm's _init_weight_goog writes it, from the
    formulas and the spec's own numbers (not from WeightSpec): conv kernels normal(0, sqrt(2 /
    fan_out)), fan_out = kh * kw * out / groups (a depthwise conv: one group per channel, so
    kh * kw * multiplier); dense kernels uniform(+-1 / sqrt(units)); biases 0; BatchNorm 1, 0, 0, 1."""
    graph = a.lower(a.load_text(GOOG, "goog.yaml"))
    w = W.training_init(graph, seed=0)
    stds = {
        "grouped.kernel": np.sqrt(2 / (3 * 3 * 256 / 4)),
        "dw.kernel": np.sqrt(2 / (5 * 5 * 2)),
        "pw.kernel": np.sqrt(2 / (1 * 1 * 1024)),
    }
    for name, std in stds.items():
        k = w[name].astype(np.float64)
        assert k.size >= 12_800, name  # large enough for a 3% check: the std's own error is < 0.7%
        assert abs(k.std() / std - 1) < 0.03, (name, k.std(), std)
        assert abs(k.mean()) < 4 * std / np.sqrt(k.size), name
    r = 1 / np.sqrt(1000)
    fc = w["fc.kernel"].astype(np.float64)
    assert fc.shape == (1024, 1000) and -r <= fc.min() < -0.999 * r and 0.999 * r < fc.max() <= r
    assert abs(fc.std() / (r / np.sqrt(3)) - 1) < 0.01  # a uniform's std is r / sqrt(3)
    for name, value in (
        ("grouped.bias", 0.0),
        ("fc.bias", 0.0),
        ("grouped_bn.gamma", 1.0),
        ("grouped_bn.beta", 0.0),
        ("grouped_bn.moving_mean", 0.0),
        ("grouped_bn.moving_variance", 1.0),
    ):
        assert np.all(w[name] == value), name
    assert all(v.dtype == np.float32 for v in w.values()) and set(w) == set(W.expected(graph))


def test_training_init_is_deterministic_per_seed_and_name() -> None:
    graph = a.lower(a.load_text(GOOG, "goog.yaml"))
    w0, again, w1 = W.training_init(graph), W.training_init(graph, 0), W.training_init(graph, 1)
    assert all(np.array_equal(w0[k], again[k]) for k in w0)
    assert not np.array_equal(w0["pw.kernel"], w1["pw.kernel"])
    # a tensor's values depend on its name and the seed only: another layer does not move them
    extra = "  - {op: conv, filters: 32, kernel: 1, name: extra}\n  - {op: depthwise_conv"
    w2 = W.training_init(a.lower(a.load_text(GOOG.replace("  - {op: depthwise_conv", extra), "goog.yaml")))
    assert "extra.kernel" in w2
    assert all(np.array_equal(w2[k], w0[k]) for k in ("grouped.kernel", "fc.kernel"))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "0"])
def test_training_init_refuses_a_bad_seed(seed: object) -> None:
    graph = a.lower(a.load_text(GOOG, "goog.yaml"))
    with pytest.raises(W.WeightError, match="seed must be a whole number from 0 to 4294967295"):
        W.training_init(graph, seed)  # type: ignore[arg-type]
