"""Neuromorph: compile MDL models and train them with the native engine.

    import neuromorph as nm
    h = nm.compile("/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)", 4, 0.5)
    nm.seed(0); nm.build(h)
    loss = nm.train(h, inputs, expected)      # (n_batches, 4, 2) and (n_batches, 4, 1)
    nm.predict(h, inputs); nm.release(h)

Models are addressed by integer handles. Errors are typed (`neuromorph.errors`); a failed
call leaves every model as it was.
"""
from __future__ import annotations

import math
import json
import os
import sys
from typing import Optional

import numpy as np

import mdl

from . import _blas  # noqa: F401  (loads the OpenBLAS library before the engine)
from . import _core
from .errors import (DataError, DeviceError, DivergedError, HandleError, IRError,
                     ModelFileError, NeuromorphError, OutOfMemoryError, ShapeError, StateError)

__version__ = _core.version()
__all__ = ["compile", "compile_ir", "seed", "build", "train", "evaluate", "predict", "gradients",
           "reset_state", "get_params", "set_params", "release", "info", "build_info", "save", "load",
           "history", "energy", "stats", "cuda_available", "to_device", "Model", "generate",
           "text",
           "NeuromorphError", "HandleError", "StateError", "ShapeError", "DataError", "IRError",
           "DeviceError", "OutOfMemoryError", "ModelFileError", "DivergedError", "fit", "History",
           "load_data", "models"]


def build_info() -> dict:
    """Facts about the engine build (version, IR version, whether CUDA was compiled)."""
    info = dict(_core.build_info())
    info["blas"] = _core.have_blas()
    return info


def cuda_available() -> tuple:
    """(True, device name) when build(h, device="cuda") can run here, else (False, why not)."""
    ok, text = _core.cuda_available()
    return bool(ok), text


def _check_int(value, name: str, minimum: int = 1, maximum: int = (1 << 31) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or value > maximum:
        raise DataError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return int(value)


def _check_handle(h) -> int:
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise HandleError(f"a model handle is an int returned by compile(), got {type(h).__name__}")
    if not -(1 << 31) <= h < (1 << 31):  # handles are C ints: anything else was never issued
        raise HandleError(f"unknown model handle {int(h)}")
    return int(h)


_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
_SCHEDULES = ("constant", "step", "cosine")


def _optim(optimizer="sgd", momentum=0.9, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           grad_clip=None, schedule="constant", warmup=0, step_size=1, gamma=0.1,
           total_steps=None, min_lr=0.0) -> dict:
    """Validated optimizer settings (formulas: docs/engine.md, as torch.optim)."""
    if optimizer not in _OPTIMIZERS:
        raise DataError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in _SCHEDULES:
        raise DataError(f"schedule must be one of {', '.join(_SCHEDULES)}, got {schedule!r}")

    def real(v, name, lo=0.0, lo_open=False, hi=None):
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
        "kind": _OPTIMIZERS.index(optimizer), "momentum": real(momentum, "momentum", hi=1.0),
        "beta1": real(b1, "beta1", hi=1.0), "beta2": real(b2, "beta2", hi=1.0),
        "eps": real(eps, "eps", lo_open=True), "weight_decay": real(weight_decay, "weight_decay"),
        "grad_clip": 0.0 if grad_clip is None else real(grad_clip, "grad_clip", lo_open=True),
        "schedule": _SCHEDULES.index(schedule), "warmup": _check_int(warmup, "warmup", 0),
        "step_size": _check_int(step_size, "step_size"), "gamma": real(gamma, "gamma", lo_open=True),
        "total_steps": _check_int(1 if total_steps is None else total_steps, "total_steps"),
        "min_lr": real(min_lr, "min_lr"),
    }


def compile(mdl_text_or_path, batch_size: int, learning_rate: float, *,
            dtype: str = "float32", **optimizer) -> int:
    """Compile MDL text (or a path to an .mdl file) into a model handle; build() it next.

    Compile errors raise `mdl.MDLError`. `dtype="float64"` gives a double-precision model
    (for gradient checks and reference runs). Optimizer keywords: optimizer="sgd" |
    "momentum" | "adam" | "adamw", momentum=0.9, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0.0, grad_clip=None (global norm), schedule="constant" | "step" | "cosine",
    warmup=0 (linear warm-up steps), step_size=1, gamma=0.1, total_steps, min_lr=0.0.
    """
    ir = _sources.compile_source(mdl_text_or_path)  # text, or a path ("no such MDL file")
    return compile_ir(ir.to_json(), batch_size, learning_rate, dtype=dtype, **optimizer)


