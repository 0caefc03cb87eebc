"""Argument checks of the public API (`neuromorph.api`) and the training loop: integers,
handles, optimizer settings, data arrays and class-id targets, each failing with the typed
error (`neuromorph.errors`) that names the argument.

Also the per-handle cache of each model's output facts (`OUTPUTS`, read off its IR once).
Not here: anything that runs the model (`neuromorph.training`) or the public functions.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Protocol, Union

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import DataError, HandleError, ShapeError, StateError


class DeviceArray(Protocol):
    """Data in GPU memory (CuPy, PyTorch CUDA tensors): read by the engine in place."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


Data = Union[npt.ArrayLike, DeviceArray]      # what fit/predict/... take as inputs or targets
PathLike = Union[str, "os.PathLike[str]"]      # a file name


def check_int(value: object, name: str, minimum: int = 1, maximum: int = (1 << 31) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or value > maximum:
        raise DataError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return int(value)


def check_handle(h: object) -> int:
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise HandleError(f"a model handle is an int returned by compile(), got {type(h).__name__}")
    if not -(1 << 31) <= h < (1 << 31):  # handles are C ints: anything else was never issued
        raise HandleError(f"unknown model handle {int(h)}")
    return int(h)


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def optim(optimizer: Any = "sgd", momentum: Any = 0.9, betas: Any = (0.9, 0.999),
          eps: Any = 1e-8, weight_decay: Any = 0.0, grad_clip: Any = None,
          schedule: Any = "constant", warmup: Any = 0, step_size: Any = 1, gamma: Any = 0.1,
          total_steps: Any = None, min_lr: Any = 0.0) -> dict[str, Any]:
    """Validated optimizer settings (formulas: docs/engine.md, as torch.optim); the arguments
    are whatever the caller passed to compile(), checked here."""
    if optimizer not in OPTIMIZERS:
        raise DataError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise DataError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")

    def real(v: Any, name: str, lo: float = 0.0, lo_open: bool = False,
             hi: Optional[float] = None) -> float:
        ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
            and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (hi is None or v < hi)
        if not ok:
            bound = f"{'>' if lo_open else '>='} {lo:g}" + (f" and < {hi:g}" if hi else "")
            raise DataError(f"{name} must be a finite number {bound}, got {v!r}")
        return float(v)
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise DataError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    if schedule == "cosine" and total_steps is None:
        raise DataError("schedule='cosine' needs total_steps")
    return {
        "kind": OPTIMIZERS.index(optimizer), "momentum": real(momentum, "momentum", hi=1.0),
        "beta1": real(b1, "beta1", hi=1.0), "beta2": real(b2, "beta2", hi=1.0),
        "eps": real(eps, "eps", lo_open=True), "weight_decay": real(weight_decay, "weight_decay"),
        "grad_clip": 0.0 if grad_clip is None else real(grad_clip, "grad_clip", lo_open=True),
        "schedule": SCHEDULES.index(schedule), "warmup": check_int(warmup, "warmup", 0),
        "step_size": check_int(step_size, "step_size"), "gamma": real(gamma, "gamma", lo_open=True),
        "total_steps": check_int(1 if total_steps is None else total_steps, "total_steps"),
        "min_lr": real(min_lr, "min_lr"),
    }


def as_numbers(data: npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    """`data` as a numpy array of numbers (bool counts as 0/1), or a typed error naming it."""
    if isinstance(data, np.ndarray):
        arr = data
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as e:
            raise ShapeError(f"{name} must be a rectangular array of numbers: {e}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == bool):
        raise DataError(f"{name} must hold numbers (float32/float64), got dtype {arr.dtype}")
    return arr


def as_batches(data: npt.ArrayLike, name: str, width: int, batch: int,
               dtype: npt.DTypeLike) -> tuple[npt.NDArray[Any], bool]:
    """(n, B, width) contiguous array of the model's dtype; flat=True for (N, width) input."""
    arr = as_numbers(data, name)
    flat = arr.ndim == 2
    if flat:
        if arr.shape[1] != width or arr.shape[0] % batch or arr.shape[0] == 0:
            raise ShapeError(f"{name} must have shape (n_batches, {batch}, {width}) or (N, {width}) "
                             f"with N a positive multiple of {batch}; got {arr.shape}")
        arr = arr.reshape(-1, batch, width)
    elif arr.ndim != 3 or arr.shape[1:] != (batch, width) or arr.shape[0] == 0:
        raise ShapeError(f"{name} must have shape (n_batches, {batch}, {width}) or (N, {width}); "
                         f"got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DataError(f"{name} holds NaN or inf (first at index {bad})")
    return arr, flat


def finite(arr: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DataError(f"{name} holds NaN or inf (first at index {bad})")
    return arr


def built_model(h: object) -> tuple[int, dict[str, Any]]:
    h = check_handle(h)
    meta = _core.info(h)
    if not meta["built"]:
        raise StateError(f"model {h} is not built: call neuromorph.build({h}) first")
    return h, meta


# handle -> (cells, per-cell width, loss name) of the model's output node
OUTPUTS: dict[int, tuple[int, int, str]] = {}


def output(h: int) -> tuple[int, int, str]:
    """(cells, per-cell width, loss) of the model's output; handles are never reused."""
    if h not in OUTPUTS:
        doc = json.loads(_core.ir_json(h))
        out = next(n for n in doc["nodes"] if n["name"] == doc["output"])
        cells = int(out.get("cells", 1))
        OUTPUTS[h] = (cells, out["width"] // cells, out["loss"]["name"])
    return OUTPUTS[h]


def class_ids(h: int, expected: npt.ArrayLike,
              meta: dict[str, Any]) -> Optional[npt.NDArray[Any]]:
    """`expected` as class ids (float array (..., C)) when the output is `cells C` with
    cross_entropy and `expected` holds C numbers per sample; None for one-hot/dense targets."""
    cells, width, loss = output(h)
    if cells < 2 or loss != "cross_entropy" or width == 1:
        return None
    arr = expected if isinstance(expected, np.ndarray) else np.asarray(expected)
    if arr.ndim not in (2, 3) or arr.shape[-1] != cells or arr.shape[-1] == meta["output_width"]:
        return None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"expected class ids must be integers, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr >= width) | (arr != np.floor(arr)) \
        if np.issubdtype(arr.dtype, np.floating) else (arr < 0) | (arr >= width)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        if arr.ndim == 2:
            where = (where[0] // meta["batch_size"], where[0] % meta["batch_size"], where[1])
        raise DataError(f"expected class id {arr[tuple(np.argwhere(bad)[0])].item()!r} at batch "
                        f"{where[0]}, sample {where[1]}, cell {where[2]} is not an integer in "
                        f"0..{width - 1}")
    return arr
