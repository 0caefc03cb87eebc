"""attn2d and column nodes: the reference cases of extensions-math.md 2f and 3f, exact gradients
(float64 engine vs central differences), the raster mask's causality, float32 (BLAS/SIMD paths)
vs float64 (plain loops), and the nodes inside splits, merges and taps."""
import math
import re

import numpy as np
import pytest

import neuromorph as nm

from test_gradients import check_float32_matches_float64, fd_check

# --------------------------------------------------------------------------- 2f: attn2d kernels

# The window attention and RoPE kernels against their references (the closed-form 3x3 case,
# dense and causal attention, clipping, translation equivariance, RoPE's rotation, relative
# positions and inverse) are C++ unit tests: csrc/tests/test_attn2d.cpp (ctest, in CI through
# tests/sanitize.sh). The node-level attn2d tests follow.


# --------------------------------------------------------------------------- 3f: column

COL_REF = """/ xavier, zero /
(x, 8)
(c, column, 2x2, dim 2, qk 1, mlp 1, skip 1, sigma 1, depth 2, wiring 1)
(y, 8, <linear>, <mse>)
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_reference_case(dtype):
    h = nm.compile(COL_REF, 1, 0.1, dtype=dtype)
    nm.build(h)
    p = nm.get_params(h)
    np.testing.assert_allclose(p["c.attn_bias"], [[0, -.5, -.5, -1], [-.5, 0, -1, -.5],
                                                  [-.5, -1, 0, -.5], [-1, -.5, -.5, 0]])
    for k in ("c.query.weight", "c.key.weight", "c.mlp1.weight", "c.mlp2.weight"):
        p[k][:] = 0
    p["y.weight"] = np.eye(8)
    p["y.bias"][:] = 0
    nm.set_params(h, p)
    x = np.array([[1, -1, 2, 0, 0, 0, 3, 1]])
    y = nm.predict(h, x).reshape(4, 2)
    want = [[2.764988, -2.764988], [3.857455, -1.857455], [1.612535, -1.612535],
            [4.764988, -0.764988]]
    np.testing.assert_allclose(y, want, atol=1e-5)
    nm.train(h, x, np.zeros((1, 8)), verbosity=0)
    parts = nm.history(h, parts=True)
    c2 = parts["c.wiring"][0]
    assert c2 == pytest.approx(0.786811, abs=1e-5)
    assert parts["loss"][0] == pytest.approx(parts["output"][0] + c2, rel=1e-6)
    # the v1 normalisation of the same maps: C1 = C2 * N * mean(D) / max(D)
    pts = np.array([(i, j) for i in range(2) for j in range(2)], float)
    D = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    assert c2 * 4 * D.mean() / D.max() == pytest.approx(1.899530, abs=1e-5)
    nm.release(h)


def test_wiring_cost_changes_training_and_is_reported():
    text = COL_REF.replace("wiring 1", "wiring 0.5").replace("skip 1", "skip 0")
    h = nm.compile(text, 4, 0.05)
    nm.seed(0)
    nm.build(h)
    rng = np.random.default_rng(0)
    x, e = rng.normal(size=(20, 4, 8)), rng.normal(size=(20, 4, 8))
    nm.train(h, x, e, verbosity=0)
    parts = nm.history(h, parts=True)
    assert set(parts) == {"loss", "output", "c.wiring"}
    np.testing.assert_allclose(parts["loss"], parts["output"] + parts["c.wiring"], rtol=1e-6)
    assert parts["c.wiring"][-1] < parts["c.wiring"][0]  # the cost pulls attention local


def _column_positions(shape, geometry, offset):
    """Column coordinates written out from extensions-math.md 3e (not the engine's code)."""
    if geometry == "grid":
        return np.array([(i, j) for i in range(shape[0]) for j in range(shape[1])], float)
    if geometry == "stack":
        return np.array([(l * offset, i, j) for l in range(shape[0]) for i in range(shape[1])
                         for j in range(shape[2])], float)
    N = shape[0]  # sphere: Fibonacci lattice, radius sqrt(N / 4pi) (area 1 per column)
    n = np.arange(N)
    z = 1 - (2 * n + 1) / N
    phi = n * math.pi * (3 - math.sqrt(5))
    rho = np.sqrt(1 - z * z)
    return math.sqrt(N / (4 * math.pi)) * np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1)


