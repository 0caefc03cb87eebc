"""nm.inspect (docs/inspect.md): shapes and values of every recorded array against the engine's
own outputs and against independent numpy references; inspecting changes nothing."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import neuromorph as nm

pytestmark = pytest.mark.filterwarnings("ignore::mdl.diagnostics.MDLWarning")  # causal routing
MODELS = pathlib.Path(__file__).parent / "gpu_models"
KIND_MODELS = sorted(p for p in MODELS.glob("*.mdl")
                     if p.name.split("_")[0] in ("attn2d", "column", "energy", "neuron"))


def built(source, batch=4, seed=3, dtype="float64"):
    nm.seed(seed)
    h = nm.compile(source, batch, 0.01, dtype=dtype)
    nm.build(h)
    return h


def inputs(h, n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, nm.info(h)["input_width"]))


def kinds(h):
    import json
    return {n["name"]: n["kind"] for n in json.loads(nm._core.ir_json(h))["nodes"]}


@pytest.mark.parametrize("path", KIND_MODELS, ids=lambda p: p.stem)
def test_every_kind_records_consistent_arrays(path):
    h = built(path)
    x = inputs(h, 6)  # one full batch of 4 and a partial one
    try:
        got = nm.inspect(h, x)
        y = nm.predict(h, x)
        node_kinds = kinds(h)
        assert set(got) == set(node_kinds)
        last = list(node_kinds)[-1]
        np.testing.assert_allclose(got[last]["output"], y, rtol=1e-12, atol=1e-12)
        for name, kind in node_kinds.items():
            rec = got[name]
            assert rec["output"].shape[0] == 6
            if kind == "attn2d":
                check_attn2d(rec)
            elif kind == "column":
                check_column(rec)
            elif kind == "energy":
                check_energy(h, name, rec, x)
            elif kind == "neuron":
                check_neuron(h, rec, x)
    finally:
        nm.release(h)


def check_attn2d(rec):
    A, win, mask = rec["attention"], rec["window"], rec["mask"]
    H, W = rec["grid"]
    assert A.shape[0] == 6 and A.shape[3:] == win.shape == mask.shape
    assert win.shape[0] == H * W and np.array_equal(mask, win >= 0)
    np.testing.assert_allclose(A.sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(A[..., ~mask] == 0)
    assert np.all((win < H * W))


def check_column(rec):
    A, C = rec["attention"], rec["position"].shape[0]
    assert A.shape[0] == 6 and A.shape[-2:] == (C, C)
    np.testing.assert_allclose(A.sum(axis=-1), 1.0, atol=1e-12)
    assert rec["response"].shape[:2] == (6, C)
    assert int(np.prod(rec["shape"])) == C
    if rec["wiring"].any():  # every term is one constant λ/(T·h·C) times Σ wire∘A
        ratio = rec["wiring"] / np.einsum("ij,nthij->nth", rec["wire"], A)
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-10)
    D = rec["distance"]
    np.testing.assert_allclose(D, D.T)


def check_energy(h, name, rec, x):
    total = rec["energy"]
    terms = [v for k, v in rec.items() if k.startswith("energy.")]
    np.testing.assert_allclose(sum(terms), total, rtol=1e-10, atol=1e-10)
    n = (len(x) // 4) * 4
    np.testing.assert_allclose(total[:n], nm.energy(h, x[:n], name), rtol=1e-12, atol=1e-12)
    K = total.shape[1]
    for k, v in rec.items():
        if k.startswith("state.") or k.startswith("activation."):
            assert v.shape[:2] == (6, K)


def check_neuron(h, rec, x):
    route, nbrs, att = rec["route"], rec["neighbors"], rec["attentive"]
    N, S, M = route.shape
    for b in range(N):
        for s in range(S):
            r = route[b, s][route[b, s] >= 0]
            assert len(r) >= 1 and len(set(r.tolist())) == len(r)  # no neuron twice
            assert np.all(route[b, s][len(r):] == -1)               # -1 only after the end
            if att.any():
                assert att[r[0]]                                    # enters at an attentive one
            for a, c in zip(r[:-1], r[1:]):
                assert c in nbrs[s, a] and not att[c]               # hands off to a neighbour
            v = rec["voltage"][b, s]
            assert np.isfinite(v[:len(r)]).all() and np.isnan(v[len(r):]).all()
    nm.predict(h, x[:4])  # stats: the counts of the last forward
    np.testing.assert_array_equal(rec["count"][:4], nm.stats(h)[[k for k in nm.stats(h)][0]])
    assert rec["scores"].shape[:2] == (N, S)


def test_sample_route_enters_at_the_highest_score():
    h = built(MODELS / "neuron_sections.mdl")
    try:
        rec = next(v for v in nm.inspect(h, inputs(h, 4)).values() if "route" in v)
        E = rec["scores"].shape[2]
        entry = rec["route"][:, :, 0]
        assert np.all(entry < E)
        np.testing.assert_array_equal(entry, rec["scores"].argmax(axis=2))
    finally:
        nm.release(h)


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def test_attn2d_attention_reproduces_the_output():
    """Parameter-free attention (proj 0, rope 0): the recorded weights equal a numpy softmax
    over each window, and with them a numpy block reproduces the node's output."""
    src = "/xavier, zero/\n(x, 30)\n(g, attn2d, 5x3, dim 2, proj 0, rope 0, window 1, mlp 2, <tanh>)\n" \
          "(y, 3, <linear>, <mse>)\n"
    h = built(src)
    try:
        x = inputs(h, 4)
        rec = nm.inspect(h, x, "g")["g"]
        p = nm.get_params(h)
        A, win = rec["attention"][:, 0, 0], rec["window"]        # (N, S, Wn): one block, head
        X = x.reshape(4, 15, 2)
        u = layer_norm(X, p["g.0.norm1.weight"], p["g.0.norm1.bias"])
        ref = np.zeros_like(A)
        ctx = np.zeros_like(X)
        for b in range(4):
            for s in range(15):
                cells = win[s][win[s] >= 0]
                z = u[b, cells] @ u[b, s] / np.sqrt(2.0)
                w = np.exp(z - z.max())
                ref[b, s, win[s] >= 0] = w / w.sum()
                ctx[b, s] = ref[b, s, win[s] >= 0] @ u[b, cells]
        np.testing.assert_allclose(A, ref, rtol=1e-10, atol=1e-12)
        X1 = X + np.einsum("bsw,bswd->bsd", A, np.where((win >= 0)[None, :, :, None],
                                                        u[:, np.maximum(win, 0)], 0.0))
        np.testing.assert_allclose(X1, X + ctx, rtol=1e-10, atol=1e-12)
        u2 = layer_norm(X1, p["g.0.norm2.weight"], p["g.0.norm2.bias"])
        hid = np.tanh(u2 @ p["g.0.mlp1.weight"].T + p["g.0.mlp1.bias"])
        y = X1 + hid @ p["g.0.mlp2.weight"].T + p["g.0.mlp2.bias"]
        np.testing.assert_allclose(rec["output"], y.reshape(4, 30), rtol=1e-10, atol=1e-12)
    finally:
        nm.release(h)


