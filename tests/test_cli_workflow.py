"""`mdlc run` as users run it (issue 15 items 2, 6, 7): data files, validation and metrics,
flags checked with exit 2, data errors exit 3, Ctrl-C saves and exits 130, `--version`,
shipped models by name, one error hierarchy, friendly compile() messages, LICENSE."""
import importlib.util
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm
from mdl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = "/xavier,zero/\n(x, 3)\n(h, 8, <tanh>)\n(y, 3, <softmax>, <cross_entropy>)\n"
X = np.random.default_rng(3).normal(size=(24, 3)).astype(np.float32)
LABELS = np.argmax(X, axis=1)                     # a learnable 3-class rule
TOKEN_MODEL = """/xavier, zero/
(x, 8)
(e, embed, 8, vocab 6, dim 8)
(g, attn2d, 2x4, dim 8, heads 2, window 1, mask raster)
(y, 6, cells 8, <softmax>, <cross_entropy>)
"""
QUIET = ["--verbosity", "0"]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "cls.mdl"
    path.write_text(CLASSIFIER)
    return str(path)


def run(*argv):
    return main(["run", *map(str, argv)])


# ---------------------------------------------------------------------------- --version
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"mdlc {mdl.__version__}" in out and f"IR version {mdl.IR_VERSION}" in out
    assert f"neuromorph {nm.__version__}" in out


def test_version_without_the_engine():
    code = ("import sys; sys.modules['neuromorph'] = None\n"   # `import neuromorph` fails
            "from mdl.cli import main; main(['--version'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"IR version {mdl.IR_VERSION}" in r.stdout
    assert "the engine is not available" in r.stdout


def test_mdl_never_imports_neuromorph():
    code = ("import sys, mdl, mdl.cli, mdl.errors, mdl.dot\n"
            "mdl.compile_text('/xavier,zero/ (x, 2) (y, 1, <sigmoid>, <mse>)')\n"
            "print('neuromorph' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


# ---------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flag,value,message", [
    ("--lr", "0", "argument --lr: must be a positive number, got 0"),
    ("--lr", "-0.1", "argument --lr: must be a positive number"),
    ("--lr", "nan", "argument --lr: must be a positive number"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--batches", "0", "argument --batches: must be at least 1, got 0"),
    ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
    ("--epochs", "0", "argument --epochs: must be at least 1, got 0"),
    ("--epochs", "two", "argument --epochs: expected an integer, got 'two'"),
    ("--validation-split", "1", "argument --validation-split: must be a fraction in (0, 1)"),
    ("--validation-split", "0", "argument --validation-split: must be a fraction in (0, 1)"),
    ("--early-stopping", "0", "argument --early-stopping: must be at least 1"),
    ("--heldout", "1", "argument --heldout: must be a fraction in [0, 1)"),
    ("--context-stride", "0", "argument --context-stride: must be at least 1"),
    ("--metrics", "accuracy,", "argument --metrics: expected comma-separated names"),
    ("--verbosity", "5", "argument --verbosity: invalid choice"),
])
def test_bad_flag_values_are_usage_errors(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        run("lstm-model", flag, value)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv,message", [
    (["--generate-flag"], "unrecognized arguments"),
    (["-n", "0"], "argument -n: must be at least 1"),
    (["--temperature", "-1"], "argument --temperature: must be a number >= 0"),
    (["--top-k", "0"], "argument --top-k: must be at least 1"),
])
def test_bad_generate_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "m.nm", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_flag_combinations(model, tmp_path, capsys):
    assert run(model, "--y", "label") == 2
    assert "--x and --y name arrays or columns of --data" in capsys.readouterr().err
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    assert run(model, "--data", tmp_path / "d.npz", "--early-stopping", "2") == 2
    assert "--early-stopping watches the validation loss" in capsys.readouterr().err


def test_plot_without_matplotlib_stops_before_training(model, tmp_path, capsys):
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed")
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    assert run(model, "--data", tmp_path / "d.npz", "--plot", tmp_path / "p.png") == 2
    out, err = capsys.readouterr()
    assert "--plot needs matplotlib" in err and "neuromorph[plot]" in err
    assert out == ""                                  # nothing trained


# ---------------------------------------------------------------------------- exit codes
def test_exit_1_for_a_compile_error(tmp_path, capsys):
    bad = tmp_path / "bad.mdl"
    bad.write_text("/xavier,zero/ (x, 3) (y, 3, <sigmod>, <mse>)")
    assert run(bad) == 1
    assert "unknown activation `sigmod`" in capsys.readouterr().err


