"""The `archc` command line: outputs, formats, exit statuses and one-line errors.

Commands run in-process through ``cli.main`` (fast), plus a few real subprocesses to prove
the console script's exit statuses and the absence of tracebacks.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import KERAS_SPEC, PAPER_MACS, PAPER_PARAMS, ROOT, SPEC, run  # noqa: F401

from archcompiler.analysis.cost import parse_budget
from archcompiler.tools.cli import main


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", SPEC)
    assert code == 0 and err == ""
    assert "568,740,352 MACs" in out and "4,209,088 params" in out


def test_summary_table_has_per_layer_rows_totals_and_table2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", SPEC)
    assert code == 0
    stem = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert "112x112x32" in stem and "864" in stem and "10,838,016" in stem
    assert "568,740,352 MACs" in out
    # Table 2 of the paper (Conv 3x3 share corrected: the stem is 10,838,016 MACs).
    for row in (
        ("Conv 1x1", "94.86%", "74.59%"),
        ("Conv dw 3x3", "3.06%", "1.06%"),
        ("Conv 3x3", "1.91%", "0.02%"),
        ("Fully Connected", "0.18%", "24.33%"),
    ):
        line = next(ln for ln in out.splitlines() if ln.startswith(row[0] + " "))
        assert row[1] in line and row[2] in line, line


def test_summary_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", SPEC, "--format", "json", "--width", "0.5", "--resolution", "160")
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["macs"] == PAPER_MACS[(0.5, 160)]
    assert doc["totals"]["params"] == PAPER_PARAMS[0.5]
    assert doc["input_shape"] == [160, 160, 3]
    assert sum(n["macs"] for n in doc["nodes"]) == doc["totals"]["macs"]


def test_summary_csv_and_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", SPEC, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["macs"]) for r in rows) == PAPER_MACS[(1.0, 224)]
    assert next(r for r in rows if r["name"] == "fc")["params"] == "1024000"
    code, out, _ = run(capsys, "summary", SPEC, "--format", "markdown")
    assert code == 0
    assert "| conv1 | conv2d | 112x112x32 | 864 | 10,838,016 | 1.91% |" in out


@pytest.mark.parametrize(
    ("convention", "params", "macs"),
    [
        ("paper", 4_209_088, 568_740_352),
        ("torch", 4_231_976, 568_740_352),  # timm mobilenetv1_100 parameter count
        ("fvcore", 4_231_976, 578_875_904),  # fvcore's FlopCountAnalysis
    ],
)
def test_conventions(capsys: pytest.CaptureFixture[str], convention: str, params: int, macs: int) -> None:
    code, out, _ = run(capsys, "summary", SPEC, "--format", "json", "--convention", convention)
    assert code == 0
    totals = json.loads(out)["totals"]
    assert (totals["params"], totals["macs"]) == (params, macs)


def test_keras_convention_on_keras_spec(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", KERAS_SPEC, "--format", "json", "--convention", "keras")
    assert code == 0
    t = json.loads(out)["totals"]
    assert (t["params"], t["trainable"], t["non_trainable"]) == (4_253_864, 4_231_976, 21_888)


def test_sweep_reproduces_tables_6_and_7(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "sweep", SPEC, "--width", "1,0.75,0.5,0.25", "--resolution", "224,192,160,128", "--format", "json"
    )
    assert code == 0
    grid = json.loads(out)["grid"]
    assert len(grid) == 16
    for cell in grid:
        assert cell["macs"] == PAPER_MACS[(cell["width"], cell["resolution"][0])]
        assert cell["params"] == PAPER_PARAMS[cell["width"]]
    code, out, _ = run(capsys, "sweep", SPEC, "--width", "1,0.75,0.5,0.25", "--resolution", "224,192,160,128")
    assert code == 0
    assert "568,740,352" in out and "13,570,048" in out


def test_resolution_as_multiplier_or_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    for res in ("160", "0.714", "5/7"):
        code, out, _ = run(capsys, "summary", SPEC, "--format", "json", "--resolution", res)
        assert code == 0
        assert json.loads(out)["totals"]["macs"] == PAPER_MACS[(1.0, 160)], res
    code, out, _ = run(capsys, "summary", SPEC, "--format", "json", "--width", "3/4")
    assert json.loads(out)["totals"]["macs"] == PAPER_MACS[(0.75, 224)]


def test_budgets(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", SPEC, "--max-macs", "500M")
    assert code == 2
    assert err.count("\n") == 1 and "--max-macs" in err and "568,740,352" in err and "500,000,000" in err
    code, _, err = run(capsys, "summary", SPEC, "--max-params", "4.2M")
    assert code == 2 and "--max-params" in err and "4,209,088" in err
    code, _, _ = run(capsys, "check", SPEC, "--max-macs", "600M", "--max-params", "4.3M")
    assert code == 0
    code, _, _ = run(capsys, "check", SPEC, "--width", "0.5", "--max-macs", "150M")
    assert code == 0


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1", 1),
        ("1.5", 1),  # a count is whole: at most 1.5 is at most 1
        ("+2k", 2_000),
        ("250k", 250_000),
        ("8.2M", 8_200_000),  # float arithmetic gives 8199999.999999999
        ("1,000,000", 1_000_000),
        ("1_000", 1_000),
        ("1e9", 1_000_000_000),
        ("1.5G", 1_500_000_000),
        ("1e18", 10**18),
    ],
)
def test_budget_values(text: str, count: int) -> None:
    assert parse_budget(text) == count


@pytest.mark.parametrize("option", ["--max-macs", "--max-params"])
@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.5",  # was a budget of 0: "nothing fits", exit 1
        "1e-5",
        "0.999",
        "-1",
        "nan",
        "inf",
        "1e19",
        "1,5M",  # not 15M: a separator groups three digits
        "1,00",
        "\u0661\u0665\u0660M",  # Arabic-Indic 150M: float() reads it
        "\uff11\uff15\uff10M",  # fullwidth digits
        "lots",
    ],
)
@pytest.mark.parametrize("command", ["check", "fit", "sweep"])
def test_bad_budget_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, option: str, text: str
) -> None:
    extra = ["--plot", str(tmp_path / "p.svg")] if command == "sweep" else []
    with pytest.raises(SystemExit) as exc:
        main([command, SPEC, *extra, option, text])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"argument {option}: expected a" in err and err.count("\n") == 1, err
    assert not (tmp_path / "p.svg").exists()


ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")


@pytest.mark.parametrize(
    ("command", "option", "ascii_value"),
    [
        ("check", "--width", "0.5"),
        ("check", "--resolution", "128"),
        ("check", "--resolution", "5/7"),
        ("sweep", "--width", "1,0.5"),
        ("sweep", "--resolution", "224x160"),
        ("check", "--classes", "10"),
        ("check", "--dropout", "0.5"),
        ("check", "--max-macs", "600M"),
        ("check", "--max-params", "5M"),
        ("check", "--out-indices", "1,2"),  # was int(): read '\u0661' as 1
        ("parity", "--atol", "0.1"),
        ("parity", "--rtol", "0.1"),
        ("parity", "--seed", "1"),
        ("parity", "--batch", "2"),
        ("parity", "--train-steps", "1"),
        ("parity", "--lr", "0.1"),
    ],
)
def test_numbers_on_the_command_line_are_ascii(
    capsys: pytest.CaptureFixture[str], command: str, option: str, ascii_value: str
) -> None:
    """Every option that reads a number refuses non-ASCII digits, as --resolution always did."""
    with pytest.raises(SystemExit) as exc:
        main([command, SPEC, option, ascii_value.translate(ARABIC_INDIC)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}: expected" in err and err.count("\n") == 1, err


def test_spec_numbers_are_ascii(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A YAML scalar of non-ASCII digits is a string, never a number (source._INT/_FLOAT use
    [0-9]), so a number field refuses it with its location."""
    spec = tmp_path / "digits.yaml"
    spec.write_text(
        "archc: 1\nname: digits\ninput: {size: 8, channels: 3}\n"
        "layers:\n  - {op: conv, filters: \u0668, kernel: 3, name: c}\n"
    )
    code, _, err = run(capsys, "check", str(spec))
    assert code == 2 and err.startswith(f"{spec}:5:") and "layers[0].filters" in err and err.count("\n") == 1, err


