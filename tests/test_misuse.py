"""Runtime misuse: typed errors that say what was expected and what came; nothing breaks."""
import gc
import os

import numpy as np
import pytest

import mdl
import neuromorph as nm

MODEL = "/xavier,zero/ (x, 3) (h, 4, <tanh>) (y, 2, <sigmoid>, <mse>)"


@pytest.fixture
def h():
    handle = nm.compile(MODEL, 4, 0.1)
    nm.build(handle)
    yield handle
    try:
        nm.release(handle)
    except nm.HandleError:
        pass


def good(n=2):
    return np.zeros((n, 4, 3), np.float32), np.zeros((n, 4, 2), np.float32)


def test_compile_errors_are_mdlerror():
    with pytest.raises(mdl.MDLError, match="unknown activation"):
        nm.compile("/xavier,zero/ (x, 3) (y, 2, <sigmod>, <mse>)", 4, 0.1)


@pytest.mark.parametrize("batch,lr,match", [(0, 0.1, "batch_size"), (2.5, 0.1, "batch_size"),
                                            (True, 0.1, "batch_size"), (4, -1, "learning_rate"),
                                            (4, float("nan"), "learning_rate"),
                                            (4, "0.1", "learning_rate")])
def test_compile_settings(batch, lr, match):
    with pytest.raises(nm.DataError, match=match):
        nm.compile(MODEL, batch, lr)


def test_compile_from_path_forms(tmp_path):
    f = tmp_path / "m.mdl"
    f.write_text(MODEL)
    for src in (f, str(f)):
        handle = nm.compile(src, 4, 0.1)
        assert nm.info(handle)["input_width"] == 3
        nm.release(handle)
    with pytest.raises(nm.DataError, match="no such MDL file"):
        nm.compile(str(tmp_path / "missing.mdl"), 4, 0.1)
    with pytest.raises(nm.DataError, match="no such MDL file"):
        nm.compile(tmp_path / "missing.mdl", 4, 0.1)


def test_train_before_build():
    handle = nm.compile(MODEL, 4, 0.1)
    with pytest.raises(nm.StateError, match="not built"):
        nm.train(handle, *good())
    with pytest.raises(nm.StateError):
        nm.get_params(handle)
    nm.release(handle)


def test_unknown_and_released_handles(h):
    with pytest.raises(nm.HandleError, match="unknown model handle"):
        nm.train(10**6, *good())
    nm.release(h)
    with pytest.raises(nm.HandleError, match="released"):
        nm.predict(h, good()[0])
    with pytest.raises(nm.HandleError, match="already released"):
        nm.release(h)
    with pytest.raises(nm.HandleError):
        nm.build("1")


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 4, 5)), r"\(n_batches, 4, 3\).*got \(2, 4, 5\)"),
    (np.zeros((2, 3, 3)), r"got \(2, 3, 3\)"),
    (np.zeros((6, 3)), r"inputs hold 6 samples but expected holds 8"),  # any N is fine
    (np.zeros(3), r"got \(3,\)"),
    ([[1, 2, 3], [1, 2]], "rectangular"),
])
def test_wrong_shapes(h, bad, match):
    with pytest.raises(nm.ShapeError, match=match):
        nm.train(h, bad, good()[1])


def test_wrong_dtype_nan_and_count_mismatch(h):
    x, e = good()
    with pytest.raises(nm.DataError, match="dtype"):
        nm.train(h, x.astype(str), e)
    bad = x.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(nm.DataError, match=r"NaN or inf \(first at index \(1, 2, 0\)\)"):
        nm.train(h, bad, e)
    with pytest.raises(nm.DataError, match="NaN"):
        nm.evaluate(h, x, np.full_like(e, np.inf))
    with pytest.raises(nm.ShapeError, match="8 samples but expected holds 12"):
        nm.train(h, x, good(3)[1])


