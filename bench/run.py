"""Side-by-side benchmarks: Neuromorph vs PyTorch eager vs numpy's sgemm, in one process.

    python bench/run.py [--quick] [--threads N] [--cases a,b,c,d,e,f,g,h,memory]
    python bench/run.py --device cuda [--cases small,c,e,f,g,h]

Prints one JSON object per case (see bench/README.md): our microseconds per training step,
PyTorch's (when torch is installed; case a also with torch.compile), the ratio (>1: we are
faster), GFLOP/s, the share of the same-run numpy sgemm rate, the parameter counts of ours and
of the PyTorch twin (cases e-h), peak RSS, a machine line, and `units`: what each figure and
ratio of the row measures. Timings are medians of several repeats after a warm-up; only
same-run ratios are meaningful on shared machines. With --device cuda: the GPU rows of
performance.md against PyTorch CUDA eager, data on the device for both.
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
ARGS.add_argument("--cases", default=None,
                  help="comma list of a,b,c,d,e,f,g,h,memory (default: all; with --quick a-f, the "
                       "set tests/test_fast_paths.py expects); with --device cuda: small,c,e,f,g,h "
                       "(default all)")
ARGS.add_argument("--repeats", type=int, default=5)
ARGS.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                  help="cuda: the GPU cases of performance.md vs PyTorch CUDA in the same run")
OPTS = ARGS.parse_args()
if OPTS.cases is None:
    OPTS.cases = ("small,c,e,f,g,h" if OPTS.device == "cuda" else
                  "a,b,c,d,e,f" if OPTS.quick else "a,b,c,d,e,f,g,h,memory")
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
    gpu = ""
    if OPTS.device == "cuda" and torch is not None and torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)}; CUDA {torch.version.cuda}; "
    return (f"{gpu}{cpu}; {os.cpu_count()} cpus; threads {OPTS.threads}; neuromorph "
            f"{nm.__version__}; torch {tv}; numpy {np.__version__}")


# Each timed run lasts at least this long (a shorter call is repeated back to back and the time
# divided): the first milliseconds after the pauses below run slow on the VM (bench/README.md).
# --quick: no minimum.
MIN_RUN_S = 0.0 if OPTS.quick else 0.25


def calls_per_run(fn) -> int:
    """fn's warm-up call, timed: how many back-to-back calls of fn make one timed run of at
    least MIN_RUN_S."""
    t0 = time.perf_counter()
    fn()
    took = time.perf_counter() - t0
    return max(1, min(1000, int(MIN_RUN_S / max(took, 1e-7)) + 1)) if MIN_RUN_S else 1


def timed_run(fn, calls: int) -> float:
    """Seconds per call of fn over `calls` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def median_time(fn, repeats: int) -> float:
    time.sleep(0.3)  # let other pools' spinning threads (PyTorch's OpenMP) go idle first
    calls = calls_per_run(fn)  # the warm-up
    return statistics.median(timed_run(fn, calls) for _ in range(repeats))


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


def ours_mlp(widths, acts, loss, batch, n_batches):
    """Median seconds of one train() call over n_batches batches (ours_with_one_thread)."""
    layers = "".join(f"(l{i}, {w}, <{a}>)" for i, (w, a) in enumerate(zip(widths[1:-1], acts)))
    text = f"/xavier,zero/ (input, {widths[0]}) {layers} (output, {widths[-1]}, <{acts[-1]}>, <{loss}>)"
    h = nm.compile(text, batch, 0.01)
    nm.seed(0)
    nm.build(h, threads=OPTS.threads)
    x = np.random.rand(n_batches, batch, widths[0]).astype(np.float32)
    e = np.random.rand(n_batches, batch, widths[-1]).astype(np.float32)
    t = ours_with_one_thread(lambda: nm.train(h, x, e, verbosity=0))
    nm.release(h)
    return t


def ours_with_one_thread(run):
    """Median seconds of run() at OPTS.threads ("ours") and, with more than one thread, of the
    same run on 1 thread ("ours_1_thread"), the repeats taken in turns so that the shared
    machine's slow and fast phases fall on both (threads are process-wide: set for each run)."""
    if OPTS.threads == 1:
        return {"ours": median_time(run, OPTS.repeats)}
    one = on_one_thread(run)
    fns = {"ours": run, "ours_1_thread": one}
    return interleaved_medians(fns, OPTS.repeats, {k: calls_per_run(fn) for k, fn in fns.items()})