def test_column_wiring_terms_sum_to_the_training_loss_part():
    """The recorded wiring terms of a batch, summed per sample and averaged, are the wiring
    part of the loss the next training step reports (taken before its update)."""
    h = built(MODELS / "column_grid.mdl")
    try:
        x = inputs(h, 4)
        wiring = nm.inspect(h, x, "c")["c"]["wiring"]
        assert wiring.shape == (4, 2, 1) and np.all(wiring > 0)
        nm.train(h, x, np.full((4, 5), 0.5), verbosity=0)
        parts = nm.history(h, parts=True)
        np.testing.assert_allclose(parts["c.wiring"][-1], wiring.sum(axis=(1, 2)).mean(),
                                   rtol=1e-10)
    finally:
        nm.release(h)


def test_energy_terms_by_hand():
    """A two-layer block with one dense synapse: the layer terms x·g − L(x) and the synapse
    term −Σ W_ij gᵥ_i gᵤ_j (docs/energy.md) from the recorded states and the weights, per step."""
    src = ("/xavier, zero/\n(x, 3)\n[e, energy, steps 2, dt 0.5, (v, 3, <tanh>) (u, 2, <tanh>)"
           " (s, synapse dense, v u)]\n(y, 2, <linear>, <mse>)\n")
    h = built(src)
    try:
        x = inputs(h, 4)
        rec = nm.inspect(h, x, "e")["e"]
        W = nm.get_params(h)["s.weight"]                            # (3, 2)
        for lay in ("v", "u"):
            xs, g = rec[f"state.{lay}"], rec[f"activation.{lay}"]
            np.testing.assert_allclose(g, np.tanh(xs), rtol=1e-12)
            L = np.log(np.cosh(xs)).sum(-1)
            np.testing.assert_allclose(rec[f"energy.{lay}"], (xs * g).sum(-1) - L, rtol=1e-10)
        gv, gu = rec["activation.v"], rec["activation.u"]
        Es = rec["energy.s"]
        np.testing.assert_allclose(Es, -np.einsum("nti,ij,ntj->nt", gv, W, gu), rtol=1e-10)
        np.testing.assert_allclose(rec["state.v"][:, 0], x)  # the input layer starts at x
    finally:
        nm.release(h)


