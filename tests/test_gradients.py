"""Exact gradients: the float64 engine against central finite differences of its own loss.

Every activation, loss, merge op and construct (splits, taps, delayed edges) is covered.
The finite-difference side only runs forward passes, so it checks backward independently.
"""
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm
from mdl.functions import ACTIVATIONS, LOSSES

MODELS = Path(__file__).resolve().parents[1] / "models"


def fd_check(model_text, batch, expected_fn=None, seed=3, rtol=1e-5, atol=1e-8, data_seed=0):
    h = nm.compile(model_text, batch, 0.1, dtype="float64")
    nm.seed(seed)
    nm.build(h)
    meta = nm.info(h)
    rng = np.random.default_rng(data_seed)
    x = rng.uniform(-1, 1, (1, batch, meta["input_width"]))
    e = (expected_fn or (lambda s: rng.uniform(0.1, 0.9, s)))((1, batch, meta["output_width"]))
    # A non-zero carried-in state: one batch first, so delayed reads at t=0 see real values.
    warm = rng.uniform(-1, 1, (1, batch, meta["input_width"]))
    nm.predict(h, warm)
    params = nm.get_params(h)
    # gradients() leaves the state as it was, so every evaluation below starts from it.
    state_h = h
    loss, grads = nm.gradients(h, x, e)

    def loss_at(name, idx, delta):
        p = params[name].copy()
        p[idx] += delta
        nm.set_params(h, {name: p})
        value = nm.gradients(h, x, e)[0]
        nm.set_params(h, {name: params[name]})
        return value

    eps = 1e-6
    for name, value in params.items():
        for idx in np.ndindex(value.shape):
            num = (loss_at(name, idx, eps) - loss_at(name, idx, -eps)) / (2 * eps)
            assert grads[name][idx] == pytest.approx(num, rel=rtol, abs=atol), (name, idx)
    nm.release(state_h)
    return loss


def check_float32_matches_float64(node, width, classes, batch):
    """The float32 engine (BLAS / SIMD paths) against the float64 one (plain loops, the
    reference) on one batch: loss, outputs and every parameter gradient."""
    text = f"/xavier, zero/ (x, {width}) {node} (y, {classes}, <softmax>, <cross_entropy>)"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, batch, width))
    e = np.eye(classes)[rng.integers(0, classes, batch)][None]
    out = {}
    for dt in ("float64", "float32"):
        h = nm.compile(text, batch, 0.1, dtype=dt)
        nm.seed(9)
        nm.build(h)
        loss, g = nm.gradients(h, x, e)
        out[dt] = (loss, g, nm.predict(h, x))
        nm.release(h)
    # Measured worst cases (attn2d, column at batch 33; neuron, energy at 17): loss 1.5e-8,
    # outputs 1.7e-6 relative, gradients 3.4e-6 of the tensor's largest entry (neuron
    # dendrite gamma). The bounds keep a ~6x margin, no more: a float32 kernel that drops a
    # term or a step shows up well above them.
    assert out["float32"][0] == pytest.approx(out["float64"][0], rel=1e-6)
    np.testing.assert_allclose(out["float32"][2], out["float64"][2], rtol=2e-5, atol=1e-7)
    for name, g64 in out["float64"][1].items():
        scale = np.abs(g64).max() + 1e-12
        assert np.abs(out["float32"][1][name] - g64).max() / scale < 2e-5, name


# Every activation at its default, and the parameterised ones away from their defaults too:
# at alpha 1 an ELU derivative that drops alpha is still right, so it must be seen elsewhere.
PARAMETERISED = ["elu, 0.4", "elu, 2.5", "relu_leaky, 0.3", "relu_parametric, 0.1", "swish, 0.6",
                 "swish, 2.2"]


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a != "binary_step"] + PARAMETERISED)
def test_activation_gradients(act):
    fd_check(f"/xavier,const_uneven 0.1 0.3/ (x, 3) (h, 4, <{act}>) (y, 3, <{act}>, <mse>)", 3)


def test_binary_step_passes_no_gradient():
    h = nm.compile("/xavier,zero/ (x, 3) (h, 4, <binary_step>) (y, 2, <linear>, <mse>)", 2, 0.1,
                   dtype="float64")
    nm.build(h)
    _, g = nm.gradients(h, np.ones((2, 3)), np.zeros((2, 2)))
    assert not g["h.weight"].any() and not g["h.bias"].any()
    assert g["y.weight"].any()


def targets_pm1(shape):
    return np.where(np.random.default_rng(1).random(shape) < 0.5, -1.0, 1.0)


def targets_onehot(shape):
    idx = np.random.default_rng(2).integers(0, shape[-1], shape[:-1])
    return np.eye(shape[-1])[idx]


