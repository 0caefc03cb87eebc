"""Training the way users train: any number of samples, a partial last batch, validation,
metrics, early stopping, checkpoints, History in the model file, divergence stopped at once.
References: the same samples in a model compiled with another batch size, hand-computed
metrics, a constructed validation curve."""
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm
from neuromorph import training

MLP = "/xavier, zero/ (x, 5) (h, 7, <tanh>) (y, 3, <softmax>, <cross_entropy>)"


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    return x, np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1)]


def _model(batch, dtype="float64", lr=0.1, text=MLP, **opt):
    h = nm.compile(text, batch, lr, dtype=dtype, **opt)
    nm.seed(4)
    nm.build(h)
    return h


@pytest.mark.parametrize("n", [1, 7, 33])
def test_predict_evaluate_any_n_equal_per_sample(n):
    h = _model(16)
    x, y = _data(n)
    p = nm.predict(h, x)
    np.testing.assert_allclose(p, np.vstack([nm.predict(h, x[i]) for i in range(n)]), rtol=1e-12)
    per = np.mean([nm.evaluate(h, x[i:i + 1], y[i:i + 1]) for i in range(n)])
    assert nm.evaluate(h, x, y) == pytest.approx(per, rel=1e-12)
    nm.release(h)


def test_partial_last_batch_trains_as_a_model_of_that_batch_size():
    x, y = _data(16 + 5)
    a = _model(16)
    nm.train(a, x, y, verbosity=0)                      # a batch of 16, then one of 5
    b = _model(16)
    c = _model(5)
    nm.train(b, x[:16], y[:16], verbosity=0)
    nm.set_params(c, nm.get_params(b))
    nm.train(c, x[16:], y[16:], verbosity=0)            # the same 5 samples as one batch
    pa, pc = nm.get_params(a), nm.get_params(c)
    for k in pa:
        np.testing.assert_allclose(pa[k], pc[k], rtol=1e-13, atol=1e-15)
    assert nm.history(a)[-1] == pytest.approx(nm.history(c)[-1], rel=1e-13)
    assert nm.info(a)["steps"] == 2
    # the epoch's loss weights the partial batch by its size
    la, lb = nm.history(a)
    assert nm.history(a, epochs=True).epochs[-1]["loss"] == pytest.approx((16 * la + 5 * lb) / 21)


def test_partial_batch_gradients_equal_the_mean_over_its_samples():
    x, y = _data(5)
    h = _model(8)
    loss, g = nm.gradients(h, x, y)
    parts = [nm.gradients(h, x[i:i + 1], y[i:i + 1]) for i in range(5)]
    assert loss == pytest.approx(np.mean([p[0] for p in parts]), rel=1e-12)
    for k in g:
        np.testing.assert_allclose(g[k], np.mean([p[1][k] for p in parts], axis=0), rtol=1e-10,
                                   atol=1e-14)
    with pytest.raises(nm.ShapeError, match="at most 8"):
        nm.gradients(h, *_data(9))


def test_validation_and_metrics_by_hand():
    x, y = _data(100)
    h = _model(16)
    hist = nm.fit(h, x, y, epochs=2, validation_split=0.25, metrics=["accuracy", "mse"],
                  verbosity=0)
    assert hist.keys() == ["epoch", "loss", "val_loss", "val_accuracy", "val_mse"]
    vx, vy = x[75:], y[75:]
    p = nm.predict(h, vx)
    last = hist.epochs[-1]
    assert last["val_accuracy"] == pytest.approx(np.mean(p.argmax(1) == vy.argmax(1)))
    assert last["val_mse"] == pytest.approx(np.mean((p - vy) ** 2))
    assert last["val_loss"] == pytest.approx(nm.evaluate(h, vx, vy))
    assert len(hist.batch_loss) == 2 * 5  # 75 samples: 4 batches of 16 and one of 11
    h2 = _model(16)
    hist2 = nm.fit(h2, x[:75], y[:75], epochs=2, validation=(vx, vy), metrics="accuracy",
                   verbosity=0)
    np.testing.assert_allclose(hist2["val_loss"], hist["val_loss"], rtol=1e-12)


