"""The training loop behind `nm.fit` / `nm.train` / `Model.fit`: epochs over any number of
samples (whole batches, then one partial batch), shuffling, validation, metrics, early
stopping, checkpoints, progress bars (tqdm.auto: a widget in Jupyter, a bar on a terminal)
and the `History` it returns (saved in the model file by `nm.save`).

Also `predict` (the forward pass over any number of samples, as the metrics, `text` and
`generate` use it) and the per-handle records of training (`HISTORY`, `PARTS`,
`FIT_HISTORY`, and the `SHUFFLE` generator that `neuromorph.seed` reseeds).

Not here: argument checks (`neuromorph._checks`), the public functions (`neuromorph.api`)
and the engine calls' bindings (`neuromorph._core`).
"""
from __future__ import annotations

import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13

from . import _core
from . import distributed as _distributed
from ._checks import (Data, DeviceArray, PathLike, as_batches, as_numbers, built_model,
                      check_int, class_ids, finite, output)
from .errors import DataError, DeviceError, DivergedError, ShapeError

_Floats = npt.NDArray[np.float64]
_Rows = Any  # (N, width) rows: a numpy array of the model's dtype, or device data read in place

METRICS = ("accuracy", "bits_per_char", "mse", "mae")


class History:
    """What `fit` did: per epoch the training loss (mean over its batches, a partial batch
    weighted by its size), `val_loss` and the metrics when asked, and every batch loss.

    `epochs`: list of dicts {"epoch", "loss", "val_loss"?, "<metric>"?, "val_<metric>"?};
    `batch_loss`: np.ndarray of every batch loss in order; `best_epoch` (1-based) of the
    monitored value (val_loss, else loss); `stopped_early`: whether early stopping ended it.
    """

    def __init__(self, epochs: Optional[list[dict[str, Any]]] = None,
                 batch_loss: Optional[npt.ArrayLike] = None, best_epoch: Optional[int] = None,
                 stopped_early: bool = False) -> None:
        self.epochs: list[dict[str, Any]] = list(epochs or [])
        self.batch_loss = np.asarray(batch_loss if batch_loss is not None else [], dtype=np.float64)
        self.best_epoch: Optional[int] = best_epoch
        self.stopped_early = bool(stopped_early)

    def __getitem__(self, key: str) -> np.ndarray:
        """The per-epoch column `key` ("loss", "val_loss", "val_accuracy", ...)."""
        if not any(key in e for e in self.epochs):
            raise KeyError(f"{key!r}; the history has: {', '.join(self.keys())}")
        return np.array([e.get(key, np.nan) for e in self.epochs], dtype=np.float64)

    def keys(self) -> list[str]:
        seen: list[str] = []
        for e in self.epochs:
            seen.extend(k for k in e if k not in seen)
        return seen

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return f"<neuromorph.History {len(self.epochs)} epochs, keys {self.keys()}>"

    def table(self) -> str:
        """The epochs as a text table (what `mdlc run` prints)."""
        keys = self.keys()
        if not keys:
            return "(no epochs)"
        rows = [[("%d" % e[k] if k == "epoch" else "%.6g" % e[k]) if k in e else "" for k in keys]
                for e in self.epochs]
        widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) for c, w in zip(cells, widths))
        out = [line(keys)] + [line(r) for r in rows]
        if self.stopped_early:
            out.append(f"stopped early; best epoch {self.best_epoch}")
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"epochs": self.epochs, "batch_loss": self.batch_loss.tolist(),
                           "best_epoch": self.best_epoch, "stopped_early": self.stopped_early})

    @classmethod
    def from_json(cls, text: str) -> "History":
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("epochs"), list):
            raise ValueError("not a History")
        return cls(d["epochs"], d.get("batch_loss", []), d.get("best_epoch"),
                   d.get("stopped_early", False))

    def extend(self, other: "History") -> None:
        """Append another fit's epochs (numbered on) and batch losses."""
        base = len(self.epochs)
        for e in other.epochs:
            self.epochs.append({**e, "epoch": e["epoch"] + base})
        self.batch_loss = np.concatenate([self.batch_loss, other.batch_loss])
        if other.best_epoch is not None:
            self.best_epoch = other.best_epoch + base
        self.stopped_early = other.stopped_early


