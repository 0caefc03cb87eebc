"""Energy blocks (HAMUX): the reference cases of extensions-math.md 1f, finite-difference
gradients for every synapse kind and Lagrangian, descent of the energy at small dt, clamping."""
import numpy as np
import pytest

import neuromorph as nm
from mdl.energy import LAGRANGIANS

from test_gradients import fd_check

E1 = """/xavier,zero/
(input, 2)
[am, energy, steps 4, dt 0.5,
    (am_v, 2, <linear>)
    (am_y, 2, <softmax>)
    (am_s, synapse dense, am_v am_y)
]
(output, 2, <linear>, <mse>)
"""
W = np.array([[1.0, -1.0], [0.0, 2.0]])
IDENTITY_OUT = {"output.weight": np.eye(2), "output.bias": np.zeros(2)}


def _model(text, dtype="float64", batch=1):
    h = nm.compile(text, batch, 0.1, dtype=dtype)
    nm.seed(0)
    nm.build(h)
    return h


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_e1_closed_form_trajectory(dtype):
    h = _model(E1, dtype)
    nm.set_params(h, {"am_s.weight": W, **IDENTITY_OUT})
    x = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(nm.predict(h, x)[0], [0.867036, 0.132964], atol=1e-6)
    E = nm.energy(h, x)[0]
    np.testing.assert_allclose(E, [-0.193147, -0.544320, -0.610201, -0.623212, -0.626055], atol=1e-5)
    assert E[0] == pytest.approx(0.5 - np.log(2), abs=1e-6)
    nm.release(h)


def test_e2_gradient_through_the_unroll():
    h = _model(E1.replace("steps 4", "steps 1"))
    nm.set_params(h, {"am_s.weight": W, "output.weight": np.array([[1.0, 0], [0, 0]]),
                      "output.bias": np.zeros(2)})
    x = np.array([[1.0, 0.0]])
    y0 = nm.predict(h, x)[0, 0]
    _, g = nm.gradients(h, x, np.zeros((1, 2)))  # mse over 2 outputs: dL/dy0 = y0
    dW = g["am_s.weight"] / y0
    np.testing.assert_allclose(dW, [[0.098306, -0.098306], [0, 0]], atol=1e-6)
    nm.release(h)


def test_e3_hidden_synapse():
    h = _model(E1.replace("(am_s, synapse dense, am_v am_y)",
                          "(am_s, synapse hidden, am_v am_y, units 2, <relu>)"))
    nm.set_params(h, {"am_s.weight0": np.eye(2), "am_s.weight1": np.eye(2)})
    E = nm.energy(h, np.array([[1.0, 0.0]]))[0]
    np.testing.assert_allclose(E[:3], [-1.443147, -1.550303, -1.603732], atol=1e-5)
    nm.release(h)


# Small blocks, one per synapse kind (and Lagrangian mixes); `in` is the block's input width.
BLOCKS = {
    "dense2_bias": ("(v, 3, <tanh>) (y, 2, <softmax, 2>) (s, synapse dense, v y, bias 1)", 3),
    "dense3": ("(v, 2, <sigmoid>) (u, 3, <relu_leaky, 0.2>) (y, 2, <ghostmax>) "
               "(s, synapse dense, v u y)", 2),
    "bias": ("(v, 3, <linear>) (y, 3, <exp, 0.5>) (s, synapse dense, v y) (b, synapse bias, y)", 3),
    "hidden_norm": ("(v, 3, <tanh>) (y, 2, <softmax>) "
                    "(s, synapse hidden, v y, units 4, norm 1, <softmax, 2>)", 3),
    "hidden_repu": ("(v, 3, <elu>) (y, 2, <sigmoid>) (s, synapse hidden, v y, units 3, <repu, 3>)", 3),
    "tensor": ("(v, 2, <tanh>) (y, 2, <softmax>) (s, synapse tensor, v y, units 2, heads 2, <softmax>)", 2),
    "attention": ("(q, 2x3, <layernorm, 1.5>) (k, 3x2, <tanh>) "
                  "(s, synapse attention, q k, heads 2, qk 2)", 6),
    "self_attention": ("(t, 3x2, <spherical>) (s, synapse attention, t t, heads 1, qk 3, <softmax, 0.5>)", 6),
    "mixer": ("(a, 3x2, <tanh>) (b, 3x2, <selu>) (s, synapse mixer, a b, heads 2, qk 2)", 6),
    "conv_avg": ("(img, 5x5x1, <tanh>) (f, 2x2x2, <rexp>) "
                 "(c, synapse conv, img f, kernel 2, stride 1, pool avg, window 2, pstride 2) "
                 "(y, 2, <softmax>) (h, synapse dense, f y)", 25),
    "conv_max": ("(img, 3x3x2, <sigmoid>) (f, 2x2x1, <relu>) (c, synapse conv, img f, kernel 2, "
                 "pad 1, stride 1, pool max, window 2, pstride 2)", 18),
    "biased_layers": ("(v, 3, bias 1, <tanh>) (y, 2, bias 1, tau 2, <softmax>) "
                      "(s, synapse dense, v y)", 3),
}


