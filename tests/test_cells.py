"""Model-level constructs of MDL.md section 7: `cells` on layers and the output, the `embed`
and `pool` kinds, energy blocks with clamped layers anywhere, several outputs and a learned
beta, the exact GELU of the structured kinds, and predict on any number of samples.

References are independent of the engine's backward: central finite differences in float64,
numpy re-computations of the forward, and hand-derived values.
"""
import json
import math

import numpy as np
import pytest

import mdl
import neuromorph as nm

GRID_LM = """/xavier, zero/
(x, 16)
(e, embed, 4x4, vocab 7, dim 8)
(g, attn2d, 4x4, dim 8, heads 2, window 1, depth 2, mask raster)
(y, 7, cells 4x4, <softmax>, <cross_entropy>)
"""


def _build(text, batch, dtype="float64", seed=3):
    h = nm.compile(text, batch, 0.1, dtype=dtype)
    nm.seed(seed)
    nm.build(h)
    return h


def fd_grads(text, x, e, batch, rtol=1e-6, atol=1e-9, skip=()):
    """Every parameter's gradient against central differences (float64)."""
    h = _build(text, batch)
    params = nm.get_params(h)
    loss, grads = nm.gradients(h, x, e)
    eps = 1e-6

    def loss_at(name, idx, delta):
        p = params[name].copy()
        p[idx] += delta
        nm.set_params(h, {name: p})
        value = nm.gradients(h, x, e)[0]
        nm.set_params(h, {name: params[name]})
        return value

    checked = 0
    for name, value in params.items():
        if any(name.startswith(s) for s in skip):
            continue
        for idx in np.ndindex(value.shape):
            num = (loss_at(name, idx, eps) - loss_at(name, idx, -eps)) / (2 * eps)
            assert grads[name][idx] == pytest.approx(num, rel=rtol, abs=atol), (name, idx)
            checked += 1
    nm.release(h)
    assert checked > 0
    return loss


# ------------------------------------------------------------------ cells

def test_cells_layer_is_a_position_wise_dense_layer():
    text = "/xavier, const_uneven 0 0.5/ (x, 12) (c, 5, cells 3, <tanh>) (y, 15, <linear>, <mse>)"
    h = _build(text, 4)
    p = nm.get_params(h)
    assert p["c.weight"].shape == (5, 4) and p["c.bias"].shape == (5,)
    x = np.random.default_rng(0).normal(size=(4, 12))
    # the output layer is the identity when its weight is I and bias 0
    nm.set_params(h, {"y.weight": np.eye(15), "y.bias": np.zeros(15)})
    got = nm.predict(h, x)
    want = np.tanh(x.reshape(4, 3, 4) @ p["c.weight"].T + p["c.bias"]).reshape(4, 15)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    nm.release(h)


def test_per_cell_softmax_sums_to_one_in_every_cell():
    h = _build("/xavier, zero/ (x, 6) (y, 5, cells 16, <softmax>, <cross_entropy>)".replace(
        "(x, 6)", "(x, 48)"), 3, dtype="float32")
    out = nm.predict(h, np.random.default_rng(1).normal(size=(3, 48)) * 4).reshape(3, 16, 5)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)
    assert out.sum() == pytest.approx(48, abs=1e-4)  # not 1: the whole vector is not normalised
    nm.release(h)


@pytest.mark.parametrize("out", ["(y, 3, cells 4, <softmax>, <cross_entropy>)",
                                 "(y, 3, cells 2x2, <sigmoid>, <mse>)",
                                 "(y, 2, cells 4, <tanh>, <huber, 0.3>)"])
def test_cells_gradients(out):
    text = f"/xavier, const_uneven 0 0.3/ (x, 8) (a, 6, cells 2, <relu_leaky, 0.2>) {out}"
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 3, 8))
    width = mdl.compile_text(text).node("y")["width"]
    if "cross_entropy" in out:
        e = np.eye(3)[rng.integers(0, 3, (3, 4))].reshape(1, 3, width)
    else:
        e = rng.uniform(-0.5, 0.9, (1, 3, width))
    fd_grads(text, x, e, 3)


def test_cells_loss_is_the_mean_over_cells_of_the_per_cell_loss():
    text = "/xavier, zero/ (x, 8) (y, 3, cells 4, <softmax>, <cross_entropy>)"
    h = _build(text, 2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 8))
    ids = rng.integers(0, 3, (2, 4))
    p = nm.predict(h, x).reshape(2, 4, 3)
    want = -np.mean(np.log(np.take_along_axis(p, ids[..., None], -1)))
    assert nm.evaluate(h, x, ids) == pytest.approx(want, rel=1e-12)
    assert nm.evaluate(h, x, np.eye(3)[ids].reshape(2, 12)) == pytest.approx(want, rel=1e-12)
    nm.release(h)


