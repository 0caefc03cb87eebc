"""Data-parallel training: `fit(..., distributed=True)` under `mpiexec -n K` (docs/distributed.md).

Every rank runs the same script on the same data. Before training, the ranks check that they
hold the same model (a hash of the IR and the settings, compared on all ranks) and rank 0's
parameters are broadcast. Each rank then trains on its contiguous shard of every global batch
(K x the compiled batch size), and the engine itself sums loss and gradient arena over the
ranks with MPI_Allreduce between backward and the optimizer step (the plugin csrc/mpi/, handed
mpi4py's communicator as integer handles): no Python runs in the step loop, and clipping and
weight decay see the global gradient. `save` writes on rank 0 only. An uncaught exception on
any rank aborts the whole job (an excepthook calling MPI_Abort) instead of leaving the others
waiting in a collective.

Not here: the training loop (training.py), the allreduce (csrc/mpi/, cpu/model.cpp).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import warnings
from typing import Any, Optional

import numpy as np

from .errors import DataError, DeviceError, IRError, StateError

# Environment a launcher gives its processes (MPICH/Intel hydra, Open MPI, PMIx, Slurm srun).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "PMI_FD", "HYDI_CONTROL_FD")
# Below this many multiply-adds per rank and step (about a millisecond of one core), the
# all-reduce of every step costs more than the shard saves.
_TINY_MACS = 2e7

_USED: set[int] = set()         # handles trained with distributed=True in this process
_HOOKED = [False]


class Context:
    """One distributed fit: the communicator, this rank, and the engine's MPI handles."""

    def __init__(self, comm: Any, MPI: Any) -> None:
        self.comm = comm
        self.MPI = MPI
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.spec = {"library": _mpi_library(), "handle_width": int(MPI._sizeof(MPI.Comm)),
                     "comm": int(MPI._handleof(comm)), "float": int(MPI._handleof(MPI.FLOAT)),
                     "double": int(MPI._handleof(MPI.DOUBLE)), "sum": int(MPI._handleof(MPI.SUM)),
                     "in_place": _in_place(MPI)}

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (every rank makes the same calls, so this pairs)."""
        return bool(self.comm.allreduce(int(bool(flag)), op=self.MPI.MAX))

    def shard_whole(self, x: np.ndarray, B: int, n: int) -> np.ndarray:
        """This rank's (n, B, width) part of n global batches of K*B rows."""
        return np.ascontiguousarray(x[: n * B * self.size].reshape(n, self.size, B, -1)[:, self.rank])

    def shard_rest(self, x: np.ndarray) -> tuple[np.ndarray, int, float]:
        """This rank's contiguous piece of a partial global batch of r rows (r // K rows each,
        one more on the first r % K ranks): (rows, local rows, weight = local rows / r). A rank
        whose piece is empty trains on a copy of the first row with weight 0, so every rank
        takes part in each all-reduce."""
        r = len(x)
        counts = [r // self.size + (i < r % self.size) for i in range(self.size)]
        start = sum(counts[: self.rank])
        mine = counts[self.rank]
        if mine == 0:
            return np.ascontiguousarray(x[:1]), 1, 0.0
        return np.ascontiguousarray(x[start:start + mine]), mine, mine / r


def _in_place(MPI: Any) -> int:
    """The address MPI_IN_PLACE stands for in this MPI (mpi4py gives it as int(MPI.IN_PLACE):
    -1 in MPICH, 1 in Open MPI); 0 when unknown, and the engine copies the arena instead."""
    try:
        return int(MPI.IN_PLACE)
    except (TypeError, ValueError):
        return 0


def _mpi_library() -> str:
    """Path of the MPI library loaded in this process (mpi4py's), from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[-1] for line in f if "/" in line]
    except OSError:
        paths = []
    for p in paths:
        if re.search(r"/lib(mpi|mpi_abi|mpich|mpi_ibm)\.so(\.\d+)*$", p):
            return p
    raise DeviceError("distributed=True: cannot find the MPI library mpi4py loaded in this "
                      "process (is this Linux?)")


def _mpi(launched: bool) -> Any:
    """mpi4py.MPI, initialised; a clear error without mpi4py or (`launched`: for COMM_WORLD)
    outside a launcher, where COMM_WORLD would be this process alone."""
    if launched and not any(v in os.environ for v in _LAUNCHER_VARS):
        raise StateError("distributed=True needs several processes started by an MPI launcher, "
                         "and this one was not: run `mpiexec -n K python -m mpi4py SCRIPT.py` "
                         "(or `mdlc run MODEL --distributed` under mpiexec / srun); see "
                         "docs/distributed.md")
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"distributed=True needs mpi4py ({e}): pip install 'neuromorph[mpi]' "
                          f"(mpi4py and the mpich wheel; a site MPI works through mpi4py too)") \
            from None
    return MPI


def _install_abort_hook(comm: Any) -> None:
    """An uncaught exception on this rank prints its traceback, then aborts every rank (the
    others would otherwise wait forever in the next all-reduce)."""
    if _HOOKED[0]:
        return
    previous = sys.excepthook

    def hook(kind: Any, value: Any, tb: Any) -> None:
        try:
            previous(kind, value, tb)
            sys.stderr.write(f"neuromorph: rank {comm.Get_rank()} failed; aborting the job\n")
            sys.stderr.flush()
            # the launcher forwards a rank's output through a pipe: give it a moment before the
            # abort tears the job down, or the traceback above can be lost (seen under load)
            time.sleep(0.3)
        finally:
            comm.Abort(1)
    sys.excepthook = hook
    _HOOKED[0] = True


def _fingerprint(h: int, meta: dict[str, Any], n_samples: int) -> dict[str, Any]:
    from . import _core
    return {"IR": hashlib.sha256(_core.ir_json(h).encode()).hexdigest(),
            "batch size": meta["batch_size"], "learning rate": meta["learning_rate"],
            "dtype": meta["dtype"], "steps taken": meta["steps"],
            "number of samples": n_samples, "device": meta.get("device", "cpu")}


def _batch_routed(h: int) -> Optional[str]:
    """The first neuron node whose routing couples the samples of a batch (`route batch`)."""
    import json

    from . import _core
    for node in json.loads(_core.ir_json(h))["nodes"]:
        if node.get("struct", {}).get("options", {}).get("route") == "batch":
            return str(node["name"])
    return None


def connect(distributed: Any) -> Optional[Context]:
    """The first step of a distributed fit, before its data is checked: MPI, the communicator
    (True: COMM_WORLD, or an mpi4py communicator), and the abort-on-error hook. False: None."""
    if distributed is False or distributed is None:
        return None
    if distributed is not True and not hasattr(distributed, "Get_size"):
        raise DataError(f"distributed must be True, False or an mpi4py communicator, got "
                        f"{distributed!r}")
    MPI = _mpi(launched=distributed is True)
    comm = MPI.COMM_WORLD if distributed is True else distributed
    if comm.Get_size() > 1:
        _install_abort_hook(comm)
    return Context(comm, MPI)


def setup(ctx: Optional[Context], h: int, meta: dict[str, Any],
          n_samples: int) -> Optional[Context]:
    """Start a distributed fit of model h: checks, agreement of the ranks (compared on all of
    them, so all raise together), rank 0's parameters everywhere."""
    if ctx is None:
        return None
    comm = ctx.comm
    if meta["recurrent"]:
        raise DataError("distributed=True splits each batch across ranks, but this model is "
                        "recurrent: its samples form one time-ordered stream (train it in one "
                        "process, or run many trainings at once with a sweep)")
    batch_routed = _batch_routed(h)
    if batch_routed:
        raise DataError(f"distributed=True: neuron node {batch_routed!r} routes by the batch-mean "
                        f"voltage (`route batch`), so a rank's shard would route differently "
                        f"from the global batch; use `route sample` or `route gate`, or train "
                        f"in one process")
    mine = _fingerprint(h, meta, n_samples)
    every = comm.allgather(mine)
    for rank, theirs in enumerate(every):
        for key, value in mine.items():
            if theirs[key] != every[0][key]:
                cls = IRError if key == "IR" else StateError
                raise cls(f"distributed=True: the ranks hold different models: rank {rank}'s "
                          f"{key} ({theirs[key]}) differs from rank 0's ({every[0][key]}); "
                          f"every rank must compile the same model with the same settings and "
                          f"train on the same data")
    from . import _core
    params = _core.get_params(h)
    for name in sorted(params):
        comm.Bcast(params[name], root=0)
        if ctx.rank:
            _core.set_param(h, name, params[name])
    _USED.add(h)
    macs = 3 * sum(int(np.prod(s)) for _, s in meta["params"]) * meta["batch_size"]
    if ctx.size > 1 and macs < _TINY_MACS and ctx.rank == 0:
        warnings.warn(f"distributed=True on a tiny model (about {macs:.3g} multiply-adds per rank "
                      f"and step): the all-reduce of every step costs more than the shard "
                      f"saves. For many small trainings at once use a sweep (nm.sweep, `mdlc "
                      f"sweep`, docs/sweep.md) instead", stacklevel=4)
    return ctx


def shuffled(ctx: Context, order: np.ndarray) -> np.ndarray:
    """Rank 0's permutation on every rank (each epoch's batches are the same everywhere)."""
    order = np.ascontiguousarray(order, dtype=np.int64)
    ctx.comm.Bcast(order, root=0)
    return order


def skip_save(h: int) -> bool:
    """Whether save(h) is a no-op here: a model trained distributed, on a rank other than 0."""
    if h not in _USED or sys.modules.get("mpi4py.MPI") is None:
        return False
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank() != 0


def forget(h: int) -> None:
    _USED.discard(h)


def rank() -> int:
    """This process's rank in COMM_WORLD (0 when MPI is not in use)."""
    if sys.modules.get("mpi4py.MPI") is None:
        return 0
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank()


def size() -> int:
    """The number of ranks in COMM_WORLD (1 when MPI is not in use)."""
    if sys.modules.get("mpi4py.MPI") is None:
        return 1
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_size()
