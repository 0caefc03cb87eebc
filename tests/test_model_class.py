"""neuromorph.Model: the object API over handles."""
import gc
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