HISTORY: dict[int, list[_Floats]] = {}        # handle -> list of per-batch loss arrays
FIT_HISTORY: dict[int, History] = {}          # handle -> History of every fit since build/load
PARTS: dict[int, list[_Floats]] = {}          # handle -> list of (batches, parts) arrays
SHUFFLE = [np.random.default_rng()]       # reseeded by neuromorph.seed()


def forget(h: int) -> None:
    """Drop the training records of handle h (at build and release)."""
    HISTORY.pop(h, None)
    PARTS.pop(h, None)
    FIT_HISTORY.pop(h, None)


def on_device(data: object) -> TypeIs[DeviceArray]:
    """Whether `data` lives in GPU memory (CuPy, PyTorch CUDA, anything with
    __cuda_array_interface__): the engine then reads it in place, without a copy."""
    return hasattr(data, "__cuda_array_interface__")


def to_host(data: Any) -> npt.NDArray[Any]:
    """A host copy of device data (for metrics); host data as it is."""
    if not on_device(data):
        return np.asarray(data)
    dev: Any = data  # CuPy (.get()) or PyTorch (.detach().cpu().numpy())
    if hasattr(dev, "get"):
        return np.asarray(dev.get())
    return np.asarray(dev.detach().cpu().numpy())


def _device_flat(data: Any, name: str, width: int, batch: int, dtype: npt.DTypeLike) -> Any:
    """(N, width) view of device data; float32 and C-contiguous are checked by the engine.
    NaN/inf are not checked here (that would read the data back); training's divergence check
    still stops at a non-finite loss."""
    if dtype != np.float32:
        raise DeviceError(f"{name} on the GPU need a float32 model on device 'cuda'")
    typestr = data.__cuda_array_interface__.get("typestr")
    if typestr != "<f4":
        raise DataError(f"{name} on the GPU must be float32, got typestr {typestr!r}")
    shape = tuple(int(d) for d in data.shape)
    if len(shape) == 3 and shape[1:] == (batch, width) and shape[0] > 0:
        return data.reshape(-1, width)
    if len(shape) == 2 and shape[1] == width and shape[0] > 0:
        return data
    raise ShapeError(f"{name} must have shape (N, {width}) with any N >= 1, or "
                     f"(n_batches, {batch}, {width}); got {shape}")


def _flat(data: Any, name: str, width: int, batch: int, dtype: npt.DTypeLike) -> _Rows:
    """(N, width) contiguous array of the model's dtype from (N, width) with any N >= 1 or
    (n_batches, batch, width); errors name the shape given, NaN/inf its index in the data.
    Device data stays on the device (see _device_flat)."""
    if on_device(data):
        return _device_flat(data, name, width, batch, dtype)
    arr = as_numbers(data, name)
    if arr.ndim == 3 and arr.shape[1:] == (batch, width) and arr.shape[0] > 0:
        flat = arr.reshape(-1, width)
    elif arr.ndim == 2 and arr.shape[1] == width and arr.shape[0] > 0:
        flat = arr
    else:
        raise ShapeError(f"{name} must have shape (N, {width}) with any N >= 1, or "
                         f"(n_batches, {batch}, {width}); got {arr.shape}")
    out = np.ascontiguousarray(flat, dtype=dtype)
    if not np.isfinite(out).all():
        bad = tuple(int(i) for i in np.unravel_index(int(np.argmax(~np.isfinite(out))), arr.shape))
        raise DataError(f"{name} holds NaN or inf (first at index {bad})")
    return out


