"""Optimizers and schedules against torch.optim: committed fixtures, and live when torch is here."""
import sys
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_optim_fixtures import CONFIGS, data  # noqa: E402

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "optim.npz")
MODEL = "/xavier,zero/ (x, 3) (h, 5, <tanh>) (y, 2, <linear>, <mse>)"


def ours(cfg, dtype="float32"):
    cfg = dict(cfg)
    lr = cfg.pop("lr")
    h = nm.compile(MODEL, 4, lr, dtype=dtype, **cfg)
    nm.build(h)
    init, x, e = data()
    nm.set_params(h, init)
    losses, params = [], []
    for k in range(len(x)):
        losses.append(nm.train(h, x[k:k + 1], e[k:k + 1], verbosity=0))
        p = nm.get_params(h)
        params.append(np.concatenate([p[n].ravel() for n in ("h.weight", "h.bias", "y.weight", "y.bias")]))
    nm.release(h)
    return np.array(losses), np.array(params)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_torch_fixture(name):
    losses, params = ours(CONFIGS[name])
    np.testing.assert_allclose(losses, FIXTURES[f"{name}.losses"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(params, FIXTURES[f"{name}.params"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "momentum_wd", "adam_cosine"])
def test_matches_torch_live(name):
    pytest.importorskip("torch")
    from make_optim_fixtures import trajectory
    ref_losses, ref_params = trajectory(CONFIGS[name])
    losses, params = ours(CONFIGS[name])
    np.testing.assert_allclose(params, ref_params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-7)


def test_optimizer_state_survives_save_and_load(tmp_path):
    init, x, e = data()
    h = nm.compile(MODEL, 4, 0.01, optimizer="adam", schedule="cosine", total_steps=8)
    nm.build(h)
    nm.set_params(h, init)
    nm.train(h, x[:4], e[:4], verbosity=0)
    nm.save(h, tmp_path / "m.nm")
    g = nm.load(tmp_path / "m.nm")
    assert nm.info(g)["steps"] == 4
    assert nm.train(g, x[4:], e[4:], verbosity=0) == nm.train(h, x[4:], e[4:], verbosity=0)
    for k, v in nm.get_params(h).items():
        assert np.array_equal(nm.get_params(g)[k], v)


@pytest.mark.parametrize("kw,match", [
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(momentum=1.5), "momentum must be"), (dict(betas=(0.9,)), "betas must be a pair"),
    (dict(eps=0), "eps must be"), (dict(weight_decay=-1), "weight_decay"),
    (dict(grad_clip=0), "grad_clip"), (dict(schedule="cosine"), "needs total_steps"),
    (dict(schedule="exp"), "schedule must be"), (dict(warmup=-1), "warmup"),
    (dict(learning_rate_decay=0.1), "unknown compile\\(\\) option"),
])
def test_bad_optimizer_settings(kw, match):
    with pytest.raises(nm.DataError, match=match):
        nm.compile(MODEL, 4, 0.1, **kw)