@pytest.mark.parametrize("case", BLOCKS)
@pytest.mark.parametrize("clamp", [1, 0])
def test_block_gradients(case, clamp):
    members, width = BLOCKS[case]
    fd_check(f"/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, {width}, <tanh>) "
             f"[e, energy, steps 3, dt 0.3, clamp {clamp}, {members}] "
             f"(out, 2, <sigmoid>, <mse>)", 2, rtol=1e-6, atol=1e-8, seed=5)


ELEMENTWISE = [k for k in LAGRANGIANS if k not in ("softmax", "layernorm", "spherical", "ghostmax")]


@pytest.mark.parametrize("lag", sorted(set(LAGRANGIANS) - {"identity"}))
def test_every_lagrangian_gradient(lag):
    param = {"repu": ", 2.5"}.get(lag, "")
    fd_check(f"/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, 4, <tanh>) "
             f"[e, energy, steps 2, dt 0.4, (v, 4, <tanh>) (u, 2x3, <{lag}{param}>) "
             f"(s, synapse dense, v u)] (y, 2, <sigmoid>, <mse>)", 2, rtol=1e-6, atol=1e-8, seed=2)


@pytest.mark.parametrize("case", BLOCKS)
def test_energy_never_rises_at_small_dt_and_clamped_state_holds(case):
    members, width = BLOCKS[case]
    text = (f"/xavier, zero/ (x, {width}) [e, energy, steps 30, dt 0.05, {members}] "
            f"(out, 2, <sigmoid>, <mse>)")
    h = nm.compile(text, 4, 0.1, dtype="float64")
    rng = np.random.default_rng(0)
    for trial in range(3):
        nm.seed(trial)
        nm.build(h)
        params = nm.get_params(h)  # larger random weights than the init: real dynamics
        nm.set_params(h, {k: rng.normal(0, 0.7, v.shape) for k, v in params.items()
                          if not k.startswith("out.")})
        E = nm.energy(h, rng.normal(0, 1, (4, width)))
        assert (np.diff(E, axis=1) <= 1e-6).all(), np.diff(E, axis=1).max()
    nm.release(h)


def test_clamped_layer_never_moves_and_unclamped_one_does():
    text = ("/xavier, zero/ (x, 2) [e, energy, steps 3, dt 0.5, out v, clamp {c}, (v, 2, <linear>) "
            "(y, 2, <softmax>) (s, synapse dense, v y)] (o, 2, <linear>, <mse>)")
    x = np.array([[0.3, -0.7]])
    for clamp in (1, 0):
        h = _model(text.format(c=clamp))
        nm.set_params(h, {"s.weight": W, "o.weight": np.eye(2), "o.bias": np.zeros(2)})
        out = nm.predict(h, x)[0]
        if clamp:
            np.testing.assert_allclose(out, x[0], atol=1e-12)  # g of a linear layer = its state
        else:
            assert np.abs(out - x[0]).max() > 0.05
        nm.release(h)


def test_energy_example_model_learns_and_its_energy_descends():
    from pathlib import Path
    from neuromorph.tasks import make_task
    import mdl
    path = Path(__file__).resolve().parents[1] / "models" / "energy-model.mdl"
    ir = mdl.compile_file(path)
    x, e, _ = make_task(ir.doc, 16, 400, seed=0)
    xt, et, _ = make_task(ir.doc, 16, 60, seed=0)  # same blobs (same seed), first samples
    h = nm.compile(path, 16, 0.01, optimizer="adam")
    nm.seed(0)
    nm.build(h)
    before = nm.evaluate(h, xt, et)
    nm.train(h, x, e, verbosity=0, epochs=2)
    after = nm.evaluate(h, xt, et)
    assert before > 2.0 and after < 0.35 * before, (before, after)
    E = nm.energy(h, xt[:2])
    assert E.shape == (32, 5) and (np.diff(E, axis=1) <= 1e-5).all()
    nm.release(h)


