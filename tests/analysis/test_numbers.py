"""Every number of docs/NUMBERS.md, reproduced from the shipped specs through the Python API.

Expected values are copied from docs/NUMBERS.md (the paper, Keras, timm,
fvcore) or computed here by independent arithmetic from the paper's Table 1 - never taken
from the code's own output.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import archcompiler as archc
from archcompiler import ir
from archcompiler.lowering.lower import make_divisible

ROOT = Path(__file__).resolve().parents[2]
PAPER_SPEC = ROOT / "specs" / "mobilenet.yaml"
KERAS_SPEC = ROOT / "specs" / "mobilenet_keras.yaml"

WIDTHS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)

# docs/NUMBERS.md, "Exact Mult-Adds (MACs) under that rule": width -> MACs at 224, 192, 160, 128.
PAPER_MACS = {
    1.0: (568_740_352, 418_121_728, 290_675_200, 186_400_768),
    0.75: (325_400_448, 239_273_472, 166_396_800, 106_770_432),
    0.5: (149_497_088, 109_970_432, 76_524_800, 49_160_192),
    0.25: (41_030_272, 30_212_608, 21_059_200, 13_570_048),
}
# docs/NUMBERS.md, "Parameters (paper rule)".
PAPER_PARAMS = {1.0: 4_209_088, 0.75: 2_568_144, 0.5: 1_319_648, 0.25: 463_600}

# docs/NUMBERS.md, keras.applications.MobileNet: total / trainable / non-trainable.
KERAS_PARAMS = {
    1.0: (4_253_864, 4_231_976, 21_888),
    0.75: (2_601_976, 2_585_560, 16_416),
    0.5: (1_342_536, 1_331_592, 10_944),
    0.25: (475_544, 470_072, 5_472),
}

# The paper's Table 1, row by row: (type, stride, filter shape, input size).
_DW_CONV_512 = [("dw", 1, (3, 3, 512), (14, 14, 512)), ("conv", 1, (1, 1, 512, 512), (14, 14, 512))]
TABLE1 = [
    ("conv", 2, (3, 3, 3, 32), (224, 224, 3)),
    ("dw", 1, (3, 3, 32), (112, 112, 32)),
    ("conv", 1, (1, 1, 32, 64), (112, 112, 32)),
    ("dw", 2, (3, 3, 64), (112, 112, 64)),
    ("conv", 1, (1, 1, 64, 128), (56, 56, 64)),
    ("dw", 1, (3, 3, 128), (56, 56, 128)),
    ("conv", 1, (1, 1, 128, 128), (56, 56, 128)),
    ("dw", 2, (3, 3, 128), (56, 56, 128)),
    ("conv", 1, (1, 1, 128, 256), (28, 28, 128)),
    ("dw", 1, (3, 3, 256), (28, 28, 256)),
    ("conv", 1, (1, 1, 256, 256), (28, 28, 256)),
    ("dw", 2, (3, 3, 256), (28, 28, 256)),
    ("conv", 1, (1, 1, 256, 512), (14, 14, 256)),
    *(_DW_CONV_512 * 5),
    ("dw", 2, (3, 3, 512), (14, 14, 512)),
    ("conv", 1, (1, 1, 512, 1024), (7, 7, 512)),
    ("dw", 1, (3, 3, 1024), (7, 7, 1024)),  # printed "s2": a misprint (docs/NUMBERS.md)
    ("conv", 1, (1, 1, 1024, 1024), (7, 7, 1024)),
    ("pool", 1, (7, 7), (7, 7, 1024)),
    ("fc", 1, (1024, 1000), (1, 1, 1024)),
    ("softmax", 1, None, (1, 1, 1000)),
]
OUTPUT_SIZE = (1, 1, 1000)

# Filters of the 13 pointwise convs (Table 1), for width-rounding checks.
PW_FILTERS = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


@pytest.fixture(scope="module")
def paper() -> archc.LoadedSpec:
    return archc.load(PAPER_SPEC)


@pytest.fixture(scope="module")
def keras() -> archc.LoadedSpec:
    return archc.load(KERAS_SPEC)


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Table 1 writes a vector as 1x1xC; the IR writes it as (C,)."""
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _paper_round_millions(n: int) -> int:
    return round(n / 1e6)


def _paper_round_params(n: int) -> float:
    """Table 6 prints parameters in millions with one decimal."""
    return round(n / 1e6, 1)