def on_one_thread(run):
    """run() on 1 engine thread, then back to OPTS.threads (threads are process-wide)."""
    def one_thread():
        nm._core.set_threads(1)
        try:
            run()
        finally:
            nm._core.set_threads(OPTS.threads)
    return one_thread


def thread_extra(t, n):
    """The 1-thread figure and the speed-up for a row, from ours_with_one_thread's medians."""
    if "ours_1_thread" not in t:
        return {}
    return {"ours_1_thread_us": round(t["ours_1_thread"] / n * 1e6, 3),
            "speedup_vs_1_thread": round(t["ours_1_thread"] / t["ours"], 2)}


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
    "torch_sdpa_us": "µs per step, PyTorch eager, F.scaled_dot_product_attention with the mask "
                     "(case f: the N x N bias) as its float attn_mask",
    "torch_bmm_us": "µs per step, PyTorch eager, explicit scores + softmax by batched matmul",
    "torch_all_us": "µs per step, PyTorch autograd through the unroll, every layer's current "
                    "computed each step (the clamped one discarded: HAMUX's generic dE/dg)",
    "torch_moving_us": "µs per step, PyTorch autograd through the unroll, only the moving "
                       "layer's current computed each step",
    "torch_hoisted_us": "µs per step, PyTorch, as torch_moving_us with the clamped layer's "
                        "product g_v W_v taken once before the loop (the engine's own schedule)",
    "ratio_vs_torch_hoisted": "torch_hoisted_us / ours_us_per_step",
    "params_ours": "number of trainable parameters of our model (nm.info)",
    "params_torch": "number of trainable parameters of the PyTorch twin; equal to params_ours "
                    "when the twin is the same network",
    "ours_host_us": "µs per training step, ours, data given as host numpy arrays (copied to the "
                    "device inside train)",
    "ratio_host_vs_torch": "torch_us_per_step / ours_host_us",
    "device_data": "true: ours_us_per_step took device-resident data (torch CUDA tensors) "
                   "straight; false: train refused them and ours_us_per_step is host data",
    "ours_tflops": "our training TFLOP/s: training FLOPs of one step / ours_us_per_step",
    "torch_tflops": "PyTorch's training TFLOP/s: the same FLOPs / torch_us_per_step",
    "peak_tflops": "the device's dense fp32 peak without tensor cores (SMs x fp32 lanes x 2 x "
                   "boost clock), source in peak_source",
    "pct_of_peak_tflops": "100 * ours_tflops / peak_tflops",
    "ours_gbps": "estimated bytes one step moves (parameters, gradients, activations read and "
                 "written; bench/README.md) / ours_us_per_step, in GB/s",
    "torch_gbps": "the same bytes / torch_us_per_step, in GB/s",
    "peak_gbps": "the device's peak memory bandwidth in GB/s, source in peak_source",
    "pct_of_peak_gbps": "100 * ours_gbps / peak_gbps",
    "bytes_per_step": "estimated bytes one training step moves (bench/README.md, mlp_bytes)",
    "peak_source": "where peak_tflops and peak_gbps come from (device properties or a table by "
                   "device name)",
    "torch_tf32": "whether PyTorch's fp32 matmuls were allowed TF32 (its default: false)",
}


def report(case, shape, ours_us, torch_us, flops=None, sgemm=None, extra=None, note=None,
           torch_note=None):
    """Print one row. ours_us None: our side could not run (the reason in `extra`)."""
    row = {"case": case, "shape": shape,
           "ours_us_per_step": None if ours_us is None else round(ours_us, 3),
           "torch_us_per_step": None if torch_us is None else round(torch_us, 3),
           "ratio_vs_torch": None if torch_us is None or ours_us is None else round(torch_us / ours_us, 2)}
    if torch_us is None:
        row["torch_note"] = torch_note or "PyTorch not installed (pip install torch==2.13.0)"
    if note:
        row["note"] = note
    if flops and ours_us:
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
    t = ours_mlp(widths, acts, loss, batch, n)
    ours = t["ours"] / n * 1e6
    extra = thread_extra(t, n)  # the thread speed-up, interleaved in this run
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

    # µs per training step (one batch of B = 5 stream samples), at OPTS.threads and at 1
    h = nm.compile(os.path.join(root, "models", "lstm-model.mdl"), B, 0.01)
    nm.seed(0)
    nm.build(h, threads=OPTS.threads)
    t = ours_with_one_thread(lambda: nm.train(h, x, e, verbosity=0))
    nm.release(h)
    ours_step = t["ours"] / n * 1e6
    extra = {"ours_us_per_sample": round(ours_step / B, 4),
             "ours_samples_per_s": round(B * 1e6 / ours_step)}
    extra.update(thread_extra(t, n))
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


