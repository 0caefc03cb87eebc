"""train() options: epochs, shuffle, history, and Ctrl-C stopping cleanly after a batch."""
import os
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm

MODELS = Path(__file__).resolve().parents[1] / "models"
warnings.simplefilter("ignore", mdl.MDLWarning)
MLP = "/xavier,zero/ (x, 3) (h, 8, <tanh>) (y, 1, <linear>, <mse>)"


def data(n=20, B=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, B, 3)).astype(np.float32)
    return x, x.sum(-1, keepdims=True) * 0.3


def test_epochs_and_history():
    h = nm.compile(MLP, 4, 0.05)
    nm.seed(0)
    nm.build(h)
    x, e = data()
    assert nm.history(h).shape == (0,)
    last = nm.train(h, x, e, verbosity=0, epochs=3)
    hist = nm.history(h)
    assert hist.shape == (60,)
    assert last == pytest.approx(hist[-20:].mean())
    assert hist[-20:].mean() < hist[:20].mean()
    nm.build(h)  # a rebuild starts a new history
    assert nm.history(h).shape == (0,)
    nm.release(h)
    with pytest.raises(nm.HandleError):
        nm.history(h)


def test_shuffle_is_reproducible_and_changes_batches():
    def run(shuffle, seed=1):
        nm.seed(seed)
        h = nm.compile(MLP, 4, 0.05)
        nm.build(h)
        x, e = data()
        nm.train(h, x, e, verbosity=0, epochs=2, shuffle=shuffle)
        out = nm.history(h)
        nm.release(h)
        return out
    a, b, c = run(True), run(True), run(False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Same data either way: the first epoch's mean loss is over the same samples.
    assert a.size == c.size == 40


def test_shuffle_refused_for_recurrent_models():
    h = nm.compile(MODELS / "lstm-model.mdl", 5, 0.1)
    nm.build(h)
    with pytest.raises(nm.DataError, match="recurrent"):
        nm.train(h, np.zeros((2, 5, 4)), np.zeros((2, 5, 4)), shuffle=True)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_ctrl_c_stops_after_the_current_batch_with_the_model_intact(monkeypatch):
    import sys
    h = nm.compile("/xavier,zero/ (x, 256) (h, 512, <tanh>) (y, 8, <linear>, <mse>)", 64, 0.001)
    nm.build(h)
    rng = np.random.default_rng(0)
    # Seconds of work, though the signal comes during the first batch: slack for a loaded machine.
    x = rng.normal(0, 1, (600, 64, 256)).astype(np.float32)
    e = rng.normal(0, 1, (600, 64, 8)).astype(np.float32)
    in_engine = threading.Event()
    real_train = nm._core.train

    def train(*args):
        in_engine.set()  # the next thing this thread does is enter the engine
        return real_train(*args)
    monkeypatch.setattr(nm._core, "train", train)

    def ctrl_c():
        in_engine.wait()  # runs once the training thread gave up the GIL: inside the engine
        os.kill(os.getpid(), signal.SIGINT)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)  # no forced GIL hand-over between set() and the engine
    # A process started in the background by a shell inherits SIGINT ignored, and the engine
    # (rightly) leaves an ignored SIGINT alone: give this test Python's usual handler.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        killer = threading.Thread(target=ctrl_c)
        killer.start()
        with pytest.raises(KeyboardInterrupt, match="stopped after"):
            nm.train(h, x, e, verbosity=0)
    finally:
        sys.setswitchinterval(old)
        signal.signal(signal.SIGINT, handler)
    killer.join()
    done = nm.history(h).size
    assert 0 < done < 600, done
    assert nm.info(h)["steps"] == done
    assert all(np.isfinite(v).all() for v in nm.get_params(h).values())
    assert np.isfinite(nm.train(h, x[:2], e[:2], verbosity=0))  # still usable
    nm.release(h)
