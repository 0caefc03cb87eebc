"""The float32 fast paths (BLAS products, SIMD activations) against the scalar oracle.

A float64 model runs the scalar reference ops; a float32 model with the same parameters runs
the fast paths. Predictions and gradients must agree to float precision on random shapes,
including odd widths and batch 1, on both sides of the BLAS size threshold.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm
from mdl.functions import ACTIVATIONS

ROOT = Path(__file__).resolve().parents[1]


def twin(text, batch):
    h32 = nm.compile(text, batch, 0.1)
    h64 = nm.compile(text, batch, 0.1, dtype="float64")
    nm.seed(7)
    nm.build(h32)
    nm.build(h64)
    nm.set_params(h64, {k: v.astype(np.float64) for k, v in nm.get_params(h32).items()})
    return h32, h64


def close(a, b, rtol=1e-5, floor=5e-2):
    """|a - b| <= rtol * max(|b|, floor * max|b|) elementwise.

    The floor is there because float32 rounds the *terms* of a sum: an entry that cancels
    down from terms near the tensor's largest values carries their rounding (e.g. 0.0056 summed
    from terms of 0.5 is off by ~1e-7 in any float32 code). The activation kernels alone are
    within 6e-7 relative of the double reference everywhere they are not in underflow.
    """
    scale = np.maximum(np.abs(b), np.abs(b).max() * floor + 1e-12)
    assert np.all(np.abs(a - b) <= rtol * scale), np.max(np.abs(a - b) / scale)


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a != "binary_step"]
                         + ["elu, 0.3", "elu, 2", "relu_leaky, 0.2", "relu_parametric, 0.6",
                            "swish, 0.4"])
@pytest.mark.parametrize("width,batch", [(1, 1), (3, 5), (17, 2), (255, 3), (64, 40)])
def test_activation_fast_path_matches_reference(act, width, batch):
    text = f"/xavier,const_uneven 0 0.5/ (x, 5) (h, {width}, <{act}>) (y, 3, <linear>, <mse>)"
    h32, h64 = twin(text, batch)
    rng = np.random.default_rng(width)
    x = rng.normal(0, 2, (2, batch, 5))
    e = rng.normal(0, 1, (2, batch, 3))
    close(nm.predict(h32, x).astype(np.float64), nm.predict(h64, x))
    l32, g32 = nm.gradients(h32, x[:1], e[:1])
    l64, g64 = nm.gradients(h64, x[:1], e[:1])
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in g64:
        close(g32[k].astype(np.float64), g64[k], rtol=2e-5)
    nm.release(h32)
    nm.release(h64)


@pytest.mark.parametrize("sizes,batch", [([1, 1, 1], 1), ([5, 17, 3], 1), ([255, 33, 7], 9),
                                         ([130, 257, 4], 5), ([64, 128, 10], 64)])
def test_dense_products_match_reference(sizes, batch):
    """Both below and above the BLAS threshold (rows x in x out = 4096)."""
    layers = "".join(f"(h{i}, {w}, <tanh>)" for i, w in enumerate(sizes[1:-1]))
    text = f"/xavier,zero/ (x, {sizes[0]}) {layers} (y, {sizes[-1]}, <sigmoid>, <mse>)"
    h32, h64 = twin(text, batch)
    rng = np.random.default_rng(1)
    x, e = rng.uniform(-1, 1, (1, batch, sizes[0])), rng.uniform(0, 1, (1, batch, sizes[-1]))
    close(nm.predict(h32, x).astype(np.float64), nm.predict(h64, x))
    _, g32 = nm.gradients(h32, x, e)
    _, g64 = nm.gradients(h64, x, e)
    for k in g64:
        close(g32[k].astype(np.float64), g64[k], rtol=2e-5)


@pytest.mark.parametrize("batch", [1, 16, 33])
def test_training_steps_track_the_reference(batch):
    """Plain SGD on a float model is fused into backward (gemm.cpp dense_input_grad, dense_sgd_update): batch 1
    and 16 take the small-batch kernels, 33 the BLAS path (rows > 16). The float64 model's
    unfused update is the reference for weights and biases alike."""
    text = "/xavier,zero/ (x, 20) (h, 300, <gelu>) (y, 4, <softmax>, <cross_entropy>)"
    h32, h64 = twin(text, batch)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (5, batch, 20))
    e = np.eye(4)[rng.integers(0, 4, (5, batch))]
    for k in range(5):
        a = nm.train(h32, x[k:k + 1], e[k:k + 1], verbosity=0)
        b = nm.train(h64, x[k:k + 1], e[k:k + 1], verbosity=0)
        assert a == pytest.approx(b, rel=1e-5)
    p32, p64 = nm.get_params(h32), nm.get_params(h64)
    for k in p64:
        assert np.abs(p64[k]).max() > 0  # the zero-initialised biases moved too
        close(p32[k].astype(np.float64), p64[k], rtol=1e-4)


@pytest.mark.parametrize("sizes,batch", [([400, 352, 80, 10], 32), ([200, 96, 10], 48),
                                         ([208, 130, 70, 10], 32)])
def test_weights_as_rows_match_reference(sizes, batch):
    """Batches of 32 and 48 rows take the weights as the own product's row operand (gemm.cpp
    by_weights): the forward always (in >= 16, out >= 64), the stored weight gradient
    (`gradients`, any optimizer but plain SGD) and the fused SGD step only when the layer's
    input is a multiple of 16 wide (200 is not; 400 and 208 are); the first shape is large
    enough to be cut over two threads. Predictions, gradients and five SGD steps against the
    float64 model; 1 and 2 threads agree."""
    layers = "".join(f"(h{i}, {w}, <relu>)" for i, w in enumerate(sizes[1:-1]))
    text = f"/xavier,zero/ (x, {sizes[0]}) {layers} (y, {sizes[-1]}, <softmax>, <cross_entropy>)"
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (5, batch, sizes[0]))
    e = np.eye(sizes[-1])[rng.integers(0, sizes[-1], (5, batch))]
    runs = []
    for threads in (1, 2):
        h32 = nm.compile(text, batch, 0.05)
        h64 = nm.compile(text, batch, 0.05, dtype="float64")
        nm.seed(7)
        nm.build(h32, threads=threads)
        nm.build(h64)
        nm.set_params(h64, {k: v.astype(np.float64) for k, v in nm.get_params(h32).items()})
        close(nm.predict(h32, x[0]).astype(np.float64), nm.predict(h64, x[0]))
        _, g32 = nm.gradients(h32, x[:1], e[:1])
        _, g64 = nm.gradients(h64, x[:1], e[:1])
        for k in g64:
            assert np.abs(g64[k]).max() > 0
            close(g32[k].astype(np.float64), g64[k], rtol=2e-5)
        losses = []
        for k in range(5):
            a = nm.train(h32, x[k:k + 1], e[k:k + 1], verbosity=0)
            b = nm.train(h64, x[k:k + 1], e[k:k + 1], verbosity=0)
            assert a == pytest.approx(b, rel=1e-5)
            losses.append(a)
        p32, p64 = nm.get_params(h32), nm.get_params(h64)
        for k in p64:
            close(p32[k].astype(np.float64), p64[k], rtol=1e-4)
        runs.append((losses, p32))
        nm.release(h32)
        nm.release(h64)
    nm._core.set_threads(1)
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu", "selu", "swish, 1.7", "gelu"])
def test_activation_kernels_pointwise_accuracy(act):
    """f(x) itself (identity weights) over [-12, 12], relative to the double reference."""
    x = np.linspace(-12, 12, 4001).reshape(-1, 1)
    out = {}
    for dt in ("float32", "float64"):
        h = nm.compile(f"/xavier,zero/ (x,1)(h,1,<{act}>)(y,1,<linear>,<mse>)", 1, 0.1, dtype=dt)
        nm.build(h)
        one, zero = np.ones((1, 1)), np.zeros(1)
        nm.set_params(h, {"h.weight": one, "h.bias": zero, "y.weight": one, "y.bias": zero})
        out[dt] = nm.predict(h, x).ravel().astype(np.float64)
        nm.release(h)
    ref, got = out["float64"], out["float32"]
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)
    main = np.abs(ref) > 1e-9
    # e^t with float32 t carries ~|t| * 6e-8 relative error (t ~ -30 at gelu(-6)): 1e-5 bound.
    assert rel[main].max() < 1e-5
    assert np.median(rel[main]) < 1e-7
    # Far tails (|f| < 1e-9, e.g. gelu(-9) = 1e-28 from e^-66) are ill-conditioned: float32's
    # rounding of the exponent's argument alone is ~4e-6 there. Still bounded, never garbage.
    tail = ~main & (np.abs(ref) > 1e-30)
    assert not tail.any() or rel[tail].max() < 1e-4


def test_one_and_two_threads_agree():
    text = "/xavier,zero/ (x, 300) (h, 400, <relu>) (y, 10, <softmax>, <cross_entropy>)"
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (3, 64, 300))
    e = np.eye(10)[rng.integers(0, 10, (3, 64))]
    runs = []
    for threads in (1, 2):
        h = nm.compile(text, 64, 0.05)
        nm.seed(4)
        nm.build(h, threads=threads)
        losses = [nm.train(h, x[k:k + 1], e[k:k + 1], verbosity=0) for k in range(3)]
        runs.append((losses, nm.get_params(h)))
        nm.release(h)
    nm._core.set_threads(1)  # leave the process as the other tests expect
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-5, atol=1e-7)


def test_softmax_rows_keep_nan_and_inf():
    """A NaN or +inf reaching a float softmax makes its row NaN, on every path (the portable
    rerun below runs this too; the AVX2 exponential had clamped NaN to a finite value, which
    made such rows finite); -inf gives exactly 0. Overflowing
    products make them: 2 * 3e38 is +inf in float32, +inf - inf is NaN. Rows of 12: a whole
    vector of 8 and a masked last one of 4."""
    h = nm.compile("/xavier,zero/ (x, 12) (y, 12, <softmax>, <mse>)", 5, 0.1)
    nm.build(h)
    W = np.eye(12)
    W[3, 3], W[3, 4], W[10, 10], W[10, 11], W[9, 9], W[2, 2] = 2, -2, 2, -2, 2, 2
    nm.set_params(h, {"y.weight": W, "y.bias": np.zeros(12)})
    x = np.zeros((5, 12))
    x[0, 3] = x[0, 4] = 3e38  # NaN in the whole vector
    x[1, 10] = x[1, 11] = 3e38  # NaN in the masked tail
    x[2, 9] = 3e38  # +inf
    x[3] = np.arange(12) / 5
    x[4, 2] = -3e38  # -inf
    y = nm.predict(h, x)
    assert np.isnan(y[:3]).all()
    z = (x[3] @ W.T).astype(np.float64)
    np.testing.assert_allclose(y[3], np.exp(z - z.max()) / np.exp(z - z.max()).sum(), rtol=1e-5)
    assert y[4, 2] == 0.0
    np.testing.assert_allclose(y[4, np.arange(12) != 2], 1 / 11, rtol=1e-6)
    nm.release(h)


@pytest.mark.skipif(os.environ.get("NEUROMORPH_NO_AVX2"), reason="already on the portable path")
def test_portable_path_passes_the_same_tests(tmp_path):
    """The non-AVX2 kernels (what a CPU without AVX2, or ARM, runs) against the same oracle."""
    env = dict(os.environ, NEUROMORPH_NO_AVX2="1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # no cache provider: the inner run must not write .pytest_cache into the source tree
    # and the structured kinds' float32 paths (attn2d's portable window kernels, the column's
    # softmax rows with a bias and with a gradient sum) against their float64 reference; the
    # fused SGD step's finiteness verdict (its small batches take BLAS there: gemm.cpp)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        __file__, str(Path(__file__).with_name("test_struct_nodes.py")),
                        str(Path(__file__).with_name("test_fit.py")), "-k",
                        "activation_fast_path or dense_products or training_steps or softmax_rows "
                        "or float32_fast_path_matches or gradient_that_overflows or "
                        "huge_but_finite or edge_of_the_float_range"],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout


def test_bench_timed_runs_last_long_enough(tmp_path):
    """bench/run.py repeats a short call back to back until a timed run lasts MIN_RUN_S (0.25 s
    without --quick) and reports the time per call; a long call is timed once."""
    code = textwrap.dedent("""
        import sys, time
        sys.argv = ["run.py", "--cases", "a"]
        import importlib.util
        spec = importlib.util.spec_from_file_location("benchrun", BENCH)
        b = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(b)
        assert b.MIN_RUN_S == 0.25
        calls = []
        short = lambda: (calls.append(1), time.sleep(0.02))
        n = b.calls_per_run(short)
        assert 2 <= n <= 13, n
        assert len(calls) == 1  # the calibration call
        per_call = b.timed_run(short, n)
        assert len(calls) == 1 + n and 0.02 <= per_call < 0.2, per_call
        assert b.calls_per_run(lambda: time.sleep(0.3)) == 1
        med = b.interleaved_medians({"x": short, "y": lambda: time.sleep(0.05)}, 2)
        assert 0.02 <= med["x"] < 0.2 and 0.05 <= med["y"] < 0.3, med
        print("ok")
    """).replace("BENCH", repr(str(ROOT / "bench" / "run.py")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_bench_quick_smoke(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))  # no bench/__pycache__
    assert r.returncode == 0, r.stderr
    import json
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert {row["case"] for row in rows} == {"a", "b", "c", "d", "e", "f"}
    assert all(row["ours_us_per_step"] > 0 and "machine" in row for row in rows)
    for row in rows:  # every figure that is a ratio or a rate says what it measures
        for key in row:
            if key.startswith(("ratio", "speedup", "pct_")) or key.endswith(("_us", "_us_per_step",
                                                                             "_per_sample")):
                assert key in row["units"], (row["case"], key)
    d = next(row for row in rows if row["case"] == "d")  # per step on both sides, and per sample
    assert d["ours_us_per_sample"] == pytest.approx(d["ours_us_per_step"] / 5, rel=1e-3)
    if d["torch_us_per_step"] is not None:
        assert d["ratio_vs_torch"] == pytest.approx(d["torch_us_per_step"] / d["ours_us_per_step"],
                                                    rel=1e-2)
        assert d["torch_us_per_sample"] == pytest.approx(d["torch_us_per_step"] / 5, rel=1e-3)