def test_energy_api_errors():
    h = _model("/xavier,zero/ (x, 2) (h, 2, <tanh>) (y, 2, <linear>, <mse>)")
    with pytest.raises(nm.ShapeError, match="no energy block"):
        nm.energy(h, np.zeros((1, 2)))
    nm.release(h)
    h = _model(E1)
    with pytest.raises(nm.ShapeError, match="no energy block named 'bogus'"):
        nm.energy(h, np.zeros((1, 2)), block="bogus")
    with pytest.raises(nm.ShapeError):
        nm.energy(h, np.zeros((1, 3)))
    nm.release(h)


def test_energy_example_runs_with_mdlc(capsys):
    from pathlib import Path
    from mdl.cli import main
    model = Path(__file__).resolve().parents[1] / "models" / "energy-model.mdl"
    assert main(["run", str(model), "--batches", "50"]) == 0
    assert "final loss" in capsys.readouterr().out


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_LAGS = ["linear", "relu", "tanh", "sigmoid", "softmax", "exp, 0.5", "layernorm", "spherical",
         "ghostmax", "elu", "repu, 3"]


@st.composite
def _random_block(draw):
    n = draw(st.integers(2, 3))
    shapes = [draw(st.sampled_from(["3", "4", "2x3", "3x2"])) for _ in range(n)]
    layers = [f"(l{i}, {s}, <{draw(st.sampled_from(_LAGS))}>)" for i, s in enumerate(shapes)]
    syns = []
    for k in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dense", "hidden", "bias", "attention", "tensor"]))
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if kind == "dense":
            syns.append(f"(s{k}, synapse dense, l{a} l{b})")
        elif kind == "hidden":
            syns.append(f"(s{k}, synapse hidden, l{a} l{b}, units 3, "
                        f"<{draw(st.sampled_from(['relu', 'softmax', 'repu, 3']))}>)")
        elif kind == "bias":
            syns.append(f"(s{k}, synapse bias, l{a})")
        elif kind == "attention":
            syns.append(f"(s{k}, synapse attention, l{a} l{b}, heads 2, qk 2)")
        else:
            syns.append(f"(s{k}, synapse tensor, l{a}, units 2, heads 2, <softmax>)")
    size = int(np.prod([int(v) for v in shapes[0].split("x")]))
    clamp = draw(st.sampled_from([0, 1]))
    return " ".join(layers + syns), size, clamp, draw(st.integers(0, 10_000))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(_random_block())
def test_property_random_blocks_descend_at_small_dt(block):
    members, width, clamp, seed = block
    text = (f"/xavier, zero/ (x, {width}) [e, energy, steps 40, dt 0.02, clamp {clamp}, {members}] "
            f"(out, 2, <sigmoid>, <mse>)")
    h = nm.compile(text, 3, 0.1, dtype="float64")
    nm.seed(seed)
    nm.build(h)
    rng = np.random.default_rng(seed)
    nm.set_params(h, {k: rng.normal(0, 0.5, v.shape) for k, v in nm.get_params(h).items()
                      if not k.startswith("out.")})
    E = nm.energy(h, rng.normal(0, 1, (3, width)))
    # energies unbounded below (e.g. a cubic repu memory on linear layers) may run off to -inf;
    # wherever they are finite, no step raises them
    ok = np.isfinite(E[:, :-1]) & np.isfinite(E[:, 1:])
    rise = np.diff(E, axis=1)[ok]
    assert (rise <= 1e-6 * (1 + np.abs(E[:, 1:][ok]))).all(), rise.max()
    nm.release(h)


# ------------------------------------------------------------------ the IR holds every value (issue 18)
CONV = ("/xavier,zero/ (x, 25) [e, energy, (img, 5x5x1, <tanh>) (f, {out}, <relu>) "
        "(c, synapse conv, img f, kernel 2{pool})] (o, 2, <linear>, <mse>)")


