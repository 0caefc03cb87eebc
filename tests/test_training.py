"""Training behaviour: learning, determinism, stream state, data forms, and `mdlc run`."""
import warnings
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm
from mdl.cli import main
from neuromorph.tasks import make_task

MODELS = Path(__file__).resolve().parents[1] / "models"
warnings.simplefilter("ignore", mdl.MDLWarning)


def test_xor_with_hidden_layer():
    h = nm.compile("/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)", 4, 2.0)
    nm.seed(0)
    nm.build(h)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    Y = np.array([[0], [1], [1], [0]], np.float32)
    for _ in range(3):
        nm.train(h, np.tile(X, (1000, 1)), np.tile(Y, (1000, 1)), verbosity=0)
    assert nm.evaluate(h, X, Y) < 0.01
    assert np.array_equal(nm.predict(h, X).round().ravel(), [0, 1, 1, 0])
    nm.release(h)


def test_readme_model_beats_mean_predictor_tenfold():
    ir = mdl.compile_file(MODELS / "readme-model.mdl")
    x, e, _ = make_task(ir.doc, 5, 1200, seed=1)
    h = nm.compile_ir(ir.to_json(), 5, 0.02)
    nm.seed(1)
    nm.build(h)
    for _ in range(2):
        nm.train(h, x[:1000], e[:1000], verbosity=0)
    baseline = np.mean((e[1000:] - e[:1000].reshape(-1, 4).mean(0)) ** 2)
    assert nm.evaluate(h, x[1000:], e[1000:]) * 10 < baseline
    nm.release(h)


LSTM_NO_DELAY = (MODELS / "lstm-model.mdl").read_text() \
    .replace("{a, lastrecur, additive}", "").replace("{state0, prevstaterecur, multiplicative}", "") \
    .replace("[prevstate,[prevstaterecur,]]", "").replace("[last,[lastrecur,]]", "")


def delayed_bits(n=2000, B=5, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n * B, 4)) < 0.5).astype(np.float32)
    prev = np.vstack([np.zeros((1, 4)), x[:-1]])
    return x.reshape(n, B, 4), (0.1 + 0.8 * prev).astype(np.float32).reshape(n, B, 4)


def fit(text, x, e, lr=0.5, epochs=6):
    h = nm.compile(text, 5, lr)
    nm.seed(0)
    nm.build(h)
    for _ in range(epochs):
        nm.reset_state(h)
        nm.train(h, x, e, verbosity=0)
    nm.reset_state(h)
    loss = nm.evaluate(h, x, e)
    nm.release(h)
    return loss


def test_lstm_learns_delayed_copy_that_a_feedforward_twin_cannot():
    assert not mdl.compile_text(LSTM_NO_DELAY).recurrent
    x, e = delayed_bits()
    baseline = np.mean((e - e.reshape(-1, 4).mean(0)) ** 2)  # 0.16
    lstm = fit((MODELS / "lstm-model.mdl").read_text(), x, e)
    twin = min(fit(LSTM_NO_DELAY, x, e, lr) for lr in (0.05, 0.5))
    assert lstm < 0.6 * baseline
    assert twin > 0.95 * baseline
    assert lstm < 0.6 * twin


def test_seed_makes_build_and_train_bit_identical():
    def run():
        nm.seed(1234)
        h = nm.compile(MODELS / "big-model.mdl", 5, 0.1)
        nm.build(h)
        x, e, _ = make_task(mdl.compile_file(MODELS / "big-model.mdl").doc, 5, 50, 3)
        losses = [nm.train(h, x, e, verbosity=0) for _ in range(2)]
        p = nm.get_params(h)
        nm.release(h)
        return losses, p
    (l1, p1), (l2, p2) = run(), run()
    assert l1 == l2
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    nm.seed(99)
    h = nm.compile(MODELS / "big-model.mdl", 5, 0.1)
    nm.build(h)
    assert not np.array_equal(nm.get_params(h)["a.weight"], p1["a.weight"])


def test_recurrent_state_carries_across_calls_until_reset():
    h = nm.compile(MODELS / "lstm-model.mdl", 5, 0.1)
    nm.seed(0)
    nm.build(h)
    x = np.random.default_rng(0).random((4, 5, 4)).astype(np.float32)
    whole = nm.predict(h, x)
    nm.reset_state(h)
    parts = np.concatenate([nm.predict(h, x[:1]), nm.predict(h, x[1:])])
    np.testing.assert_array_equal(whole, parts)
    again = nm.predict(h, x[:1])          # continues the stream: differs from a fresh start
    assert not np.array_equal(again, whole[:1])
    nm.reset_state(h)
    np.testing.assert_array_equal(nm.predict(h, x[:1]), whole[:1])
    nm.release(h)


