"""Side-by-side CPU benchmarks: Neuromorph vs PyTorch eager vs numpy's sgemm, in one process.

    python bench/run.py [--quick] [--threads N] [--cases a,b,c,d]

Prints one JSON object per case (see bench/README.md): our microseconds per training step,
PyTorch's (when torch is installed; case a also with torch.compile), the ratio (>1: we are
faster), GFLOP/s, the share of the same-run numpy sgemm rate, peak RSS, a machine line, and
`units`: what each figure and ratio of the row measures. Timings are medians of several
repeats after a warm-up; only same-run ratios are meaningful on shared machines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings

ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ARGS.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
ARGS.add_argument("--threads", type=int, default=1)
ARGS.add_argument("--cases", default="a,b,c,d,e,f", help="comma list of a,b,c,d,e,f,memory")
ARGS.add_argument("--repeats", type=int, default=5)
ARGS.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                  help="cuda: the GPU cases of performance.md vs PyTorch CUDA in the same run")
OPTS = ARGS.parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(OPTS.threads)  # before numpy/torch load their BLAS

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import neuromorph as nm  # noqa: E402

warnings.simplefilter("ignore")
try:
    import torch
    torch.set_num_threads(OPTS.threads)
except ImportError:  # the bench still runs; PyTorch columns say why they are empty
    torch = None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    tv = torch.__version__ if torch else "not installed"
    return (f"{cpu}; {os.cpu_count()} cpus; threads {OPTS.threads}; neuromorph {nm.__version__}; "
            f"torch {tv}; numpy {np.__version__}")


def median_time(fn, repeats: int) -> float:
    time.sleep(0.3)  # let other pools' spinning threads (PyTorch's OpenMP) go idle first
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sgemm_gflops(m: int, k: int, n: int, repeats: int) -> float:
    a = np.random.rand(m, k).astype(np.float32)
    b = np.random.rand(k, n).astype(np.float32)
    reps = max(1, int(2e8 / (2 * m * k * n)))
    t = median_time(lambda: [a @ b for _ in range(reps)], repeats)
    return 2 * m * k * n * reps / t / 1e9


def mlp_flops(widths, batch) -> float:
    """Training FLOPs of one step of an MLP: forward, backward to weights and to inputs."""
    f = 0
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        f += 2 * batch * a * b * (2 if i == 0 else 3)  # no input gradient for the first layer
    return f


def ours_mlp(widths, acts, loss, batch, n_batches, threads=None):
    layers = "".join(f"(l{i}, {w}, <{a}>)" for i, (w, a) in enumerate(zip(widths[1:-1], acts)))
    text = f"/xavier,zero/ (input, {widths[0]}) {layers} (output, {widths[-1]}, <{acts[-1]}>, <{loss}>)"
    h = nm.compile(text, batch, 0.01)
    nm.seed(0)
    nm.build(h, threads=threads or OPTS.threads)
    x = np.random.rand(n_batches, batch, widths[0]).astype(np.float32)
    e = np.random.rand(n_batches, batch, widths[-1]).astype(np.float32)
    t = median_time(lambda: nm.train(h, x, e, verbosity=0), OPTS.repeats)
    nm.release(h)
    return t / n_batches * 1e6


TORCH_ACTS = {"tanh": "Tanh", "relu": "ReLU", "linear": None, "softmax": None}


def torch_net(widths, acts):
    """The PyTorch twin of an MDL chain of layers (the output's activation is in its loss)."""
    mods = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        mods.append(torch.nn.Linear(a, b))
        act = TORCH_ACTS[acts[i]]
        if act and i < len(widths) - 2:
            mods.append(getattr(torch.nn, act)())
    return torch.nn.Sequential(*mods)


def torch_mlp(widths, acts, loss, batch, n_batches, compiled=False):
    if torch is None:
        return None
    net = torch_net(widths, acts)
    if compiled:
        net = torch.compile(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.rand(n_batches, batch, widths[0])
    if loss == "cross_entropy":
        e = torch.randint(0, widths[-1], (n_batches, batch))
        lossf = torch.nn.CrossEntropyLoss()   # fused log-softmax + NLL: PyTorch's best form
    else:
        e = torch.rand(n_batches, batch, widths[-1])
        lossf = torch.nn.MSELoss()

    def run():
        for k in range(n_batches):
            opt.zero_grad(set_to_none=True)
            lossf(net(x[k]), e[k]).backward()
            opt.step()
    return median_time(run, OPTS.repeats) / n_batches * 1e6


UNITS = {
    "ours_us_per_step": "µs per training step: one batch of the case's batch size (forward, loss, "
                        "backward, SGD update)",
    "torch_us_per_step": "µs per training step of the same batch size, PyTorch eager",
    "ratio_vs_torch": "torch_us_per_step / ours_us_per_step (both per step of the same batch; "
                      ">1: ours faster)",
    "gflops": "our training GFLOP/s (forward + weight gradients + input gradients)",
    "pct_of_sgemm": "100 * gflops / sgemm_gflops_same_run",
    "speedup_vs_1_thread": "ours_1_thread_us / ours_us_per_step",
    "ours_us_per_sample": "ours_us_per_step / batch",
    "torch_us_per_sample": "torch_us_per_step / batch",
    "ratio_vs_torch_per_sample": "torch_us_per_sample / ours_us_per_sample (= ratio_vs_torch)",
    "torch_compile_us_per_step": "µs per training step, PyTorch with torch.compile(model) (after "
                                 "compilation), same loop as eager",
    "ratio_vs_torch_compile": "torch_compile_us_per_step / ours_us_per_step",
    "torch_unfold_us": "µs per step, PyTorch eager, windows by unfold",
    "torch_masked_us": "µs per step, PyTorch eager, dense attention with a -inf mask",
}


def report(case, shape, ours_us, torch_us, flops=None, sgemm=None, extra=None, note=None):
    row = {"case": case, "shape": shape, "ours_us_per_step": round(ours_us, 3),
           "torch_us_per_step": None if torch_us is None else round(torch_us, 3),
           "ratio_vs_torch": None if torch_us is None else round(torch_us / ours_us, 2)}
    if torch_us is None:
        row["torch_note"] = "PyTorch not installed (pip install torch==2.13.0)"
    if note:
        row["note"] = note
    if flops:
        gf = flops / (ours_us * 1e-6) / 1e9
        row["gflops"] = round(gf, 2)
        if sgemm:
            row["sgemm_gflops_same_run"] = round(sgemm, 2)
            row["pct_of_sgemm"] = round(100 * gf / sgemm, 1)
    row.update(extra or {})
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["machine"] = machine()
    row["units"] = {k: UNITS[k] for k in row if k in UNITS}
    print(json.dumps(row), flush=True)


def torch_compile_column(widths, acts, loss, batch, n, ours):
    """torch.compile of the same network and loop: (extra keys, note). Failures are reported,
    not raised (no C++ compiler for inductor, an unsupported platform, ...)."""
    if torch is None:
        return {"torch_compile_us_per_step": None}, None
    if OPTS.quick:  # compiling takes longer than the whole smoke run
        return {"torch_compile_us_per_step": None}, "torch.compile skipped with --quick"
    try:
        t = torch_mlp(widths, acts, loss, batch, n, compiled=True)
    except Exception as e:  # noqa: BLE001  (any backend failure: say why, keep the row)
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        return {"torch_compile_us_per_step": None}, f"torch.compile failed: {why}"
    return {"torch_compile_us_per_step": round(t, 3), "ratio_vs_torch_compile": round(t / ours, 2)}, None


def case_mlp(case, widths, acts, loss, batch, with_compile=False):
    n = 20 if OPTS.quick else max(20, int(4e8 / mlp_flops(widths, batch)))
    ours = ours_mlp(widths, acts, loss, batch, n)
    extra = {}
    if OPTS.threads > 1:  # the thread speed-up, measured in this run
        one = ours_mlp(widths, acts, loss, batch, n, threads=1)
        extra = {"ours_1_thread_us": round(one, 3), "speedup_vs_1_thread": round(one / ours, 2)}
    theirs = torch_mlp(widths, acts, loss, batch, min(n, 2000))
    notes = []
    if with_compile:
        more, why = torch_compile_column(widths, acts, loss, batch, min(n, 2000), ours)
        extra.update(more)
        if why:
            notes.append(why)
        notes.append("ours: one train() call over all batches (the loop is in C++); torch: a "
                     "Python loop of one step per batch, eager and compiled")
    big = max(widths)
    sg = None if OPTS.quick else sgemm_gflops(batch, big, big, OPTS.repeats)
    report(case, f"MLP {'->'.join(map(str, widths))} {'/'.join(acts)} {loss}, batch {batch}",
           ours, theirs, mlp_flops(widths, batch), sg, extra, note="; ".join(notes) or None)


def case_lstm():
    """lstm-model on a stream (BPTT in windows of 5) vs torch LSTMCell(4,4)+Linear per step."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    B = 5
    n = 50 if OPTS.quick else 20000
    x = np.random.rand(n, B, 4).astype(np.float32)
    e = np.random.rand(n, B, 4).astype(np.float32)

    def ours(threads):  # µs per training step: one batch of B = 5 stream samples
        h = nm.compile(os.path.join(root, "models", "lstm-model.mdl"), B, 0.01)
        nm.seed(0)
        nm.build(h, threads=threads)
        t = median_time(lambda: nm.train(h, x, e, verbosity=0), OPTS.repeats)
        nm.release(h)
        return t / n * 1e6
    ours_step = ours(OPTS.threads)
    extra = {"ours_us_per_sample": round(ours_step / B, 4),
             "ours_samples_per_s": round(B * 1e6 / ours_step)}
    if OPTS.threads > 1:
        one = ours(1)
        extra.update(ours_1_thread_us=round(one, 3), speedup_vs_1_thread=round(one / ours_step, 2))
    theirs = None
    if torch is not None:
        cell, head = torch.nn.LSTMCell(4, 4), torch.nn.Linear(4, 4)
        opt = torch.optim.SGD(list(cell.parameters()) + list(head.parameters()), lr=0.01)
        steps = 50 if OPTS.quick else 400
        xs, es = torch.rand(steps, B, 4), torch.rand(steps, B, 4)

        def run():
            hc = (torch.zeros(B, 4), torch.zeros(B, 4))
            for k in range(steps):
                opt.zero_grad(set_to_none=True)
                hc = cell(xs[k], (hc[0].detach(), hc[1].detach()))
                torch.nn.functional.mse_loss(torch.tanh(head(hc[0])), es[k]).backward()
                opt.step()
        theirs = median_time(run, OPTS.repeats) / steps * 1e6
        extra.update(torch_us_per_sample=round(theirs / B, 3),
                     ratio_vs_torch_per_sample=round(theirs / ours_step, 2))
    report("d", "lstm-model stream, width 4, batch 5 = one BPTT window of 5 (ours) vs "
           "LSTMCell(4,4)+Linear step at batch 5 (torch)", ours_step, theirs, extra=extra,
           note="both sides per training step of 5 samples (one optimizer update each); "
                "per-sample figures are the step figures / 5 on both sides")


def case_memory():
    """Peak RSS growth of a fresh process training case c (batch 256) against the model's bytes."""
    import subprocess
    code = (
        "import numpy as np, neuromorph as nm\n"
        "x = np.random.rand(8, 256, 784).astype(np.float32)\n"
        "e = np.eye(10, dtype=np.float32)[np.random.randint(0, 10, (8, 256))]\n"
        "def rss(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key): return int(line.split()[1])\n"
        "nm.release(nm.compile('/xavier,zero/ (i, 2)(o, 2, <linear>, <mse>)', 1, 0.1))"
        "  # the compiler's one-time tables are not the model\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to now\n"
        "base = rss('VmRSS')\n"
        "h = nm.compile('/xavier,zero/ (i, 784)(a, 512, <relu>)(b, 256, <relu>)"
        "(o, 10, <softmax>, <cross_entropy>)', 256, 0.01)\n"
        "nm.build(h); nm.train(h, x, e, verbosity=0)\n"
        "print(base, rss('VmHWM'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak = (int(v) for v in out.stdout.split())
    params = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    widths = [784, 512, 256, 10]
    # parameters + gradients; per sample: values and value gradients of every node, plus z of layers
    model_bytes = 4 * (2 * params + 256 * (2 * sum(widths) + sum(widths[1:]) + max(widths)))
    growth = (peak - base) * 1024
    print(json.dumps({"case": "memory", "shape": "train MLP 784->512->256->10, batch 256",
                      "model_bytes_mb": round(model_bytes / 2**20, 2),
                      "rss_growth_mb": round(growth / 2**20, 2),
                      "ratio_to_model_bytes": round(growth / model_bytes, 2),
                      "note": "input data (8 batches) and the compiler's one-time parser tables "
                              "are allocated before the baseline",
                      "machine": machine(),
                      "units": {"model_bytes_mb": "MiB of parameters, gradients and activations",
                                "rss_growth_mb": "MiB of peak RSS growth while building and training",
                                "ratio_to_model_bytes": "rss_growth_mb / model_bytes_mb"}}), flush=True)


def ours_struct(node, in_width, batch, n_batches):
    text = f"/xavier,zero/ (input, {in_width}) {node} (output, 10, <softmax>, <cross_entropy>)"
    h = nm.compile(text, batch, 0.01)
    nm.seed(0)
    nm.build(h, threads=OPTS.threads)
    x = np.random.rand(n_batches, batch, in_width).astype(np.float32)
    e = np.eye(10, dtype=np.float32)[np.random.randint(0, 10, (n_batches, batch))]
    t = median_time(lambda: nm.train(h, x, e, verbosity=0), OPTS.repeats)
    nm.release(h)
    return t / n_batches * 1e6


def torch_train_us(net, in_width, batch, n_batches):
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.rand(n_batches, batch, in_width)
    e = torch.randint(0, 10, (n_batches, batch))
    lossf = torch.nn.CrossEntropyLoss()

    def run():
        for k in range(n_batches):
            opt.zero_grad(set_to_none=True)
            lossf(net(x[k]), e[k]).backward()
            opt.step()
    return median_time(run, OPTS.repeats) / n_batches * 1e6


def case_attn2d():
    """attn2d 8x8, dim 32, 4 heads, 3x3 windows, RoPE, depth 2 + a dense head, batch 32, vs the
    same network in PyTorch, timed in its two best forms (unfold windows; dense masked attention)."""
    H = W = 4 if OPTS.quick else 8
    d, heads, depth, batch = 32, 4, 2, (4 if OPTS.quick else 32)
    n = 5 if OPTS.quick else 60
    node = f"(g, attn2d, {H}x{W}, dim {d}, heads {heads}, window 1, depth {depth}, mlp 4, <gelu>)"
    ours = ours_struct(node, H * W * d, batch, n)
    theirs, forms = None, {}
    if torch is not None:
        from bench_torch_nets import Attn2dNet
        for form in ("unfold", "masked"):
            net = Attn2dNet(H, W, d, heads, 1, depth, 4, form)
            forms[f"torch_{form}_us"] = round(torch_train_us(net, H * W * d, batch, n), 1)
        theirs = min(forms.values())
    report("e", f"attn2d {H}x{W} dim {d} heads {heads} window 1 depth {depth} + dense 10, batch "
           f"{batch}", ours, theirs, extra=forms)


def case_column():
    """column 8x8, dim 32, qk 16, mlp 32, depth 4 + a dense head, batch 32, vs PyTorch with the
    untied weights as (N, out, in) tensors applied by einsum and attention by bmm."""
    side = 4 if OPTS.quick else 8
    d, qk, mlp, depth, batch = 32, 16, 32, 4, (4 if OPTS.quick else 32)
    n = 5 if OPTS.quick else 40
    node = f"(c, column, {side}x{side}, dim {d}, qk {qk}, mlp {mlp}, depth {depth}, sigma 2, <gelu>)"
    N = side * side
    ours = ours_struct(node, N * d, batch, n)
    theirs = None
    if torch is not None:
        from bench_torch_nets import ColumnNet
        theirs = torch_train_us(ColumnNet(side, d, qk, mlp, depth), N * d, batch, n)
    report("f", f"column {side}x{side} dim {d} qk {qk} mlp {mlp} depth {depth} + dense 10, batch "
           f"{batch}", ours, theirs)


def cuda_mlp(case, widths, acts, loss, batch, n):
    """Ours on the GPU vs PyTorch CUDA, same shapes, same process."""
    layers = "".join(f"(l{i}, {w}, <{a}>)" for i, (w, a) in enumerate(zip(widths[1:-1], acts)))
    text = f"/xavier,zero/ (input, {widths[0]}) {layers} (output, {widths[-1]}, <{acts[-1]}>, <{loss}>)"
    h = nm.compile(text, batch, 0.01)
    nm.seed(0)
    nm.build(h, device="cuda")
    x = np.random.rand(n, batch, widths[0]).astype(np.float32)
    e = np.random.rand(n, batch, widths[-1]).astype(np.float32)
    ours = median_time(lambda: nm.train(h, x, e, verbosity=0), OPTS.repeats) / n * 1e6
    nm.release(h)
    theirs = None
    if torch is not None and torch.cuda.is_available():
        net = torch_net(widths, acts).cuda()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        xt, et = torch.rand(n, batch, widths[0], device="cuda"), torch.rand(n, batch, widths[-1], device="cuda")
        lossf = torch.nn.MSELoss() if loss == "mse" else torch.nn.CrossEntropyLoss()
        if loss != "mse":
            et = torch.randint(0, widths[-1], (n, batch), device="cuda")

        def run():
            for k in range(n):
                opt.zero_grad(set_to_none=True)
                lossf(net(xt[k]), et[k]).backward()
                opt.step()
            torch.cuda.synchronize()
        theirs = median_time(run, OPTS.repeats) / n * 1e6
    report(case, f"[cuda] MLP {'->'.join(map(str, widths))}, batch {batch}", ours, theirs,
           extra={"device": nm.cuda_available()[1]})


def main_cuda():
    ok, why = nm.cuda_available()
    if not ok:
        print(json.dumps({"device": "cuda", "skipped": why, "machine": machine()}))
        return 0
    cases = set(OPTS.cases.split(","))
    if "a" in cases or "small" in cases:
        cuda_mlp("small", [64, 64, 64, 64, 64], ["relu", "relu", "relu", "linear"], "mse",
                 1024 if OPTS.quick else 65536, 5 if OPTS.quick else 50)
    if "c" in cases:
        cuda_mlp("c", [784, 512, 256, 10], ["relu", "relu", "softmax"], "cross_entropy",
                 256 if OPTS.quick else 8192, 5 if OPTS.quick else 50)
    return 0


def main():
    if OPTS.device == "cuda":
        return main_cuda()
    cases = set(OPTS.cases.split(","))
    if "a" in cases:
        case_mlp("a", [128, 256, 4], ["tanh", "linear"], "mse", 5, with_compile=True)
    if "b" in cases:
        for batch in ((16,) if OPTS.quick else (64, 256)):
            case_mlp("b", [128, 256, 4], ["tanh", "linear"], "mse", batch)
    if "c" in cases:
        widths = [64, 32, 16, 10] if OPTS.quick else [784, 512, 256, 10]
        for batch in ((8,) if OPTS.quick else (32, 256)):
            case_mlp("c", widths, ["relu", "relu", "softmax"], "cross_entropy", batch)
    if "d" in cases:
        case_lstm()
    if "e" in cases:
        case_attn2d()
    if "f" in cases:
        case_column()
    if ("memory" in cases or not OPTS.quick) and os.path.exists("/proc/self/clear_refs"):
        case_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