# --- Tables 6 and 7: the 16 width x resolution entries ------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("res_index", range(4))
def test_paper_macs_grid_pixels(paper: archc.LoadedSpec, width: float, res_index: int) -> None:
    size = RESOLUTIONS[res_index]
    graph = archc.lower(paper, width=width, resolution=size)
    assert graph.input_shape == (size, size, 3)
    report = archc.cost(graph, "paper")
    assert report.macs == PAPER_MACS[width][res_index]
    assert report.params == PAPER_PARAMS[width]  # parameters do not depend on resolution


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("res_index", range(4))
def test_paper_macs_grid_multiplier(paper: archc.LoadedSpec, width: float, res_index: int) -> None:
    size = RESOLUTIONS[res_index]
    rho = size / 224  # a float is the resolution multiplier rho
    graph = archc.lower(paper, width=width, resolution=rho)
    assert graph.input_shape == (size, size, 3)
    assert archc.cost(graph, "paper").macs == PAPER_MACS[width][res_index]


@pytest.mark.parametrize(("rho", "size"), [(1.0, 224), (0.857, 192), (0.714, 160), (0.571, 128)])
def test_paper_printed_rho_rounds_to_the_right_size(paper: archc.LoadedSpec, rho: float, size: int) -> None:
    # The paper prints rho to three decimals; round(224 * rho) must give back the size.
    graph = archc.lower(paper, resolution=rho)
    assert graph.input_shape == (size, size, 3)
    assert archc.cost(graph).macs == PAPER_MACS[1.0][RESOLUTIONS.index(size)]


def test_paper_params_per_width(paper: archc.LoadedSpec) -> None:
    for width, expected in PAPER_PARAMS.items():
        assert archc.cost(archc.lower(paper, width=width)).params == expected


def test_spec_width_and_resolution_fields_are_the_defaults(paper: archc.LoadedSpec) -> None:
    # Setting alpha and rho in the spec text is the same as overriding them in lower().
    text = PAPER_SPEC.read_text()
    text = re.sub(r"(?m)^width: 1\.0", "width: 0.5", text)
    text = re.sub(r"(?m)^resolution: 1\.0", "resolution: 0.714", text)
    report = archc.cost(archc.lower(archc.load_text(text, "half.yaml")))
    assert report.macs == PAPER_MACS[0.5][2]
    assert report.params == PAPER_PARAMS[0.5]


def test_table6_rounded(paper: archc.LoadedSpec) -> None:
    # Table 6 (width, at 224): 569M/4.2M, 325M/2.6M, 149M/1.3M, 41M/0.5M.
    printed = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
    for width, (macs_m, params_m) in printed.items():
        report = archc.cost(archc.lower(paper, width=width, resolution=224))
        assert _paper_round_millions(report.macs) == macs_m
        assert _paper_round_params(report.params) == params_m


def test_table7_rounded(paper: archc.LoadedSpec) -> None:
    # Table 7 (resolution, at a=1.0): 569, 418, 290, 186 million Mult-Adds.
    printed = {224: 569, 192: 418, 160: 290, 128: 186}
    for size, macs_m in printed.items():
        macs = archc.cost(archc.lower(paper, resolution=size)).macs
        assert abs(macs / 1e6 - macs_m) < 1
        if size == 160:
            # 290,675,200 rounds to 291; the paper prints 290 (truncated). docs/NUMBERS.md does not
            # flag it, so pin the truncation here rather than pretend a rule covers all four.
            assert int(macs / 1e6) == macs_m
        else:
            assert _paper_round_millions(macs) == macs_m


# --- Table 1: structure and every shape -------------------------------------------------


def test_table1_every_node_shape(paper: archc.LoadedSpec) -> None:
    graph = archc.lower(paper, resolution=224)
    expected_ops: list[str] = ["input"]
    expected_shapes: list[tuple[int, ...]] = [(224, 224, 3)]
    for i, (kind, _stride, _filt, _size) in enumerate(TABLE1):
        out = TABLE1[i + 1][3] if i + 1 < len(TABLE1) else OUTPUT_SIZE
        if kind in ("conv", "dw"):  # each followed by BatchNorm and ReLU (Table 1 caption)
            expected_ops += ["conv2d" if kind == "conv" else "depthwise_conv2d", "batchnorm", "activation"]
            expected_shapes += [out] * 3
        else:
            expected_ops.append({"pool": "global_pool", "fc": "dense", "softmax": "softmax"}[kind])
            expected_shapes.append(out)
    assert [n.op for n in graph.nodes] == expected_ops
    assert [_squeeze(n.shape) for n in graph.nodes] == [_squeeze(s) for s in expected_shapes]


