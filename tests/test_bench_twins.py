"""The PyTorch twins of bench/run.py's structured cases (bench/bench_torch_nets.py: e, f, g, h)
are the engine's networks: with our parameters copied in, every form of the twin gives our
predictions, loss and parameter gradients to 1e-4 (relative to each tensor's largest entry).
The engine runs its float32 fast paths, on 1 and on 2 threads (attn2d's per-thread sample
chunks, the column's attention pairs, the energy block's chunks); the twin runs in float64.
Skipped without PyTorch."""
import sys
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_torch_nets import Attn2dNet, ColumnNet, EnergyNet, GridLM  # noqa: E402

H, W, D, HEADS, DEPTH, MLP, B = 4, 5, 16, 4, 2, 4, 6


def _copy_blocks(grid, params, prefix):
    for l, blk in enumerate(grid.blocks):
        p = lambda name: torch.tensor(params[f"{prefix}.{l}.{name}"], dtype=torch.float64)
        blk["n1"].weight.data, blk["n1"].bias.data = p("norm1.weight"), p("norm1.bias")
        blk["qkv"].weight.data = torch.cat([p("query.weight"), p("key.weight"), p("value.weight")])
        blk["o"].weight.data = p("out.weight")
        blk["n2"].weight.data, blk["n2"].bias.data = p("norm2.weight"), p("norm2.bias")
        blk["f1"].weight.data, blk["f1"].bias.data = p("mlp1.weight"), p("mlp1.bias")
        blk["f2"].weight.data, blk["f2"].bias.data = p("mlp2.weight"), p("mlp2.bias")


def _grads_of_blocks(grid, prefix):
    out = {}
    for l, blk in enumerate(grid.blocks):
        g = lambda m: m.grad.numpy()
        q, k, v = np.split(g(blk["qkv"].weight), 3)
        out.update({f"{prefix}.{l}.norm1.weight": g(blk["n1"].weight), f"{prefix}.{l}.norm1.bias": g(blk["n1"].bias),
                    f"{prefix}.{l}.query.weight": q, f"{prefix}.{l}.key.weight": k,
                    f"{prefix}.{l}.value.weight": v, f"{prefix}.{l}.out.weight": g(blk["o"].weight),
                    f"{prefix}.{l}.norm2.weight": g(blk["n2"].weight), f"{prefix}.{l}.norm2.bias": g(blk["n2"].bias),
                    f"{prefix}.{l}.mlp1.weight": g(blk["f1"].weight), f"{prefix}.{l}.mlp1.bias": g(blk["f1"].bias),
                    f"{prefix}.{l}.mlp2.weight": g(blk["f2"].weight), f"{prefix}.{l}.mlp2.bias": g(blk["f2"].bias)})
    return out


def _ours(text, x, e, threads, jitter=0.0):
    h = nm.compile(text, B, 0.01)
    nm.seed(4)
    try:
        nm.build(h, threads=threads)
        params = nm.get_params(h)
        if jitter:  # away from unit gains, zero biases and the initial bias map
            rng = np.random.default_rng(7)
            params = {k: (v + rng.normal(0, jitter, v.shape)).astype(v.dtype) for k, v in params.items()}
            nm.set_params(h, params)
        loss, grads = nm.gradients(h, x, e)
        return params, nm.predict(h, x), loss, grads
    finally:
        nm.release(h)
        nm._core.set_threads(1)


