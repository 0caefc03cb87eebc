"""Golden tests: each invalid model in tests/golden gives exactly the reviewed diagnostics."""
from pathlib import Path

import pytest

import mdl
from mdl.cli import main

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.mdl"))


def test_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path):
    expected = path.with_suffix(".err").read_text(encoding="utf-8")
    # The source's bytes as they are (no newline translation): crlf_error.mdl feeds "\r\n".
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_text(path.read_bytes().decode("utf-8"), path.name, warn=False)
    assert str(info.value) + "\n" == expected
    first = info.value.diagnostics[0]
    assert (info.value.line, info.value.col) == (first.line, first.col) != (0, 0)


@pytest.mark.parametrize("name", ["unknown_activation", "several_errors", "crlf_error"])
def test_mdlc_check_prints_the_same(name, capsys, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    assert main(["check", f"{name}.mdl"]) == 1
    err = capsys.readouterr().err
    assert err == (GOLDEN / f"{name}.err").read_text(encoding="utf-8")


def test_several_errors_all_reported():
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_file(GOLDEN / "several_errors.mdl", warn=False)
    msgs = [d.message for d in info.value.diagnostics]
    assert len(msgs) == 3
    assert [d.line for d in info.value.diagnostics] == [3, 4, 5]


def test_crlf_case_really_holds_crlf_bytes():
    raw = (GOLDEN / "crlf_error.mdl").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") >= 3  # not normalised by a checkout


def test_carriage_returns_never_reach_the_snippet():
    """Windows line ends: positions count lines the same way, and the printed source line
    carries no "\r" (a terminal would return the cursor and hide the line)."""
    text = "\r\n".join(["/xavier,zero/", "(input, 4)", "(a, 4, <sigmod>)",
                         "(output, 2, <sigmoid>, <mse>)", ""])
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_text(text, "m.mdl", warn=False)
    assert "\r" not in str(info.value)
    assert str(info.value).splitlines()[:3] == [
        "m.mdl:3:9: error: unknown activation `sigmod`", " 3 | (a, 4, <sigmod>)", "   |         ^^^^^^"]
