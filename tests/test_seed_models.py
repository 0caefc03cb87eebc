"""The seeds' whole models (MDL.md section 7) learn what they are for, on data the package
makes: the grid LM beats a unigram model and an equal-size MLP over the last 8 characters on
a formal language with long-range structure; label-clamped completion repairs corrupted
patterns; every shipped seed model runs under `mdlc run`.
"""
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm
from neuromorph import datasets, text as nt
from neuromorph.tasks import FORMAL_ALPHABET, formal_text, make_task

MODELS = Path(__file__).resolve().parents[1] / "models"
SEED_MODELS = ["heptapod-lm", "genesis-lm", "columnformer-classifier", "hamux-completion"]


def _fit(text, x, y, epochs, lr=3e-3):
    nm.seed(0)
    h = nm.compile(text, 32, lr, optimizer="adam")
    nm.build(h)
    k = len(x) // 32 * 32
    nm.train(h, x[:k], y[:k], verbosity=0, epochs=epochs, shuffle=True)
    return h


def _params(h):
    return sum(int(np.prod(s)) for _, s in nm.info(h)["params"])


def test_grid_lm_beats_unigram_and_an_equal_size_mlp_on_held_out_text():
    tok = nt.CharTokenizer(FORMAL_ALPHABET)
    train, test = tok.encode(formal_text(60000, seed=0)), tok.encode(formal_text(6000, seed=1))
    C, V = 16, tok.vocab_size
    grid = (f"/xavier, zero/ (x, {C}) (e, embed, 4x4, vocab {V}, dim 32) "
            f"(g, attn2d, 4x4, dim 32, heads 4, window 1, depth 2, mask raster, mlp 2) "
            f"(y, {V}, cells 4x4, <softmax>, <cross_entropy>)")
    x, y = nt.windows(train, C, stride=4)
    h = _fit(grid, x, y, 3)
    n = _params(h)
    # every held-out character after the first C, predicted at the last cell of its window
    win = np.lib.stride_tricks.sliding_window_view(test, C + 1)
    p = nm.predict(h, win[:, :C]).reshape(-1, C, V)[:, -1]
    grid_bits = -np.log2(p[np.arange(len(win)), win[:, C]]).mean()
    hidden = round((n - V * 16 - V) / (8 * 16 + 1 + V))
    mlp = (f"/xavier, zero/ (x, 8) (e, embed, 8, vocab {V}, dim 16, pos none) "
           f"(h, {hidden}, <relu>) (y, {V}, <softmax>, <cross_entropy>)")
    w9 = np.lib.stride_tricks.sliding_window_view(train, 9)[::2]
    h2 = _fit(mlp, w9[:, :8], np.eye(V)[w9[:, 8]], 3)
    assert abs(_params(h2) - n) / n < 0.01  # equal size
    t9 = np.lib.stride_tricks.sliding_window_view(test[C - 8:], 9)  # the same characters
    q = nm.predict(h2, t9[:, :8])
    mlp_bits = -np.log2(q[np.arange(len(t9)), t9[:, 8]]).mean()
    uni = nt.unigram_bits(train, test[C:], V)
    assert grid_bits < mlp_bits < uni, (grid_bits, mlp_bits, uni)
    # and the grid LM's window predictions are a distribution in every cell
    np.testing.assert_allclose(nm.predict(h, win[:3, :C]).reshape(3, C, V).sum(-1), 1, atol=1e-5)
    nm.release(h)
    nm.release(h2)


def test_label_clamped_completion_repairs_corrupted_patterns():
    x, e, _ = datasets.completion(4000, seed=0)
    xt, et, _ = datasets.completion(1000, seed=1)
    h = _fit(str(MODELS / "hamux-completion.mdl"), x, e, 3)
    repaired = (np.sign(nm.predict(h, xt)) == et).mean()
    given = (xt[:, :64] == et).mean()
    assert given == pytest.approx(0.8, abs=0.02)
    assert repaired > 0.97, repaired
    nm.release(h)


def test_columnformer_classifier_learns_digits():
    x, y = datasets.digits(3200, seed=0)
    xt, yt = datasets.digits(1000, seed=1)
    h = _fit(str(MODELS / "columnformer-classifier.mdl"), x, np.eye(10)[y], 3, lr=2e-3)
    acc = (nm.predict(h, xt).argmax(1) == yt).mean()
    assert acc > 0.6, acc  # chance is 0.1
    nm.release(h)


@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_models_train_on_their_built_in_data(name):
    ir = mdl.compile_file(MODELS / f"{name}.mdl", warn=False)
    x, e, desc = make_task(ir.doc, 8, 3, seed=0)
    assert "formal language" in desc or "digits" in desc or "clamped label" in desc
    h = nm.compile_ir(ir.to_json(), 8, 0.01)
    nm.seed(0)
    nm.build(h)
    loss = nm.train(h, x, e, verbosity=0)
    assert np.isfinite(loss)
    nm.release(h)