@pytest.mark.parametrize("act", ["softmax", "sigmoid"])  # fused softmax-CE, and plain CE
def test_class_id_targets_equal_one_hot_targets_and_train_the_same(act):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(12, 8))
    ids = rng.integers(0, 3, (12, 4))
    text = f"/xavier, zero/ (x, 8) (a, 8, <tanh>) (y, 3, cells 4, <{act}>, <cross_entropy>)"
    results = []
    for e in (ids, np.eye(3)[ids].reshape(12, 12), ids.astype(np.float64)):
        h = _build(text, 4, dtype="float32", seed=11)
        loss, grads = nm.gradients(h, x[:4], e[:4])
        nm.train(h, x, e, verbosity=0, epochs=3)
        results.append((loss, grads, nm.get_params(h)))
        nm.release(h)
    for loss, grads, params in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        for k in grads:
            np.testing.assert_allclose(grads[k], results[0][1][k], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(params[k], results[0][2][k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [3, -1, 1.5, np.nan])
def test_bad_class_ids_name_batch_sample_and_cell(bad):
    h = _build("/xavier, zero/ (x, 8) (y, 3, cells 4, <softmax>, <cross_entropy>)", 2, "float32")
    before = nm.get_params(h)
    ids = np.zeros((4, 4))
    ids[3, 2] = bad
    with pytest.raises(nm.DataError, match=r"batch 1, sample 1, cell 2"):
        nm.train(h, np.zeros((4, 8)), ids, verbosity=0)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])
    nm.release(h)


# ------------------------------------------------------------------ embed

def test_embed_forward_is_table_lookup_plus_position():
    text = "/xavier, zero/ (x, 3) (e, embed, 3, vocab 5, dim 2) (y, 6, <linear>, <mse>)"
    h = _build(text, 2)
    p = nm.get_params(h)
    assert p["e.weight"].shape == (5, 2) and p["e.pos"].shape == (3, 2)
    nm.set_params(h, {"y.weight": np.eye(6), "y.bias": np.zeros(6)})
    ids = np.array([[4, 0, 2], [1, 1, 3]])
    want = (p["e.weight"][ids] + p["e.pos"][None]).reshape(2, 6)
    np.testing.assert_allclose(nm.predict(h, ids), want, rtol=1e-14)
    nm.release(h)
    h = _build(text.replace("dim 2)", "dim 2, pos none)"), 2)
    assert "e.pos" not in nm.get_params(h)
    nm.release(h)


@pytest.mark.parametrize("pos", ["learned", "none"])
def test_embed_gradients(pos):
    text = (f"/xavier, zero/ (x, 4) (e, embed, 2x2, vocab 5, dim 3, pos {pos}) "
            f"(a, 4, cells 4, <tanh>) (y, 3, <softmax>, <cross_entropy>)")
    x = np.array([[[0, 4, 4, 2], [3, 1, 0, 0]]], dtype=float)  # a repeated id accumulates
    e = np.eye(3)[[1, 2]][None]
    fd_grads(text, x, e, 2)


@pytest.mark.parametrize("bad", [5, -1, 2.5])
def test_embed_refuses_bad_ids_and_keeps_the_model(bad):
    h = _build("/xavier, zero/ (x, 3) (e, embed, 3, vocab 5, dim 2) (y, 2, <softmax>, "
               "<cross_entropy>)", 2, "float32")
    before = nm.get_params(h)
    x = np.zeros((2, 3))
    x[1, 2] = bad
    with pytest.raises(nm.DataError, match=r"sample 1, cell 2"):
        nm.train(h, x, np.eye(2)[[0, 1]], verbosity=0)
    with pytest.raises(nm.DataError, match=r"sample 1, cell 2"):
        nm.predict(h, x)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])
    nm.release(h)


# ------------------------------------------------------------------ pool

def _pool_ref(x, C, D, op):
    x = x.reshape(len(x), C, D)
    return {"mean": x.mean(1), "max": x.max(1), "first": x[:, 0], "last": x[:, -1]}[op]


