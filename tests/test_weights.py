"""Canonical weights: names and layouts, checks, deterministic init, atomic save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archcompiler as a
from archcompiler import weights as W

ROOT = Path(__file__).resolve().parents[1]


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