def predict(h: int, inputs: Data) -> npt.NDArray[Any]:
    """Outputs for the inputs: (n_batches, B, out) for (n_batches, B, in) inputs, or (N, out)
    for (N, in) inputs with any N >= 1 (a last partial batch needs no padding).

    Recurrent models continue their stream (like a stateful Keras RNN); reset_state() first
    to start from zeros.
    """
    h, meta = built_model(h)
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    if on_device(inputs):  # read in place on the GPU; outputs come back as numpy
        x = _flat(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
        y = _core.predict_rows(h, x)
        return y if len(inputs.shape) == 2 else y.reshape(-1, meta["batch_size"], meta["output_width"])
    arr = inputs if isinstance(inputs, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(inputs)
        except (ValueError, TypeError) as e:
            raise ShapeError(f"inputs must be a rectangular array of numbers: {e}") from None
    if arr.ndim == 1 and arr.shape[0] == meta["input_width"]:
        arr = arr[None, :]  # one sample
    if arr.ndim == 2:
        if arr.shape[1] != meta["input_width"] or arr.shape[0] == 0:
            raise ShapeError(f"inputs must have shape (N, {meta['input_width']}) with N >= 1, "
                             f"or (n_batches, {meta['batch_size']}, {meta['input_width']}); "
                             f"got {arr.shape}")
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                       or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"inputs must hold numbers (float32/float64), got dtype {arr.dtype}")
        x = finite(np.ascontiguousarray(arr, dtype=dt), "inputs")
        return _core.predict_rows(h, x)
    x, flat = as_batches(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
    y = _core.predict(h, x)
    return y.reshape(-1, meta["output_width"]) if flat else y


def prepare(h: object, inputs: Data,
            expected: Data) -> tuple[int, _Rows, _Rows, bool, dict[str, Any]]:
    """(x (N, in), e (N, out or C ids), ids flag) checked, in the model's dtype."""
    h, meta = built_model(h)
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    B = meta["batch_size"]
    x = _flat(inputs, "inputs", meta["input_width"], B, dt)
    if on_device(expected):
        cells, width, loss = output(h)
        ids = (cells > 1 and loss == "cross_entropy" and width > 1 and expected.shape[-1] == cells
               and cells != meta["output_width"])
        e = _flat(expected, "expected", cells if ids else meta["output_width"], B, dt)
        if len(x) != len(e):
            raise ShapeError(f"inputs hold {len(x)} samples but expected holds {len(e)}")
        return h, x, e, ids, meta
    e_arr = as_numbers(expected, "expected")
    flat_e = e_arr.reshape(-1, e_arr.shape[-1]) if e_arr.ndim == 3 else e_arr
    ids = class_ids(h, flat_e, meta) if flat_e.ndim == 2 and flat_e.dtype != object else None
    width = output(h)[0] if ids is not None else meta["output_width"]
    e = _flat(e_arr, "expected", width, B, dt)
    if len(x) != len(e):
        raise ShapeError(f"inputs hold {len(x)} samples but expected holds {len(e)}")
    return h, x, e, ids is not None, meta


def _batches(h: int, x: _Rows, e: _Rows, ids: bool, B: int, call: str, first: int = 0,
             dist: Any = None) -> tuple[list[float], list[int], bool]:
    """Run `call` ("train" | "evaluate") over whole batches, then one partial batch.
    Returns (losses per batch, rows per batch, interrupted). `first`: the index of the first
    batch in its epoch, for the batch a DivergedError names. With `dist` (distributed.Context)
    B is the global batch and this rank trains on its shard of each."""
    try:
        if dist is not None:
            return _run_shards(h, x, e, ids, B, dist)
        return _run_batches(h, x, e, ids, B, call)
    except DivergedError as err:
        raise _renumbered(err, first, " of the epoch") from None


def _renumbered(err: DivergedError, k: int, suffix: str = "") -> DivergedError:
    """The error with the batch it names moved on by k (the engine counts from 0 in each call)."""
    return DivergedError(re.sub(r"at batch (\d+)", lambda m: f"at batch {int(m.group(1)) + k}"
                                f"{suffix}", str(err), count=1))


def _run_batches(h: int, x: _Rows, e: _Rows, ids: bool, B: int,
                 call: str) -> tuple[list[float], list[int], bool]:
    fn = getattr(_core, call)
    n = len(x) // B
    losses, rows, interrupted = [], [], False
    if n:
        xb, eb = x[: n * B].reshape(n, B, -1), e[: n * B].reshape(n, B, -1)
        if call == "train":
            l, parts, interrupted = fn(h, xb, eb, ids)
            HISTORY.setdefault(h, []).append(np.asarray(l))
            PARTS.setdefault(h, []).append(np.asarray(parts))
        else:
            l = fn(h, xb, eb, ids)
        losses.extend(np.asarray(l).tolist())
        rows.extend([B] * len(l))
    r = len(x) - n * B
    if r and not interrupted:
        xr, er = x[n * B:][None], e[n * B:][None]
        try:
            if call == "train":
                l, parts, interrupted = fn(h, xr, er, ids, r)
                HISTORY.setdefault(h, []).append(np.asarray(l))
                PARTS.setdefault(h, []).append(np.asarray(parts))
            else:
                l = fn(h, xr, er, ids, r)
        except DivergedError as err:  # the partial batch comes after the n whole ones
            raise _renumbered(err, n) from None
        losses.extend(np.asarray(l).tolist())
        rows.extend([r] * len(l))
    return losses, rows, interrupted


def _run_shards(h: int, x: _Rows, e: _Rows, ids: bool, G: int,
                dist: Any) -> tuple[list[float], list[int], bool]:
    """Distributed training over global batches of G rows: this rank's contiguous shard of
    each, the engine summing loss and gradients over the ranks (the losses are global)."""
    B = G // dist.size
    n = len(x) // G
    losses, rows, interrupted = [], [], False
    if n:
        _core.set_distributed(h, dist.spec, 1.0 / dist.size)
        l, parts, interrupted = _core.train(h, dist.shard_whole(x, B, n),
                                            dist.shard_whole(e, B, n), ids)
        interrupted = dist.any(interrupted)  # Ctrl-C on one rank stops them all here
        HISTORY.setdefault(h, []).append(np.asarray(l))
        PARTS.setdefault(h, []).append(np.asarray(parts))
        losses.extend(np.asarray(l).tolist())
        rows.extend([G] * len(l))
    r = len(x) - n * G
    if r and not interrupted:
        xr, mine, weight = dist.shard_rest(x[n * G:])
        er, _, _ = dist.shard_rest(e[n * G:])
        _core.set_distributed(h, dist.spec, weight)
        try:
            l, parts, interrupted = _core.train(h, xr[None], er[None], ids, mine)
        except DivergedError as err:  # the partial batch comes after the n whole ones
            raise _renumbered(err, n) from None
        interrupted = dist.any(interrupted)
        HISTORY.setdefault(h, []).append(np.asarray(l))
        PARTS.setdefault(h, []).append(np.asarray(parts))
        losses.extend(np.asarray(l).tolist())
        rows.extend([r] * len(l))
    return losses, rows, interrupted


def weighted_mean(losses: Sequence[float], rows: Sequence[int]) -> float:
    """Mean loss over samples: each batch's mean weighted by its number of samples."""
    if not losses:
        return float("nan")
    return float(np.dot(losses, rows) / np.sum(rows))


def _metric(name: str, h: int, x: _Rows, e: _Rows, ids: bool, loss: float) -> float:
    cells, width, loss_name = output(h)
    if name == "bits_per_char":
        if loss_name != "cross_entropy":
            raise DataError("bits_per_char needs a cross_entropy output")
        return loss / math.log(2)
    p = predict(h, x)
    e = to_host(e)
    if name in ("mse", "mae"):
        target = e if not ids else np.eye(width)[e.astype(int)].reshape(len(e), -1)
        d = p - target
        return float(np.mean(d * d) if name == "mse" else np.mean(np.abs(d)))
    # accuracy: per cell (or per sample) arg-max agreement; one sigmoid unit: threshold 0.5
    if width == 1:
        return float(np.mean((p >= 0.5) == (e >= 0.5)))
    pc = p.reshape(len(p), cells, width).argmax(-1)
    tc = e.astype(int) if ids else e.reshape(len(e), cells, width).argmax(-1)
    return float(np.mean(pc == tc))


def fit(h: object, inputs: Data, expected: Data, *, epochs: int = 1, shuffle: bool = False,
        verbosity: int = 1, validation: Optional[tuple[Data, Data]] = None,
        validation_split: Optional[float] = None, metrics: Union[str, list[str], None] = None,
        early_stopping: Optional[int] = None, checkpoint: Optional[PathLike] = None,
        check_finite: bool = True, save: Optional[Callable[[int, PathLike], None]] = None,
        distributed: Any = False) -> History:
    """The loop of `neuromorph.fit` (documented there); `save(h, path)` writes a checkpoint."""
    dist = _distributed.connect(distributed)  # first: a rank failing from here aborts the job
    h, x, e, ids, meta = prepare(h, inputs, expected)
    epochs = check_int(epochs, "epochs")
    B, recurrent = meta["batch_size"], meta["recurrent"]
    if shuffle and recurrent:
        raise DataError("shuffle=True reorders samples, but this model is recurrent: its samples "
                        "form one time-ordered stream")
    metrics = _check_metrics(metrics, h)
    if early_stopping is not None:
        early_stopping = check_int(early_stopping, "early_stopping")
    val = None
    if validation is not None and validation_split is not None:
        raise DataError("give validation=(x, y) or validation_split, not both")
    if validation_split is not None:
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0 < validation_split < 1:
            raise DataError(f"validation_split must be a fraction in (0, 1), got {validation_split!r}")
        k = int(round(len(x) * (1 - validation_split)))
        if k < 1 or k >= len(x):
            raise DataError(f"validation_split={validation_split} leaves no training or no "
                            f"validation samples of {len(x)}")
        (x, val_x), (e, val_e) = (x[:k], x[k:]), (e[:k], e[k:])  # the last samples, like Keras
        val = (val_x, val_e, ids)
    elif validation is not None:
        try:
            vx, vy = validation
        except (TypeError, ValueError):
            raise DataError("validation must be a pair (inputs, expected)") from None
        _, val_x, val_e, vids, _ = prepare(h, vx, vy)
        val = (val_x, val_e, vids)
    dist = _distributed.setup(dist, h, meta, len(x))  # None unless distributed
    if dist is not None:
        B *= dist.size  # the global batch: this rank trains on its shard of each
    _core.set_check_finite(h, bool(check_finite))
    verbosity = max(0, min(2, int(verbosity)))
    show = dist is None or dist.rank == 0  # distributed: one progress report per job
    hist = History()
    prior = FIT_HISTORY.get(h, History())
    monitor = "val_loss" if val is not None else "loss"
    best, waited = math.inf, 0
    try:
        for epoch in range(1, epochs + 1):
            if shuffle:
                order = SHUFFLE[0].permutation(len(x))
                if dist is not None:  # the same batches on every rank: rank 0's order
                    order = _distributed.shuffled(dist, order)
                x, e = x[order], e[order]
            label = f"epoch {epoch}/{epochs}" if epochs > 1 else ""
            try:
                losses, rows = _epoch(h, x, e, ids, B, verbosity, label, dist, show)
            except DivergedError as err:
                if epochs == 1:
                    raise
                raise DivergedError(str(err).replace(" of the epoch", f" of epoch {epoch}/{epochs}",
                                                     1)) from None
            hist.batch_loss = np.concatenate([hist.batch_loss, losses])
            row = {"epoch": epoch, "loss": weighted_mean(losses, rows)}
            # measuring never moves the training stream: a recurrent model's state is set
            # aside, the measurement runs from a zero state, and the state comes back after
            stream = _core.get_states(h) if recurrent and (val is not None or metrics) else None
            if val is not None:
                if recurrent:
                    _core.reset_state(h)
                vl, vr, _ = _batches(h, val[0], val[1], val[2], meta["batch_size"], "evaluate")
                row["val_loss"] = weighted_mean(vl, vr)
            for m in metrics:
                if recurrent:
                    _core.reset_state(h)
                if val is not None:
                    row["val_" + m] = _metric(m, h, val[0], val[1], val[2], row["val_loss"])
                else:
                    row[m] = _metric(m, h, x, e, ids, row["loss"])
            if stream is not None:
                _core.set_states(h, stream)
            hist.epochs.append(row)
            merged = History(prior.epochs, prior.batch_loss, prior.best_epoch)
            merged.extend(hist)
            FIT_HISTORY[h] = merged  # saved by checkpoints and nm.save from here on
            if show and (verbosity == 1 and epochs > 1 or verbosity == 2):
                print(f"  {label or 'epoch 1'}: " + "  ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"), file=sys.stderr)
            if row[monitor] < best:
                best, waited, hist.best_epoch = row[monitor], 0, epoch
                if checkpoint is not None and save is not None:
                    save(h, checkpoint)
            else:
                waited += 1
                if early_stopping is not None and waited >= early_stopping:
                    hist.stopped_early = True
                    break
    finally:
        _core.set_check_finite(h, True)
        if dist is not None:
            _core.set_distributed(h, None, 1.0)
    return hist


def _check_metrics(metrics: Union[str, list[str], None], h: int) -> list[str]:
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        if m not in METRICS:
            raise DataError(f"unknown metric {m!r}; metrics are: {', '.join(METRICS)}")
        if m == "bits_per_char" and output(h)[2] != "cross_entropy":
            raise DataError("the bits_per_char metric needs a cross_entropy output")
        out.append(m)
    return out


def _epoch(h: int, x: _Rows, e: _Rows, ids: bool, B: int, verbosity: int, label: str,
           dist: Any = None, show: bool = True) -> tuple[list[float], list[int]]:
    """One pass; per-batch losses and sizes. Ctrl-C: KeyboardInterrupt after a whole batch."""
    n_batches = -(-len(x) // B)
    if verbosity == 0 or n_batches == 1:
        losses, rows, stop = _batches(h, x, e, ids, B, "train", dist=dist)
        _interrupted(stop, len(losses), n_batches)
        return losses, rows
    losses, rows = [], []
    chunk = 1 if verbosity == 2 else max(1, n_batches // 100)
    bar = None
    if verbosity == 1 and show:
        from tqdm.auto import tqdm
        # on a terminal a bar, in Jupyter a widget (or a text bar without ipywidgets); off when
        # the output is a plain file or pipe
        in_notebook = "ipykernel" in sys.modules
        bar = tqdm(total=n_batches, unit="batch", disable=False if in_notebook else None,
                   leave=False, file=sys.stderr, desc=label or None)
    try:
        for k in range(0, n_batches, chunk):
            lo, hi = k * B, min(len(x), (k + chunk) * B)
            part, prow, stop = _batches(h, x[lo:hi], e[lo:hi], ids, B, "train", k, dist)
            losses.extend(part)
            rows.extend(prow)
            if bar is not None:
                bar.update(len(part))
                bar.set_postfix(loss=f"{np.mean(part):.4g}")
            elif show:
                print(f"{label + '  ' if label else ''}batch {k + 1}/{n_batches}  "
                      f"loss {part[0]:.6g}", file=sys.stderr)
            _interrupted(stop, len(losses), n_batches)
    finally:
        if bar is not None:
            bar.close()
    return losses, rows


def _interrupted(stop: bool, done: int, total: int) -> None:
    if stop:  # stopped by Ctrl-C after a whole batch: the model is intact
        raise KeyboardInterrupt(f"training stopped after {done} of {total} batches; the model "
                                f"holds the state after the last finished batch")


__all__ = ["History", "fit", "METRICS", "DivergedError"]