def test_early_stopping_stops_at_the_right_epoch(monkeypatch, tmp_path):
    curve = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0, 1.0])
    real = training._batches

    def fake(h, x, e, ids, B, call, first=0, **kw):
        if call == "evaluate":
            return [next(curve)], [1], False
        return real(h, x, e, ids, B, call, first, **kw)
    monkeypatch.setattr(training, "_batches", fake)
    x, y = _data(40)
    h = _model(8)
    ck = tmp_path / "best.nm"
    hist = nm.fit(h, x, y, epochs=8, validation=(x[:8], y[:8]), early_stopping=3,
                  checkpoint=ck, verbosity=0)
    assert len(hist) == 6 and hist.stopped_early and hist.best_epoch == 3
    assert hist["val_loss"].tolist() == [5.0, 4.0, 3.0, 3.5, 3.2, 3.1]
    best = nm.load(ck)  # saved after epoch 3, with the history up to then
    assert len(nm.history(best, epochs=True)) == 3


def test_history_travels_in_the_model_file(tmp_path):
    x, y = _data(50)
    h = _model(8, dtype="float32")
    nm.fit(h, x, y, epochs=2, metrics=["accuracy"], verbosity=0)
    nm.fit(h, x, y, epochs=1, verbosity=0)
    nm.save(h, tmp_path / "m.nm")
    g = nm.load(tmp_path / "m.nm")
    hist = nm.history(g, epochs=True)
    assert [e["epoch"] for e in hist.epochs] == [1, 2, 3]
    np.testing.assert_array_equal(nm.history(g), nm.history(h))
    assert "accuracy" in hist.table()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_divergence_stops_at_once_naming_the_node_and_keeps_the_model(optimizer):
    text = "/xavier, zero/ (x, 4) (hid, 8, <relu>) (out, 2, <linear>, <mse>)"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(160, 4)), rng.normal(size=(160, 2))
    lr = 1e3 if optimizer == "sgd" else 1e18
    h = _model(16, dtype="float32", lr=lr, text=text, optimizer=optimizer)
    # find the failing batch, then replay up to just before it and compare
    with pytest.raises(nm.DivergedError, match=r"at batch (\d+) of the epoch") as info:
        nm.train(h, x, y, verbosity=0)
    k = int(info.value.args[0].split("at batch ")[1].split()[0])
    assert "'hid'" in str(info.value) or "'out'" in str(info.value) or "gradient" in str(info.value)
    after = nm.get_params(h)
    ref = _model(16, dtype="float32", lr=lr, text=text, optimizer=optimizer)
    if k:
        nm.train(ref, x[:16 * k], y[:16 * k], verbosity=0)
    for name, v in nm.get_params(ref).items():
        np.testing.assert_array_equal(after[name], v)
    assert nm.info(h)["steps"] == k
    nm.release(h)
    # check_finite=False lets it run on (the user asked for it)
    h = _model(16, dtype="float32", lr=lr, text=text, optimizer=optimizer)
    nm.train(h, x, y, verbosity=0, check_finite=False)
    assert not all(np.isfinite(v).all() for v in nm.get_params(h).values())


@pytest.mark.parametrize("dtype,big", [("float32", 3e38), ("float64", 1e308)])
def test_a_nan_prediction_is_divergence_not_a_finite_loss(dtype, big):
    """Finite inputs whose products overflow (2 * big is inf, inf - inf is NaN) give a NaN
    softmax row: the cross-entropy must be NaN too (its clamp had turned NaN into 1e-12, a
    finite loss, and the fused SGD step then wrote NaN into the weights)."""
    h = nm.compile("/xavier,zero/ (x, 12) (y, 12, <softmax>, <cross_entropy>)", 5, 0.1, dtype=dtype)
    nm.build(h)
    W = np.eye(12)
    W[3, 3], W[3, 4] = 2, -2
    nm.set_params(h, {"y.weight": W, "y.bias": np.zeros(12)})
    x = np.zeros((5, 12))
    x[0, 3] = x[0, 4] = big
    e = np.eye(12)[[1] * 5]
    before = nm.get_params(h)
    with pytest.raises(nm.DivergedError, match="the loss is -?nan.*node 'y'"):
        nm.gradients(h, x, e)
    with pytest.raises(nm.DivergedError, match="the loss is -?nan.*node 'y'"):
        nm.train(h, x, e, verbosity=0)
    for name, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[name])
    nm.release(h)