LONG = """\
archc: 1
name: long
input: {size: 8, channels: 3}
layers:
  - {op: conv, filters: 4, kernel: 3, name: conv1}
  - {op: activation, repeat: 4000}
  - {op: global_avg_pool, name: pool}
"""


@pytest.mark.parametrize("argv", [["diagram", "long.yaml"], ["summary", "long.yaml", "--format", "json"], ["schema"]])
def test_closed_stdout_ends_the_command_quietly(tmp_path: Path, argv: list[str]) -> None:
    """``archc ... | head -1``: the reader leaves after one line, while archc has far more
    to write than a pipe holds (diagram 0.3 MB, summary 1.2 MB, schema 0.15 MB); archc ends
    with the shell's SIGPIPE status and says nothing (it was 'internal error: BrokenPipeError')."""
    (tmp_path / "long.yaml").write_text(LONG)
    archc = Path(sys.executable).parent / "archc"
    proc = subprocess.Popen([str(archc), *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert first and err == b""


def test_closed_stdout_after_writing_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is written; the 'wrote' line meets a closed stdout: exit 141, no message (it
    was reported as an output error, '-o ...: Broken pipe', exit 2)."""

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    page = tmp_path / "summary.html"
    assert main(["summary", SPEC, "--format", "html", "-o", str(page)]) == 141
    assert capsys.readouterr().err == ""
    assert "568,740,352" in page.read_text()


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["type"] == "object"
    assert {"name", "input", "layers"} <= set(schema["required"])
    assert "conv" in json.dumps(schema) and "depthwise_conv" in json.dumps(schema)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "specs/does_not_exist.yaml"], "does_not_exist.yaml: no such file"),
        # Option values are blamed on the option (not on the spec's width: line), ASCII only,
        # bounded (Fraction("1e2000000000") hung, "1e999" overflowed into a traceback).
        (["check", SPEC, "--width", "0"], "argument --width: expected a multiplier in (0, 4]"),
        (["check", SPEC, "--width", "9"], "argument --width: expected a multiplier in (0, 4]"),
        (["check", SPEC, "--width", "1e999"], "argument --width: expected a multiplier in (0, 4]"),
        (["check", SPEC, "--width", "1e2000000000"], "argument --width: expected a number or a fraction"),
        (["check", SPEC, "--width", "1/0"], "argument --width: expected a multiplier"),
        (["check", SPEC, "--resolution", "0.0"], "argument --resolution: expected a multiplier"),
        (["check", SPEC, "--resolution", "99999"], "argument --resolution: expected sizes from 1 to 8192"),
        (["check", SPEC, "--resolution", "\u0662\u0662\u0664"], "argument --resolution: expected a number"),
        (["parity", SPEC, "--seed", "-1"], "argument --seed: expected a whole number"),
        (["parity", SPEC, "--atol", "nan"], "argument --atol: expected a finite number >= 0"),
        (["parity", SPEC, "--rtol", "-1"], "argument --rtol: expected a finite number >= 0"),
        (["build", SPEC, "--backend", "tensorflw"], "unknown backend 'tensorflw'"),
        (["parity", SPEC, "--backends", "torch,nope"], "unknown backend 'nope'"),
        (["parity", SPEC, "--backends", "torch"], "--backends: parity needs at least two backends"),
        (["parity", SPEC, "--backends", "torch,torch"], "--backends: parity needs at least two backends"),
        (["check", SPEC, "--max-macs", "lots"], "expected a positive count"),
        (["check", SPEC, "--resolution", "big"], "expected a number or a fraction"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    if argv[-2].startswith("--") and argv[-2] not in ("--backend", "--backends"):  # argparse exits
        with pytest.raises(SystemExit) as exc:
            main(argv)
        code = exc.value.code
    else:
        code = main(argv)
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_unknown_backend_lists_available(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "build", SPEC, "--backend", "tourch")
    assert code == 2
    assert "did you mean 'torch'" in err and "keras" in err and "torch" in err


def test_console_script_subprocess_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput: {size: 32}\nlayers:\n  - {op: conv, filters: 8, kernel: 3, strid: 2}\n")
    archc = Path(sys.executable).parent / "archc"
    proc = subprocess.run([str(archc), "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{bad}:4:39: layers[0].strid: unknown key 'strid' (did you mean 'stride'?)"
    assert proc.stdout == ""
    proc = subprocess.run([str(archc), "check", SPEC], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_help_lists_the_drop_in_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for command in ("fit", "diagram", "sweep", "summary"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command
    assert "--version" in out


def test_in_process_main_freezes_nothing() -> None:
    """gc.freeze is for the archc program alone: a caller's objects are never pinned."""
    import gc

    before = gc.get_freeze_count()
    assert main(["check", SPEC]) == 0
    assert gc.get_freeze_count() == before


def test_console_script_freezes_its_imports() -> None:
    """As the program (no argv), main freezes what its imports made (cli._freeze_imports)."""
    probe = (
        "import gc, sys; from archcompiler.tools.cli import main; sys.argv = ['archc', 'check', sys.argv[1]]; "
        "code = main(); print(code, gc.get_freeze_count() > 0)"
    )
    proc = subprocess.run([sys.executable, "-c", probe, SPEC], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["0", "True"]
