"""Sweeps (neuromorph.sweep, `mdlc sweep`): names substituted into the model, grids, reruns,
failures, a killed worker, an Optuna search.

The Dask tests run `mdlc sweep` in a child process with a timeout (a local cluster of two
one-thread workers) and skip when `distributed` is not installed; the naming tests and the
serial sweep (workers=0) need no Dask. Trials train readme-model on its built-in task.
"""
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import neuromorph as nm
S = importlib.import_module("neuromorph.sweep")   # the module (nm.sweep is its function)
HAS_DASK = all(importlib.util.find_spec(m) for m in ("dask", "distributed"))
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_dask = pytest.mark.skipif(not HAS_DASK, reason="needs dask[distributed] "
                                "(pip install 'neuromorph[sweep]')")

MODEL = """/xavier, zero/
(x, 8)
(a, 16, <tanh>)
[memory, energy, steps 2, dt 0.4,
    (visible, 16, <tanh>)
    (label, 4, <softmax>)
    (memories, synapse hidden, visible label, units 8, <relu>)]
(y, 2, <softmax>, <cross_entropy>)
"""
GRID = """/xavier, zero/
(x, 8)
(a, 32, <tanh>)
(grid, attn2d, 2x2, dim 8, heads 2, window 1, depth 1, mlp 2, <gelu>)
(y, 2, <softmax>, <cross_entropy>)
"""