@pytest.mark.parametrize("batch, width", [(1, 4), (3, 40), (33, 40)])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw-clip"])
def test_a_gradient_that_overflows_behind_a_finite_loss_changes_nothing(batch, width, optimizer):
    """The loss is finite, the hidden layer's input gradient dz . W overflows (W ~ 3e38): plain
    SGD on a float model takes the fused step (no gradient arena; batch 1 and 3 its small
    kernels, 33 BLAS), which had written inf into hid.weight with no error. Every path must
    name the parameter and leave every parameter as it was. The arena's updates look at the
    gradients only once an update is refused (cpu/update.h): each optimizer must turn a
    gradient that is not finite into a refused update, and the error must still name the
    gradient, not the update."""
    kw = {"optimizer": optimizer}
    if optimizer == "adamw-clip":
        kw = {"optimizer": "adamw", "weight_decay": 0.1, "grad_clip": 1.0}
    h = nm.compile(f"/xavier,zero/ (x, {width}) (hid, {width}, <tanh>) (y, 2, <linear>, <mse>)",
                   batch, 0.1, **kw)
    nm.build(h)
    p = nm.get_params(h)
    p["hid.weight"][:] = 0
    p["y.weight"][:] = 3e38
    nm.set_params(h, p)
    before = nm.get_params(h)
    x, e = np.ones((batch, width)), np.full((batch, 2), 10.0)
    with pytest.raises(nm.DivergedError, match="gradient of 'hid.weight' is not finite"):
        nm.train(h, x, e, verbosity=0)
    for name, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[name])
    nm.release(h)


@pytest.mark.parametrize("batch", [4, 33])
def test_a_huge_but_finite_gradient_still_trains_on_the_fused_step(batch):
    """The fused step looks at a bound (rows * max|dz| * max|u|) before it forms anything; where
    the bound is past the float range but the gradient is not (two rows of ~1.8e38 that cancel),
    it must train as the unfused float path (momentum 0) and the float64 model do."""
    text = "/xavier,zero/ (x, 20) (y, 1, <linear>, <mse>)"
    x = np.zeros((batch, 20))
    x[0, 0] = x[1, 0] = 1.9e19       # y = 1.9e19 on both rows
    x[2:, 1] = 1.0
    e = np.full((batch, 1), 10.0)
    e[1, 0] = 3.8e19                 # y - e = +1.9e19 and -1.9e19: the products cancel
    got = {}
    for name, kw in (("fused", {}), ("arena", {"optimizer": "momentum", "momentum": 0.0}),
                     ("double", {"dtype": "float64"})):
        h = nm.compile(text, batch, 0.01, **kw)
        nm.build(h)
        W = np.zeros((1, 20))
        W[0, 0] = 1.0
        nm.set_params(h, {"y.weight": W, "y.bias": np.zeros(1)})
        nm.train(h, x, e, verbosity=0)
        got[name] = {k: v.astype(np.float64) for k, v in nm.get_params(h).items()}
        nm.release(h)
    assert got["fused"]["y.weight"][0, 1] > 0.05     # it trained
    for k in got["double"]:
        assert np.all(np.isfinite(got["fused"][k]))
        np.testing.assert_allclose(got["fused"][k], got["arena"][k], rtol=1e-6)
    # the cancelling sums are float rounding (~1e31) apart from float64's; the rest is not
    np.testing.assert_allclose(got["fused"]["y.weight"][0, 1:], got["double"]["y.weight"][0, 1:],
                               rtol=1e-5)