def compile_ir(ir_json: str, batch_size: int, learning_rate: float, *,
               dtype: str = "float32", **optimizer) -> int:
    """A model handle from IR JSON (as written by `mdlc compile`); keywords as compile()."""
    _sources.check_keywords(optimizer, _optim)       # names compile() and its keywords
    opt = _optim(**optimizer)
    batch_size = _check_int(batch_size, "batch_size")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating)) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise DataError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _core.create(ir_json, batch_size, float(learning_rate), dtype == "float64", opt)


def seed(n: int) -> None:
    """Seed the engine's RNG: later builds (and so training) are reproducible."""
    n = _check_int(n, "seed", 0)
    _core.seed(n % (1 << 64))
    _SHUFFLE[0] = np.random.default_rng(n)


def info(h: int) -> dict:
    """Batch size, widths, dtype, whether built and recurrent, and parameter shapes."""
    return dict(_core.info(_check_handle(h)))


def build(h: int, threads: Optional[int] = None, device: str = "cpu") -> int:
    """Allocate and initialise the model's parameters and buffers; returns the handle.

    device="cuda" puts the model on the GPU (float32, dense non-recurrent models in this
    version; see docs/cuda.md): same initial parameters as on the CPU for the same seed, and
    every other call (train, predict, get/set_params, save) works unchanged. A build without the
    CUDA backend, a machine without a GPU, or a model the GPU backend cannot run raise
    DeviceError saying which.

    `threads` sets how many threads large matrix products may use (process-wide). Products
    below ~16M multiply-adds always run on one thread, where waking more only costs (chosen
    by measurement, docs/performance.md). The default is 1 thread.
    """
    h = _check_handle(h)
    if threads is not None:
        _core.set_threads(_check_int(threads, "threads"))
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    _core.build(h, device)
    _HISTORY.pop(h, None)
    _PARTS.pop(h, None)
    _FIT_HISTORY.pop(h, None)
    return h


def _as_batches(data, name: str, width: int, batch: int, dtype) -> tuple[np.ndarray, bool]:
    """(n, B, width) contiguous array of the model's dtype; flat=True for (N, width) input."""
    arr = training.as_numbers(data, name)
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


def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise DataError(f"{name} holds NaN or inf (first at index {bad})")
    return arr


def _model(h: int) -> tuple[int, dict]:
    h = _check_handle(h)
    meta = _core.info(h)
    if not meta["built"]:
        raise StateError(f"model {h} is not built: call neuromorph.build({h}) first")
    return h, meta


_OUTPUTS: dict = {}  # handle -> (cells, per-cell width, loss name) of the output node