def _column_distances(shape, geometry, offset):
    p = _column_positions(shape, geometry, offset)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    return np.sqrt(d2 + (0.0 if geometry == "stack" else offset ** 2))


WIRING_CASES = {  # shape, options, geometry, offset (the default where not given)
    "grid_power2": ("2x3", "power 2", "grid", 0.0),
    "grid_offset1": ("2x2", "offset 1", "grid", 1.0),
    "grid_offset_power": ("3x2", "offset 0.5, power 2", "grid", 0.5),
    "stack_default_offset": ("2x2x2", "power 1", "stack", 2.0),
    "stack_offset_power": ("3x1x2", "offset 1.5, power 2", "stack", 1.5),
    "sphere": ("7", "geometry sphere", "sphere", 0.0),
    "sphere_offset_power": ("6", "geometry sphere, offset 0.5, power 2", "sphere", 0.5),
}


@pytest.mark.parametrize("case", WIRING_CASES)
def test_column_geometry_and_wiring_cost_reference(case):
    """The bias init max(-D²/2σ², -8) and the wiring cost λ·mean_i Σ_j w_ij A_ij with
    w = D^p / mean(D^p), against D and A computed in numpy. With Wq = 0 every score is the
    bias alone, so A = softmax(bias) on every step, and the bias is set to a random matrix."""
    shape, opts, geo, off = WIRING_CASES[case]
    dims = [int(s) for s in shape.split("x")]
    N, d, lam, sigma = int(np.prod(dims)), 2, 0.7, 1.5
    layer = dims[1] * dims[2] if geo == "stack" else N
    text = (f"/xavier, zero/ (x, {layer * d}) (c, column, {shape}, dim {d}, qk 2, mlp 2, depth 2, "
            f"sigma {sigma}, wiring {lam}, {opts}) (y, {layer * d}, <linear>, <mse>)")
    h = nm.compile(text, 2, 0.01, dtype="float64")
    nm.seed(1)
    nm.build(h)
    D = _column_distances(dims, geo, off)
    p = nm.get_params(h)
    np.testing.assert_allclose(p["c.attn_bias"], np.maximum(-D ** 2 / (2 * sigma ** 2), -8),
                               atol=1e-12)
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 1.5, (N, N))
    nm.set_params(h, {"c.query.weight": np.zeros_like(p["c.query.weight"]),
                      "c.key.weight": np.zeros_like(p["c.key.weight"]), "c.attn_bias": bias})
    power = float(re.search(r"power ([\d.]+)", opts).group(1)) if "power" in opts else 1.0
    w = D ** power / (D ** power).mean()
    A = np.exp(bias - bias.max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    want = lam * (w * A).sum(1).mean()
    x = rng.normal(size=(1, 2, layer * d))
    nm.train(h, x, np.zeros((1, 2, layer * d)), verbosity=0)
    assert nm.history(h, parts=True)["c.wiring"][0] == pytest.approx(want, rel=1e-10)
    nm.release(h)


# --------------------------------------------------------------------------- gradients

ATTN2D_CASES = {
    "full": "(g, attn2d, 2x3, dim 8, heads 2, window 1, depth 2, iterations 2, mask raster, mlp 1, <gelu>)",
    "proj0": "(g, attn2d, 3x2, dim 2, proj 0, rope 0, window 1, mlp 2, <tanh>)",
    "window0": "(g, attn2d, 2x2, dim 4, window 0, mlp 1, <swish>)",
    "no_rope": "(g, attn2d, 3x3, dim 4, heads 2, rope 0, window 2, mlp 0.5, <relu_leaky>)",
}


@pytest.mark.parametrize("case", ATTN2D_CASES)
def test_attn2d_gradients(case):
    node = ATTN2D_CASES[case]
    H, W, d = (int(v) for v in re.search(r"(\d+)x(\d+), dim (\d+)", node).groups())
    fd_check(f"/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, {H * W * d}, <tanh>) {node} "
             f"(y, 3, <sigmoid>, <mse>)", 2)


def _trained_norm_params(h, prefix=""):
    """Every parameter (whose name starts with prefix) random: the norms' gains near 1, biases
    and weights of modest size; the same values for every dtype."""
    r = np.random.default_rng(3)
    return {k: (1.0 if k.endswith("norm1.weight") or k.endswith("norm2.weight") else 0.0)
            + r.normal(0, 0.3, v.shape) for k, v in nm.get_params(h).items() if k.startswith(prefix)}


def _with_trained_norms(text, batch, dtype, threads=1, prefix=""):
    """The model of `text` built (seed 1) with _trained_norm_params set; (handle, those params)."""
    h = nm.compile(text, batch, 0.1, dtype=dtype)
    nm.seed(1)
    nm.build(h, threads=threads)
    params = _trained_norm_params(h, prefix)
    nm.set_params(h, params)
    return h, params


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_attn2d_first_node_gradients_with_trained_norms(dtype):
    """attn2d straight after the input: its first block never forms the Q/K/V product's input
    gradient (cpu/attn2d.cpp: the weights' and LN1's gradients through xhat instead of u,
    nn::fold_backward), and LN2 is folded into the MLP's first product in every block.
    Every parameter random, the norms' gains and biases away from 1 and 0, against central
    differences in float64 (float32: the float64 gradients, to 2e-5)."""
    text = ("/xavier, zero/ (x, 96) (g, attn2d, 3x4, dim 8, heads 2, window 1, depth 2, "
            "iterations 2, <gelu>) (y, 3, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, 5, 96))
    e = np.eye(3)[rng.integers(0, 3, 5)][None]
    grads = {}
    for dt in ("float64", dtype):
        h, params = _with_trained_norms(text, 5, dt)
        grads[dt] = (h, params, nm.gradients(h, x, e)[1])
    h, params, g = grads["float64"]
    if dtype == "float64":
        eps = 1e-6
        rng2 = np.random.default_rng(0)
        for name in ("g.0.norm1.weight", "g.0.norm1.bias", "g.0.query.weight", "g.0.key.weight",
                     "g.0.value.weight", "g.1.norm1.weight",
                     # LN2 folded into the MLP's first product (cpu/attn2d.cpp, fold)
                     "g.0.norm2.weight", "g.0.norm2.bias", "g.1.norm2.bias", "g.0.mlp1.weight",
                     "g.1.mlp1.bias", "g.1.mlp2.weight"):
            for idx in [tuple(rng2.integers(0, n) for n in params[name].shape) for _ in range(4)]:
                vals = []
                for delta in (eps, -eps):
                    p = params[name].copy()
                    p[idx] += delta
                    nm.set_params(h, {name: p})
                    vals.append(nm.gradients(h, x, e)[0])
                nm.set_params(h, {name: params[name]})
                fd = (vals[0] - vals[1]) / (2 * eps)
                assert g[name][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (name, idx)
    else:
        for name, g64 in g.items():
            scale = np.abs(g64).max() + 1e-12
            assert np.abs(grads["float32"][2][name] - g64).max() / scale < 2e-5, name


@pytest.mark.parametrize("threads", [1, 2])
def test_attn2d_own_products_with_trained_norms(threads):
    """The float32 node on the engine's own products (cpu/gemm_avx2.cpp: rows of at least 64,
    dim 32, 320 rows per batch so the weight gradients take them too, the 32 x 128 W2 through
    its transpose) and LN2 folded into the MLP (norms away from 1 and 0), against the float64
    node: loss, outputs and every gradient; 2 threads against 1 to 1e-6."""
    text = ("/xavier, zero/ (x, 512) (g, attn2d, 4x4, dim 32, heads 2, window 1, depth 2, "
            "mask raster, <gelu>) (y, 5, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 20, 512))
    e = np.eye(5)[rng.integers(0, 5, 20)][None]
    out = {}
    for dt, thr in (("float64", 1), ("float32", 1), ("float32", threads)):
        h, _ = _with_trained_norms(text, 20, dt, threads=thr, prefix="g.")
        loss, g = nm.gradients(h, x, e)
        out[dt, thr] = (loss, g, nm.predict(h, x))
        nm.release(h)
    ref, one, two = out["float64", 1], out["float32", 1], out["float32", threads]
    assert one[0] == pytest.approx(ref[0], rel=1e-6)
    np.testing.assert_allclose(one[2], ref[2], rtol=2e-5, atol=1e-7)
    for name, g64 in ref[1].items():
        scale = np.abs(g64).max() + 1e-12
        assert np.abs(one[1][name] - g64).max() / scale < 2e-5, name
        assert np.abs(two[1][name] - one[1][name]).max() / scale < 1e-6, name


def test_attn2d_vocab_gradients():
    # token ids in: the input is integers, so no dense layer in front; the embedding learns
    text = ("/xavier, zero/ (x, 4) (g, attn2d, 2x2, dim 4, vocab 5, mlp 1, <gelu>) "
            "(y, 2, <sigmoid>, <mse>)")
    h = nm.compile(text, 3, 0.1, dtype="float64")
    nm.seed(1)
    nm.build(h)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (3, 4)).astype(float)
    e = rng.uniform(0.2, 0.8, (3, 2))
    loss, g = nm.gradients(h, x, e)
    p = nm.get_params(h)
    eps = 1e-6
    for name in ("g.embed", "g.0.query.weight", "g.0.norm1.bias"):
        for idx in list(np.ndindex(p[name].shape))[:12]:
            q = p[name].copy()
            q[idx] += eps
            nm.set_params(h, {name: q})
            up = nm.gradients(h, x, e)[0]
            q[idx] -= 2 * eps
            nm.set_params(h, {name: q})
            down = nm.gradients(h, x, e)[0]
            nm.set_params(h, {name: p[name]})
            assert g[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    unused = sorted(set(range(5)) - set(x.ravel().astype(int)))
    for t in unused:
        assert not g["g.embed"][t].any()
    with pytest.raises(nm.DataError, match="vocabulary"):
        nm.predict(h, np.full((3, 4), 7.0))
    nm.release(h)


COLUMN_CASES = {  # node, its input width
    "grid": ("(c, column, 2x2, dim 2, qk 2, mlp 3, depth 2, wiring 0.3, offset 1, <gelu>)", 8),
    "proj_skip_heads": ("(c, column, 2x2, dim 4, qk 4, heads 2, mlp 2, depth 2, value proj, skip 1, "
                        "in 3, out 2, wiring 0.2, power 2, <swish>)", 12),
    "stack_pos_inject": ("(c, column, 2x1x2, dim 2, qk 2, mlp 2, depth 3, pos 1, inject 1, "
                         "wiring 0.1, <tanh>)", 4),
    "sphere": ("(c, column, 5, dim 2, qk 2, mlp 2, geometry sphere, offset 0.5, sigma 1, "
               "wiring 0.1, <elu>)", 10),
    "none": ("(c, column, 3, dim 2, qk 2, mlp 2, geometry none, depth 2, <sigmoid>)", 6),
}


@pytest.mark.parametrize("case", COLUMN_CASES)
def test_column_gradients(case):
    node, width = COLUMN_CASES[case]
    fd_check(f"/xavier, const_uneven 0.1 0.3/ (x, 3) (pre, {width}, <tanh>) {node} "
             f"(y, 3, <sigmoid>, <mse>)", 2)


# A sheet of 17x17 = 289 columns: the engine runs each attention map in blocks of query rows
# (~64K entries: 226 rows, then 63), and the float32 softmax rows end in a partial vector.
BLOCK_SHEET = ("/xavier, zero/ (x, 1156) (c, column, 17x17, dim 4, qk 4, heads 2, mlp 3, depth 2, "
               "skip 1, wiring 0.2, <tanh>) (y, 1156, <linear>, <mse>)")


def _column_forward_reference(p, x, N, d, heads, depth):
    """The column step of extensions-math.md 3e written out in numpy (skip 1, value input)."""
    def ln(v, g, b):
        mu = v.mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(v.var(-1, keepdims=True) + 1e-5) * g + b

    X = x.reshape(N, d).copy()
    kh, dvh = p["c.query.weight"].shape[1] // heads, d // heads
    wire = 0.0
    for _ in range(depth):
        u = ln(X, p["c.norm1.weight"], p["c.norm1.bias"])
        q = np.einsum("nkd,nd->nk", p["c.query.weight"], u) + p["c.query.bias"]
        k = np.einsum("nkd,nd->nk", p["c.key.weight"], u)
        ctx = np.zeros_like(X)
        for h in range(heads):
            S = q[:, h * kh:(h + 1) * kh] @ k[:, h * kh:(h + 1) * kh].T / math.sqrt(kh)
            S = S + p["c.attn_bias"]
            A = np.exp(S - S.max(1, keepdims=True))
            A /= A.sum(1, keepdims=True)
            ctx[:, h * dvh:(h + 1) * dvh] = A @ u[:, h * dvh:(h + 1) * dvh]
            wire += A
        X = X + ctx
        u2 = ln(X, p["c.norm2.weight"], p["c.norm2.bias"])
        a = np.tanh(np.einsum("nmd,nd->nm", p["c.mlp1.weight"], u2) + p["c.mlp1.bias"])
        X = X + np.einsum("ndm,nm->nd", p["c.mlp2.weight"], a)
    return X.reshape(-1), wire


def test_column_attention_in_blocks_of_query_rows():
    N, d, heads, depth = 289, 4, 2, 2
    h = nm.compile(BLOCK_SHEET, 1, 0.1, dtype="float64")
    nm.seed(2)
    nm.build(h)
    rng = np.random.default_rng(3)
    p = nm.get_params(h)
    for name in p:  # away from the initial gains, biases and the geometric bias
        if not name.startswith("y."):
            p[name] = p[name] + rng.normal(0, 0.3, p[name].shape)
    p["y.weight"], p["y.bias"] = np.eye(N * d), np.zeros(N * d)
    nm.set_params(h, p)
    x = rng.normal(size=(1, N * d))
    want, attn = _column_forward_reference(p, x[0], N, d, heads, depth)
    np.testing.assert_allclose(nm.predict(h, x)[0], want, rtol=1e-10, atol=1e-12)
    # the wiring cost: lambda * sum(w * A) / (depth * heads * N), w = D / mean(D) on the grid
    D = _column_distances((17, 17), "grid", 0.0)
    e = rng.normal(size=(1, N * d))
    nm.train(h, x, e, verbosity=0)
    c = nm.history(h, parts=True)["c.wiring"][0]
    assert c == pytest.approx(0.2 * (D / D.mean() * attn).sum() / (depth * heads * N), rel=1e-10)
    # gradients of sampled entries (every row block of the bias) against central differences
    nm.set_params(h, p)
    loss, g = nm.gradients(h, x, e)
    picks = {name: [tuple(rng.integers(0, s) for s in v.shape) for _ in range(4)]
             for name, v in p.items() if name.startswith("c.")}
    picks["c.attn_bias"] += [(0, 5), (225, 288), (226, 0), (288, 140)]
    for name, idxs in picks.items():
        for idx in idxs:
            vals = []
            for delta in (1e-6, -1e-6):
                q = p[name].copy()
                q[idx] += delta
                nm.set_params(h, {name: q})
                vals.append(nm.gradients(h, x, e)[0])
            nm.set_params(h, {name: p[name]})
            num = (vals[0] - vals[1]) / 2e-6
            assert g[name][idx] == pytest.approx(num, rel=1e-5, abs=1e-8), (name, idx)
    nm.release(h)


# --------------------------------------------------------------------------- properties

def _identity_out(h, width):
    nm.set_params(h, {"y.weight": np.eye(width), "y.bias": np.zeros(width)})


# float64 with one head: the portable kernels; float32 with 4 heads of 16: the flat AVX2 kernels
# (cpu/attn2d_flat.cpp, RoPE inside them) where the CPU has AVX2, which compute only the slots
# up to the cell itself
@pytest.mark.parametrize("dtype,d,heads", [("float64", 4, 1), ("float32", 64, 4)])
def test_raster_mask_is_causal(dtype, d, heads):
    H, W = 3, 4
    text = (f"/xavier, zero/ (x, {H * W * d}) (g, attn2d, {H}x{W}, dim {d}, heads {heads}, "
            f"window 1, depth 2, mask raster) (y, {H * W * d}, <linear>, <mse>)")
    h = nm.compile(text, 1, 0.1, dtype=dtype)
    nm.seed(4)
    nm.build(h)
    _identity_out(h, H * W * d)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, H * W * d))
    base = nm.predict(h, x).reshape(H * W, d)
    for cell in (0, 5, 11):
        x2 = x.copy().reshape(H * W, d)
        x2[cell] += rng.normal(size=d)
        out = nm.predict(h, x2.reshape(1, -1)).reshape(H * W, d)
        np.testing.assert_array_equal(out[:cell], base[:cell])
        assert np.abs(out[cell] - base[cell]).max() > 1e-3
    # without the mask, earlier cells do see a later one
    h2 = nm.compile(text.replace(", mask raster", ""), 1, 0.1, dtype=dtype)
    nm.build(h2)
    _identity_out(h2, H * W * d)
    x2 = x.copy().reshape(H * W, d)
    x2[5] += rng.normal(size=d)
    a, b = nm.predict(h2, x), nm.predict(h2, x2.reshape(1, -1))
    assert np.abs(a.reshape(H * W, d)[:5] - b.reshape(H * W, d)[:5]).max() > 1e-6


@pytest.mark.parametrize("node,width", [
    ("(g, attn2d, 4x5, dim 16, heads 4, window 1, depth 2, iterations 2)", 320),
    # head size 20 (lane dot products with a tail, the generic RoPE loop), raster window 2, and
    # the activations whose value and derivative share work (act_deriv: <gelu>, which these
    # nodes compute as GELU-erf, and Swish)
    ("(g, attn2d, 3x5, dim 40, heads 2, window 2, depth 1, mask raster, <gelu>)", 600),
    ("(g, attn2d, 5x3, dim 32, heads 8, window 1, depth 2, mlp 3, <swish, 0.7>)", 480),
    ("(g, attn2d, 4x4, dim 6, heads 1, window 1, depth 2, proj 0, rope 0)", 96),
    # head sizes of a multiple of 8: the AVX2 window kernels (cpu/attn2d_avx2.cpp) with a partial
    # group of heads, more than 8 heads under the raster mask, heads wider than a vector
    ("(g, attn2d, 4x5, dim 48, heads 3, window 1, depth 2, <gelu>)", 960),
    ("(g, attn2d, 3x4, dim 72, heads 9, window 2, depth 1, mask raster)", 864),
    ("(g, attn2d, 3x3, dim 64, heads 2, window 1, depth 1, mlp 2)", 576),
    # the flat kernels (cpu/attn2d_flat.cpp: 2, 4 or 8 heads of 8, 16 or 32; RoPE fused at 16):
    # case h's heads under the raster mask, case e's, 2 heads of 16, a window of one slot, 4
    # slots per vector under the mask (fewer computed than the window holds), 13 computed slots
    # of 25
    ("(g, attn2d, 4x5, dim 64, heads 4, window 1, depth 2, mask raster, <gelu>)", 1280),
    ("(g, attn2d, 3x4, dim 128, heads 8, window 1, depth 1)", 1536),
    ("(g, attn2d, 4x3, dim 32, heads 2, window 1, depth 2, iterations 2)", 384),
    ("(g, attn2d, 3x5, dim 64, heads 4, window 0, depth 1)", 960),
    ("(g, attn2d, 5x4, dim 16, heads 2, window 1, depth 2, mask raster)", 320),
    ("(g, attn2d, 4x4, dim 64, heads 8, window 2, depth 1, mask raster)", 1024),
    # ... without RoPE at heads of 16 (the unfused flat kernels), 4 heads of 32 under the mask,
    # 4 heads of 8 without it, 16 computed slots (2 heads, raster, window 2), a grid thinner
    # than the window
    ("(g, attn2d, 4x4, dim 64, heads 4, rope 0, window 1, depth 1)", 1024),
    ("(g, attn2d, 3x4, dim 128, heads 4, window 1, depth 1, mask raster)", 1536),
    ("(g, attn2d, 4x3, dim 32, heads 4, window 1, depth 1)", 384),
    ("(g, attn2d, 4x5, dim 32, heads 2, window 2, depth 1, mask raster)", 640),
    ("(g, attn2d, 1x6, dim 32, heads 2, window 1, depth 2, mask raster)", 192),
    ("(c, column, 4x4, dim 8, qk 8, heads 2, mlp 8, depth 3, value proj, wiring 0.1)", 128),
    # attention maps in two blocks of query rows, softmax rows of 289 (a partial last vector)
    ("(c, column, 17x17, dim 4, qk 8, heads 2, mlp 4, depth 2, wiring 0.1, <gelu>)", 1156),
])
def test_float32_fast_path_matches_float64_reference(node, width):
    check_float32_matches_float64(node, width, classes=5, batch=33)


def test_struct_nodes_in_splits_merges_and_taps():
    text = """/xavier, zero/
    (x, 32)
    [s, (g, attn2d, 2x2, dim 8, mlp 1) [t, [gv,]] | (d, 32, <tanh>) (c, column, 2x2, dim 8, qk 4, mlp 4)]
    {m, c, additive}
    {m2, gv, multiplicative}
    (y, 2, <sigmoid>, <mse>)
    """
    fd_check(text.replace("(x, 32)", "(x, 3) (pre, 32, <tanh>)"), 2)
    # and inside a recurrent model: the node reads last step's value through a delayed edge
    rec = """/xavier, zero/
    (x, 8)
    {m, prev, additive}
    (c, column, 2x2, dim 2, qk 2, mlp 2, depth 2, wiring 0.1)
    [last, [prev,]]
    (y, 8, <linear>, <mse>)
    """
    h = nm.compile(rec, 4, 0.1)
    assert nm.info(h)["recurrent"] is True
    nm.release(h)
    fd_check(rec.replace("(x, 8)", "(x, 3) (pre, 8, <tanh>)"), 3)


# --------------------------------------------------------------------------- learning

def _fit(text, channels, epochs=8, batch=32, n_train=3008):
    from neuromorph.tasks import grid_task
    xtr, ytr = grid_task(8, 8, n_train, np.random.default_rng(0), channels)
    xte, yte = grid_task(8, 8, 2016, np.random.default_rng(1), channels)
    h = nm.compile(text, batch, 0.003, optimizer="adam")
    nm.seed(0)
    nm.build(h)
    nb = n_train // batch
    nm.train(h, xtr.reshape(nb, batch, -1), ytr.reshape(nb, batch, -1), verbosity=0,
             epochs=epochs, shuffle=True)
    acc = (nm.predict(h, xte).argmax(1) == yte.argmax(1)).mean()
    n_params = sum(int(np.prod(s)) for _, s in nm.info(h)["params"])
    nm.release(h)
    return acc, n_params


def test_grid_nodes_learn_a_local_rule_an_equal_size_mlp_does_not():
    """Two horizontally adjacent 1s anywhere on a sparse 8x8 grid: held-out accuracy."""
    from pathlib import Path
    models = Path(__file__).resolve().parents[1] / "models"
    attn, n_attn = _fit((models / "grid-model.mdl").read_text(), 0)
    mlp, n_mlp = _fit("/xavier, zero/ (cells, 64) (h, 128, <relu>) (y, 2, <softmax>, <cross_entropy>)", 0)
    assert abs(n_attn - n_mlp) / n_mlp < 0.05
    col, n_col = _fit((models / "column-model.mdl").read_text(), 4, epochs=15)
    mlp2, n_mlp2 = _fit("/xavier, zero/ (cells, 256) (h, 53, <relu>) (y, 2, <softmax>, <cross_entropy>)", 4,
                        epochs=15)
    assert abs(n_col - n_mlp2) / n_mlp2 < 0.05
    assert attn > 0.97 and col > 0.95, (attn, col)
    assert mlp < attn - 0.08 and mlp2 < col - 0.08, (mlp, mlp2)


@pytest.mark.parametrize("name", ["grid-model", "column-model"])
def test_example_models_run_with_mdlc(name, capsys):
    from pathlib import Path
    from mdl.cli import main
    model = Path(__file__).resolve().parents[1] / "models" / f"{name}.mdl"
    assert main(["run", str(model), "--batches", "40", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "two horizontally adjacent" in out and "final loss" in out
    if name == "column-model":
        assert "sheet.wiring" in out


def test_version_1_ir_still_loads_and_ir_records_the_struct():
    import json
    import mdl
    ir = mdl.compile_text("/xavier,zero/ (x, 2) (h, 3, <tanh>) (y, 1, <linear>, <mse>)")
    doc = dict(ir.doc, version=1)
    h = nm.compile_ir(json.dumps(doc), 2, 0.1)
    nm.release(h)
    st = mdl.compile_text("/xavier,zero/ (x, 64) (g, attn2d, 4x4, dim 4, mlp 1.5) "
                          "(y, 1, <linear>, <mse>)").node("g")["struct"]
    assert st == {"kind": "attn2d", "shape": [4, 4], "in_width": 64, "options": {
        "dim": 4, "heads": 1, "window": 1, "depth": 1, "iterations": 1, "mlp": 1.5, "rope": 1,
        "proj": 1, "mask": "none", "hidden": 6}}


def test_bad_token_ids_in_training_leave_the_model_intact():
    text = ("/xavier, zero/ (x, 4) (g, attn2d, 2x2, dim 4, vocab 3, mlp 1) "
            "(y, 2, <softmax>, <cross_entropy>)")
    h = nm.compile(text, 2, 0.1)
    nm.seed(0)
    nm.build(h)
    before = nm.get_params(h)
    good = np.array([[[0, 1, 2, 1], [2, 2, 0, 0]]], float)
    bad = good.copy()
    bad[0, 1, 3] = 3.0
    e = np.eye(2)[[[0, 1]]]
    with pytest.raises(nm.DataError, match=r"token id 3.* at cell 3 .*0\.\.2"):
        nm.train(h, np.concatenate([bad, good]), np.concatenate([e, e]), verbosity=0)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])
    nm.train(h, good, e, verbosity=0)  # still usable
    nm.release(h)