DENSE = "/xavier,zero/ (x, 8) (h, 16, <relu_parametric>) (y, 2, <linear>, <mse>)"


@pytest.mark.parametrize("text, kw", [
    (DENSE, {}),                                  # plain SGD: the fused step (fused_safe)
    (DENSE, {"optimizer": "momentum"}),           # the arena and keep_update
    (DENSE, {"optimizer": "adam"}),
    (DENSE, {"optimizer": "adamw", "weight_decay": 0.1, "grad_clip": 1e30}),
    ("lstm", {}),                                 # recurrent: plain SGD on the arena
], ids=["fused-sgd", "momentum", "adam", "adamw-clip", "recurrent-sgd"])
def test_an_update_that_overflows_changes_nothing(tmp_path, text, kw):
    """A learning rate so large that rate * (a finite gradient) leaves the float range: the
    step's new weights are not finite. The engine had written them (the loss of the next batch
    was then NaN, and the error said the model held its state from before that batch, which
    was already inf); now the step raises, naming the parameter, and the whole saved state
    (weights, optimizer state, step count) is byte for byte what it was."""
    if text == "lstm":
        text = str(Path(__file__).resolve().parents[1] / "models" / "lstm-model.mdl")
    h = nm.compile(text, 4, 3e38, **kw)
    nm.seed(0)
    nm.build(h)
    n_in, n_out = nm.info(h)["input_width"], nm.info(h)["output_width"]
    x, e = np.ones((4, n_in)), np.full((4, n_out), 5.0)
    nm.save(h, tmp_path / "before.nm")
    with pytest.raises(nm.DivergedError, match="the update of '[a-z_]+\\.[a-z]+' is not finite"):
        nm.train(h, x, e, verbosity=0)
    nm.save(h, tmp_path / "after.nm")
    assert (tmp_path / "before.nm").read_bytes() == (tmp_path / "after.nm").read_bytes()
    assert all(np.isfinite(v).all() for v in nm.get_params(h).values())
    nm.release(h)


def test_the_fused_steps_weight_bound_follows_set_params():
    """The fused step keeps a bound on each layer's weights (fused_safe) and adds each step's
    update to it; weights set from outside must reset it, or a jump to 2e38 would go unseen:
    here the update (1e6 * 2e32) stays below the range on its own but takes W to 4e38."""
    h = nm.compile("/xavier,zero/ (x, 4) (y, 1, <linear>, <mse>)", 1, 1e6)
    nm.build(h)
    nm.train(h, np.zeros((1, 4)), np.zeros((1, 1)), verbosity=0)  # the bound is known: small
    W = np.zeros((1, 4))
    W[0, 0] = 2e38
    nm.set_params(h, {"y.weight": W, "y.bias": np.zeros(1)})
    before = nm.get_params(h)
    x, e = np.array([[1.0, 0, 0, 0]]), np.array([[2e38 + 1e32]])  # dz ~ -2e32: W grows
    with pytest.raises(nm.DivergedError, match="update of 'y.weight'"):
        nm.train(h, x, e, verbosity=0)
    for name, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[name])
    nm.release(h)