def test_inspect_changes_nothing():
    path = pathlib.Path(__file__).parents[1] / "models" / "lstm-model.mdl"
    h = built(path, batch=5)
    try:
        x = inputs(h, 10)
        nm.train(h, x, np.zeros((10, nm.info(h)["output_width"])), verbosity=0)
        before = {k: v.copy() for k, v in nm.get_params(h).items()}
        steps = nm.info(h).get("steps")
        stats = nm.stats(h)
        nm.inspect(h, x)
        nm.inspect(h, x[:3], ["output"])
        for k, v in nm.get_params(h).items():
            np.testing.assert_array_equal(v, before[k])
        assert nm.info(h).get("steps") == steps
        assert nm.stats(h).keys() == stats.keys()
    finally:
        nm.release(h)


def test_recurrent_state_is_restored():
    path = pathlib.Path(__file__).parents[1] / "models" / "lstm-model.mdl"
    a, b = built(path, batch=5), built(path, batch=5)
    try:
        x = inputs(a, 10)
        nm.predict(a, x), nm.predict(b, x)   # both streams at the same state
        nm.inspect(a, x)                     # a looks inside; b does not
        np.testing.assert_array_equal(nm.predict(a, x), nm.predict(b, x))
    finally:
        nm.release(a)
        nm.release(b)


def test_shapes_and_choices():
    h = built(MODELS / "energy_dense.mdl", batch=4)
    try:
        x = inputs(h, 5)
        one = nm.inspect(h, x[0], nodes="e")
        assert list(one) == ["e"] and one["e"]["energy"].shape == (1, 4)
        both = nm.inspect(h, x, nodes=["e", "out"])
        assert list(both) == ["e", "out"] and both["out"]["output"].shape == (5, 3)
        np.testing.assert_allclose(both["e"]["energy"][0], one["e"]["energy"][0], rtol=1e-12)
        with pytest.raises(nm.ShapeError, match="no node named 'nope'.*the model has"):
            nm.inspect(h, x, "nope")
        with pytest.raises(nm.ShapeError, match=r"shape \(N, 12\)"):
            nm.inspect(h, np.zeros((3, 7)))
        with pytest.raises(nm.ShapeError, match="empty list"):
            nm.inspect(h, x, [])
        for bad in (5, b"e", ["e", 3], {"e"}):
            with pytest.raises(nm.DataError, match="a node name or a list of node names"):
                nm.inspect(h, x, bad)
        with pytest.raises(nm.DataError, match="NaN"):
            nm.inspect(h, np.full((2, 12), np.nan))
    finally:
        nm.release(h)