# ----------------------------------------------------------------------------- cases e-h
# Each is an MDL model and its PyTorch twin in bench_torch_nets.py, trained side by side on the
# same shapes: one SGD step per batch on each side, same loss, same parameter count (reported).

def n_params_ours(h) -> int:
    return int(sum(int(np.prod(shape)) for _, shape in nm.info(h)["params"]))


def torch_step_fn(net, xs, ts, lossf, sync=None):
    """A function running one SGD step of a PyTorch module per batch, xs[k] -> ts[k]."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def run():
        for k in range(len(xs)):
            opt.zero_grad(set_to_none=True)
            lossf(net(xs[k]), ts[k]).backward()
            opt.step()
        if sync:
            sync()
    return run


def torch_train_us(net, xs, ts, lossf, sync=None):
    """µs per training step of a PyTorch module: one SGD step per batch, xs[k] -> ts[k]."""
    return median_time(torch_step_fn(net, xs, ts, lossf, sync), OPTS.repeats) / len(xs) * 1e6


def interleaved_medians(fns: dict, repeats: int, calls: dict | None = None) -> dict:
    """Median seconds per call of each function, the repeats taken in turns (ours, form 1, form
    2, ..., ours, ...), so that load that comes and goes on a shared machine falls on every side
    alike; each repeat `calls[k]` back-to-back calls, as calls_per_run counted them in each
    function's warm-up (without calls: warmed up and counted here)."""
    if calls is None:
        calls = {k: calls_per_run(fn) for k, fn in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            time.sleep(0.2)  # let the other side's pool threads (PyTorch's OpenMP) go idle
            times[k].append(timed_run(fn, calls[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def why(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"


def classes(n, batch, k=10):
    ids = np.random.randint(0, k, (n, batch))
    return ids, np.eye(k, dtype=np.float32)[ids]


def torch_forms(make_twin, forms, xs, ts, lossf, device="cpu", sync=None):
    """Time the twin in each form: ({"torch_<form>_us": µs or None}, params, notes)."""
    out, params, notes = {}, None, []
    for form in forms:
        try:
            torch.manual_seed(0)
            net = make_twin(form).to(device)
            params = sum(p.numel() for p in net.parameters())
            out[f"torch_{form}_us"] = round(torch_train_us(net, xs, ts, lossf, sync), 1)
        except Exception as e:  # noqa: BLE001  (a form this PyTorch build lacks: say so, keep the row)
            out[f"torch_{form}_us"] = None
            notes.append(f"torch {form} form failed: {why(e)}")
        finally:
            net = None
    return out, params, notes


def case_twin(case, shape, text, batch, x, e, make_twin, forms, tx, tt, lossf, best=None,
              note=None, flops=None, sgemm_shape=None):
    """One row: ours on (x, e) vs the twin's forms on (tx, tt), the repeats interleaved; the
    ratio is against the fastest of the forms in `best` (default all). flops: the step's
    product FLOPs, reported as GFLOP/s and as a share of numpy's sgemm at sgemm_shape (m, k, n),
    measured in this run."""
    h = nm.compile(text, batch, 0.01)
    nm.seed(0)
    nm.build(h, threads=OPTS.threads)
    extra, notes = {"params_ours": n_params_ours(h)}, [note] if note else []
    fns = {"ours": lambda: nm.train(h, x, e, verbosity=0)}
    if OPTS.threads > 1:  # the thread speed-up, measured in this run
        fns["ours_1_thread"] = on_one_thread(fns["ours"])
    if torch is not None:
        extra["params_torch"] = None
        for form in forms:
            try:
                torch.manual_seed(0)
                net = make_twin(form)
                extra["params_torch"] = sum(p.numel() for p in net.parameters())
                fns[form] = torch_step_fn(net, tx, tt, lossf)
            except Exception as err:  # noqa: BLE001  (a form this PyTorch lacks: say so, go on)
                notes.append(f"torch {form} form failed: {why(err)}")
    else:
        extra["params_torch"] = None
    try:
        time.sleep(0.3)
        calls = {}
        for k in list(fns):  # warm-up; a form that fails here is left out
            try:
                calls[k] = calls_per_run(fns[k])
            except Exception as err:  # noqa: BLE001
                if k == "ours":
                    raise
                notes.append(f"torch {k} form failed: {why(err)}")
                del fns[k]
        med = {k: v / len(x) * 1e6 for k, v in interleaved_medians(fns, OPTS.repeats, calls).items()}
    finally:
        nm.release(h)
    ours, theirs = med.pop("ours"), None
    if "ours_1_thread" in med:
        one = med.pop("ours_1_thread")
        extra.update(ours_1_thread_us=round(one, 1), speedup_vs_1_thread=round(one / ours, 2))
    if torch is not None:
        for f in forms:
            extra[f"torch_{f}_us"] = round(med[f], 1) if f in med else None
        timed = [med[f] for f in (best or forms) if f in med]
        theirs = min(timed) if timed else None
        for f in forms:
            if best and f not in best and f in med:
                extra[f"ratio_vs_torch_{f}"] = round(med[f] / ours, 2)
    sg = sgemm_gflops(*sgemm_shape, OPTS.repeats) if sgemm_shape and not OPTS.quick else None
    report(case, shape, ours, theirs, flops, sg, extra=extra, note="; ".join(notes) or None,
           torch_note=None if torch is None else "every PyTorch form failed (see note)")


def attn2d_flops(R, d, hid, depth, head, first_dx):
    """Product FLOPs of one training step of attn2d blocks over R cell rows (Q/K/V, output,
    MLP: forward, weight and input gradients; no input gradient for the first block's Q/K/V
    when nothing before the node needs it) plus a head of `head` forward FLOPs (x3)."""
    block = 2 * R * d * (4 * d + 2 * hid)
    return 3 * depth * block - (0 if first_dx else 2 * R * d * 3 * d) + 3 * head


def attn2d_case(H, W, d, heads, depth, batch, n, label=""):
    """attn2d HxW, 3x3 windows (window 1), RoPE, `depth` blocks, mlp 4 + a dense 10-way head,
    vs PyTorch in three forms (unfold windows, dense -inf band mask, SDPA with that mask)."""
    node = f"(g, attn2d, {H}x{W}, dim {d}, heads {heads}, window 1, depth {depth}, mlp 4, <gelu>)"
    text = f"/xavier,zero/ (input, {H * W * d}) {node} (output, 10, <softmax>, <cross_entropy>)"
    x = np.random.rand(n, batch, H * W * d).astype(np.float32)
    ids, onehot = classes(n, batch)
    tx = ty = None
    if torch is not None:
        from bench_torch_nets import Attn2dNet
        tx, ty = torch.from_numpy(x), torch.from_numpy(ids)
    make = lambda form: Attn2dNet(H, W, d, heads, 1, depth, 4, form)
    R = batch * H * W
    case_twin("e", f"attn2d {H}x{W} dim {d} heads {heads} window 1 depth {depth} mlp 4 + dense 10, "
              f"batch {batch}{label}", text, batch, x, onehot, make, ("unfold", "masked", "sdpa"),
              tx, ty, torch.nn.CrossEntropyLoss() if torch else None,
              flops=attn2d_flops(R, d, 4 * d, depth, 2 * R * d * 10, False), sgemm_shape=(R, d, 4 * d))


def case_attn2d():
    if OPTS.quick:
        attn2d_case(4, 4, 32, 4, 2, 4, 5)
        return
    attn2d_case(8, 8, 32, 4, 2, 32, 60, " (small shape)")
    attn2d_case(10, 10, 128, 8, 2, 8, 12, " (performance.md shape)")


def column_case(side, d, heads, qk, mlp, depth, batch, n, label=""):
    """column side x side, `depth` recurrent steps, value = input, skip 0, sigma 2 + a dense
    10-way head, vs PyTorch with the untied weights as (N, out, in) tensors applied by einsum,
    attention by batched matmul or SDPA."""
    N = side * side
    node = (f"(c, column, {side}x{side}, dim {d}, heads {heads}, qk {qk}, mlp {mlp}, depth {depth}, "
            f"sigma 2, <gelu>)")
    text = f"/xavier,zero/ (input, {N * d}) {node} (output, 10, <softmax>, <cross_entropy>)"
    x = np.random.rand(n, batch, N * d).astype(np.float32)
    ids, onehot = classes(n, batch)
    tx = ty = None
    if torch is not None:
        from bench_torch_nets import ColumnNet
        tx, ty = torch.from_numpy(x), torch.from_numpy(ids)
    make = lambda form: ColumnNet(side, d, qk, mlp, depth, 2.0, heads, form)
    case_twin("f", f"column {side}x{side} dim {d} heads {heads} qk {qk} mlp {mlp} depth {depth} + "
              f"dense 10, batch {batch}{label}", text, batch, x, onehot, make, ("bmm", "sdpa"),
              tx, ty, torch.nn.CrossEntropyLoss() if torch else None)


def case_column():
    if OPTS.quick:
        column_case(4, 32, 2, 16, 32, 4, 4, 5)
        return
    column_case(8, 32, 1, 16, 32, 4, 32, 40, " (small shape)")
    # ~2 s per step on each side here: 3 batches per repeat keep the case near a minute
    column_case(32, 64, 4, 64, 64, 4, 8, 3, " (performance.md shape)")


ENERGY_FORMS = ("all", "moving", "hoisted")


def energy_text(nv, ny, units, steps, dt):
    return (f"/xavier,zero/ (input, {nv}) [am, energy, steps {steps}, dt {dt}, (am_v, {nv}, <tanh>) "
            f"(am_y, {ny}, <softmax>) (am_s, synapse hidden, am_v am_y, units {units}, <relu>)] "
            f"(output, {ny}, <softmax>, <cross_entropy>)")


def case_energy():
    """Case g: HAMUX hn_relu_mnist (extensions-math.md 1e): 784 tanh visible (clamped) / 10
    softmax labels, hidden synapse of 1000 relu memories, 4 Euler steps of dt 0.4, the label
    layer's activation read out by a dense 10-way softmax + cross-entropy; vs PyTorch autograd
    through the same unrolled descent."""
    nv, ny, units, steps, dt = (64, 10, 100, 4, 0.4) if OPTS.quick else (784, 10, 1000, 4, 0.4)
    batch, n = (8, 5) if OPTS.quick else (32, 20)
    x = np.random.rand(n, batch, nv).astype(np.float32)
    ids, onehot = classes(n, batch, ny)
    tx = ty = None
    if torch is not None:
        from bench_torch_nets import EnergyNet
        tx, ty = torch.from_numpy(x), torch.from_numpy(ids)
    make = lambda form: EnergyNet(nv, ny, units, steps, dt, form)
    case_twin("g", f"energy {nv} tanh (clamped) / {ny} softmax, synapse hidden {units} relu, steps "
              f"{steps} dt {dt} + dense {ny} softmax-CE, batch {batch}", energy_text(nv, ny, units, steps, dt),
              batch, x, onehot, make, ENERGY_FORMS, tx, ty,
              torch.nn.CrossEntropyLoss() if torch else None, best=("all", "moving", "hoisted"),
              note="ratio_vs_torch: against the fastest of the three forms; the engine skips the "
                   "clamped layer's currents and takes its product g_v W_v once per forward, as "
                   "the hoisted form does")


def gridlm_text(H, W, vocab, d, heads, depth):
    return (f"/xavier,zero/ (chars, {H * W}) (embed, embed, {H}x{W}, vocab {vocab}, dim {d}) "
            f"(grid, attn2d, {H}x{W}, dim {d}, heads {heads}, window 1, depth {depth}, mask raster, "
            f"<gelu>) (next, {vocab}, cells {H}x{W}, <softmax>, <cross_entropy>)")


def case_gridlm():
    """Case h: a HeptapodLM-style grid LM (models/heptapod-lm.mdl at window 1): one token id per
    cell of an 8x8 grid, embed + learned positions, raster-causal attn2d, a per-cell softmax head
    over the vocabulary, cross-entropy per cell against class ids."""
    H = W = 4 if OPTS.quick else 8
    vocab, d, heads, depth = (16, 16, 4, 2) if OPTS.quick else (96, 64, 4, 2)
    batch, n = (4, 5) if OPTS.quick else (32, 20)
    C = H * W
    ids = np.random.randint(0, vocab, (n, batch, C))
    x = ids.astype(np.float32)
    targets = np.random.randint(0, vocab, (n, batch, C))  # class ids per cell, as nm.train takes them
    tx = ty = lossf = None
    if torch is not None:
        from bench_torch_nets import GridLM
        tx, ty = torch.from_numpy(ids), torch.from_numpy(targets)
        ce = torch.nn.CrossEntropyLoss()
        lossf = lambda logits, t: ce(logits, t.reshape(-1))  # mean over cells and batch, as ours
    make = lambda form: GridLM(H, W, vocab, d, heads, 1, depth, 4, form)
    case_twin("h", f"grid LM: embed {H}x{W} vocab {vocab} dim {d}, attn2d heads {heads} window 1 "
              f"depth {depth} mask raster, cells {C} softmax head over {vocab} + CE on class ids, "
              f"batch {batch}", gridlm_text(H, W, vocab, d, heads, depth), batch, x, targets, make,
              ("unfold", "masked", "sdpa"), tx, ty, lossf,
              flops=attn2d_flops(batch * C, d, 4 * d, depth, 2 * batch * C * d * vocab, True),
              sgemm_shape=(batch * C, d, 4 * d))


# ----------------------------------------------------------------------------- the GPU rows

# Dense fp32 peak without tensor cores and memory bandwidth, by device name (first match), when
# the device properties do not give clocks (CUDA 13 drops them from cudaDeviceProp).
GPU_TABLE = (("H200", 66.9, 4800.0), ("H100 PCIe", 51.2, 2000.0), ("H100 NVL", 60.0, 3900.0),
             ("H100", 66.9, 3350.0), ("A100-SXM4-80GB", 19.5, 2039.0), ("A100", 19.5, 1555.0),
             ("L40S", 91.6, 864.0), ("L4", 30.3, 300.0))


def gpu_peaks():
    """(peak fp32 TFLOP/s, peak GB/s, how they were found) of device 0."""
    p = torch.cuda.get_device_properties(0)
    lanes = 64 if p.major < 8 or (p.major, p.minor) == (8, 0) else 128  # fp32 lanes per SM
    clock = getattr(p, "clock_rate", 0) or 0                             # kHz (boost)
    mem_clock = getattr(p, "memory_clock_rate", 0) or 0                 # kHz
    bus = getattr(p, "memory_bus_width", 0) or 0                        # bits
    tf = gb = None
    src = []
    if clock > 0:
        tf = p.multi_processor_count * lanes * 2 * clock * 1e3 / 1e12
        src.append(f"TFLOP/s from properties: {p.multi_processor_count} SMs x {lanes} lanes x 2 x "
                   f"{clock / 1e6:.3f} GHz")
    if mem_clock > 0 and bus > 0:
        gb = 2 * mem_clock * 1e3 * bus / 8 / 1e9
        src.append(f"GB/s from properties: 2 x {mem_clock / 1e6:.3f} GHz x {bus} bits")
    if tf is None or gb is None:
        row = next((r for r in GPU_TABLE if r[0] in p.name), None)
        if row:
            if tf is None:
                tf = row[1]
            if gb is None:
                gb = row[2]
            src.append(f"table by name ({row[0]})")
        else:
            src.append(f"{p.name}: not in the table")
    return tf, gb, "; ".join(src)


def mlp_bytes(widths, batch) -> float:
    """Estimated bytes one training step of an MLP moves, each tensor once where it is used:
    parameters P read forward and backward, gradients written, SGD reads P and gradients and
    writes P (6P); per layer the forward reads its input and writes its activation, the backward
    reads the upstream gradient, the activation (derivative) and the input (weight gradient) and
    writes the input gradient (not for the first layer); the loss reads output and targets."""
    P = sum(a * b + b for a, b in zip(widths, widths[1:]))
    act = 2 * widths[-1]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        act += (a + b) + (2 * b + a) + (a if i else 0)
    return 4.0 * (6 * P + batch * act)


def gpu_row(case, shape, text, batch, x, e, make_twin=None, forms=("default",), tx=None, tt=None,
            lossf=None, flops=None, nbytes=None, peaks=None, note=None):
    """One GPU row: ours with device data (torch CUDA tensors straight into nm.train; host numpy
    when train refuses them), ours with host numpy data, PyTorch CUDA eager with device data."""
    dev = GPU_DEV[0]
    sync = torch.cuda.synchronize if (torch is not None and dev == "cuda") else None
    extra, notes = {}, [note] if note else []
    ours = ours_host = None
    h = nm.compile(text, batch, 0.01)
    extra["params_ours"] = n_params_ours(h)
    try:
        nm.seed(0)
        nm.build(h, device="cuda")
    except Exception as err:  # noqa: BLE001  (DeviceError: a kind the GPU backend lacks)
        nm.release(h)
        h = None
        notes.append(f"ours: {why(err)}")
    if h is not None:
        try:
            def timed(xs, es):
                def run():
                    nm.train(h, xs, es, verbosity=0)
                    if sync:
                        sync()
                return median_time(run, OPTS.repeats) / len(x) * 1e6
            ours_host = timed(x, e)
            extra["device_data"] = False
            if torch is not None:
                xd, ed = torch.from_numpy(x).to(dev), torch.from_numpy(e).to(dev)
                try:
                    nm.train(h, xd[:1], ed[:1], verbosity=0)
                    extra["device_data"] = True
                except Exception as err:  # noqa: BLE001  (TypeError/ValueError: not accepted)
                    notes.append(f"ours: train refused device tensors ({why(err)}); host data")
                if extra["device_data"]:
                    ours = timed(xd, ed)
                xd = ed = None
            else:
                notes.append("ours: no torch to hold device data; host data")
            if ours is None:
                ours = ours_host
            extra["ours_host_us"] = round(ours_host, 3)
        except Exception as err:  # noqa: BLE001
            notes.append(f"ours: {why(err)}")
            ours = ours_host = None
        finally:
            nm.release(h)
    theirs = None
    if torch is not None and torch.cuda.is_available() and make_twin is not None:
        txd, ttd = tx.to(dev), tt.to(dev)
        forms_us, tparams, why_not = torch_forms(make_twin, forms, txd, ttd, lossf, dev, sync)
        txd = ttd = None
        notes += why_not
        extra["params_torch"] = tparams
        timed_forms = [v for v in forms_us.values() if v]
        theirs = min(timed_forms) if timed_forms else None
        if len(forms) > 1:
            extra.update(forms_us)
        if dev == "cuda":
            extra["torch_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
            torch.cuda.empty_cache()
    if ours_host and theirs:
        extra["ratio_host_vs_torch"] = round(theirs / ours_host, 2)
    if flops and peaks:
        tf_peak, gb_peak, src = peaks
        if ours:
            extra["ours_tflops"] = round(flops / (ours * 1e-6) / 1e12, 3)
        if theirs:
            extra["torch_tflops"] = round(flops / (theirs * 1e-6) / 1e12, 3)
        extra["peak_tflops"] = None if tf_peak is None else round(tf_peak, 1)
        if ours and tf_peak:
            extra["pct_of_peak_tflops"] = round(100 * extra["ours_tflops"] / tf_peak, 2)
        if nbytes:
            extra["bytes_per_step"] = int(nbytes)
            if ours:
                extra["ours_gbps"] = round(nbytes / (ours * 1e-6) / 1e9, 1)
            if theirs:
                extra["torch_gbps"] = round(nbytes / (theirs * 1e-6) / 1e9, 1)
            extra["peak_gbps"] = None if gb_peak is None else round(gb_peak, 1)
            if ours and gb_peak:
                extra["pct_of_peak_gbps"] = round(100 * extra["ours_gbps"] / gb_peak, 2)
        extra["peak_source"] = src
    tnote = ("PyTorch not installed (pip install torch)" if torch is None else
             "PyTorch has no CUDA device" if not torch.cuda.is_available() else
             "every PyTorch form failed (see note)")
    report(case, f"[cuda] {shape}", ours, theirs, extra=extra, note="; ".join(notes) or None,
           torch_note=tnote)


GPU_DEV = ["cuda"]  # the device the PyTorch side uses (a test harness may point it at "cpu")


def gpu_mlp(case, widths, acts, loss, batch, n, peaks=None):
    layers = "".join(f"(l{i}, {w}, <{a}>)" for i, (w, a) in enumerate(zip(widths[1:-1], acts)))
    text = f"/xavier,zero/ (input, {widths[0]}) {layers} (output, {widths[-1]}, <{acts[-1]}>, <{loss}>)"
    rng = np.random.default_rng(0)
    x = rng.random((n, batch, widths[0]), dtype=np.float32)
    if loss == "cross_entropy":
        ids = rng.integers(0, widths[-1], (n, batch))
        e = np.eye(widths[-1], dtype=np.float32)[ids]
        tt = torch.from_numpy(ids) if torch else None
        lossf = torch.nn.CrossEntropyLoss() if torch else None
    else:
        e = rng.random((n, batch, widths[-1]), dtype=np.float32)
        tt = torch.from_numpy(e) if torch else None
        lossf = torch.nn.MSELoss() if torch else None
    make = (lambda form: torch_net(widths, acts)) if torch else None
    gpu_row(case, f"MLP {'->'.join(map(str, widths))} {'/'.join(acts)} {loss}, batch {batch}", text,
            batch, x, e, make, ("default",), torch.from_numpy(x) if torch else None, tt, lossf,
            flops=mlp_flops(widths, batch), nbytes=mlp_bytes(widths, batch), peaks=peaks)


def gpu_structured(cases, B, n):
    """e, f, g, h at the performance.md shapes, batch B (quick: the tiny CPU shapes)."""
    q = OPTS.quick
    ce = torch.nn.CrossEntropyLoss() if torch else None
    T = (lambda a: torch.from_numpy(a)) if torch else (lambda a: None)
    if "e" in cases:
        H, d, heads = (4, 32, 4) if q else (10, 128, 8)
        x = np.random.rand(n, B, H * H * d).astype(np.float32)
        ids, onehot = classes(n, B)
        make = None
        if torch:
            from bench_torch_nets import Attn2dNet
            make = lambda form: Attn2dNet(H, H, d, heads, 1, 2, 4, form)
        gpu_row("e", f"attn2d {H}x{H} dim {d} heads {heads} window 1 depth 2 mlp 4 + dense 10, batch {B}",
                f"/xavier,zero/ (input, {H * H * d}) (g, attn2d, {H}x{H}, dim {d}, heads {heads}, "
                f"window 1, depth 2, mlp 4, <gelu>) (output, 10, <softmax>, <cross_entropy>)",
                B, x, onehot, make, ("unfold", "masked", "sdpa"), T(x), T(ids), ce)
    if "f" in cases:
        side, d, heads, qk, mlp = (4, 32, 2, 16, 32) if q else (32, 64, 4, 64, 64)
        N = side * side
        x = np.random.rand(n, B, N * d).astype(np.float32)
        ids, onehot = classes(n, B)
        make = None
        if torch:
            from bench_torch_nets import ColumnNet
            make = lambda form: ColumnNet(side, d, qk, mlp, 4, 2.0, heads, form)
        gpu_row("f", f"column {side}x{side} dim {d} heads {heads} qk {qk} mlp {mlp} depth 4 + dense 10, "
                f"batch {B}", f"/xavier,zero/ (input, {N * d}) (c, column, {side}x{side}, dim {d}, "
                f"heads {heads}, qk {qk}, mlp {mlp}, depth 4, sigma 2, <gelu>) (output, 10, <softmax>, "
                f"<cross_entropy>)", B, x, onehot, make, ("bmm", "sdpa"), T(x), T(ids), ce)
    if "g" in cases:
        nv, units = (64, 100) if q else (784, 1000)
        x = np.random.rand(n, B, nv).astype(np.float32)
        ids, onehot = classes(n, B)
        make = None
        if torch:
            from bench_torch_nets import EnergyNet
            make = lambda form: EnergyNet(nv, 10, units, 4, 0.4, form)
        gpu_row("g", f"energy {nv} tanh (clamped) / 10 softmax, synapse hidden {units} relu, steps 4 "
                f"dt 0.4 + dense 10 softmax-CE, batch {B}", energy_text(nv, 10, units, 4, 0.4), B, x,
                onehot, make, ("all", "moving"), T(x), T(ids), ce,
                note="torch: the faster of the forms all/moving (bench_torch_nets.EnergyNet)")
    if "h" in cases:
        H, vocab, d = (4, 16, 16) if q else (8, 96, 64)
        C = H * H
        ids = np.random.randint(0, vocab, (n, B, C))
        targets = np.random.randint(0, vocab, (n, B, C))
        make = lossf = None
        if torch:
            from bench_torch_nets import GridLM
            make = lambda form: GridLM(H, H, vocab, d, 4, 1, 2, 4, form)
            lossf = lambda logits, t: ce(logits, t.reshape(-1))
        gpu_row("h", f"grid LM: embed {H}x{H} vocab {vocab} dim {d}, attn2d heads 4 window 1 depth 2 "
                f"mask raster, cells {C} softmax head + CE on class ids, batch {B}",
                gridlm_text(H, H, vocab, d, 4, 2), B, ids.astype(np.float32), targets, make,
                ("unfold", "masked", "sdpa"), T(ids), T(targets), lossf)


def main_cuda():
    ok, why_not = nm.cuda_available()
    if not ok:
        print(json.dumps({"case": "cuda", "device": "cuda", "skipped": why_not, "machine": machine()}))
        return 0
    peaks = None
    if torch is not None and torch.cuda.is_available():
        peaks = gpu_peaks()
    cases = set(OPTS.cases.split(","))
    q = OPTS.quick
    if cases & {"a", "b", "small"}:
        gpu_mlp("small", [64, 64, 64, 64, 64], ["relu", "relu", "relu", "linear"], "mse",
                1024 if q else 65536, 5 if q else 50, peaks)
        gpu_mlp("small", [64, 64, 64, 64, 64], ["relu", "relu", "relu", "linear"], "mse",
                256, 20 if q else 200)
    if "c" in cases:
        gpu_mlp("c", [784, 512, 256, 10], ["relu", "relu", "softmax"], "cross_entropy",
                256 if q else 8192, 5 if q else 30, peaks)
    gpu_structured(cases, 4 if q else 64, 3 if q else 10)
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
    if "g" in cases:
        case_energy()
    if "h" in cases:
        case_gridlm()
    if "memory" in cases and os.path.exists("/proc/self/clear_refs"):
        case_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