def _edge_case(name, width):
    """(text, lr, params, x, e) of a step at the float range's edge (found by a review)."""
    lin = f"/xavier,zero/ (x, {width}) (y, 1, <linear>, <mse>)"
    W, b = np.zeros((1, width)), np.zeros(1)
    if name == "rate-times-gradient":   # lr * dW0 overflows in float, W0 - lr * dW0 does not
        f32 = np.float32(3e38)
        ulp = float(f32 - np.nextafter(f32, np.float32(0)))
        W[0, 0] = 3e38
        x = np.zeros((2, width))
        x[0, 0], x[1, 0] = 1, -1
        e = np.array([[3e38 - 4 * ulp], [-3e38 + 4 * ulp]])
        return lin, 2157041.5, {"y.weight": W, "y.bias": b}, x, e
    if name == "weight-above-3e38":     # a finite weight that gets no gradient
        W[0, 3] = 3.2e38
        x = np.zeros((1, width))
        x[0, 0] = 1
        return lin, 0.1, {"y.weight": W, "y.bias": b}, x, np.ones((1, 1))
    if name == "zero-times-inf":        # relu(inf) = inf into a saturated tanh: dz = 0, u = inf
        text = f"/xavier,zero/ (x, {width}) (h, {width}, <relu>) (y, 1, <tanh>, <mse>)"
        p = {"h.weight": np.full((width, width), 1e30), "h.bias": np.zeros(width),
             "y.weight": np.ones((1, width)), "y.bias": np.zeros(1)}
        return text, 0.1, p, np.full((1, width), 1e30), np.full((1, 1), 0.5)
    if name == "nan-behind-relu":       # h1 = inf - inf = NaN, relu(NaN) = 0: a finite loss,
        text = (f"/xavier,zero/ (x, {width}) (h1, 2, <linear>) (h2, 2, <relu>) "  # h2's u NaN
                "(y, 1, <linear>, <mse>)")
        W1 = np.zeros((2, width))
        W1[0, 0], W1[0, 1] = 1e20, -1e20
        p = {"h1.weight": W1, "h1.bias": np.zeros(2), "h2.weight": np.ones((2, 2)),
             "h2.bias": np.zeros(2), "y.weight": np.ones((1, 2)), "y.bias": np.zeros(1)}
        x = np.zeros((1, width))
        x[0, :2] = 1e20
        return text, 0.1, p, x, np.full((1, 1), 5.0)
    if name == "gradient-past-float-range":  # dW = dzᵀu ~ 1e44 at rate 1e-16: rate G < 3e38,
        # but BLAS forms dzᵀu before scaling it by the rate (a review found it, session 16)
        text = f"/xavier,zero/ (x, {width}) (h, 8, <linear>) (y, 2, <softmax>, <cross_entropy>)"
        p = {"h.weight": np.full((8, width), 1e-20), "h.bias": np.zeros(8),
             "y.weight": np.tile([[1e30], [-1e30]], (1, 8)), "y.bias": np.zeros(2)}
        return text, 1e-16, p, np.full((33, width), 1e14), np.tile([[0.0, 1.0]], (33, 1))
    if name == "rate-past-float-range":  # 1e39 is inf as a float rate
        x = np.full((1, width), 1e-3)
        return lin, 1e39, {"y.weight": W, "y.bias": b}, x, np.full((1, 1), 1e-3)
    # "cancelling-rows": rows of +D and -D, dW = db = 0, partial sums of lr D overflow
    x = np.zeros((33, width))
    x[0, 0] = x[1, 0] = 1
    e = np.zeros((33, 1))
    e[0, 0], e[1, 0] = -1e30, 1e30
    return lin, 1e12, {"y.weight": W, "y.bias": b}, x, e


@pytest.mark.parametrize("width", [4, 20])
@pytest.mark.parametrize("name", ["rate-times-gradient", "weight-above-3e38", "zero-times-inf",
                                  "cancelling-rows", "nan-behind-relu", "rate-past-float-range",
                                  "gradient-past-float-range"])
