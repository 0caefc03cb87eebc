"""The engine's worker threads (cpu/threads.h, build(threads=N)): 1 and 2 threads give the same
training to 1e-6, and a fixed number of threads gives bit-identical runs (chunks are cut by
index and reductions combine partials in chunk order)."""
import numpy as np
import pytest

import neuromorph as nm

MODELS = [
    # wide elementwise work (chunked over threads), PReLU slope reduction, Adam + clipping, a
    # product cut over the threads (96x512x256: cpu/gemm.cpp). Adam's eps is raised: a cut
    # product equals the whole one to rounding only, and at the default 1e-8 Adam turns a
    # rounding-level gradient (8.7e-9 at one weight of this model, typical 3e-3) into a step
    # of ~lr whose size follows the rounding (1.4e-4 apart after 6 steps); with SGD the same
    # runs agree to 3e-8
    ("/he, zero/ (x, 64) (a, 512, <relu_parametric, 0.1>) (b, 256, <gelu>) "
     "(y, 10, <softmax>, <cross_entropy>)", dict(optimizer="adam", grad_clip=0.5, eps=1e-4)),
    ("/xavier, zero/ (x, 32) (a, 400, <tanh>) (y, 300, <softmax>, <mse>)", dict(optimizer="momentum")),
    ("/xavier, zero/ (x, 32) (a, 400, <swish>) (y, 8, <linear>, <mse>)", {}),
    # structured kinds: attn2d's per-sample window attention and RoPE, its layer norms over
    # rows and its MLP activations on the worker threads; a column sheet's per-column norms
    ("/xavier, zero/ (x, 512) (g, attn2d, 8x8, dim 8, heads 2, window 1, depth 2, mask raster, "
     "<gelu>) (y, 10, <softmax>, <cross_entropy>)", dict(optimizer="adam")),
    ("/xavier, zero/ (x, 256) (c, column, 4x4, dim 16, qk 8, mlp 256, depth 2, wiring 0.1, <gelu>) "
     "(y, 10, <softmax>, <cross_entropy>)", {}),
    # a sheet large enough that its (sample, head) attention pairs run on the worker threads,
    # each in two blocks of query rows (226 + 63 of its 289)
    ("/xavier, zero/ (x, 512) (c, column, 17x17, dim 8, heads 2, qk 8, mlp 8, depth 1, in 64, "
     "wiring 0.1, <gelu>) (y, 10, <softmax>, <cross_entropy>)", {}),
    # attn2d cuts the batch into per-thread chunks that run the whole block stack (weight
    # gradients per chunk, added in chunk order): token ids through its own embedding, RoPE,
    # the raster mask; the grid LM of MDL.md section 7 (embed node, per-cell softmax head) with
    # case h's heads (4 of 16: the flat kernels with RoPE inside them, cpu/attn2d_flat.cpp)
    ("/xavier, zero/ (x, 16) (g, attn2d, 4x4, dim 16, heads 2, window 1, depth 2, vocab 7, "
     "mask raster, <gelu>) (y, 10, <softmax>, <cross_entropy>)", dict(optimizer="adam", grad_clip=1.0)),
    ("/xavier, zero/ (x, 16) (e, embed, 4x4, vocab 9, dim 64) (g, attn2d, 4x4, dim 64, heads 4, "
     "window 1, depth 2, mask raster, <gelu>) (y, 9, cells 4x4, <softmax>, <cross_entropy>)", {}),
    # no projections: q = k = v = the normed state
    ("/xavier, zero/ (x, 64) (g, attn2d, 4x4, dim 4, heads 1, window 1, depth 1, proj 0, <swish>) "
     "(y, 10, <softmax>, <cross_entropy>)", {}),
    # an energy block whose Lagrangians run on the worker threads (batch x units above the grain)
    ("/xavier, zero/ (x, 64) [am, energy, steps 3, dt 0.4, (am_v, 64, <tanh>) (am_y, 10, <softmax>) "
     "(am_s, synapse hidden, am_v am_y, units 400, <relu>)] (y, 10, <softmax>, <cross_entropy>)", {}),
    # an energy block whose chunks of samples run the descent and its reverse side by side
    # (few weights: per-chunk gradient copies), Adam with clipping
    ("/xavier, zero/ (x, 32) [am, energy, steps 2, dt 0.3, (am_v, 32, <tanh>) (am_q, 4x8, "
     "<layernorm>) (am_d, synapse dense, am_v am_q) (am_a, synapse attention, am_q am_q, heads 2, "
     "qk 4)] (y, 10, <softmax>, <cross_entropy>)", dict(optimizer="adam", grad_clip=1.0)),
]


def _run(text, opts, threads):
    h = nm.compile(text, 96, 0.01, **opts)
    nm.seed(5)
    nm.build(h, threads=threads)
    rng = np.random.default_rng(0)
    w, o = nm.info(h)["input_width"], nm.info(h)["output_width"]
    x = rng.normal(size=(6, 96, w)).astype(np.float32)
    if "vocab" in text:  # token ids
        x = rng.integers(0, 7, size=(6, 96, w)).astype(np.float32)
    e = np.eye(o, dtype=np.float32)[rng.integers(0, o, (6, 96))]
    if "cells" in text:  # a class id per cell
        e = rng.integers(0, 9, size=(6, 96, o // 9)).astype(np.float32)
    nm.train(h, x, e, verbosity=0)
    out = nm.history(h), nm.get_params(h)
    nm.release(h)
    return out


@pytest.mark.parametrize("text,opts", MODELS, ids=["prelu-adam-clip", "softmax-mse-momentum", "swish-sgd",
                                              "attn2d", "column", "column-heads",
                                              "attn2d-vocab", "grid-lm", "attn2d-noproj", "energy",
                                              "energy-chunks"])
def test_one_and_two_threads_agree_and_two_are_deterministic(text, opts):
    try:
        one = _run(text, opts, 1)
        two = _run(text, opts, 2)
        again = _run(text, opts, 2)
    finally:
        nm._core.set_threads(1)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-6)
    for k, v in one[1].items():
        np.testing.assert_allclose(two[1][k], v, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again[1][k], two[1][k])
    np.testing.assert_array_equal(again[0], two[0])


def test_products_cut_over_threads_equal_whole_ones():
    """Large float products are cut by columns or rows over the worker threads (cpu/gemm.cpp):
    the large products of this model's forward and backward are cut on 2 and 3 threads, by C's
    rows where C is narrow (256x784 -> 48, and 512x48 weight gradients) and by its columns
    elsewhere; the loss and every gradient equal the one-thread run's to rounding."""
    text = ("/he, zero/ (x, 784) (a, 48, <relu>) (b, 512, <tanh>) (c, 128, <relu>) "
            "(y, 10, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 256, 784)).astype(np.float32)
    e = np.eye(10, dtype=np.float32)[rng.integers(0, 10, (1, 256))]
    out = {}
    try:
        for threads in (1, 2, 3):
            h = nm.compile(text, 256, 0.01)
            nm.seed(2)
            nm.build(h, threads=threads)
            out[threads] = nm.gradients(h, x, e), nm.predict(h, x)
            nm.release(h)
    finally:
        nm._core.set_threads(1)
    (loss1, g1), y1 = out[1]
    for threads in (2, 3):
        (loss, g), y = out[threads]
        assert loss == pytest.approx(loss1, rel=1e-6)
        np.testing.assert_allclose(y, y1, rtol=1e-5, atol=1e-7)
        for k, v in g1.items():
            np.testing.assert_allclose(g[k], v, rtol=1e-4, atol=1e-6 * np.abs(v).max(), err_msg=k)
