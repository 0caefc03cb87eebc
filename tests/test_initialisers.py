"""Initialisers of MDL.md section 3: ranges, moments and orthogonality of built parameters."""
import numpy as np
import pytest

import neuromorph as nm

IN, OUT = 60, 40


def built(header, act="linear", out=OUT, inp=IN):
    h = nm.compile(f"/{header}/ (x, {inp}) (a, {out}, <{act}>) (y, 1, <linear>, <mse>)", 1, 0.1)
    nm.seed(5)
    nm.build(h)
    p = nm.get_params(h)
    nm.release(h)
    return p["a.weight"].astype(np.float64), p["a.bias"].astype(np.float64)


def test_xavier_and_he_are_uniform_with_the_right_bound():
    for header, bound in (("xavier,zero", np.sqrt(6 / (IN + OUT))), ("he,zero", np.sqrt(6 / IN))):
        W, b = built(header)
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound
        assert W.std() == pytest.approx(bound / np.sqrt(3), rel=0.08)
        assert not b.any()


def test_lecun_normal_and_normal():
    W, _ = built("lecun,zero")
    assert W.std() == pytest.approx(np.sqrt(1 / IN), rel=0.08) and abs(W.mean()) < 0.01
    W, _ = built("normal 0.5 0.2,zero")
    assert W.mean() == pytest.approx(0.5, abs=0.02) and W.std() == pytest.approx(0.2, rel=0.08)


def test_uniform_range():
    W, _ = built("uniform -0.3 0.1,zero")
    assert W.min() >= -0.3 and W.max() < 0.1 and W.mean() == pytest.approx(-0.1, abs=0.01)


@pytest.mark.parametrize("out,inp", [(40, 60), (60, 40), (30, 30)])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(out, inp):
    W, _ = built("orthogonal 2,zero", out=out, inp=inp)
    G = W @ W.T if out <= inp else W.T @ W
    np.testing.assert_allclose(G, 4 * np.eye(min(out, inp)), atol=1e-5)


def test_bias_initialisers():
    _, b = built("xavier,const_flat 0.25")
    assert np.all(b == np.float32(0.25))
    _, b = built("xavier,const_uneven 1 0.5", out=2000)
    assert b.mean() == pytest.approx(1, abs=0.05) and b.std() == pytest.approx(0.5, rel=0.08)