def test_non_recurrent_batch_is_vectorised_per_sample():
    h = nm.compile(MODELS / "readme-model.mdl", 5, 0.1)
    nm.build(h)
    x = np.random.default_rng(0).random((1, 5, 128)).astype(np.float32)
    p = nm.get_params(h)
    ref = np.tanh(x[0] @ p["a.weight"].T + p["a.bias"]) @ p["output.weight"].T + p["output.bias"]
    np.testing.assert_allclose(nm.predict(h, x)[0], ref, rtol=1e-5, atol=1e-6)
    nm.release(h)


def test_data_forms_lists_float64_flat():
    h = nm.compile("/xavier,zero/ (x, 2) (y, 1, <linear>, <mse>)", 2, 0.1)
    nm.build(h)
    nested = [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]
    exp = [[[1.0], [1.0]], [[2.0], [0.0]]]
    a = nm.evaluate(h, nested, exp)
    b = nm.evaluate(h, np.array(nested, np.float64).reshape(4, 2), np.array(exp).reshape(4, 1))
    assert a == pytest.approx(b)
    assert nm.predict(h, np.zeros((4, 2))).shape == (4, 1)
    assert nm.predict(h, np.zeros((2, 2, 2))).shape == (2, 2, 1)
    nm.release(h)


def test_set_params_partial_then_get():
    h = nm.compile("/xavier,zero/ (x, 3) (a, 2, <relu>) (y, 1, <linear>, <mse>)", 1, 0.1)
    nm.build(h)
    before = nm.get_params(h)
    assert {k: v.shape for k, v in before.items()} == {
        "a.weight": (2, 3), "a.bias": (2,), "y.weight": (1, 2), "y.bias": (1,)}
    assert all(v.dtype == np.float32 for v in before.values())
    nm.set_params(h, {"a.bias": [1.0, 2.0]})
    after = nm.get_params(h)
    np.testing.assert_array_equal(after["a.bias"], [1, 2])
    np.testing.assert_array_equal(after["a.weight"], before["a.weight"])
    nm.release(h)


def test_mdlc_run_trains_a_shipped_model(capsys):
    assert main(["run", str(MODELS / "gated-model.mdl"), "--batches", "200", "--epochs", "2",
                 "--verbosity", "0"]) == 0
    out = capsys.readouterr().out
    table = out.splitlines()[2:]                  # after the header and the baseline line
    assert table[0].split()[:2] == ["epoch", "loss"] and table[2].split()[0] == "2"
    assert "final loss" in out


def test_mdlc_run_with_npz(tmp_path, capsys):
    x = np.random.default_rng(0).random((40, 128)).astype(np.float32)
    np.savez(tmp_path / "d.npz", inputs=x, expected=x[:, :4])
    assert main(["run", str(MODELS / "readme-model.mdl"), "--data", str(tmp_path / "d.npz"),
                 "--batch-size", "8", "--epochs", "1", "--verbosity", "0"]) == 0
    np.savez(tmp_path / "bad.npz", x=x)
    assert main(["run", str(MODELS / "readme-model.mdl"), "--data", str(tmp_path / "bad.npz")]) == 3
    assert "has no array named 'inputs'" in capsys.readouterr().err   # a data error: exit 3


def test_mdlc_run_save_and_plot(tmp_path, capsys):
    out = tmp_path / "m.nm"
    assert main(["run", str(MODELS / "gated-model.mdl"), "--batches", "100", "--epochs", "1",
                 "--verbosity", "0", "--save", str(out)]) == 0
    h = nm.load(out)
    assert nm.info(h)["steps"] == 100
    nm.release(h)
    plot = tmp_path / "loss.png"
    code = main(["run", str(MODELS / "readme-model.mdl"), "--batches", "50", "--epochs", "1",
                 "--verbosity", "0", "--plot", str(plot)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 2 and "needs matplotlib" in capsys.readouterr().err
    else:
        assert code == 0 and plot.read_bytes()[:4] == b"\x89PNG"