def test_table1_rows(paper: archc.LoadedSpec) -> None:
    graph = archc.lower(paper)
    rows = [n for n in graph.nodes if n.op not in ("input", "batchnorm", "activation")]
    assert len(rows) == len(TABLE1) == 30
    for node, (kind, stride, filt, size) in zip(rows, TABLE1, strict=True):
        assert _squeeze(graph[node.inputs[0]].shape) == _squeeze(size), node.name
        if kind == "conv":
            assert isinstance(node, ir.Conv2D)
            assert (*node.kernel, node.in_channels, node.filters) == filt
            assert node.stride == (stride, stride)
        elif kind == "dw":
            assert isinstance(node, ir.DepthwiseConv2D)
            assert (*node.kernel, node.in_channels) == filt
            assert node.multiplier == 1
            assert node.stride == (stride, stride)
        elif kind == "pool":
            assert isinstance(node, ir.GlobalPool)
            assert node.kind == "avg"
            assert graph[node.inputs[0]].shape[:2] == filt  # global pool = 7x7 at 224
        elif kind == "fc":
            assert isinstance(node, ir.Dense)
            assert (node.in_features, node.units) == filt
    # The FC has no BatchNorm or ReLU; the softmax is the output.
    assert graph.output == rows[-1].name
    assert graph.output_shape == (1000,)


def test_table1_padding_is_tf_same(paper: archc.LoadedSpec) -> None:
    # TF SAME, stride 2 on an even input: the extra pixel goes to the bottom/right.
    graph = archc.lower(paper)
    assert graph["conv1"].padding == (0, 1, 0, 1)
    assert graph["conv_dw_2"].padding == (0, 1, 0, 1)
    assert graph["conv_dw_1"].padding == (1, 1, 1, 1)
    assert graph["conv_pw_1"].padding == (0, 0, 0, 0)


# --- Table 2: shares per layer type ------------------------------------------------------


def test_table2_shares(paper: archc.LoadedSpec) -> None:
    report = archc.cost(archc.lower(paper), "paper")
    rows = {r.category: r for r in report.by_category()}
    # (Mult-Adds %, parameters %); the Conv 3x3 MAC share is printed 1.19% in the paper, a
    # misprint for 1.91% (docs/NUMBERS.md: the stem is 10,838,016 of 568,740,352).
    expected = {
        "Conv 1x1": (94.86, 74.59),
        "Conv dw 3x3": (3.06, 1.06),
        "Conv 3x3": (1.91, 0.02),
        "Fully Connected": (0.18, 24.33),
    }
    assert set(rows) == set(expected)
    for cat, (mac_pct, param_pct) in expected.items():
        assert round(rows[cat].mac_share * 100, 2) == mac_pct, cat
        assert round(rows[cat].param_share * 100, 2) == param_pct, cat
    assert sum(r.macs for r in rows.values()) == report.macs
    assert sum(r.params for r in rows.values()) == report.params
    assert rows["Conv 3x3"].macs == 10_838_016


# --- Per-layer values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [
        ("conv1", 864, 10_838_016),
        ("conv_dw_1", 288, 3_612_672),
        ("conv_pw_1", 2_048, 25_690_112),
        ("conv_dw_13", 9_216, 451_584),
        ("conv_pw_13", 1_048_576, 51_380_224),
        ("fc", 1_024_000, 1_024_000),
    ],
)
def test_per_layer(paper: archc.LoadedSpec, name: str, params: int, macs: int) -> None:
    node = archc.cost(archc.lower(paper), "paper").node(name)
    assert (node.params, node.macs) == (params, macs)


