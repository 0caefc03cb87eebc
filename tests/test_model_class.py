"""neuromorph.Model: the object API over handles."""
import gc
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm

MODELS = Path(__file__).resolve().parents[1] / "models"
warnings.simplefilter("ignore", mdl.MDLWarning)


def xor():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    return np.tile(X, (500, 1)), np.tile(np.array([[0], [1], [1], [0]], np.float32), (500, 1)), X


def test_fit_predict_evaluate_params_history():
    x, y, X = xor()
    nm.seed(0)
    with nm.Model("/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)", batch_size=4,
                  learning_rate=0.5, optimizer="adam") as m:
        m.build()
        m.fit(x, y, epochs=4, verbosity=0)
        assert m.evaluate(X, y[:4]) < 0.01
        assert m.predict(X).round().ravel().tolist() == [0, 1, 1, 0]
        assert m.history.shape == (2000,)
        p = m.params
        p["y.bias"] = p["y.bias"] + 1
        m.load_params({"y.bias": p["y.bias"]})
        assert np.array_equal(m.params["y.bias"], p["y.bias"])
        h = m.handle
    with pytest.raises(nm.HandleError, match="released"):
        nm.predict(h, X)
    assert "released" in repr(m)


def test_save_load_and_summary(tmp_path):
    m = nm.Model(MODELS / "lstm-model.mdl", batch_size=5, learning_rate=0.1).build()
    x = np.random.default_rng(0).random((3, 5, 4)).astype(np.float32)
    m.fit(x, x, verbosity=0)
    m.save(tmp_path / "m.nm")
    m2 = nm.Model.load(tmp_path / "m.nm")
    assert np.array_equal(m2.predict(x), m.predict(x))
    text = m2.summary()
    assert "120 parameters; 2 delayed edges (recurrent)" in text
    assert re.search(r"state0\s+merge\s+4\s+multiplicative\s+forget, prevstate \[t-1\]", text)
    assert "[lastrecur]" in text
    m.release()
    m.release()  # idempotent
    m2.release()


def test_garbage_collection_releases():
    gc.collect()  # models other tests left to the collector must not move the baseline
    before = nm._core.live_models()
    m = nm.Model(MODELS / "readme-model.mdl", batch_size=5, learning_rate=0.1).build()
    assert nm._core.live_models() == before + 1
    del m
    gc.collect()
    assert nm._core.live_models() == before


def test_errors_pass_through():
    with pytest.raises(mdl.MDLError):
        nm.Model("/xavier,zero/ (x, 2) (y, 1, <sigmod>, <mse>)", batch_size=4, learning_rate=0.1)
    with pytest.raises(nm.DataError, match="optimizer"):
        nm.Model(MODELS / "readme-model.mdl", batch_size=4, learning_rate=0.1, optimizer="lbfgs")
    m = nm.Model(MODELS / "readme-model.mdl", batch_size=4, learning_rate=0.1)
    with pytest.raises(nm.StateError, match="not built"):
        m.predict(np.zeros((4, 128)))
    m.release()


def test_model_class_exposes_the_extension_helpers():
    from pathlib import Path
    models = Path(__file__).resolve().parents[1] / "models"
    import numpy as np
    with nm.Model(models / "energy-model.mdl", 4, 0.05) as m:
        m.build()
        x = np.random.default_rng(0).normal(size=(4, 32))
        assert m.energy(x).shape == (4, 5)
        m.fit(x, np.eye(10)[[0, 1, 2, 3]], verbosity=0)
        assert set(m.loss_parts) == {"loss", "output"}
    with nm.Model(models / "neuron-model.mdl", 2, 0.05) as m:
        m.build()
        m.predict(np.zeros((2, 128)))
        assert m.stats["brain.count"].shape == (2,)


# ---------------------------------------------------------------- notebook and terminal views
XOR_MDL = "/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)"


def test_summary_prints_once_and_returns_the_text(capsys, monkeypatch):
    with nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5) as m:
        text = m.summary()
        printed = capsys.readouterr().out
        assert printed == text + "\n"
        assert isinstance(text, str) and "\n" in text
        assert "33 parameters; 0 delayed edges (not recurrent); batch 4" in text
        assert re.search(r"^y\s+output\s+1\s+sigmoid / mse\s+h\s+9$", text, re.M)
        assert repr(text) == repr(str(text))  # the usual repr outside interactive prompts
        # already printed: an interactive prompt must not echo the text again with \n escapes
        assert callable(text._ipython_display_) and text._ipython_display_() is None
        monkeypatch.setattr("sys.ps1", ">>> ", raising=False)
        assert "\\n" not in repr(text) and len(repr(text)) < 60
        assert m.summary(quiet=True) == text
        assert capsys.readouterr().out == ""


