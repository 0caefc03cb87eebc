"""Energy blocks under plain SGD: the clamped layers' weights updated in place by their
deferred product (docs/engine.md, "Deferred weight updates"; cpu/deferred.h) against float64,
through the deferred and the arena's way, between other calls, and refused steps."""
import numpy as np
import pytest

import neuromorph as nm

from test_energy import HAMUX


def _hamux_text(variant):
    kw = dict(opts="", vb="", norm="", units=300 if variant == "wide" else 64)
    kw["norm"] = ", norm 1" if variant == "norm" else ""
    kw["vb"] = "bias 1, " if variant == "biased" else ""
    kw["opts"] = "clamp 0, " if variant == "unclamped" else ""
    return "/xavier, zero/ (x, 40) " + HAMUX.format(**kw) + " (y, 10, <softmax>, <cross_entropy>)"


def _sgd_runs(text, runs, batches, lr, **optimizer):
    """Parameters before and after each batch of plain SGD, for each (dtype, threads) run."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(batches, 17, 40))
    e = np.eye(10)[rng.integers(0, 10, (batches, 17))]
    out = {}
    try:
        for dtype, threads in runs:
            h = nm.compile(text, 17, lr, dtype=dtype, **optimizer)
            nm.seed(3)
            nm.build(h, threads=threads)
            seq = [{k: v.astype(np.float64) for k, v in nm.get_params(h).items()}]
            for b in range(batches):
                nm.train(h, x[b:b + 1], e[b:b + 1], verbosity=0)
                seq.append({k: v.astype(np.float64) for k, v in nm.get_params(h).items()})
            out[(dtype, threads)] = seq
            nm.release(h)
    finally:
        nm._core.set_threads(1)
    return out


@pytest.mark.parametrize("variant", ["plain", "biased", "wide", "norm", "unclamped"])
def test_sgd_steps_match_float64(variant):
    """Plain SGD steps of a HAMUX block, float32 on 1 and 2 threads against float64, compared
    by each step's change of every parameter: at rate 1e4 (then 1e37, the step schedule's gamma
    1e33) the change dwarfs the weights, so float32's rounding of the weights does not hide an
    error in it. Where the clamped layer's weights are at least half the parameters (plain,
    biased, wide) their update is the deferred product applied in place (cpu/model.cpp
    deferred_step); at 1e37 its bounds fail and that step takes the arena's way; norm and
    unclamped keep no deferred product. Measured worst: 1.04e-6 of the largest change."""
    out = _sgd_runs(_hamux_text(variant), [("float64", 1), ("float32", 1), ("float32", 2)], 2,
                    100.0, schedule="step", step_size=1, gamma=1e35)
    ref = out[("float64", 1)]
    for run in (("float32", 1), ("float32", 2)):
        seq = out[run]
        for b in range(1, len(ref)):
            for k in ref[b]:
                d64 = ref[b][k] - ref[b - 1][k]
                d32 = seq[b][k] - seq[b - 1][k]
                scale = np.abs(d64).max() + 1e-300
                assert np.abs(d32 - d64).max() / scale < 1e-5, (run, b, k)


def test_gradients_between_deferred_steps():
    """nm.gradients between training batches fills every weight's gradient in the arena,
    the deferred ones too; the next deferring step must zero them again before a step that goes
    the arena's way (rate 1e37, bounds failed) adds its product there: the same parameters as
    training without the call, and the same gradients as a fresh model at those parameters."""
    text = _hamux_text("plain")
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 17, 40))
    e = np.eye(10)[rng.integers(0, 10, (3, 17))]
    final, grads = [], []
    for between in (True, False):
        h = nm.compile(text, 17, 100.0, schedule="step", step_size=1, gamma=1e35)
        nm.seed(3)
        nm.build(h)
        nm.train(h, x[:1], e[:1], verbosity=0)  # rate 100: deferred
        if between:
            grads.append(nm.gradients(h, x[1:2], e[1:2])[1])
            fresh = nm.compile(text, 17, 1.0)
            nm.build(fresh)
            nm.set_params(fresh, nm.get_params(h))
            grads.append(nm.gradients(fresh, x[1:2], e[1:2])[1])
            nm.release(fresh)
        nm.train(h, x[2:3], e[2:3], verbosity=0)  # rate 1e37: the arena's way
        final.append(nm.get_params(h))
        nm.release(h)
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[1][k], err_msg=k)
        assert np.abs(grads[0][k]).max() > 0, k
    for k in final[0]:
        np.testing.assert_array_equal(final[0][k], final[1][k], err_msg=k)
        assert np.isfinite(final[0][k]).all() and np.abs(final[0][k]).max() > 1e30, k


def _refused_unchanged(h, x, e, match):
    """One batch refused with DivergedError matching `match`, every parameter as it was."""
    before = nm.get_params(h)
    with pytest.raises(nm.DivergedError, match=match):
        nm.train(h, x, e, verbosity=0)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_refused_deferring_step_changes_nothing():
    """A step whose deferred product is safe by its bounds (inputs near zero: a tiny clamped
    layer) but whose label-layer bias update leaves the float range is refused, naming that
    bias, before the deferred product is applied: every parameter, the clamped layer's weights
    too, stays as it was."""
    text = _hamux_text("plain")
    rng = np.random.default_rng(10)
    x = rng.normal(size=(1, 17, 40)) * 1e-30
    e = np.eye(10)[rng.integers(0, 10, (1, 17))]
    h = nm.compile(text, 17, 1e38)
    nm.seed(3)
    nm.build(h)
    nm.set_params(h, {"y.bias": np.full(10, 3.4e38, np.float32)})
    _refused_unchanged(h, x, e, "update of 'y.bias' is not finite")
    nm.release(h)


def test_a_gradient_past_the_float_range_is_refused_at_a_small_rate():
    """The clamped layer's gradient gᵀ Σh̄ past FLT_MAX (huge inputs, huge label weights) at a
    rate small enough that rate x its bound stays below it: the product is formed before the
    rate scales it, so the deferred update must not run; the step is refused naming that
    gradient, as on the arena's way (grad_clip: no deferral), and nothing changes (a review
    found the step accepted with inf weights, session 16)."""
    text = ("/xavier, zero/ (x, 40) [am, energy, steps 4, dt 0.4, (am_v, 40, <identity>) "
            "(am_y, 10, <identity>) (am_s, synapse hidden, am_v am_y, units 64, <relu>)] "
            "(y, 10, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 17, 40)) * 1e14
    e = np.eye(10)[rng.integers(0, 10, (1, 17))]
    for kw in ({}, {"grad_clip": 1e30}):
        h = nm.compile(text, 17, 1e-10, **kw)
        nm.seed(3)
        nm.build(h)
        p = nm.get_params(h)
        nm.set_params(h, {"y.weight": np.sign(p["y.weight"]) * np.float32(1e30),
                          "am_s.weight0": p["am_s.weight0"] * np.float32(1e-20)})
        _refused_unchanged(h, x, e, "gradient of 'am_s.weight0' is not finite")
        nm.release(h)