@pytest.mark.parametrize("loss,act,targets", [
    ("mse", "sigmoid", None), ("mae", "linear", None), ("mape", "linear", None),
    ("huber", "linear", None), ("huber, 0.05", "linear", None),
    ("huber_modified", "tanh", targets_pm1), ("hinge", "tanh", targets_pm1),
    ("cross_entropy", "softmax", targets_onehot), ("cross_entropy", "sigmoid", None),
    ("cross_entropy", "softmax", None),
])
def test_loss_gradients(loss, act, targets):
    fd_check(f"/xavier,zero/ (x, 3) (h, 5, <tanh>) (y, 4, <{act}>, <{loss}>)", 4, targets)


@pytest.mark.parametrize("op", ["additive", "multiplicative", "average"])
def test_merge_split_tap_gradients(op):
    fd_check(f"""/xavier,const_flat 0.1/ (x, 3) [t, [tv,]] (a, 4, <tanh>)
             [s, (b, 3, <sigmoid>) {{m1, tv, {op}}} | (c, 4, <elu>)]
             {{m2, c, {op}}} (d, 3, <swish, 1.3>) {{m3, m1, {op}}} (y, 2, <sigmoid>, <mse>)""", 3)


@pytest.mark.parametrize("name", ["small-model", "big-model", "gated-model", "lstm-model"])
def test_example_models_bptt_gradients(name):
    text = (MODELS / f"{name}.mdl").read_text()
    targets = targets_pm1 if name == "big-model" else None
    fd_check(text, 5, targets)


def test_delayed_self_merge_accumulator():
    fd_check("/xavier,zero/ (x, 2) [s, (p, 2, <tanh>) {acc, acc, additive}] {m, acc, average}"
             "(y, 2, <linear>, <mse>)", 6)


def test_prelu_slope_is_learned():
    h = nm.compile("/xavier,zero/ (x, 3) (h, 4, <relu_parametric, 0.6>) (y, 1, <linear>, <mse>)",
                   4, 0.1, dtype="float64")
    nm.build(h)
    assert nm.get_params(h)["h.alpha"] == pytest.approx(0.6)
    fd_check("/xavier,zero/ (x, 3) (h, 4, <relu_parametric, 0.6>) (y, 1, <linear>, <mse>)", 4)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# f(z) and f'(z) written out in numpy from MDL.md section 3, independent of the engine's code.
NUMPY_ACTS = {
    "elu, 0.4": (lambda z: np.where(z > 0, z, 0.4 * np.expm1(z)),
                 lambda z: np.where(z > 0, 1, 0.4 * np.exp(z))),
    "elu, 2.5": (lambda z: np.where(z > 0, z, 2.5 * np.expm1(z)),
                 lambda z: np.where(z > 0, 1, 2.5 * np.exp(z))),
    "relu_leaky, 0.3": (lambda z: np.where(z > 0, z, 0.3 * z), lambda z: np.where(z > 0, 1, 0.3)),
    "relu_parametric, 0.6": (lambda z: np.where(z > 0, z, 0.6 * z),
                             lambda z: np.where(z > 0, 1, 0.6)),
    "swish, 1.7": (lambda z: z * _sigmoid(1.7 * z),
                   lambda z: _sigmoid(1.7 * z) + 1.7 * z * _sigmoid(1.7 * z) * (1 - _sigmoid(1.7 * z))),
    "selu": (lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * np.expm1(z)),
             lambda z: 1.0507009873554805 * np.where(z > 0, 1, 1.6732632423543772 * np.exp(z))),
}


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("act", NUMPY_ACTS)
def test_parameterised_activations_match_numpy(act, dtype, rtol):
    """f and f' of one unit with identity weights against the numpy formulas: the float64 model
    runs the scalar reference ops, the float32 one the SIMD kernels. With the target set to
    f(z) - 0.5, d(mse)/d(bias) = mean f'(z) and d(mse)/d(weight) = mean f'(z) z."""
    f, df = NUMPY_ACTS[act]
    z = np.linspace(-3, 2.5, 64)
    h = nm.compile(f"/xavier,zero/ (x, 1) (h, 1, <{act}>) (y, 1, <linear>, <mse>)", 64, 0.1,
                   dtype=dtype)
    nm.build(h)
    one, zero = np.ones((1, 1)), np.zeros(1)
    nm.set_params(h, {"h.weight": one, "h.bias": zero, "y.weight": one, "y.bias": zero})
    np.testing.assert_allclose(nm.predict(h, z[:, None]).ravel(), f(z), rtol=rtol, atol=rtol * 1e-2)
    _, g = nm.gradients(h, z[None, :, None], (f(z) - 0.5)[None, :, None])
    assert g["h.bias"][0] == pytest.approx(np.mean(df(z)), rel=rtol)
    assert g["h.weight"][0, 0] == pytest.approx(np.mean(df(z) * z), rel=rtol)
    nm.release(h)