@pytest.mark.parametrize("op", ["mean", "max", "first", "last"])
def test_pool_forward_and_gradients(op):
    text = (f"/xavier, const_uneven 0 0.2/ (x, 6) (a, 12, <tanh>) (p, pool, 2x2, dim 3, op {op}) "
            f"(y, 2, <sigmoid>, <mse>)")
    h = _build(text, 3)
    params = nm.get_params(h)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6))
    a = np.tanh(x @ params["a.weight"].T + params["a.bias"])
    want = 1 / (1 + np.exp(-(_pool_ref(a, 4, 3, op) @ params["y.weight"].T + params["y.bias"])))
    np.testing.assert_allclose(nm.predict(h, x), want, rtol=1e-12)
    nm.release(h)
    fd_grads(text, x[None], rng.uniform(0.1, 0.9, (1, 3, 2)), 3)


def test_pool_max_sends_the_gradient_to_the_arg_max_only():
    text = "/xavier, zero/ (x, 6) (a, 6, <linear>) (p, pool, 3, dim 2, op max) (y, 2, <linear>, <mse>)"
    h = _build(text, 1)
    nm.set_params(h, {"a.weight": np.eye(6), "a.bias": np.zeros(6), "y.weight": np.eye(2),
                      "y.bias": np.zeros(2)})
    x = np.array([[1.0, 5.0, 3.0, -2.0, 2.0, 0.0]])  # feature 0: cell 1 wins; feature 1: cell 0
    _, g = nm.gradients(h, x[None], np.zeros((1, 1, 2)))
    # y = (3, 5); dL/dy = 2 y / 2 = y; a.weight's gradient row i = dL/da_i * x
    da = np.zeros(6)
    da[2], da[1] = 3.0, 5.0
    np.testing.assert_allclose(g["a.weight"], np.outer(da, x[0]), rtol=1e-14)
    nm.release(h)


# ------------------------------------------------------------------ energy options

ENERGY = ("/xavier, zero/ (x, {inw}) [am, energy, steps 3, dt 0.3{block}, "
          "(v, 4, <tanh>{vo}) (y, 3, <{lag}>{yo}) (h, 2, <sigmoid>) "
          "(s1, synapse dense, v y) (s2, synapse hidden, y h, units 3, <relu>) "
          "(s3, synapse dense, v h)] (o, 2, <linear>, <mse>)")


def _energy(block="", vo="", yo="", lag="softmax", inw=4):
    return ENERGY.format(block=block, vo=vo, yo=yo, lag=lag, inw=inw)


@pytest.mark.parametrize("case", [
    dict(yo=", clamp 1", inw=7),                             # label clamped too: input (v, y)
    dict(block=", clamp 0", yo=", clamp 1", inw=7),           # v starts from the input, y held
    dict(block=", out v y"),                                  # two outputs side by side
    dict(yo=", learn beta"),                                  # softmax beta learned
    dict(yo=", learn beta", lag="tanh, 0.7"),
    dict(yo=", learn beta", lag="sigmoid, 1.3"),
    dict(yo=", learn beta", lag="exp, 0.5"),
    dict(yo=", learn beta", lag="rexp, 0.8"),
    dict(block=", clamp 0, out y h", yo=", clamp 1, learn beta", inw=7),
])
def test_energy_option_gradients(case):
    text = _energy(**case)
    ir = mdl.compile_text(text)
    inw = ir.node("am")["energy"]["in_width"]
    outw = ir.node("am")["width"]
    text = text.replace("(o, 2,", "(o, 2,")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, 2, inw))
    e = rng.uniform(-0.5, 0.5, (1, 2, 2))
    loss = fd_grads(text, x, e, 2)
    assert np.isfinite(loss) and outw in (2, 3, 5, 7)
    if "learn beta" in case.get("yo", ""):
        h = _build(text, 2)
        beta = float(case.get("lag", "softmax, 1").split(",")[1]) if "," in case.get("lag", "") \
            else 1.0
        assert nm.get_params(h)["y.beta"] == pytest.approx(beta)
        nm.release(h)


def test_energy_input_gradient_reaches_every_clamped_layer():
    text = ("/xavier, zero/ (x, 7) (pre, 7, <tanh>) [am, energy, steps 3, dt 0.3, "
            "(v, 4, <tanh>) (y, 3, <softmax>, clamp 1) (s1, synapse dense, v y) "
            "(q, 2, <relu>) (s2, synapse dense, y q)] (o, 2, <linear>, <mse>)")
    # the input goes through `pre`, so pre's gradient sees the block's input gradient
    rng = np.random.default_rng(8)
    fd_grads(text.replace("(o, 2,", "(o, 2,"), rng.normal(size=(1, 2, 7)),
             rng.uniform(-0.5, 0.5, (1, 2, 2)), 2)