def _output(h: int) -> tuple:
    """(cells, per-cell width, loss) of the model's output; handles are never reused."""
    if h not in _OUTPUTS:
        doc = json.loads(_core.ir_json(h))
        out = next(n for n in doc["nodes"] if n["name"] == doc["output"])
        cells = int(out.get("cells", 1))
        _OUTPUTS[h] = (cells, out["width"] // cells, out["loss"]["name"])
    return _OUTPUTS[h]


def _class_ids(h: int, expected, meta: dict) -> Optional[np.ndarray]:
    """`expected` as class ids (float array (..., C)) when the output is `cells C` with
    cross_entropy and `expected` holds C numbers per sample; None for one-hot/dense targets."""
    cells, width, loss = _output(h)
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


_HISTORY: dict = {}                       # handle -> list of per-batch loss arrays
_FIT_HISTORY: dict = {}                   # handle -> History of every fit since build/load
_PARTS: dict = {}                         # handle -> list of (batches, parts) arrays
_SHUFFLE = [np.random.default_rng()]      # reseeded by seed()


def fit(h: int, inputs, expected, *, epochs: int = 1, shuffle: bool = False,
        verbosity: int = 1, validation=None, validation_split: Optional[float] = None,
        metrics=None, early_stopping: Optional[int] = None, checkpoint=None,
        check_finite: bool = True) -> "History":
    """Train for `epochs` passes and return a `History` (per-epoch loss, validation loss and
    metrics, every batch loss; also kept with the model and saved in its file).

    inputs/expected: (N, width) arrays with ANY N >= 1 — whole batches, then one partial
    batch whose loss is the mean over its own samples (exactly what a model compiled with
    that batch size computes); or (n_batches, batch_size, width). For an output with
    `cells C` and cross_entropy, expected may be integer class ids (N, C).
    Recurrent models: one stream that carries on across batches, epochs and calls until
    reset_state(); a partial last batch continues it for its samples; validation and metrics
    run from a zero state and leave the stream's state as it was.

    validation=(x, y) or validation_split=f (the last f of the samples, before shuffling, as
    Keras) adds "val_loss" per epoch; metrics: any of "accuracy" (arg-max per sample or per
    cell; one sigmoid unit: threshold 0.5), "bits_per_char" (cross-entropy in bits), "mse",
    "mae" — on the validation data when there is some ("val_<metric>"), else on the
    training data after the epoch. early_stopping=patience stops after that many epochs
    without a better val_loss (loss without validation); checkpoint=path saves the model
    whenever it improves. check_finite (default) stops at once with DivergedError naming the
    batch and the first node holding a non-finite value, the model as before that batch.
    verbosity 0 silent, 1 progress bars (tqdm.auto: a widget in Jupyter), 2 a line per batch.
    Ctrl-C stops after the current batch (KeyboardInterrupt; the model keeps what finished).
    """
    return training.fit(sys.modules[__name__], h, inputs, expected, epochs=epochs,
                        shuffle=shuffle, verbosity=verbosity, validation=validation,
                        validation_split=validation_split, metrics=metrics,
                        early_stopping=early_stopping, checkpoint=checkpoint,
                        check_finite=check_finite)


def train(h: int, inputs, expected, verbosity: int = 1, *, epochs: int = 1,
          shuffle: bool = False, **options) -> float:
    """fit() that returns the last epoch's mean training loss (per sample: a partial last
    batch weighted by its size). Options as fit(): validation, validation_split, metrics,
    early_stopping, checkpoint, check_finite."""
    hist = fit(h, inputs, expected, epochs=epochs, shuffle=shuffle, verbosity=verbosity,
               **options)
    return float(hist.epochs[-1]["loss"]) if hist.epochs else float("nan")


def history(h: int, parts: bool = False, epochs: bool = False):
    """Every training batch loss since build() (or load()), in order.

    With epochs=True, the `History` of every fit since build (per-epoch loss, validation
    loss, metrics), restored by load() from the model file.

    With parts=True, a dict of arrays instead: "loss" (the total, as returned by train),
    "output" (the output's loss) and one entry per auxiliary loss a node adds, such as
    "cortex.wiring" for a column sheet with a wiring cost; loss = output + the auxiliaries.
    """
    h = _check_handle(h)
    names = _core.info(h)["loss_parts"]  # HandleError for unknown or released handles
    if epochs:
        return _FIT_HISTORY.get(h, training.History())
    chunks = _HISTORY.get(h, [])
    total = np.concatenate(chunks) if chunks else np.zeros(0)
    if not parts:
        return total
    split = _PARTS.get(h, [])
    table = np.concatenate(split) if split else np.zeros((0, len(names)))
    out = {"loss": total}
    for i, name in enumerate(names):
        out[name] = table[:, i].copy()
    return out


def energy(h: int, inputs, block: Optional[str] = None) -> np.ndarray:
    """The energy of an energy block along its descent, for each input sample.

    Returns an array (N, steps + 1): row i holds E^0 .. E^T of sample i (total energy: layer
    energies plus synapse energies, extensions-math.md 1a). `block` names the block (default:
    the model's first). Parameters and recurrent state are left as they were.
    """
    h, meta = _model(h)
    blocks = [n["name"] for n in json.loads(_core.ir_json(h))["nodes"] if n["kind"] == "energy"]
    if not blocks:
        raise ShapeError("the model has no energy block")
    if block is None:
        block = blocks[0]
    elif block not in blocks:
        raise ShapeError(f"no energy block named {block!r}; the model has: {', '.join(blocks)}")
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    x, _ = _as_batches(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
    return _core.energy(h, block, x)


def stats(h: int) -> dict:
    """Statistics of the last forward pass (train, evaluate, predict or gradients), per node:
    "<node>.count" for each neuron node, the activation count (neurons visited) of each sample
    of the last batch. Not part of the graph; no gradient."""
    return _core.stats(_check_handle(h))


def evaluate(h: int, inputs, expected) -> float:
    """Mean loss per sample over any number of samples (a partial last batch weighted by its
    size), without updating the parameters (recurrent state does advance)."""
    h, x, e, ids, meta = training.prepare(sys.modules[__name__], h, inputs, expected)
    losses, rows, _ = training._batches(sys.modules[__name__], h, x, e, ids,
                                        meta["batch_size"], "evaluate")
    return training.weighted_mean(losses, rows)


def predict(h: int, inputs) -> np.ndarray:
    """Outputs for the inputs: (n_batches, B, out) for (n_batches, B, in) inputs, or (N, out)
    for (N, in) inputs with any N >= 1 (a last partial batch needs no padding).

    Recurrent models continue their stream (like a stateful Keras RNN); reset_state() first
    to start from zeros.
    """
    h, meta = _model(h)
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    if training.on_device(inputs):  # read in place on the GPU; outputs come back as numpy
        x = training._flat(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
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
        x = _finite(np.ascontiguousarray(arr, dtype=dt), "inputs")
        return _core.predict_rows(h, x)
    x, flat = _as_batches(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
    y = _core.predict(h, x)
    return y.reshape(-1, meta["output_width"]) if flat else y


def gradients(h: int, inputs, expected) -> tuple[float, dict]:
    """Loss of one batch (1 to batch_size samples) and the gradient of every parameter; no
    update, state unchanged."""
    h, x, e, ids, meta = training.prepare(sys.modules[__name__], h, inputs, expected)
    B = meta["batch_size"]
    if len(x) > B:
        raise ShapeError(f"gradients() takes one batch of at most {B} samples; got {len(x)}")
    rows = 0 if len(x) == B else len(x)
    loss, grads = _core.gradients(h, x[None], e[None], ids, rows)
    return float(loss), dict(grads)


def reset_state(h: int) -> None:
    """Zero the recurrent state (the values delayed edges read at the next sample)."""
    _core.reset_state(_check_handle(h))


def get_params(h: int) -> dict:
    """Copies of every parameter: '<layer>.weight' (out, in), '<layer>.bias' (out,), '<layer>.alpha'."""
    h, _ = _model(h)
    return dict(_core.get_params(h))


def set_params(h: int, params: dict) -> None:
    """Set some or all parameters. Everything is checked before anything is written."""
    h, meta = _model(h)
    if not isinstance(params, dict):
        raise DataError(f"set_params takes a dict of name -> array, got {type(params).__name__}")
    shapes = {name: tuple(shape) for name, shape in meta["params"]}
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    checked = {}
    for name, value in params.items():
        if name not in shapes:
            raise ShapeError(f"unknown parameter {name!r}; this model has: {', '.join(shapes)}")
        arr = np.asarray(value)
        if arr.shape != shapes[name]:
            raise ShapeError(f"parameter {name!r} has shape {shapes[name]}, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"parameter {name!r} must hold numbers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=dt)
        if not np.isfinite(arr).all():
            raise DataError(f"parameter {name!r} holds NaN or inf")
        checked[name] = arr
    for name, arr in checked.items():
        _core.set_param(h, name, arr)


def release(h: int) -> None:
    """Free the model. Its handle is never reused; using it again raises HandleError."""
    _core.release(_check_handle(h))
    _HISTORY.pop(h, None)
    _PARTS.pop(h, None)
    _OUTPUTS.pop(h, None)
    _FIT_HISTORY.pop(h, None)
    text.forget(h)


def save(h: int, path) -> None:
    """Write the model to one safetensors file: parameters, recurrent state, IR and settings,
    and the model's tokenizer when it has one (`text.attach_tokenizer`, `mdlc run --text`).

    The file is written next to `path` and renamed over it, so an interrupted save never
    destroys an earlier file. The `safetensors` package can read it.
    """
    h, _ = _model(h)
    meta = [("neuromorph_version", __version__)] + text.metadata_for(h)
    if h in _FIT_HISTORY:
        meta.append(("history", _FIT_HISTORY[h].to_json()))
    _core.save(h, os.fspath(path), meta)


def load(path, device: str = "cpu") -> int:
    """A built model from a file written by save(): it predicts and trains on exactly as the
    saved model would have. Corrupt or foreign files raise ModelFileError. device="cuda" puts
    it on the GPU (files are device-independent: a model saved on either loads on either)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a directory, not a model file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path}")
    file_meta = text.read_file_metadata(path)
    tok = text.tokenizer_from_metadata(file_meta)
    h = _core.load(path)
    text.attach_tokenizer(h, tok)
    if "history" in file_meta:
        try:
            _FIT_HISTORY[h] = training.History.from_json(file_meta["history"])
            _HISTORY[h] = [_FIT_HISTORY[h].batch_loss.copy()]
        except (ValueError, TypeError, KeyError):
            _core.release(h)
            raise ModelFileError(f"{path}: the saved training history is unreadable") from None
    if device != "cpu":
        try:
            to_device(h, device)
        except BaseException:
            _core.release(h)
            raise
    return h


def to_device(h: int, device: str) -> int:
    """Move a built model to "cpu" or "cuda" with its parameters, optimizer state and step
    count (float32 only on "cuda"); returns the handle."""
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    _core.to_device(_check_handle(h), device)
    return h


from . import text, training  # noqa: E402
from . import _sources, models  # noqa: E402
from .data import load_data  # noqa: E402
from .training import History  # noqa: E402
from .generate import generate  # noqa: E402
from .model import Model  # noqa: E402  (uses the functions above)