def mdlc_sweep(*args, cwd, timeout=240):
    """`mdlc sweep ARGS` in a child process."""
    return subprocess.run([sys.executable, "-m", "mdl.cli", "sweep", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def rows(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------ names and values
def test_a_name_substitutes_options_widths_and_shapes_in_place():
    text = S.variant_text(GRID, {"dim": 16, "grid.heads": 4, "a": 64, "grid.shape": "4x4"})
    assert "(a, 64, <tanh>)" in text
    assert "(grid, attn2d, 4x4, dim 16, heads 4, window 1," in text
    assert text.count("\n") == GRID.count("\n")         # lines kept for the diagnostics
    assert S.variant_text(GRID, {"a.width": 7}).count("(a, 7, ") == 1
    assert {"dim", "heads", "grid.dim", "a.width", "grid.shape", "y.width"} <= \
        set(S.model_names(GRID))
    # a synapse's references are not an option; the block's and the synapse's options are
    names = S.model_names(MODEL)
    assert {"units", "memories.units", "memory.steps", "memory.dt", "visible.width"} <= set(names)
    assert not any(n.startswith("memories.visible") for n in names)
    text = S.variant_text(MODEL, {"units": 32, "memory.steps": 4})
    assert "units 32" in text and "steps 4" in text and "visible label" in text


def test_unknown_names_and_values_that_are_not_one_token_are_refused():
    with pytest.raises(S.SweepError, match=r"`dims` is neither a training setting.*dim"):
        S.variant_text(GRID, {"dims": 4})
    with pytest.raises(S.SweepError, match="not one MDL token"):
        S.variant_text(GRID, {"dim": "4, heads 2"})
    with pytest.raises(nm.NeuromorphError):
        nm.sweep(MODEL, {"lr": [0.1], "nope": [1]}, workers=0, out="/nonexistent/never")
    with pytest.raises(S.SweepError, match="needs search='optuna'"):
        S.grid({"lr": ["0.001:0.1:log"]}, [0])


def test_seeds_values_and_the_grid():
    assert S.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert S.parse_seeds("3,0-1,3") == [3, 0, 1]
    with pytest.raises(S.SweepError):
        S.parse_seeds("4-2")
    assert S.parse_values("0.01,1,adam,8x8") == [0.01, 1, "adam", "8x8"]
    g = S.grid({"lr": [0.01, 0.1], "dim": [4, 8]}, [0, 1])
    assert len(g) == 8 and g[0] == {"lr": 0.01, "dim": 4, "seed": 0}
    assert len({S.trial_key("m", "d", c, {}) for c in g}) == 8


def test_a_serial_sweep_trains_saves_and_a_rerun_skips(tmp_path):
    out = tmp_path / "s"
    res = nm.sweep(MODEL, {"lr": [0.05, 0.2], "units": [4, 8]}, workers=0, out=out,
                   epochs=2, batches=10, metrics=["accuracy"])
    assert [r["status"] for r in res] == ["ok"] * 4
    assert all({"loss", "val_loss", "val_accuracy"} <= set(r["metrics"]) for r in res)
    h = nm.load(out / res[0]["model"])                # a complete model file
    nm.release(h)
    again = nm.sweep(MODEL, {"lr": [0.05, 0.2], "units": [4, 8, 12]}, workers=0, out=out,
                     epochs=2, batches=10, metrics=["accuracy"])
    assert sum(bool(r.get("skipped")) for r in again) == 4 and len(again) == 6
    assert len(rows(out)) == 6                         # only the two new trials were added


# ------------------------------------------------------------------------------ on Dask
@needs_dask
def test_eight_configurations_give_eight_results_and_a_rerun_skips_them(tmp_path):
    (tmp_path / "m.mdl").write_text(MODEL)
    args = ["m.mdl", "--set", "lr=0.05,0.2", "--set", "units=4,8", "--seeds", "0-1",
            "--workers", 2, "-o", "out", "--epochs", 2, "--batches", 20]
    p = mdlc_sweep(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    first = rows(tmp_path / "out")
    assert len(first) == 8 and {r["status"] for r in first} == {"ok"}
    assert len({r["key"] for r in first}) == 8
    assert all((tmp_path / "out" / r["model"]).is_file() for r in first)
    assert not os.listdir(tmp_path / "out" / "running")
    assert "8 trials: 8 finished (0 from an earlier run), 0 failed" in p.stdout
    p = mdlc_sweep(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "8 trials: 8 finished (8 from an earlier run)" in p.stdout
    assert len(rows(tmp_path / "out")) == 8


@needs_dask
def test_a_raising_trial_is_reported_failed_and_the_others_finish(tmp_path):
    (tmp_path / "m.mdl").write_text(MODEL)
    # dt -1: that variant fails to compile, on its worker
    p = mdlc_sweep("m.mdl", "--set", "memory.dt=0.4,-1,0.2", "--workers", 2, "-o", "out",
                   "--epochs", 1, "--batches", 10, cwd=tmp_path)
    assert p.returncode == 3, p.stdout + p.stderr
    got = {r["config"]["memory.dt"]: r for r in rows(tmp_path / "out")}
    assert got[0.4]["status"] == got[0.2]["status"] == "ok"
    assert got[-1]["status"] == "failed" and "MDLError" in got[-1]["error"]
    assert "m.mdl:4:" in got[-1]["error"] and "dt" in got[-1]["detail"]
    assert "3 trials: 2 finished (0 from an earlier run), 1 failed" in p.stdout


@needs_dask
def test_a_sigkilled_worker_s_trial_is_rerun_and_the_sweep_completes(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mdl.cli", "sweep", "readme-model",
           "--set", "lr=0.01,0.02,0.05,0.1", "--seeds", "0-1", "--workers", "2", "-o", str(out),
           "--epochs", "4", "--batches", "500"]        # trials of about half a second each
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            running = out / "running"
            for name in (os.listdir(running) if running.is_dir() else []):
                try:                                   # a trial that has just started
                    if time.time() - (running / name).stat().st_mtime > 0.2:
                        continue
                    pid = int((running / name).read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue                           # being written or just removed
                os.kill(pid, signal.SIGKILL)
                killed = (name, pid)
                break
            time.sleep(0.05)
        assert killed, "no trial was seen running"
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    got = rows(out)
    assert len(got) == 8 and {r["status"] for r in got} == {"ok"}
    assert len({r["key"] for r in got}) == 8
    rerun = next(r for r in got if r["key"] == killed[0])
    assert rerun["pid"] != killed[1]                   # finished on a live worker


@needs_dask
@pytest.mark.skipif(not HAS_OPTUNA, reason="needs optuna (pip install 'neuromorph[sweep]')")
def test_an_optuna_search_runs_n_trials(tmp_path):
    (tmp_path / "m.mdl").write_text(MODEL)
    p = mdlc_sweep("m.mdl", "--search", "optuna", "--trials", 7, "--set", "lr=0.001:0.5:log",
                   "--set", "units=4,8", "--workers", 2, "-o", "out", "--epochs", 3,
                   "--batches", 20, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    got = rows(tmp_path / "out")
    assert len(got) == 7 and sorted(r["trial"] for r in got) == list(range(7))
    assert {r["status"] for r in got} <= {"ok", "pruned"}
    assert all(0.001 <= r["config"]["lr"] <= 0.5 and r["config"]["units"] in (4, 8) for r in got)
    assert (tmp_path / "out" / "optuna.journal").is_file()
    assert "best val_loss" in p.stdout
    p = mdlc_sweep("m.mdl", "--search", "optuna", "--trials", 7, "--set", "lr=0.001:0.5:log",
                   "--set", "units=4,8", "--workers", 2, "-o", "out", "--epochs", 3,
                   "--batches", 20, cwd=tmp_path)
    assert p.returncode == 0 and len(rows(tmp_path / "out")) == 7   # the study is complete


def test_mdlc_registers_sweep():
    import argparse

    from neuromorph.cli import add_commands
    parser = argparse.ArgumentParser(prog="mdlc")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "m.mdl", "--set", "lr=0.1", "--seeds", "0-4",
                              "--workers", "3", "--scheduler", "tcp://h:8786", "-o", "d"])
    assert (args.set, args.seeds, args.workers, args.scheduler, args.output) == \
        (["lr=0.1"], "0-4", 3, "tcp://h:8786", "d")