def _energy_ir(text):
    import mdl
    ir = mdl.compile_text(text)
    return ir.doc, next(n for n in ir.doc["nodes"] if n["kind"] == "energy")


def test_the_ir_carries_every_synapse_option():
    _, node = _energy_ir(CONV.format(out="4x4x1", pool=""))
    assert node["energy"]["synapses"][0]["options"] == {
        "kernel": 2, "stride": 1, "pad": 0, "pool": "none", "window": 2, "pstride": 2}
    _, node = _energy_ir(E1.replace("(am_s, synapse dense, am_v am_y)",
                                    "(am_s, synapse attention, am_v am_y)"))
    assert node["energy"]["synapses"][0]["options"] == {"heads": 1, "qk": 64}


@pytest.mark.parametrize("kind, opts, key", [
    ("hidden", ", units 3", "units"), ("hidden", ", units 3", "norm"), ("dense", "", "bias"),
    ("attention", "", "qk"), ("mixer", "", "heads"), ("tensor", ", units 2", "heads")])
def test_a_missing_synapse_option_is_an_ir_error(kind, opts, key):
    import json
    shape = "1x2" if kind == "mixer" else "2"
    text = (f"/xavier,zero/ (x, 2) [e, energy, (v, {shape}, <tanh>) (y, {shape}, <softmax>) "
            f"(s, synapse {kind}, v y{opts})] (o, 2, <linear>, <mse>)")
    doc, node = _energy_ir(text)
    h = nm.compile_ir(json.dumps(doc), 1, 0.1)  # complete: loads
    nm.release(h)
    del node["energy"]["synapses"][0]["options"][key]
    with pytest.raises(nm.IRError, match=f"synapse 's' has no option '{key}'"):
        nm.compile_ir(json.dumps(doc), 1, 0.1)


def test_conv_options_are_validated_in_the_ir():
    import json
    doc, node = _energy_ir(CONV.format(out="2x2x1", pool=", pool avg, window 2"))
    opts = node["energy"]["synapses"][0]["options"]
    for key, value, msg in [("pstride", None, "has no option 'pstride'"),
                            ("pool", "median",
                             r"'pool': value 'median' \(expected one of none, avg, max\)"),
                            ("window", 3, "does not fit its layers")]:
        saved = dict(opts)
        if value is None:
            del opts[key]
        else:
            opts[key] = value
        with pytest.raises(nm.IRError, match=msg):
            nm.compile_ir(json.dumps(doc), 1, 0.1)
        opts.clear()
        opts.update(saved)
    nm.release(nm.compile_ir(json.dumps(doc), 1, 0.1))


# ------------------------------------------------------------------ clamped layers skip their work (issue 19)
HAMUX = ("[am, energy, steps 4, dt 0.4, {opts}(am_v, 40, {vb}<tanh>) (am_y, 10, <softmax>) "
         "(am_s, synapse hidden, am_v am_y, units {units}{norm}, <relu>)]")


@pytest.mark.parametrize("variant", ["plain", "norm", "biased", "unclamped", "wide",
                                     "wide_unclamped"])
def test_hamux_shape_float32_matches_float64(variant):
    """Case g's shape, small: the float32 engine (BLAS, the clamped layer's work skipped and
    deferred) against the float64 reference. With 300 units the 10-wide layer's products take
    the own short-side kernels (gemm.cpp skinny: y's current, its input, its weights' gradient)."""
    from test_gradients import check_float32_matches_float64
    kw = dict(opts="", vb="", norm="", units=300 if variant.startswith("wide") else 64)
    if variant == "norm":
        kw["norm"] = ", norm 1"
    if variant == "biased":
        kw["vb"] = "bias 1, "
    if variant.endswith("unclamped"):
        kw["opts"] = "clamp 0, "
    check_float32_matches_float64(HAMUX.format(**kw), 40, 10, 17)


