"""The four example models against a numpy reimplementation written from MDL.md 2.2.

The reference is independent of the compiler and engine: each model's forward pass is
written out by hand from the spec's formulas, its gradient is a float64 central difference,
and K SGD steps are compared with the engine's, loss by loss and parameter by parameter.
"""
import warnings
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm

MODELS = Path(__file__).resolve().parents[1] / "models"


def sig(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    q = np.exp(z - z.max())
    return q / q.sum()


def swish(z, p):
    return z * sig(p * z)


def relu(z):
    return np.maximum(z, 0)


def lin(P, name, u):
    return P[f"{name}.weight"] @ u + P[f"{name}.bias"]


def mse(r, e):
    return np.mean((r - e) ** 2)


def huber_modified(r, e):
    y = e * r
    return np.mean(np.where(y >= -1, np.maximum(0, 1 - y) ** 2, -4 * y))


def small(P, x, e, st):
    prev = st.get("b", np.zeros(4))
    loss = 0
    for t in range(len(x)):
        gate = x[t] + prev
        a = relu(lin(P, "a", gate))
        b = swish(lin(P, "b", a), 5.9)
        out = sig(lin(P, "output", b))
        loss += mse(out, e[t])
        prev = b
    return loss / len(x), {"b": prev}


def big(P, x, e, st):
    g_prev = st.get("g", np.zeros(4))
    loss = 0
    for t in range(len(x)):
        a = sig(lin(P, "a", x[t]))
        c2 = a + g_prev
        b = relu(lin(P, "b", c2))
        d = softmax(lin(P, "d", b))
        f = relu(lin(P, "f", b))
        standby = d + f                       # same step: f is computed before standby
        e_ = softmax(lin(P, "e", standby))
        g = relu(lin(P, "g", f))
        c = sig(lin(P, "c", b))
        c1 = c + e_
        out = sig(lin(P, "output", c1))
        loss += huber_modified(out, e[t])
        g_prev = g
    return loss / len(x), {"g": g_prev}


def gated(P, x, e, st):
    prev = st.get("df", np.zeros(4))
    loss = 0
    for t in range(len(x)):
        gate = x[t] + prev
        a = relu(lin(P, "a", gate))
        b = swish(lin(P, "b", a), 5.9)
        out = sig(lin(P, "output", b))
        forget = np.tanh(lin(P, "forget", b))
        prev = np.tanh(lin(P, "doubleforget", forget))
        loss += mse(out, e[t])
    return loss / len(x), {"df": prev}


def lstm(P, x, e, st):
    h, c = st.get("h", np.zeros(4)), st.get("c", np.zeros(4))
    loss = 0
    for t in range(len(x)):
        a = x[t] + h
        i, g = sig(lin(P, "include", a)), np.tanh(lin(P, "process", a))
        o, f = sig(lin(P, "add", a)), sig(lin(P, "forget", a))
        c = f * c + i * g
        h = np.tanh(lin(P, "statep", c)) * o
        loss += mse(np.tanh(lin(P, "output", h)), e[t])
    return loss / len(x), {"h": h, "c": c}


REFS = {"small-model": small, "big-model": big, "gated-model": gated, "lstm-model": lstm}


def fd_grad(fn, P, x, e, st, eps=1e-6):
    grads = {}
    for name, v in P.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            Q = {k: w.copy() for k, w in P.items()}
            Q[name][idx] += eps
            lp = fn(Q, x, e, st)[0]
            Q[name][idx] -= 2 * eps
            lm = fn(Q, x, e, st)[0]
            g[idx] = (lp - lm) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-7, 1e-9), ("float32", 1e-5, 2e-6)])
@pytest.mark.parametrize("name", list(REFS))
def test_k_sgd_steps_match_reference(name, dtype, rtol, atol):
    K, B, lr = 6, 5, 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = nm.compile(MODELS / f"{name}.mdl", B, lr, dtype=dtype)
    nm.seed(11)
    nm.build(h)
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (K, B, 4))
    e = (np.where(rng.random((K, B, 4)) < 0.5, -1.0, 1.0) if name == "big-model"
         else rng.uniform(0.1, 0.9, (K, B, 4)))
    P = {k: v.astype(np.float64) for k, v in nm.get_params(h).items()}
    assert set(P) >= {"output.weight", "output.bias"}
    fn, st = REFS[name], {}
    for k in range(K):
        ref_loss, new_st = fn(P, x[k], e[k], st)
        grads = fd_grad(fn, P, x[k], e[k], st)
        P = {n: P[n] - lr * grads[n] for n in P}
        st = new_st
        loss = nm.train(h, x[k:k + 1], e[k:k + 1], verbosity=0)
        assert loss == pytest.approx(ref_loss, rel=rtol, abs=atol), f"step {k}"
        got = nm.get_params(h)
        for n in P:
            np.testing.assert_allclose(got[n], P[n], rtol=rtol, atol=atol, err_msg=f"{n} step {k}")
    nm.release(h)