def test_failed_calls_leave_the_model_intact(h):
    before = nm.get_params(h)
    x, e = good()
    for bad in (np.full_like(x, np.nan), np.zeros((2, 4, 9))):
        with pytest.raises(nm.NeuromorphError):
            nm.train(h, bad, e)
    with pytest.raises(nm.ShapeError, match="unknown parameter 'h.wieght'"):
        nm.set_params(h, {"h.bias": np.ones(4), "h.wieght": np.ones((4, 3))})
    with pytest.raises(nm.ShapeError, match=r"shape \(4, 3\), got \(3, 4\)"):
        nm.set_params(h, {"h.weight": np.ones((3, 4))})
    after = nm.get_params(h)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert np.isfinite(nm.train(h, x, e, verbosity=0))


def test_errors_are_standard_classes_too():
    assert issubclass(nm.ShapeError, ValueError) and issubclass(nm.HandleError, ValueError)
    assert issubclass(nm.StateError, RuntimeError)


def test_malformed_ir():
    with pytest.raises(nm.IRError, match="not valid JSON"):
        nm.compile_ir("{", 4, 0.1)
    doc = mdl.compile_text(MODEL).doc
    import json
    with pytest.raises(nm.IRError, match="version 7 is not supported"):
        nm.compile_ir(json.dumps(dict(doc, version=7)), 4, 0.1)
    broken = json.loads(json.dumps(doc))
    broken["nodes"][1]["inputs"] = [{"node": "nowhere", "delayed": False}]
    with pytest.raises(nm.IRError, match="unknown node"):
        nm.compile_ir(json.dumps(broken), 4, 0.1)
    broken = json.loads(json.dumps(doc))
    broken["order"] = list(reversed(broken["order"]))
    with pytest.raises(nm.IRError, match="before its input"):
        nm.compile_ir(json.dumps(broken), 4, 0.1)


def _rss_kb():
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_compile_build_train_release_cycles_do_not_leak():
    x, e = np.random.default_rng(0).random((3, 5, 128)).astype(np.float32), np.zeros((3, 5, 4), np.float32)
    text = "/xavier,zero/ (input, 128) (a, 256, <tanh>) (output, 4, <linear>, <mse>)"

    def cycle(n):
        for _ in range(n):
            handle = nm.compile(text, 5, 0.01)
            nm.build(handle)
            nm.train(handle, x, e, verbosity=0)
            nm.release(handle)
    cycle(100)
    gc.collect()
    start = _rss_kb()
    live = nm._core.live_models()
    cycle(1000)
    gc.collect()
    assert nm._core.live_models() == live
    assert _rss_kb() - start < 4096  # one model is ~400 KB: 1000 leaked would be ~400 MB


def test_release_or_use_from_another_thread_while_training_is_safe():
    import sys
    import threading
    h = nm.compile("/xavier,zero/ (x, 256) (h, 512, <tanh>) (y, 8, <linear>, <mse>)", 64, 0.001)
    nm.build(h)
    x = np.random.default_rng(0).normal(0, 1, (200, 64, 256)).astype(np.float32)
    e = np.zeros((200, 64, 8), np.float32)
    result, started = {}, threading.Event()

    def work():
        try:
            started.set()
            # With a long switch interval this thread keeps the GIL from set() until the engine
            # releases it inside train(), i.e. until it holds the model: no sleep, no race.
            result["loss"] = nm._core.train(h, x, e)[0]
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        t = threading.Thread(target=work)
        t.start()
        started.wait()
        with pytest.raises(nm.StateError, match="busy"):
            nm._core.predict(h, x[:1])          # a second use while training: refused, no race
        nm.release(h)                           # the training call keeps its model alive
    finally:
        sys.setswitchinterval(old)
    t.join()
    assert "error" not in result and np.isfinite(result["loss"]).all()
    assert len(result["loss"]) == 200           # it was not cut short
    with pytest.raises(nm.HandleError, match="released"):
        nm.predict(h, x[:1])
