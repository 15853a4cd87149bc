"""Ergonomics: --version, compile() from a path / text / dict, HxW resolutions, progress and
-q, ParityReport's repr and table, and --weights with archc's own torch .pt."""

from __future__ import annotations

import io
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import PAPER_MACS, SPEC, run

import archcompiler
from archcompiler.language.source import SpecError
from archcompiler.parity.report import NodeDiff, ParityReport
from archcompiler.tools import cli

TEXT = Path(SPEC).read_text(encoding="utf-8")
BROKEN = """\
name: t
input: {size: 32}
layers:
  - {op: conv, filters: 8, kernel: 3, strid: 2}
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        return run(capsys, *argv)
    except SystemExit as exc:
        out, err = capsys.readouterr()
        return int(exc.code or 0), out, err


# -- --version ------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out == f"archc {version('archc')}\n"
    assert archcompiler.__version__ == version("archc")


# -- compile(): path, text, dict ------------------------------------------------------------


def test_compile_path_text_and_dict_agree() -> None:
    from archcompiler.language.source import parse_text

    data = parse_text(TEXT).data
    for spec in (SPEC, Path(SPEC), TEXT, data):
        assert archcompiler.compile(spec, width=0.5, resolution=160).cost().macs == PAPER_MACS[(0.5, 160)]
    assert archcompiler.compile(TEXT).loaded.file == "<spec>"
    assert archcompiler.compile(data).loaded.file == "<dict>"
    assert archcompiler.compile(SPEC).loaded.file == SPEC


def test_dict_errors_are_located_by_spec_path() -> None:
    bad = {"name": "t", "input": {"size": 32}, "layers": [{"op": "conv", "filters": 8, "kernel": 3, "strid": 2}]}
    with pytest.raises(SpecError) as exc:
        archcompiler.compile(bad)
    assert str(exc.value) == "<dict>: layers[0].strid: unknown key 'strid' (did you mean 'stride'?)"
    with pytest.raises(SpecError, match=r"^<dict>: layers\[0\]: expected a YAML value .* got object$"):
        archcompiler.compile({**bad, "layers": [object()]})
    with pytest.raises(SpecError, match=r"^<dict>: input: mapping keys must be strings"):
        archcompiler.compile({**bad, "input": {1: 2}})


def test_dict_is_copied_and_tuples_are_lists() -> None:
    spec = {"name": "t", "input": {"size": (8, 6)}, "layers": ({"op": "conv", "filters": 2, "kernel": 1},)}
    net = archcompiler.compile(spec)
    assert net.graph.input_shape == (8, 6, 3) and spec["input"]["size"] == (8, 6)


def test_text_errors_are_located_at_spec() -> None:
    with pytest.raises(SpecError) as exc:
        archcompiler.compile(BROKEN)
    assert str(exc.value) == "<spec>:4:39: layers[0].strid: unknown key 'strid' (did you mean 'stride'?)"


@pytest.mark.parametrize(
    ("spec", "is_text"),
    [
        ("specs/mobilenet.yaml", False),
        ("archc: 1\nname: x", True),
        ("{name: x, input: {size: 8}, layers: []}", True),
        ("archc: 1", True),
        ("my{weird}.yaml", False),
        ("name: x\n", True),
    ],
)
def test_path_or_text(spec: str, is_text: bool) -> None:
    from archcompiler.api import is_spec_text

    assert is_spec_text(spec) is is_text


def test_a_path_object_is_always_a_path(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        archcompiler.compile(tmp_path / "archc: 1")


# -- HxW resolutions ------------------------------------------------------------------------

# 224x160 halves exactly to 7x5: the conv/dw MACs scale by 160/224, the FC (1,024,000) stays.
MACS_224x160 = (PAPER_MACS[(1.0, 224)] - 1_024_000) * 5 // 7 + 1_024_000


def test_non_square_resolution_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "check", SPEC, "--resolution", "224x160")
    assert code == 0 and "input 224x160x3" in out and f"{MACS_224x160:,} MACs" in out
    code, out, _ = _run(capsys, "summary", SPEC, "--resolution", "224X160", "--format", "json")
    assert code == 0 and '"resolution": [\n    224,\n    160\n  ]' in out
    code, out, _ = _run(capsys, "sweep", SPEC, "--width", "1", "--resolution", "224x160,192", "--format", "csv")
    assert out.splitlines()[1:] == [f"1,224x160,{MACS_224x160},4209088", f"1,192,{PAPER_MACS[(1.0, 192)]},4209088"]


@pytest.mark.parametrize("value", ["224x", "x160", "224x160x3", "0x160", "224x-1", "22.4x160"])
def test_bad_non_square_resolution(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, _, err = _run(capsys, "check", SPEC, f"--resolution={value}")
    assert code == 2 and err.count("\n") == 1 and "resolution" in err and "Traceback" not in err


# -- progress and -q ------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_not_with_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.make_parser()
    args = parser.parse_args(["build", SPEC, "--backend", "torch"])
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli._progress(args) is None
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    say = cli._progress(args)
    assert say is not None
    say("building")
    assert tty.getvalue() == "archc: building ...\n"
    quiet = parser.parse_args(["parity", SPEC, "-q"])
    assert cli._progress(quiet) is None


# -- ParityReport ---------------------------------------------------------------------------


def _report(fail_at: str | None) -> ParityReport:
    g = archcompiler.compile(SPEC, width=0.25, resolution=128).graph
    diffs = tuple(
        NodeDiff(
            n.name, n.op, 0.5 if n.name == "conv_pw_7" else 1e-7, 1e-6, n.name != fail_at,
            1e-7, 1e-6 if n.name != fail_at else 1e-8, "keras", pair="keras vs torch",
        )
        for n in g.nodes
    )  # fmt: skip
    return ParityReport(g, ("torch", "keras"), 1e-5, 1e-5, diffs, g.logits, oracle="torch in float64")


def test_parity_report_repr_is_short() -> None:
    good, bad = _report(None), _report("conv_dw_3")
    assert repr(good) == "<ParityReport mobilenet_v1: torch vs keras, PASS, worst 'conv_pw_7' max abs 0.5>"
    assert (
        repr(bad) == "<ParityReport mobilenet_v1: torch vs keras, FAIL at 'conv_dw_3', worst 'conv_pw_7' max abs 0.5>"
    )
    assert good.ok and not bad.ok


def test_parity_report_table() -> None:
    table = _report("conv_dw_3").table()
    assert table.splitlines()[0].startswith("parity torch vs keras: mobilenet_v1, width 0.25, input 128x128x3")
    assert "FAIL: first divergence at node 'conv_dw_3'" in table
    assert len([ln for ln in table.splitlines() if re.match(r"conv_pw_\d+_bn ", ln)]) == 13


# -- --weights archc's own .pt --------------------------------------------------------------


@pytest.mark.torch
def test_pt_round_trip_and_progress(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = archcompiler.compile(SPEC, width=0.25, resolution=128)
    said: list[str] = []
    built = net.build_to("torch", tmp_path / "a", progress=said.append)
    assert [s.split()[0] for s in said] == ["building", "writing"]
    pt = tmp_path / "a" / "mobilenet_v1.pt"
    assert pt in built.files
    fresh = net.build("torch", weights=pt)
    want = torch.load(pt, weights_only=True)
    got = fresh.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.torch
def test_pt_refuses_pickled_objects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": _Boom()}, evil)
    code, _, err = _run(
        capsys, "build", SPEC, "--backend", "torch", "--width", "0.25", "--resolution", "128",
        "--weights", str(evil), "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "not a state_dict of tensors" in err and "pickled" in err
    assert not _Boom.ran and not (tmp_path / "out").exists()
    listed = tmp_path / "list.pt"
    torch.save({"conv1.weight": [1, 2]}, listed)
    code, _, err = _run(
        capsys, "build", SPEC, "--backend", "torch", "--width", "0.25", "--resolution", "128",
        "--weights", str(listed), "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "'conv1.weight' is a list, not a tensor" in err


class _Boom:
    ran = False

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_Boom._explode, ())

    @staticmethod
    def _explode() -> None:
        _Boom.ran = True