def test_the_fused_step_agrees_with_the_arena_at_the_edge_of_the_float_range(name, width):
    """Plain SGD's fused step (bounds, then the updates from dL/dz) against the arena path
    (momentum 0: gradients formed, the update written aside and looked at) on steps whose
    values approach FLT_MAX: both train to the same finite weights, or both refuse and change
    nothing. Each case once let the fused step write inf or NaN, or refuse a finite step (two
    reviews found them). Where a product is 0 * inf or 0 * NaN, the verdict is the kernel's
    (the reference loops skip a zero dL/dz, vector kernels multiply), the same on both paths."""
    text, lr, params, x, e = _edge_case(name, width)
    out = {}
    for path, kw in (("fused", {}), ("arena", {"optimizer": "momentum", "momentum": 0.0})):
        h = nm.compile(text, len(x), lr, **kw)
        nm.build(h)
        nm.set_params(h, params)
        before = nm.get_params(h)
        try:
            nm.train(h, x, e, verbosity=0)
            out[path] = nm.get_params(h)
            assert all(np.isfinite(v).all() for v in out[path].values()), path
        except nm.DivergedError:
            out[path] = "refused"
            for k, v in nm.get_params(h).items():
                np.testing.assert_array_equal(v, before[k])
        nm.release(h)
    if out["arena"] == "refused" or out["fused"] == "refused":
        # W0 - lr dW0 is finite only when formed with one rounding (a fused multiply-add, as
        # the AVX2 update does); the arena's update rounds lr * m first: it may refuse
        assert out["fused"] == out["arena"] == "refused" or name == "rate-times-gradient"
    else:
        for k in out["arena"]:
            np.testing.assert_allclose(out["fused"][k], out["arena"][k], rtol=1e-6)


def test_an_unchecked_step_does_not_leave_the_weight_bound_behind():
    """A fused step with check_finite=False moves the weights without the bounds' bookkeeping;
    the next checked step must not trust the old bound (it had let W0 go from -2e38 to -inf)."""
    h = nm.compile("/xavier,zero/ (x, 4) (y, 1, <linear>, <mse>)", 1, 2e6)
    nm.build(h)
    W = np.zeros((1, 4))
    W[0, 0] = 1.0
    nm.set_params(h, {"y.weight": W, "y.bias": np.zeros(1)})
    nm.train(h, np.zeros((1, 4)), np.zeros((1, 1)), verbosity=0)  # the bound: small
    nm.train(h, np.array([[1e15, 0, 0, 0]]), np.array([[-(5e16 - 1e15)]]), verbosity=0,
             check_finite=False)                                   # W0 -> -2e38, finite
    p = nm.get_params(h)
    assert -3e38 < p["y.weight"][0, 0] < -1e38
    y = float(p["y.weight"][0, 0] + p["y.bias"][0])
    with pytest.raises(nm.DivergedError, match="update of 'y.weight'"):
        nm.train(h, np.array([[1.0, 0, 0, 0]]), np.array([[y - 4e31]]), verbosity=0)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, p[k])
    nm.release(h)


def test_adams_second_moment_overflow_is_named_as_such():
    """A finite gradient whose square overflows Adam's v: refused whatever the learning rate,
    and the message says so (a smaller learning rate cannot help)."""
    h = nm.compile("/xavier,zero/ (x, 4) (y, 1, <linear>, <mse>)", 1, 1e-30, optimizer="adam")
    nm.build(h)
    with pytest.raises(nm.DivergedError, match="optimizer state of 'y.weight' is not finite"):
        nm.train(h, np.array([[1e12, 0, 0, 0]]), np.array([[1e12]]), verbosity=0)
    nm.release(h)


@pytest.mark.parametrize("verbosity, n, bad", [(0, 10, 8), (2, 10, 8), (1, 403, 402)])
def test_a_diverging_partial_batch_is_named_by_its_place_in_the_epoch(verbosity, n, bad):
    """The partial last batch runs in its own engine call, which counts from 0: the message
    must still name it after the whole batches (it had said batch 0, or with the progress
    chunks of verbosity 1 at 200+ batches, one too few)."""
    B = 4 if n == 10 else 2
    h = nm.compile("/xavier,zero/ (x, 4) (h, 8, <linear>) (y, 2, <linear>, <mse>)", B, 0.01)
    nm.build(h)
    x, e = np.ones((n, 4)), np.zeros((n, 2))
    x[bad:] = 1e30
    x[bad, 0] = -3e38
    with pytest.raises(nm.DivergedError, match=f"at batch {bad // B} of the epoch"):
        nm.train(h, x, e, verbosity=verbosity)
    nm.release(h)