def test_paper_convention_counts_only_conv_dw_fc(paper: archc.LoadedSpec) -> None:
    # Independent arithmetic over Table 1: sum of D_K^2 * M * N * D_F^2 (conv), D_K^2 * M * D_F^2
    # (dw) and M * N (FC), where D_F is the output size.
    macs = params = 0
    for i, (kind, _stride, filt, _size) in enumerate(TABLE1):
        out = TABLE1[i + 1][3] if i + 1 < len(TABLE1) else OUTPUT_SIZE
        if kind in ("conv", "dw", "fc"):
            w = math.prod(filt)
            params += w
            macs += w * (out[0] * out[1] if kind != "fc" else 1)
    assert (macs, params) == (PAPER_MACS[1.0][0], PAPER_PARAMS[1.0])
    report = archc.cost(archc.lower(paper), "paper")
    assert (report.macs, report.params) == (macs, params)
    assert report.non_trainable == 0


# --- Table 3: one 14x14x512 layer --------------------------------------------------------

_TABLE3_HEAD = """\
archc: 1
name: table3
input: {size: 14, channels: 3}
defaults: {padding: same}
layers:
  # only makes the 512 (alpha: 384) channels the measured layer reads
  - {op: conv, filters: 512, kernel: 1, name: feed}
"""
TABLE3_FULL = _TABLE3_HEAD + "  - {op: conv, filters: 512, kernel: 3, name: full}\n"
TABLE3_SEPARABLE = (
    _TABLE3_HEAD
    + "  - {op: depthwise_conv, kernel: 3, name: dw}\n"
    + "  - {op: batchnorm}\n"
    + "  - {op: activation}\n"
    + "  - {op: conv, filters: 512, kernel: 1, name: pw}\n"
)


def _layer_cost(text: str, names: tuple[str, ...], **overrides: float) -> tuple[int, int]:
    report = archc.cost(archc.lower(archc.load_text(text, "table3.yaml"), **overrides), "paper")
    return sum(report.node(n).macs for n in names), sum(report.node(n).params for n in names)


def test_table3() -> None:
    # (million Mult-Adds, million params) as printed: full conv 462 / 2.36; separable 52.3 / 0.27;
    # a=0.75: 29.6 / 0.15; rho=0.714 (on top of a=0.75): 15.1 / 0.15.
    macs, params = _layer_cost(TABLE3_FULL, ("full",))
    assert (macs, params) == (3 * 3 * 512 * 512 * 14 * 14, 3 * 3 * 512 * 512)
    assert (round(macs / 1e6), round(params / 1e6, 2)) == (462, 2.36)

    macs, params = _layer_cost(TABLE3_SEPARABLE, ("dw", "pw"))
    assert (macs, params) == (3 * 3 * 512 * 196 + 512 * 512 * 196, 3 * 3 * 512 + 512 * 512)
    assert (round(macs / 1e6, 1), round(params / 1e6, 2)) == (52.3, 0.27)

    macs, params = _layer_cost(TABLE3_SEPARABLE, ("dw", "pw"), width=0.75)
    assert (macs, params) == (3 * 3 * 384 * 196 + 384 * 384 * 196, 3 * 3 * 384 + 384 * 384)
    assert (round(macs / 1e6, 1), round(params / 1e6, 2)) == (29.6, 0.15)

    macs, params = _layer_cost(TABLE3_SEPARABLE, ("dw", "pw"), width=0.75, resolution=0.714)
    # round(14 * 0.714) = 10
    assert (macs, params) == (3 * 3 * 384 * 100 + 384 * 384 * 100, 3 * 3 * 384 + 384 * 384)
    assert (round(macs / 1e6, 1), round(params / 1e6, 2)) == (15.1, 0.15)


# --- Table 4: full-convolution MobileNet --------------------------------------------------


def _full_conv_spec() -> str:
    """MobileNet with every depthwise separable block replaced by a full 3x3 conv."""
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    lines = [
        "archc: 1",
        "name: mobilenet_full_conv",
        "input: {size: 224, channels: 3}",
        "classes: 1000",
        "layers:",
        "  - {op: conv, filters: 32, kernel: 3, stride: 2}",
        "  - {op: batchnorm}",
        "  - {op: activation}",
    ]
    for filters, stride in blocks:
        lines += [
            f"  - {{op: conv, filters: {filters}, kernel: 3, stride: {stride}}}",
            "  - {op: batchnorm}",
            "  - {op: activation}",
        ]
    lines += ["  - {op: global_avg_pool}", "  - {op: dense, units: $classes, name: fc}", "  - {op: softmax}"]
    return "\n".join(lines) + "\n"


