"""Data-parallel training (`fit(..., distributed=True)`, docs/distributed.md).

The ranks run as `mpiexec -n 2` subprocesses of a worker script (written below), each with a
timeout; pytest itself never runs under mpiexec and never imports mpi4py. Skipped where mpi4py
or mpiexec is missing (`pip install 'neuromorph[mpi]'`).

Checked: 20 steps of 2-rank training on a global batch of 2B equal one process on 2B (float64
to 1e-12 relative, float32 to 1e-5) for SGD and for Adam with gradient clipping, rank 1 built
from another seed (so rank 0's parameters must be broadcast); both ranks end bit-identical;
two runs are bit-identical; a partial last global batch (uneven shards, an empty shard); a rank
that raises or is killed ends the job non-zero within 10 s; mismatched models, a recurrent
model, `distributed=True` outside a launcher and a missing mpi4py give clear errors.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm
from neuromorph import distributed

_here = Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_here) if _here.exists() else shutil.which("mpiexec")
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and MPIEXEC is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec "
                               "(pip install 'neuromorph[mpi]')")

MLP = "/xavier,zero/ (x, 6) (h, 16, <tanh>) (h2, 8, <relu>) (y, 3, <softmax>, <cross_entropy>)"
B, STEPS = 4, 20           # per-rank batch; global batch 2B
TIMEOUT_S = 120

WORKER = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    import neuromorph as nm

    mode, out, dtype, optimizer, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    device = sys.argv[6]
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    MLP = "/xavier,zero/ (x, 6) (h, 16, <tanh>) (h2, 8, <relu>) (y, 3, <softmax>, <cross_entropy>)"
    if mode == "mismatch" and rank == 1:
        MLP = MLP.replace("(h2, 8", "(h2, 9")
    if mode == "recurrent":
        MLP = nm.models.path("small-model")  # a delayed edge: one stream
    opt = {"sgd": {}, "adam": {"optimizer": "adam", "grad_clip": 0.05}}[optimizer]
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 6))
    y = rng.integers(0, 3, size=n)
    e = np.eye(3)[y]
    if mode == "recurrent":
        x, e = x[:, :4], np.abs(x[:, 2:])
    if mode == "routebatch":
        MLP = open(nm.models.path("neuron-model")).read().replace("route sample", "route batch")
    nm.seed(rank * 11)                       # rank 1 builds other parameters: broadcast fixes it
    h = nm.compile(MLP, 4, 0.1, dtype=dtype, **opt)
    nm.build(h, device=device)
    if mode == "routebatch":
        x, e = np.zeros((n, nm.info(h)["input_width"])), np.zeros((n, nm.info(h)["output_width"]))
    if mode == "raise" and rank == 1:
        x = x.copy(); x[5, 2] = np.nan        # DataError on rank 1 only, inside fit
        open(out + ".t", "w").write(repr(time.time()))
    hist = nm.fit(h, x, e, verbosity=0, distributed=True)
    if mode in ("kill", "raise_after"):
        if rank == 1:
            open(out + ".t", "w").write(repr(time.time()))
            if mode == "kill":
                os.kill(os.getpid(), 9)
            raise RuntimeError("rank 1 fails between two fits")
        nm.fit(h, x, e, verbosity=0, distributed=True)   # rank 0 waits for rank 1 here
    nm.save(h, out + ".nm")
    np.savez(f"{out}.{rank}.npz", losses=hist.batch_loss, **nm.get_params(h))
''')


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    return env


def _launch(tmp_path, mode, dtype="float64", optimizer="sgd", n=STEPS * 2 * B, ranks=2,
            tag="run", check=True, device="cpu"):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = str(tmp_path / tag)
    start = time.time()
    done = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(script), mode, out,
                           dtype, optimizer, str(n), device], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=_env())
    done.elapsed = time.time() - start
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return out, done


def _single(dtype, optimizer, n=STEPS * 2 * B, device="cpu"):
    """The reference: one process, batch 2B, seed 0, the same data."""
    opt = {"sgd": {}, "adam": {"optimizer": "adam", "grad_clip": 0.05}}[optimizer]
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 6))
    e = np.eye(3)[rng.integers(0, 3, size=n)]
    nm.seed(0)
    h = nm.compile(MLP, 2 * B, 0.1, dtype=dtype, **opt)
    nm.build(h, device=device)
    hist = nm.fit(h, x, e, verbosity=0)
    params = nm.get_params(h)
    nm.release(h)
    return params, hist.batch_loss


def _load(out, rank):
    with np.load(f"{out}.{rank}.npz") as f:
        return {k: f[k] for k in f.files}


@needs_mpi
@pytest.mark.parametrize("dtype,optimizer", [("float64", "sgd"), ("float64", "adam"),
                                             ("float32", "sgd"), ("float32", "adam")])
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path, dtype, optimizer):
    out, _ = _launch(tmp_path, "train", dtype, optimizer)
    r0, r1 = _load(out, 0), _load(out, 1)
    for k in r0:  # both ranks end bit-identical (parameters and the global losses)
        assert np.array_equal(r0[k], r1[k]), k
    want, losses = _single(dtype, optimizer)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert len(r0["losses"]) == STEPS
    np.testing.assert_allclose(r0["losses"], losses, rtol=tol)
    for name, value in want.items():
        scale = max(1.0, float(np.max(np.abs(value))))
        assert np.max(np.abs(r0[name] - value)) <= tol * scale, name
    assert (tmp_path / "run.nm").exists()  # written once, by rank 0


HAVE_GPU = nm.cuda_available()[0]


@needs_mpi
@pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gpu_models_train_data_parallel_on_the_host_path(tmp_path, optimizer):
    """Two ranks of a GPU model (both on the one device here) sum their gradients through host
    memory: equal to one GPU process on the global batch, and the ranks bit-identical."""
    out, _ = _launch(tmp_path, "train", "float32", optimizer, device="cuda")
    r0, r1 = _load(out, 0), _load(out, 1)
    for k in r0:
        assert np.array_equal(r0[k], r1[k]), k
    want, losses = _single("float32", optimizer, device="cuda")
    np.testing.assert_allclose(r0["losses"], losses, rtol=1e-4)
    for name, value in want.items():
        scale = max(1.0, float(np.max(np.abs(value))))
        assert np.max(np.abs(r0[name] - value)) <= 1e-4 * scale, name


@needs_mpi
def test_two_runs_are_bit_identical(tmp_path):
    a, _ = _launch(tmp_path, "train", "float32", "adam", tag="a")
    b, _ = _launch(tmp_path, "train", "float32", "adam", tag="b")
    ra, rb = _load(a, 0), _load(b, 0)
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k


@needs_mpi
@pytest.mark.parametrize("extra", [3, 1])  # uneven shards 2 + 1; one rank's shard empty
def test_partial_last_global_batch(tmp_path, extra):
    n = STEPS * 2 * B + extra
    out, _ = _launch(tmp_path, "train", "float64", "adam", n=n)
    r0, r1 = _load(out, 0), _load(out, 1)
    want, losses = _single("float64", "adam", n)
    np.testing.assert_allclose(r0["losses"], losses, rtol=1e-12)
    for name, value in want.items():
        assert np.array_equal(r0[name], r1[name]), name
        np.testing.assert_allclose(r0[name], value, rtol=1e-12, atol=1e-12)


def _failed_quickly(tmp_path, done, out):
    assert done.returncode != 0, done.stdout + done.stderr
    failed_at = float(Path(out + ".t").read_text())
    assert time.time() - failed_at < 10 + 0.5, done.stderr   # ended within 10 s of the failure


@needs_mpi
def test_a_rank_that_raises_inside_fit_aborts_the_job(tmp_path):
    out, done = _launch(tmp_path, "raise", check=False)
    _failed_quickly(tmp_path, done, out)
    assert "holds NaN or inf" in done.stderr and "aborting the job" in done.stderr


@needs_mpi
def test_a_rank_that_raises_between_fits_aborts_the_job(tmp_path):
    out, done = _launch(tmp_path, "raise_after", check=False)
    _failed_quickly(tmp_path, done, out)
    assert "rank 1 fails between two fits" in done.stderr


@needs_mpi
def test_a_rank_that_is_killed_ends_the_job(tmp_path):
    out, done = _launch(tmp_path, "kill", check=False)
    _failed_quickly(tmp_path, done, out)


@needs_mpi
def test_ranks_with_different_models_are_refused(tmp_path):
    _, done = _launch(tmp_path, "mismatch", check=False)
    assert done.returncode != 0
    assert "IRError" in done.stderr and "the ranks hold different models" in done.stderr


@needs_mpi
def test_recurrent_models_are_refused(tmp_path):
    _, done = _launch(tmp_path, "recurrent", n=40, check=False)
    assert done.returncode != 0
    assert "recurrent" in done.stderr and "one time-ordered stream" in done.stderr


@needs_mpi
def test_batch_routed_neurons_are_refused(tmp_path):
    _, done = _launch(tmp_path, "routebatch", n=16, check=False)
    assert done.returncode != 0
    assert "route batch" in done.stderr and "DataError" in done.stderr


def _model():
    h = nm.compile(MLP, B, 0.1)
    nm.build(h)
    return h


def test_outside_a_launcher_is_a_clear_error(monkeypatch):
    for var in distributed._LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    h = _model()
    try:
        with pytest.raises(nm.StateError, match="mpiexec -n K"):
            nm.fit(h, np.zeros((8, 6)), np.zeros((8, 3)), verbosity=0, distributed=True)
    finally:
        nm.release(h)


def test_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")          # as under a launcher
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    h = _model()
    try:
        with pytest.raises(ImportError, match=r"pip install 'neuromorph\[mpi\]'"):
            nm.fit(h, np.zeros((8, 6)), np.zeros((8, 3)), verbosity=0, distributed=True)
    finally:
        nm.release(h)


def test_a_bad_distributed_value_is_refused_before_mpi(monkeypatch):
    h = _model()
    try:
        with pytest.raises(nm.DataError, match="distributed must be"):
            nm.fit(h, np.zeros((8, 6)), np.zeros((8, 3)), verbosity=0, distributed="yes")
    finally:
        nm.release(h)


@needs_mpi
def test_mdlc_run_distributed(tmp_path):
    """`mdlc run MODEL --distributed` under mpiexec: one report (rank 0's), saved once."""
    out = tmp_path / "r.nm"
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mdl.cli", "run",
                           "readme-model", "--distributed", "--epochs", "1", "--batches", "20",
                           "--verbosity", "0", "--save", str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("batch 16 per rank x 2 ranks") == 1
    assert done.stdout.count("saved to") == 1 and out.exists()
    h = nm.load(out)
    nm.release(h)


def test_mdlc_run_distributed_outside_a_launcher(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in distributed._LAUNCHER_VARS}
    done = subprocess.run([sys.executable, "-m", "mdl.cli", "run", "readme-model",
                           "--distributed", "--batches", "2"], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)
    assert done.returncode == 2 and "mpiexec -n K" in done.stderr