def test_a_diverging_epoch_is_named():
    h = nm.compile("/xavier,zero/ (x, 4) (h, 8, <linear>) (y, 2, <linear>, <mse>)", 4, 0.01,
                   schedule="step", gamma=1e6)
    nm.build(h)
    rng = np.random.default_rng(0)
    x, e = rng.normal(size=(12, 4)), rng.normal(size=(12, 2))
    with pytest.raises(nm.DivergedError, match=r"at batch \d+ of epoch [2-5]/5"):
        nm.train(h, x, e, verbosity=0, epochs=5)
    nm.release(h)


def test_clipping_float64_gradients_whose_squares_overflow():
    """grad_clip on a float64 model whose gradient norm passes 1e154: the sum of squares is inf
    in double, and clip / inf had zeroed the step silently. Clipped, the step is the same as
    at a norm that does not overflow (the direction, at the clip's length)."""
    out = []
    for s in (1e150, 1e160):
        h = nm.compile("/xavier,zero/ (x, 2) (y, 2, <softmax>, <cross_entropy>)", 1, 0.1,
                       dtype="float64", grad_clip=1.0)
        nm.build(h)
        nm.set_params(h, {"y.weight": np.zeros((2, 2)), "y.bias": np.zeros(2)})
        nm.train(h, np.array([[s, 0.0]]), np.array([[1.0, 0.0]]), verbosity=0)
        out.append(nm.get_params(h)["y.weight"][:, 0])
        nm.release(h)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-9)
    np.testing.assert_allclose(np.abs(out[0]), 0.1 / np.sqrt(2), rtol=1e-6)


@pytest.mark.parametrize("x", [1e299, 1e300, 1e308])
def test_clipping_float64_gradients_whose_norm_overflows(x):
    """Gradient entries near the largest double (-5e7 * x on four weights): with x = 1e300 the
    norm itself, max|g| times the norm of g / max|g|, is past 1.8e308, and clip / inf had made
    every entry 0, so the step was kept doing nothing. Clipped, each weight moves by lr *
    clip / 2 = 0.05 (found by a review). At 1e308 the gradient is -inf: refused."""
    h = nm.compile("/xavier,zero/ (x, 4) (y, 1, <linear>, <mse>)", 1, 0.1, dtype="float64",
                   grad_clip=1.0)
    nm.build(h)
    nm.set_params(h, {"y.weight": np.zeros((1, 4)), "y.bias": np.zeros(1)})
    if x == 1e308:
        with pytest.raises(nm.DivergedError, match="gradient of 'y.weight' is not finite"):
            nm.train(h, np.full((1, 4), x), np.array([[5e7]]), verbosity=0)
        np.testing.assert_array_equal(nm.get_params(h)["y.weight"], 0.0)
    else:
        nm.train(h, np.full((1, 4), x), np.array([[5e7]]), verbosity=0)
        np.testing.assert_allclose(nm.get_params(h)["y.weight"], 0.05, rtol=1e-9)
    nm.release(h)


def test_fit_argument_errors():
    h = _model(8)
    x, y = _data(20)
    with pytest.raises(nm.DataError, match="unknown metric"):
        nm.fit(h, x, y, metrics=["f1"], verbosity=0)
    with pytest.raises(nm.DataError, match="validation_split"):
        nm.fit(h, x, y, validation_split=1.5, verbosity=0)
    with pytest.raises(nm.DataError, match="not both"):
        nm.fit(h, x, y, validation=(x, y), validation_split=0.2, verbosity=0)
    with pytest.raises(nm.ShapeError, match="20 samples but expected holds 19"):
        nm.fit(h, x, y[:19], verbosity=0)
    with pytest.raises(nm.DataError, match="bits_per_char"):
        nm.fit(_model(8, text="/xavier, zero/ (x, 5) (y, 1, <linear>, <mse>)"), x, x[:, :1],
               metrics=["bits_per_char"], verbosity=0)