@pytest.mark.parametrize("variant", ["plain", "biased_beta", "with_pre", "clamped_out"])
def test_clamped_layer_gradients(variant):
    text = ("/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, 4, <tanh>) [e, energy, steps 3, dt 0.3, "
            "(v, 4, {vb}<{vl}>) (y, 3, <softmax>) (u, 2, <sigmoid>) "
            "(s, synapse hidden, v y, units 5, <relu>) (d, synapse dense, v u) (b, synapse bias, v)"
            "] (o, 2, <sigmoid>, <mse>)")
    kw = dict(vb="", vl="tanh", out="")
    if variant == "biased_beta":
        kw.update(vb="bias 1, learn beta, ", vl="tanh, 1.5")
    if variant == "clamped_out":
        kw["out"] = "out v y, "
    t = text.format(**kw)
    if variant == "plain":
        t = t.replace("(x, 3) (pre, 4, <tanh>) ", "(x, 4) ")
    fd_check(t, 2, rtol=1e-6, atol=1e-8, seed=3)


@pytest.mark.parametrize("norm", ["", ", norm 1"])
def test_hidden_synapse_in_a_recurrent_model(norm):
    # recurrent models run forward one sample at a time for the whole batch, then backward:
    # the hidden synapse's per-step state is kept per batch row
    fd_check(f"""/xavier, zero/
    (x, 3) (pre, 4, <tanh>)
    {{m, prev, additive}}
    [e, energy, steps 3, dt 0.4, (v, 4, <tanh>) (w, 4, <softmax>)
        (c, synapse hidden, v w, units 5{norm}, <relu>)]
    [last, [prev,]]
    (y, 2, <sigmoid>, <mse>)
    """, 3, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("clamp", [1, 0])
def test_attention_batched_float32_matches_float64(clamp):
    from test_gradients import check_float32_matches_float64
    check_float32_matches_float64(
        f"[e, energy, steps 3, dt 0.3, clamp {clamp}, (q, 4x8, <tanh>) (k, 6x8, <layernorm>) "
        f"(s, synapse attention, q k, heads 2, qk 8) (t, synapse attention, k k, heads 1, qk 4)]",
        32, 48, 17)


def test_conv_without_pooling_loads_without_window_and_pstride():
    # IR files written before every option was written: without pooling nothing reads them
    import json
    doc, node = _energy_ir(CONV.format(out="4x4x1", pool=""))
    for key in ("window", "pstride"):
        del node["energy"]["synapses"][0]["options"][key]
    nm.release(nm.compile_ir(json.dumps(doc), 1, 0.1))


@pytest.mark.parametrize("clamp", [1, 0])
def test_mixer_batched_float32_matches_float64(clamp):
    from test_gradients import check_float32_matches_float64
    check_float32_matches_float64(
        f"[e, energy, steps 3, dt 0.3, clamp {clamp}, (a, 5x6, <tanh>) (b, 5x4, <softmax>) "
        f"(s, synapse mixer, a b, heads 2, qk 8)]", 30, 20, 17)


@pytest.mark.parametrize("clamp", [1, 0])
def test_tanh_and_sigmoid_layers_float32_matches_float64(clamp):
    # the float engine evaluates tanh / sigmoid layers (beta != 1, one of them learned) through
    # the vectorised activations; the float64 reference through libm
    from test_gradients import check_float32_matches_float64
    check_float32_matches_float64(
        f"[e, energy, steps 3, dt 0.3, clamp {clamp}, (v, 24, <tanh, 1.7>) "
        f"(u, 12, learn beta, <sigmoid, 0.6>) (o, 10, <softmax>) "
        f"(s, synapse hidden, v o, units 16, <relu>) (d, synapse dense, v u)]", 24, 10, 17)


# ------------------------------------------------------------------ chunks of samples on threads
# With build(threads=N) the block runs chunks of its samples side by side (every scratch
# buffer by batch row or by chunk; the backward steps too unless the weights they write
# outnumber a chunk's state, those gradients per chunk, added in chunk order; the end of
# backward on the whole batch): the
# loss, the outputs and every gradient equal the one-thread run's, for every synapse kind,
# clamped or not, with a learned softmax beta (its dbeta scratch per thread).
CHUNKED = dict(BLOCKS, learned_softmax_beta=(
    "(v, 3, bias 1, <tanh>) (y, 2, learn beta, <softmax, 1.5>) (s, synapse hidden, v y, units 4, "
    "norm 1, <relu>) (b, synapse bias, y)", 3),
    # chunk-written weights outnumber a chunk's state: chunks in forward only, the backward
    # steps on the whole batch
    wide_hidden=("(v, 3, <tanh>) (y, 2, <softmax>) (s, synapse hidden, v y, units 300, <relu>)", 3),
    # with norm every weight's gradient is end_vjp's (after the chunks): steps by chunks
    wide_hidden_norm=("(v, 3, <tanh>) (y, 2, <softmax>) (s, synapse hidden, v y, units 300, "
                      "norm 1, <relu>)", 3))


@pytest.mark.parametrize("case", CHUNKED)
@pytest.mark.parametrize("clamp", [1, 0])
def test_chunks_on_threads_equal_one_thread(case, clamp):
    members, width = CHUNKED[case]
    text = (f"/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, {width}, <tanh>) "
            f"[e, energy, steps 3, dt 0.3, clamp {clamp}, {members}] (out, 2, <sigmoid>, <mse>)")
    rng = np.random.default_rng(1)
    x, e = rng.uniform(-1, 1, (1, 7, 3)), rng.uniform(0.1, 0.9, (1, 7, 2))
    runs = []
    try:
        for threads in (1, 2, 3, 2):
            h = nm.compile(text, 7, 0.1, dtype="float64")
            nm.seed(4)
            nm.build(h, threads=threads)
            params = nm.get_params(h)
            nm.set_params(h, {k: v + rng.normal(0, 0.3, v.shape) * (k != "out.weight")
                              for k, v in params.items()} if not runs else runs[0][3])
            loss, grads = nm.gradients(h, x, e)
            runs.append((loss, grads, nm.predict(h, x), nm.get_params(h)))
            nm.release(h)
    finally:
        nm._core.set_threads(1)
    one = runs[0]
    for run in runs[1:]:
        assert run[0] == pytest.approx(one[0], rel=1e-12)
        np.testing.assert_allclose(run[2], one[2], rtol=1e-12, atol=1e-14)
        for k, g in one[1].items():
            np.testing.assert_allclose(run[1][k], g, rtol=1e-10, atol=1e-13, err_msg=k)
    for k, g in runs[1][1].items():  # a fixed thread count: the same bits
        np.testing.assert_array_equal(runs[3][1][k], g)


def test_clamped_part_on_the_whole_batch_with_threads():
    """With 2 threads the clamped layer's part of the hidden current is one product over the
    batch before the chunks (cpu/energy.cpp fixed_parts): predictions equal the 1-thread
    model's, and so does inspect (one chunk, nothing hoisted) run right after a hoisted forward
    on other samples, whose part must not be reused; in a recurrent model (forward a sample
    row at a time) the gradients equal too."""
    text = ("/xavier, zero/ (x, 40) " + HAMUX.format(opts="", vb="", norm="", units=300)
            + " (y, 10, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 17, 40)), rng.normal(size=(17, 40))
    out = {}
    try:
        for threads in (1, 2):
            h = nm.compile(text, 17, 0.1)
            nm.seed(5)
            nm.build(h, threads=threads)
            p = nm.predict(h, a[0])
            nm.predict(h, a[1])  # a hoisted forward on other samples first
            out[threads] = (p, nm.inspect(h, b, "am")["am"])
            nm.release(h)
    finally:
        nm._core.set_threads(1)
    np.testing.assert_allclose(out[2][0], out[1][0], rtol=1e-5, atol=1e-7)
    assert out[1][1].keys() == out[2][1].keys()
    for k, v in out[1][1].items():
        np.testing.assert_allclose(out[2][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    rec = """/xavier, zero/ (x, 3) (pre, 4, <tanh>) {m, prev, additive}
        [e, energy, steps 3, dt 0.4, (v, 4, <tanh>) (w, 4, <softmax>)
         (c, synapse hidden, v w, units 5, <relu>)] [last, [prev,]] (y, 2, <sigmoid>, <mse>)"""
    x, e = rng.uniform(-1, 1, (1, 9, 3)), rng.uniform(0.1, 0.9, (1, 9, 2))
    grads = []
    try:
        for threads in (1, 2):
            h = nm.compile(rec, 9, 0.1, dtype="float64")
            nm.seed(6)
            nm.build(h, threads=threads)
            grads.append(nm.gradients(h, x, e))
            nm.release(h)
    finally:
        nm._core.set_threads(1)
    assert grads[1][0] == grads[0][0]
    for k, g in grads[0][1].items():
        np.testing.assert_array_equal(grads[1][1][k], g)