def test_float32_model_matches_float64():
    src = MODELS / "column_grid.mdl"
    a, b = built(src, dtype="float64"), built(src, dtype="float32")
    try:
        nm.set_params(b, {k: v.astype(np.float32) for k, v in nm.get_params(a).items()})
        x = inputs(a, 4)
        ra, rb = nm.inspect(a, x)["c"], nm.inspect(b, x)["c"]
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], rtol=1e-3, atol=1e-4)
    finally:
        nm.release(a)
        nm.release(b)


def test_column_attention_reproduces_the_output():
    """One step of a 3x3 sheet, two heads, value = the normed input, with a residual: the
    recorded attention equals a numpy softmax of q·k/√kh + bias per head, and with it a numpy
    step (attention read-out, then the per-column MLP) reproduces the recorded response and
    the node's output."""
    src = ("/xavier, zero/\n(x, 36)\n(c, column, 3x3, dim 4, heads 2, qk 4, mlp 3, depth 1, "
           "skip 1, wiring 0.2, <tanh>)\n(y, 2, <linear>, <mse>)\n")
    h = built(src)
    try:
        x = inputs(h, 4)
        rec = nm.inspect(h, x, "c")["c"]
        p = {k[2:]: v for k, v in nm.get_params(h).items() if k.startswith("c.")}
        X = x.reshape(4, 9, 4)
        u = layer_norm(X, p["norm1.weight"], p["norm1.bias"])          # per-column gammas
        q = np.einsum("ncd,bnd->bnc", p["query.weight"], u) + p["query.bias"]
        k = np.einsum("ncd,bnd->bnc", p["key.weight"], u)
        A = np.zeros((4, 2, 9, 9))
        ctx = np.zeros_like(X)
        for hd in range(2):
            s = q[:, :, 2 * hd:2 * hd + 2] @ k[:, :, 2 * hd:2 * hd + 2].transpose(0, 2, 1)
            s = s / np.sqrt(2.0) + p["attn_bias"]
            e = np.exp(s - s.max(-1, keepdims=True))
            A[:, hd] = e / e.sum(-1, keepdims=True)
            ctx[:, :, 2 * hd:2 * hd + 2] = A[:, hd] @ u[:, :, 2 * hd:2 * hd + 2]
        np.testing.assert_allclose(rec["attention"][:, 0], A, rtol=1e-10, atol=1e-12)
        X1 = X + ctx
        u2 = layer_norm(X1, p["norm2.weight"], p["norm2.bias"])
        hid = np.tanh(np.einsum("nmd,bnd->bnm", p["mlp1.weight"], u2) + p["mlp1.bias"])
        X2 = X1 + np.einsum("ndm,bnm->bnd", p["mlp2.weight"], hid)
        np.testing.assert_allclose(rec["response"], X2, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rec["output"], X2.reshape(4, 36), rtol=1e-10, atol=1e-12)
        lam_terms = 0.2 / (1 * 2 * 9) * np.einsum("ij,bhij->bh", rec["wire"], A)
        np.testing.assert_allclose(rec["wiring"][:, 0], lam_terms, rtol=1e-10)
    finally:
        nm.release(h)


def test_a_recording_too_large_for_memory_is_a_typed_error(monkeypatch):
    """Checked from one batch before recording N samples: a clear OutOfMemoryError, not a
    process the OS kills midway; the model is left as it was."""
    h = built(MODELS / "column_grid.mdl")
    try:
        x = inputs(h, 12)
        before = nm.get_params(h)
        real = nm.api.os.sysconf
        monkeypatch.setattr(nm.api.os, "sysconf",
                            lambda name: 1 if name == "SC_AVPHYS_PAGES" else real(name))
        with pytest.raises(nm.OutOfMemoryError, match=r"recording 12 samples .* fewer samples"):
            nm.inspect(h, x)
        monkeypatch.undo()
        for k, v in nm.get_params(h).items():
            np.testing.assert_array_equal(v, before[k])
        assert nm.inspect(h, x)["c"]["attention"].shape[0] == 12
    finally:
        nm.release(h)