def test_clamped_label_layer_holds_its_input_and_the_output_is_the_concatenation():
    text = ("/xavier, zero/ (x, 7) [am, energy, steps 4, dt 0.5, clamp 0, out v y, "
            "(v, 4, <linear>) (y, 3, <linear>, clamp 1) (s, synapse dense, v y)] "
            "(o, 7, <linear>, <mse>)")
    h = _build(text, 2)
    nm.set_params(h, {"o.weight": np.eye(7), "o.bias": np.zeros(7)})
    x = np.random.default_rng(9).normal(size=(2, 7))
    y = nm.predict(h, x)
    np.testing.assert_allclose(y[:, 4:], x[:, 4:], rtol=1e-14)  # linear g = x: held exactly
    assert np.abs(y[:, :4] - x[:, :4]).max() > 1e-3               # v started at x and moved
    # one Euler step by hand: x_v <- x_v + dt (W y - x_v), three more steps
    W = nm.get_params(h)["s.weight"]  # (4, 3)
    v = x[:, :4].copy()
    for _ in range(4):
        v = v + 0.5 * (x[:, 4:] @ W.T - v)
    np.testing.assert_allclose(y[:, :4], v, rtol=1e-12)
    nm.release(h)


def test_energy_v2_documents_still_load():
    text = ("/xavier, zero/ (x, 4) [am, energy, steps 2, dt 0.3, (v, 4, <tanh>) (y, 3, <softmax>) "
            "(s1, synapse dense, v y)] (o, 2, <linear>, <mse>)")
    doc = mdl.compile_text(text).doc
    old = json.loads(json.dumps(doc))
    old["version"] = 2
    en = next(n for n in old["nodes"] if n["name"] == "am")["energy"]
    en["options"]["out"] = "y"
    for layer in en["layers"]:
        del layer["clamp"], layer["learn_beta"]
    x = np.random.default_rng(1).normal(size=(3, 4))
    outs = []
    for d in (doc, old):
        h = nm.compile_ir(json.dumps(d), 3, 0.1, dtype="float64")
        nm.seed(2)
        nm.build(h)
        outs.append(nm.predict(h, x))
        nm.release(h)
    np.testing.assert_array_equal(outs[0], outs[1])


# ------------------------------------------------------------------ GELU, predict, causality