def test_fit_returns_the_history_and_passes_options_on():
    x, y, X = xor()
    nm.seed(0)
    with nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5, optimizer="adam").build() as m:
        hist = m.fit(x[:64], y[:64], epochs=2, verbosity=0, validation=(X, y[:4]),
                     metrics=["mse"])
        assert [e["epoch"] for e in hist.epochs] == [1, 2]
        assert {"loss", "val_loss", "val_mse"} <= set(hist.keys())
        assert len(hist.batch_loss) == 2 * 16 and m.history.shape == (32,)


def test_repr_is_short_and_survives_release():
    m = nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5)
    r = repr(m)
    assert "in=2 out=1" in r and "params=33" in r and "batch=4" in r and "not built" in r
    assert "built on cpu" in repr(m.build())
    nm.release(m.handle)                      # released behind the object's back
    assert "released" in repr(m) and "released" in m._repr_html_()
    m.release()
    assert repr(m) == "<neuromorph.Model (released)>"


def _no_dot(monkeypatch):
    monkeypatch.setattr("neuromorph.model.shutil.which", lambda name: None)


def test_repr_html_is_the_node_table(monkeypatch):
    _no_dot(monkeypatch)
    with nm.Model(MODELS / "lstm-model.mdl", batch_size=5, learning_rate=0.1) as m:
        page = m._repr_html_()
    assert page.count("<tr>") == 1 + 15 + 1 and "<svg" not in page  # head, nodes, totals
    assert "<td><b>output</b></td><td>output</td>" in page and "tanh / mse" in page
    assert "state0" in page and "prevstate <i>[t-1]</i>" in page
    assert "120 parameters; 2 delayed edges (recurrent)" in page
    with nm.Model(MODELS / "columnformer-classifier.mdl", 2, 0.1) as m:
        page = m._repr_html_()
    assert "16 cells × 24" in page and "4×4 × dim 24" in page and "51968" in page


def test_repr_html_escapes_names(monkeypatch):
    _no_dot(monkeypatch)
    with nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5) as m:
        doc = m.ir
        doc["nodes"][1]["name"] = "<script>h&"
        doc["nodes"][2]["inputs"][0]["node"] = "<script>h&"
        monkeypatch.setattr(nm.Model, "ir", property(lambda self: doc))
        page = m._repr_html_()
    assert "<script>" not in page and page.count("&lt;script&gt;h&amp;") == 2


def _fake_dot(tmp_path, monkeypatch, body: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "dot"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")


@pytest.mark.parametrize("body", ["exit 1", "echo 'not an svg'", "sleep 5"])
def test_repr_html_without_a_working_dot_is_the_table_alone(tmp_path, monkeypatch, body):
    _fake_dot(tmp_path, monkeypatch, body)
    monkeypatch.setattr("neuromorph.model._DOT_TIMEOUT_S", 0.5)
    with nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5) as m:
        page = m._repr_html_()
    assert "<svg" not in page and "<table" in page and "33 parameters" in page


def test_repr_html_inlines_dots_svg(tmp_path, monkeypatch):
    # a stand-in dot that checks it was fed mdlc's graph and answers with an XML prolog + SVG
    _fake_dot(tmp_path, monkeypatch,
              'grep -q \'"x" -> "h"\' || exit 3\n'
              "printf '<?xml version=\"1.0\"?>\\n<!DOCTYPE svg>\\n<svg id=\"g\"><g/></svg>\\n'")
    with nm.Model(XOR_MDL, batch_size=4, learning_rate=0.5) as m:
        page = m._repr_html_()
    assert '<svg id="g"><g/></svg>' in page and "<?xml" not in page and "DOCTYPE" not in page


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz dot not installed")
def test_repr_html_with_graphviz_draws_every_node():
    with nm.Model(MODELS / "lstm-model.mdl", batch_size=5, learning_rate=0.1) as m:
        page = m._repr_html_()
    svg = page[page.index("<svg"):]
    assert "</svg>" in svg and "<title>prevstate</title>" in svg and "t&#45;1" in svg


def test_every_public_method_and_property_has_a_docstring():
    import inspect
    public = [name for name in vars(nm.Model) if not name.startswith("_")]
    assert {"fit", "predict", "summary", "load", "history", "tokenizer"} <= set(public)
    missing = [name for name in public if not inspect.getdoc(getattr(nm.Model, name))]
    assert inspect.getdoc(nm.Model) and inspect.getdoc(nm.Model._repr_html_) and not missing, \
        missing
