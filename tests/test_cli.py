"""`mdlc` subcommands and exit codes (in-process through `main`, once as a real console script)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mdl.cli import main

MODELS = Path(__file__).resolve().parents[1] / "models"
GOOD = str(MODELS / "lstm-model.mdl")
BAD = str(Path(__file__).parent / "golden" / "unknown_activation.mdl")


def test_check_ok_and_errors(capsys):
    assert main(["check", GOOD, str(MODELS / "big-model.mdl")]) == 0
    assert main(["check", GOOD, BAD]) == 1
    err = capsys.readouterr().err
    assert "unknown_activation.mdl:3:9: error: unknown activation `sigmod`" in err


def test_usage_errors_exit_2(capsys):
    assert main(["check", "/nonexistent/model.mdl"]) == 2
    assert "cannot read /nonexistent/model.mdl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["check"])
    assert e.value.code == 2


def test_check_reads_stdin(monkeypatch, capsys):
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("/xavier,zero/ (x,1) (y,1,<relu>)"))
    assert main(["check", "-"]) == 1
    assert capsys.readouterr().err.startswith("<stdin>:1:26: error: the model has no output")


def test_compile_writes_ir(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["compile", GOOD, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "neuromorph-ir" and doc["recurrent"] is True
    assert main(["compile", GOOD]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_compile_emit_stage(capsys):
    assert main(["compile", GOOD, "--emit", "delays"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["stage"] == "delays" and "order" in view


def test_dot(tmp_path):
    out = tmp_path / "m.dot"
    assert main(["dot", GOOD, "-o", str(out)]) == 0
    assert "style=dashed" in out.read_text()


def test_warnings_printed_but_exit_0(capsys, tmp_path):
    f = tmp_path / "warns.mdl"   # an ignored parameter, as the original small-model had
    f.write_text("/xavier, zero/ (x, 4) (a, 4, <relu, 5.9>) (y, 4, <sigmoid>, <mse>)")
    assert main(["check", str(f)]) == 0
    assert "warning: `relu` takes no parameter; `5.9` is ignored" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("mdlc") is None, reason="console script not on PATH")
def test_console_script():
    r = subprocess.run(["mdlc", "check", BAD], capture_output=True, text=True)
    assert r.returncode == 1 and "help: did you mean `sigmoid`?" in r.stderr


@pytest.mark.parametrize("model", sorted(MODELS.glob("*.mdl")), ids=lambda p: p.stem)
def test_every_example_model_checks_compiles_and_draws(model, capsys):
    assert main(["check", str(model)]) == 0
    for stage in ("parse", "resolve", "structure", "widths", "delays", "ir"):
        assert main(["compile", str(model), "--emit", stage]) == 0
    assert main(["dot", str(model)]) == 0
    assert "digraph" in capsys.readouterr().out