def test_structured_kinds_use_the_exact_erf_gelu():
    ir = mdl.compile_text("/xavier, zero/ (x, 32) (g, attn2d, 2x2, dim 8, heads 2) "
                          "(y, 2, <softmax>, <cross_entropy>)")
    assert ir.node("g")["activation"]["name"] == "gelu_erf"
    doc = mdl.compile_text("/xavier, zero/ (x, 1) (a, 1, <gelu>) (y, 1, <linear>, <mse>)").doc
    z = np.linspace(-9, 9, 181)
    outs, grads = {}, {}
    for name in ("gelu", "gelu_erf"):
        d = json.loads(json.dumps(doc))
        next(n for n in d["nodes"] if n["name"] == "a")["activation"]["name"] = name
        for dtype in ("float64", "float32"):
            h = nm.compile_ir(json.dumps(d), 181, 0.1, dtype=dtype)
            nm.build(h)
            nm.set_params(h, {"a.weight": [[1.0]], "a.bias": [0.0], "y.weight": [[1.0]],
                              "y.bias": [0.0]})
            outs[name, dtype] = nm.predict(h, z[:, None])[:, 0]
            # d(mean (y - 0)^2)/d(a.bias) = mean of 2 y f'(z): the derivative's float32 path
            _, g = nm.gradients(h, z[None, :, None], np.zeros((1, 181, 1)))
            grads[name, dtype] = g["a.bias"][0]
            nm.release(h)
    exact = np.array([0.5 * t * math.erfc(-t / math.sqrt(2)) for t in z])  # no cancellation
    np.testing.assert_allclose(outs["gelu_erf", "float64"], exact, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(outs["gelu_erf", "float32"], exact, rtol=2e-6, atol=1e-9)
    assert np.abs(outs["gelu", "float64"] - exact).max() > 1e-4  # the tanh form differs
    assert grads["gelu_erf", "float32"] == pytest.approx(grads["gelu_erf", "float64"], rel=1e-5)


def test_erf_gelu_gradient():
    doc = mdl.compile_text("/xavier, const_uneven 0 1/ (x, 3) (a, 4, <gelu>) "
                           "(y, 2, <linear>, <mse>)").doc
    a = next(n for n in doc["nodes"] if n["name"] == "a")
    a["activation"]["name"] = "gelu_erf"
    rng = np.random.default_rng(3)
    h = nm.compile_ir(json.dumps(doc), 4, 0.1, dtype="float64")
    nm.seed(1)
    nm.build(h)
    x, e = rng.normal(size=(1, 4, 3)) * 2, rng.normal(size=(1, 4, 2))
    params = nm.get_params(h)
    _, grads = nm.gradients(h, x, e)
    for idx in np.ndindex(params["a.weight"].shape):
        vals = []
        for d in (1e-6, -1e-6):
            p = params["a.weight"].copy()
            p[idx] += d
            nm.set_params(h, {"a.weight": p})
            vals.append(nm.gradients(h, x, e)[0])
        nm.set_params(h, {"a.weight": params["a.weight"]})
        assert grads["a.weight"][idx] == pytest.approx((vals[0] - vals[1]) / 2e-6, rel=1e-6)
    nm.release(h)


@pytest.mark.parametrize("n", [1, 7, 33])
def test_predict_on_any_number_of_samples_equals_per_sample(n):
    h = _build(GRID_LM, 16, dtype="float32")
    x = np.random.default_rng(n).integers(0, 7, (n, 16))
    got = nm.predict(h, x)
    assert got.shape == (n, 16 * 7)
    single = np.vstack([nm.predict(h, x[i:i + 1]) for i in range(n)])
    np.testing.assert_allclose(got, single, rtol=1e-6, atol=1e-7)
    padded = np.vstack([x, np.zeros(((-n) % 16, 16), int)]).reshape(-1, 16, 16)
    np.testing.assert_allclose(got, nm.predict(h, padded).reshape(-1, 112)[:n], rtol=1e-6,
                               atol=1e-7)
    nm.release(h)


def test_raster_causal_grid_lm_predictions_never_see_later_cells():
    h = _build(GRID_LM, 4, dtype="float64")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 7, 16)
    ref = nm.predict(h, base[None]).reshape(16, 7)
    for k in range(16):
        x = base.copy()
        x[k] = (x[k] + 3) % 7
        out = nm.predict(h, x[None]).reshape(16, 7)
        np.testing.assert_array_equal(out[:k], ref[:k])  # bit-identical before cell k
        assert np.abs(out[k:] - ref[k:]).max() > 0        # cell k itself does see its input
    nm.release(h)


def test_grid_lm_gradients_with_class_ids():
    rng = np.random.default_rng(1)
    text = GRID_LM.replace("4x4", "2x3").replace("(x, 16)", "(x, 6)").replace("depth 2", "depth 1")
    x = rng.integers(0, 7, (1, 2, 6)).astype(float)
    ids = rng.integers(0, 7, (1, 2, 6))
    fd_grads(text, x, ids, 2, rtol=1e-5, atol=1e-8)


def test_float32_fast_paths_match_the_float64_reference():
    text = ("/xavier, zero/ (x, 16) (e, embed, 4x4, vocab 7, dim 8) "
            "(g, attn2d, 4x4, dim 8, heads 2, window 1, mask raster) [s, [feat,]] "
            "(p, pool, 16, dim 8, op max) (q, 16, <tanh>) {m, feat2, additive} "
            "(y, 7, cells 16, <softmax>, <cross_entropy>)")
    text = text.replace("[s, [feat,]] ", "[s, (c, 8, cells 16, <gelu>) (feat2, 128, <linear>)] ")
    text = text.replace("(p, pool, 16, dim 8, op max) (q, 16, <tanh>) {m, feat2, additive}",
                        "(p, pool, 16, dim 8, op max) (q, 128, <tanh>) {m, feat2, additive}")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 7, (1, 33, 16)).astype(float)
    ids = rng.integers(0, 7, (1, 33, 16))
    out = {}
    for dt in ("float64", "float32"):
        h = _build(text, 33, dtype=dt, seed=5)
        out[dt] = (nm.predict(h, x[0]), *nm.gradients(h, x, ids))
        nm.release(h)
    np.testing.assert_allclose(out["float32"][0], out["float64"][0], rtol=1e-4, atol=1e-6)
    assert out["float32"][1] == pytest.approx(out["float64"][1], rel=1e-5)
    for k, g in out["float64"][2].items():
        scale = np.abs(g).max() + 1e-12
        np.testing.assert_allclose(out["float32"][2][k] / scale, g / scale, rtol=0, atol=2e-5,
                                   err_msg=k)