def test_table4_full_convolution() -> None:
    report = archc.cost(archc.lower(archc.load_text(_full_conv_spec(), "full_conv.yaml")), "paper")
    fc = report.node("fc")
    # Independent arithmetic: channels and sizes of Table 1, 3x3 kernels throughout.
    chans = [3, 32, 64, 128, 128, 256, 256, *[512] * 6, 1024, 1024]
    sizes = [112, 112, 56, 56, 28, 28, *[14] * 6, 7, 7]
    expected = sum(9 * cin * cout * s * s for cin, cout, s in zip(chans[:-1], chans[1:], sizes, strict=True))
    assert report.macs - fc.macs == expected
    assert round((report.macs - fc.macs) / 1e6) == 4866
    assert round(report.macs / 1e6, 1) == 4867.3
    assert report.params == 29_281_120
    assert round(report.params / 1e6, 1) == 29.3


# --- Table 5: shallow MobileNet ------------------------------------------------------------


def test_table5_shallow() -> None:
    text = PAPER_SPEC.read_text()
    shallow, n = re.subn(r"(?m)^.*repeat: 5.*\n", "", text)
    assert n == 1
    report = archc.cost(archc.lower(archc.load_text(shallow, "shallow.yaml")), "paper")
    assert report.macs == 307_323_392
    assert report.params == 2_875_328


# --- keras.applications.MobileNet -----------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_keras_param_counts(keras: archc.LoadedSpec, width: float) -> None:
    total, trainable, non_trainable = KERAS_PARAMS[width]
    for size in (224, 192, 160, 128, 200, 96, 32):  # "the same at every input size"
        report = archc.cost(archc.lower(keras, width=width, resolution=size), "keras")
        assert (report.params, report.trainable, report.non_trainable) == (total, trainable, non_trainable), size


def test_keras_include_top_false(keras: archc.LoadedSpec) -> None:
    text = KERAS_SPEC.read_text()
    head = text.index("  - {op: global_avg_pool")
    tail = text[head:]
    assert "conv_preds" in tail and "conv_pw_13" not in tail
    graph = archc.lower(archc.load_text(text[:head], "no_top.yaml"))
    assert graph.output == "conv_pw_13_relu"
    assert archc.cost(graph, "keras").params == 3_228_864


def test_keras_layer_names(keras: archc.LoadedSpec) -> None:
    names = [n.name for n in archc.lower(keras).nodes]
    assert names[:4] == ["input", "conv1", "conv1_bn", "conv1_relu"]
    for i in (2, 4, 6, 12):
        assert f"conv_pad_{i}" in names
        assert archc.lower(keras)[f"conv_dw_{i}"].padding == (0, 0, 0, 0)
    for i in range(1, 14):
        for kind in ("dw", "pw"):
            for suffix in ("", "_bn", "_relu"):
                assert f"conv_{kind}_{i}{suffix}" in names
    assert names[-5:] == ["global_average_pooling2d", "dropout", "conv_preds", "reshape_2", "predictions"]


@pytest.mark.parametrize("width", WIDTHS)
def test_keras_width_truncates(keras: archc.LoadedSpec, width: float) -> None:
    # Keras' MobileNet: int(filters * alpha), no rounding to a multiple of 8.
    graph = archc.lower(keras, width=width)
    assert graph["conv1"].filters == int(32 * width)
    for i, filters in enumerate(PW_FILTERS, start=1):
        assert graph[f"conv_pw_{i}"].filters == int(filters * width)
    assert graph["conv_preds"].filters == 1000  # the classifier is not scaled


# --- Other counting conventions ------------------------------------------------------------


def test_torch_convention(paper: archc.LoadedSpec, keras: archc.LoadedSpec) -> None:
    # timm's mobilenetv1_100: weights + BN gamma/beta + FC bias.
    assert archc.cost(archc.lower(paper), "torch").params == 4_231_976
    assert archc.cost(archc.lower(keras), "torch").params == 4_231_976
    # Independent: paper weights + 2 per BN channel + 1000 biases.
    bn_channels = sum(filt[-1] for kind, _s, filt, _i in TABLE1 if kind in ("conv", "dw"))
    assert PAPER_PARAMS[1.0] + 2 * bn_channels + 1000 == 4_231_976