def _compare(ours_pred, ours_loss, ours_grads, pred, loss, grads):
    np.testing.assert_allclose(ours_pred, pred, rtol=1e-4, atol=1e-5)
    assert ours_loss == pytest.approx(loss, rel=1e-4)
    assert set(grads) <= set(ours_grads)
    for name, g in grads.items():
        scale = np.abs(g).max() + 1e-12
        assert np.abs(ours_grads[name] - g).max() / scale < 1e-4, name


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("raster", [False, True])
@pytest.mark.parametrize("form", ["masked", "sdpa", "unfold"])
def test_case_e_twin_is_the_engine_network(form, raster, threads):
    mask = ", mask raster" if raster else ""
    text = (f"/xavier,zero/ (input, {H * W * D}) (g, attn2d, {H}x{W}, dim {D}, heads {HEADS}, "
            f"window 1, depth {DEPTH}, mlp {MLP}{mask}, <gelu>) (output, 10, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, H * W * D)).astype(np.float32)
    ids = rng.integers(0, 10, B)
    params, pred, loss, grads = _ours(text, x, np.eye(10, dtype=np.float32)[ids], threads)
    net = Attn2dNet(H, W, D, HEADS, 1, DEPTH, MLP, form, raster).double()
    _copy_blocks(net.grid, params, "g")
    net.head.weight.data = torch.tensor(params["output.weight"], dtype=torch.float64)
    net.head.bias.data = torch.tensor(params["output.bias"], dtype=torch.float64)
    logits = net(torch.tensor(x, dtype=torch.float64))
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids))
    tloss.backward()
    tgrads = _grads_of_blocks(net.grid, "g")
    tgrads.update({"output.weight": net.head.weight.grad.numpy(), "output.bias": net.head.bias.grad.numpy()})
    _compare(pred, loss, grads, logits.softmax(-1).detach().numpy(), tloss.item(), tgrads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("form", ["masked", "unfold"])
def test_case_h_twin_is_the_engine_network(form, threads):
    V = 11
    text = (f"/xavier,zero/ (chars, {H * W}) (embed, embed, {H}x{W}, vocab {V}, dim {D}) "
            f"(grid, attn2d, {H}x{W}, dim {D}, heads {HEADS}, window 1, depth {DEPTH}, mask raster, "
            f"<gelu>) (next, {V}, cells {H}x{W}, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, (B, H * W))
    targets = rng.integers(0, V, (B, H * W))
    params, pred, loss, grads = _ours(text, ids.astype(np.float32), targets.astype(np.float32), threads)
    net = GridLM(H, W, V, D, HEADS, 1, DEPTH, MLP, form).double()
    net.embed.weight.data = torch.tensor(params["embed.weight"], dtype=torch.float64)
    net.pos.data = torch.tensor(params["embed.pos"], dtype=torch.float64)
    _copy_blocks(net.grid, params, "grid")
    net.head.weight.data = torch.tensor(params["next.weight"], dtype=torch.float64)
    net.head.bias.data = torch.tensor(params["next.bias"], dtype=torch.float64)
    logits = net(torch.tensor(ids))
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets).reshape(-1))
    tloss.backward()
    tgrads = _grads_of_blocks(net.grid, "grid")
    tgrads.update({"embed.weight": net.embed.weight.grad.numpy(), "embed.pos": net.pos.grad.numpy(),
                   "next.weight": net.head.weight.grad.numpy(), "next.bias": net.head.bias.grad.numpy()})
    probs = logits.softmax(-1).detach().numpy().reshape(B, -1)
    _compare(pred.reshape(B, -1), loss, grads, probs, tloss.item(), tgrads)


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("form", ["bmm", "sdpa"])
def test_case_f_twin_is_the_engine_network(form, threads):
    # 17x17 = 289 columns: the engine runs each attention map in two blocks of query rows
    side, d, heads, qk, mlp, depth = 17, 4, 2, 8, 4, 2
    N = side * side
    text = (f"/xavier,zero/ (input, {N * d}) (c, column, {side}x{side}, dim {d}, heads {heads}, qk {qk}, "
            f"mlp {mlp}, depth {depth}, sigma 2, <gelu>) (output, 10, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(B, N * d)).astype(np.float32)
    ids = rng.integers(0, 10, B)
    params, pred, loss, grads = _ours(text, x, np.eye(10, dtype=np.float32)[ids], threads, jitter=0.1)
    net = ColumnNet(side, d, qk, mlp, depth, 2.0, heads, form).double()
    names = {"g1": "norm1.weight", "b1": "norm1.bias", "g2": "norm2.weight", "b2": "norm2.bias",
             "wq": "query.weight", "bq": "query.bias", "wk": "key.weight", "w1": "mlp1.weight",
             "c1": "mlp1.bias", "w2": "mlp2.weight", "bias": "attn_bias"}
    for attr, name in names.items():
        getattr(net, attr).data = _t(params[f"c.{name}"])
    net.head.weight.data, net.head.bias.data = _t(params["output.weight"]), _t(params["output.bias"])
    logits = net(_t(x))
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids))
    tloss.backward()
    tgrads = {f"c.{name}": getattr(net, attr).grad.numpy() for attr, name in names.items()}
    tgrads.update({"output.weight": net.head.weight.grad.numpy(), "output.bias": net.head.bias.grad.numpy()})
    _compare(pred, loss, grads, logits.softmax(-1).detach().numpy(), tloss.item(), tgrads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("form", ["all", "moving", "hoisted"])
def test_case_g_twin_is_the_engine_network(form, threads):
    nv, ny, units, steps, dt = 24, 5, 300, 4, 0.4
    text = (f"/xavier,zero/ (input, {nv}) [am, energy, steps {steps}, dt {dt}, (am_v, {nv}, <tanh>) "
            f"(am_y, {ny}, <softmax>) (am_s, synapse hidden, am_v am_y, units {units}, <relu>)] "
            f"(output, {ny}, <softmax>, <cross_entropy>)")
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (B, nv)).astype(np.float32)
    ids = rng.integers(0, ny, B)
    params, pred, loss, grads = _ours(text, x, np.eye(ny, dtype=np.float32)[ids], threads, jitter=0.2)
    net = EnergyNet(nv, ny, units, steps, dt, form).double()
    net.wv.data, net.wy.data = _t(params["am_s.weight0"]), _t(params["am_s.weight1"])
    net.head.weight.data, net.head.bias.data = _t(params["output.weight"]), _t(params["output.bias"])
    logits = net(_t(x))
    tloss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids))
    tloss.backward()
    tgrads = {"am_s.weight0": net.wv.grad.numpy(), "am_s.weight1": net.wy.grad.numpy(),
              "output.weight": net.head.weight.grad.numpy(), "output.bias": net.head.bias.grad.numpy()}
    _compare(pred, loss, grads, logits.softmax(-1).detach().numpy(), tloss.item(), tgrads)