def test_exit_3_for_data_errors_and_2_for_missing_files(model, tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_text("a,b,c,label\n1,2,3,0\n4,oops,6,1\n")
    assert run(model, "--data", f, *QUIET) == 3
    err = capsys.readouterr().err
    assert "mdlc: error: " in err and "d.csv:3:2: 'oops' is not a number" in err
    np.savez(tmp_path / "wide.npz", inputs=np.zeros((8, 5)), expected=np.zeros(8, int))
    assert run(model, "--data", tmp_path / "wide.npz", *QUIET) == 3
    assert "the model reads 3" in capsys.readouterr().err
    assert run(model, "--data", tmp_path / "missing.npz") == 2
    assert "no such data file" in capsys.readouterr().err


def test_exit_3_for_a_corrupt_model_file_in_generate(tmp_path, capsys):
    (tmp_path / "junk.nm").write_bytes(b"garbage!garbage!")
    assert main(["generate", str(tmp_path / "junk.nm"), "-n", "3"]) == 3
    assert "cannot load" in capsys.readouterr().err


def test_subprocess_data_error_has_no_traceback(model, tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,c,label\n1,2,3,x\n")
    r = subprocess.run([sys.executable, "-m", "mdl.cli", "run", model, "--data", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "d.csv:2:4: 'x' is not a number" in r.stderr


# ---------------------------------------------------------------------------- data formats
def _trains(argv, capsys):
    assert run(*argv, "--batch-size", "4", "--epochs", "2", *QUIET) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_run_on_npz_with_keys_and_integer_labels(model, tmp_path, capsys):
    np.savez(tmp_path / "d.npz", features=X, classes=LABELS)
    out = _trains([model, "--data", tmp_path / "d.npz", "--x", "features", "--y", "classes"],
                  capsys)
    assert "24 samples from" in out and "final loss" in out


def test_run_on_npy_pair(model, tmp_path, capsys):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", np.eye(3)[LABELS] > 0)           # bool one-hot
    out = _trains([model, "--data", tmp_path / "X.npy", "--y", tmp_path / "Y.npy"], capsys)
    assert "24 samples from" in out


def test_run_on_csv_with_a_named_target(model, tmp_path, capsys):
    rows = ["label,a,b,c"] + [f"{y},{a},{b},{c}" for (a, b, c), y in zip(X, LABELS)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    out = _trains([model, "--data", tmp_path / "d.csv", "--y", "label"], capsys)
    assert "24 samples from" in out
    (tmp_path / "d.tsv").write_text("\n".join(r.replace(",", "\t") for r in rows[1:]) + "\n")
    out = _trains([model, "--data", tmp_path / "d.tsv", "--y", "0"], capsys)
    assert "24 samples from" in out


def test_run_on_a_folder_of_images(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, cls in enumerate(["dark", "light"]):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            pix = rng.integers(0, 100, (2, 3)) + 150 * k
            Image.fromarray(pix.astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "img.mdl").write_text("/xavier,zero/ (x, 6) (y, 2, <softmax>, <cross_entropy>)")
    out = _trains([tmp_path / "img.mdl", "--data", tmp_path / "imgs"], capsys)
    assert "16 samples from" in out and "2 classes: dark, light" in out


def test_run_with_a_text_file_as_data_trains_as_text(model, tmp_path, capsys):
    story = tmp_path / "story.txt"
    story.write_text("abcde\n" * 60)
    assert run(model, "--data", story) == 2              # not a token model
    assert "--text needs a causal token model" in capsys.readouterr().err
    tiny = tmp_path / "tiny.mdl"
    tiny.write_text(TOKEN_MODEL)
    assert run(tiny, "--data", story, "--epochs", "1", "--batch-size", "4", *QUIET) == 0
    assert "bits per character" in capsys.readouterr().out


# ---------------------------------------------------------------------------- fit flags
def test_validation_metrics_early_stopping_checkpoint(model, tmp_path, capsys):
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    ckpt = tmp_path / "ckpt.nm"
    code = run(model, "--data", tmp_path / "d.npz", "--batch-size", "4", "--epochs", "6",
               "--validation-split", "0.25", "--metrics", "accuracy", "--early-stopping", "3",
               "--checkpoint", ckpt, "--optimizer", "adam", *QUIET)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "val_loss" in out and "accuracy" in out          # the history table
    assert "shuffled (--seed) before the validation split" in out
    assert "final loss on the validation data" in out
    h = nm.load(ckpt)
    assert nm.info(h)["steps"] > 0
    nm.release(h)


def test_unknown_metric_is_a_usage_error(model, tmp_path, capsys):
    training = pytest.importorskip("neuromorph.training")
    if not hasattr(training, "METRICS"):
        pytest.skip("neuromorph.training lists no METRICS")
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    assert run(model, "--data", tmp_path / "d.npz", "--metrics", "acuracy") == 2
    assert "unknown metric 'acuracy'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_saves_and_exits_130(tmp_path):
    out = tmp_path / "interrupted.nm"
    # far more training than the test waits for: it is interrupted, never finished. One epoch
    # is one engine call (--verbosity 0), so the signal lands before or inside it.
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "mdl.cli", "run", "readme-model", "--batches", "20000",
         "--epochs", "1000", "--verbosity", "0", "--save", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell that started pytest in the background made SIGINT ignored; a user's
        # terminal never does: give the child the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()               # the header: training begins
        assert "batched model" in first, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C) after" in rest and f"saved what was trained to {out}" in rest
    assert "Traceback" not in err
    done = int(re.search(r"after (\d+) training batch", rest).group(1))
    h = nm.load(out)                                  # a whole, loadable model
    assert nm.info(h)["steps"] == done                # with every batch that finished
    nm.release(h)


# ---------------------------------------------------------------------------- shipped models
def test_shipped_models_by_name(capsys):
    names = nm.models.names()
    assert {"lstm-model", "readme-model", "gated-model", "big-model"} <= set(names)
    path = nm.models.path("lstm-model")
    assert Path(path).is_file() and nm.models.path("lstm-model.mdl") == path
    h = nm.compile(path, 5, 0.5)
    nm.release(h)
    with pytest.raises(FileNotFoundError, match="did you mean 'lstm-model'"):
        nm.models.path("lstm-modle")
    assert run("lstm-model", "--batches", "10", "--epochs", "1", *QUIET) == 0
    assert "lstm-model.mdl: recurrent stream model" in capsys.readouterr().out
    assert run("lstm-modle") == 2
    assert "neither a file nor a shipped model" in capsys.readouterr().err


def test_shipped_models_folder_in_an_installed_layout(tmp_path):
    """Installed, the .mdl files sit next to neuromorph/models/__init__.py (CMakeLists.txt)."""
    pkg = tmp_path / "site" / "nm_models_copy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text((ROOT / "python/neuromorph/models/__init__.py").read_text())
    (pkg / "only-here.mdl").write_text(CLASSIFIER)
    spec = importlib.util.spec_from_file_location("nm_models_copy", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nm_models_copy"] = mod
    try:
        spec.loader.exec_module(mod)
        assert mod.names() == ["only-here"]
        assert mod.path("only-here") == str(pkg / "only-here.mdl")
    finally:
        del sys.modules["nm_models_copy"]
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"install\(DIRECTORY models/ DESTINATION neuromorph/models", cmake)


# ---------------------------------------------------------------------------- errors
def test_one_error_hierarchy():
    assert nm.NeuromorphError is mdl.NeuromorphError
    with pytest.raises(nm.NeuromorphError) as e:
        mdl.compile_text("/xavier,zero/ (x, 2) (y, 1, <sigmod>, <mse>)")
    assert isinstance(e.value, mdl.MDLError) and isinstance(e.value, ValueError)
    bases = {nm.HandleError: ValueError, nm.StateError: RuntimeError, nm.ShapeError: ValueError,
             nm.DataError: ValueError, nm.IRError: ValueError, nm.DeviceError: RuntimeError,
             nm.OutOfMemoryError: MemoryError, nm.ModelFileError: ValueError}
    for cls, base in bases.items():
        assert issubclass(cls, nm.NeuromorphError) and issubclass(cls, base), cls
    with pytest.raises(nm.NeuromorphError):           # an engine error, caught by the root
        nm.info(10 ** 9)


def test_unknown_compile_keyword_names_compile_and_lists_the_keywords():
    with pytest.raises(nm.DataError) as e:
        nm.compile(CLASSIFIER, 4, 0.1, learning_rate_decay=0.1)
    text = str(e.value)
    assert "compile()" in text and "_optim" not in text
    assert "learning_rate_decay" in text and "weight_decay" in text and "optimizer" in text


@pytest.mark.parametrize("src", ["models/lstm-model", "lstm.txt", "lstm-model",
                                 "no/such/dir/model.mdl"])
def test_a_missing_path_is_not_parsed_as_mdl(src):
    with pytest.raises(nm.DataError, match="no such MDL file"):
        nm.compile(src, 4, 0.1)


def test_a_shipped_name_given_to_compile_is_pointed_at_models_path():
    with pytest.raises(nm.DataError, match=r"neuromorph\.models\.path\('lstm-model'\)"):
        nm.compile("lstm-model", 5, 0.5)


# ---------------------------------------------------------------------------- packaging
def test_license_file_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the Neuromorph authors" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = \{ text = "MIT" \}', pyproject, re.M)


def test_optional_extras_are_declared():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^plot = \["matplotlib>=3\.5"\]', pyproject, re.M)
    assert re.search(r'^images = \["Pillow', pyproject, re.M)


def test_models_travel_in_the_sdist():
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"^sdist\.include = (\[.*\])", pyproject, re.M)
    assert include and "models/*.mdl" in json.loads(include.group(1))