def test_fvcore_convention(paper: archc.LoadedSpec, keras: archc.LoadedSpec) -> None:
    # Independent: paper MACs + 2 per BatchNorm output element (eval: scale and shift) + one
    # per element the global pool reads (7x7x1024).
    bn_elements = 0
    for i, (kind, _stride, _filt, _size) in enumerate(TABLE1):
        out = TABLE1[i + 1][3] if i + 1 < len(TABLE1) else OUTPUT_SIZE
        if kind in ("conv", "dw"):
            bn_elements += math.prod(out)
    assert PAPER_MACS[1.0][0] + 2 * bn_elements + 7 * 7 * 1024 == 578_875_904
    assert archc.cost(archc.lower(paper), "fvcore").macs == 578_875_904
    assert archc.cost(archc.lower(keras), "fvcore").macs == 578_875_904


def test_mac_conventions_agree_on_macs(paper: archc.LoadedSpec) -> None:
    graph = archc.lower(paper)
    for convention in ("paper", "torch", "keras"):
        assert archc.cost(graph, convention).macs == PAPER_MACS[1.0][0]
    assert set(archc.CONVENTIONS) >= {"paper", "torch", "keras", "fvcore"}


# --- Odd input sizes ------------------------------------------------------------------------


def _spatial_sequence(graph: archc.Graph) -> list[int]:
    """Distinct feature-map sizes along the conv/dw chain, in order."""
    seq: list[int] = []
    for node in graph.nodes:
        if node.op in ("conv2d", "depthwise_conv2d") and len(node.shape) == 3:
            h, w, _ = node.shape
            assert h == w
            if not seq or seq[-1] != h:
                seq.append(h)
    return seq


def test_odd_size_keras_floor(keras: archc.LoadedSpec) -> None:
    # (0,1) zero pad then "valid": floor(n/2).
    assert _spatial_sequence(archc.lower(keras, resolution=200)) == [100, 50, 25, 12, 6, 1]  # 1: conv_preds


def test_odd_size_tf_same_ceil(paper: archc.LoadedSpec) -> None:
    # TF "SAME": ceil(n/2).
    assert _spatial_sequence(archc.lower(paper, resolution=200)) == [100, 50, 25, 13, 7]


# --- Width rounding ---------------------------------------------------------------------------


def _make_divisible_8(v: float) -> int:
    """docs/NUMBERS.md: max(8, int(v + 4) // 8 * 8), plus 8 if that is below 0.9 * v."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def test_make_divisible_formula() -> None:
    values = [k / 4 for k in range(1, 8000)] + [f * a for f in (16, 24, 32, 40, 96, 1280) for a in (0.35, 1.3, 1.4)]
    for v in values:
        assert make_divisible(v, 8) == _make_divisible_8(v), v


@pytest.mark.parametrize("width", (0.35, 0.5, 0.75, 1.0, 1.3, 1.4))
def test_make_divisible_spec(width: float) -> None:
    text = PAPER_SPEC.read_text()
    text, n = re.subn(r"rounding: \{mode: truncate\}", "rounding: {mode: make_divisible, divisor: 8}", text)
    assert n == 1
    graph = archc.lower(archc.load_text(text, "md.yaml"), width=width)
    assert graph["conv1"].filters == _make_divisible_8(32 * width)
    for i, filters in enumerate(PW_FILTERS, start=1):
        assert graph[f"conv_pw_{i}"].filters == _make_divisible_8(filters * width), i
        assert graph[f"conv_dw_{i}"].in_channels == graph[graph[f"conv_dw_{i}"].inputs[0]].shape[-1]
    assert graph["fc"].units == 1000


def test_make_divisible_at_035_values() -> None:
    # Hand-computed: 32 * 0.35 = 11.2 -> 8 is below 0.9 * 11.2 -> 16; 64 * 0.35 = 22.4 -> 24;
    # 1024 * 0.35 = 358.4 -> 360.
    assert [_make_divisible_8(v) for v in (11.2, 22.4, 358.4)] == [16, 24, 360]
    assert [make_divisible(v, 8) for v in (11.2, 22.4, 358.4)] == [16, 24, 360]


# --- The shipped specs are valid ----------------------------------------------------------------


@pytest.mark.parametrize("path", [PAPER_SPEC, KERAS_SPEC], ids=lambda p: p.name)
def test_shipped_specs_lower_at_every_grid_point(path: Path) -> None:
    loaded = archc.load(path)
    for width in WIDTHS:
        for size in (*RESOLUTIONS, 200):
            graph = archc.lower(loaded, width=width, resolution=size)
            assert graph.output_shape == (1000,)
