"""The public functions of Neuromorph, over integer model handles: compile, seed, build,
fit/train, evaluate, predict, gradients, parameters, history, save/load, devices, release.

`neuromorph/__init__.py` re-exports every name here; this module holds the functions and their
documentation. Argument checks live in `neuromorph._checks`, the training loop and the
per-handle training records in `neuromorph.training`, the bindings in `neuromorph._core`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Literal, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from . import _blas  # noqa: F401  (loads the OpenBLAS library before the engine)
from . import _core, _sources, distributed, text, training
from ._checks import (OUTPUTS, Data, PathLike, as_batches, as_numbers, built_model, check_handle,
                      check_int, optim)
from .errors import DataError, DeviceError, ModelFileError, OutOfMemoryError, ShapeError
from .training import History, predict

_Losses = npt.NDArray[np.float64]  # one loss per batch

__version__ = _core.version()
__all__ = ["compile", "compile_ir", "seed", "build", "train", "evaluate", "predict", "gradients",
           "reset_state", "get_params", "set_params", "release", "info", "build_info", "save",
           "load", "history", "energy", "stats", "inspect", "cuda_available", "to_device", "fit",
           "__version__"]


def build_info() -> dict[str, Any]:
    """Facts about the engine build (version, IR version, whether CUDA was compiled)."""
    info = dict(_core.build_info())
    info["blas"] = _core.have_blas()
    return info


def cuda_available() -> tuple[bool, str]:
    """(True, device name) when build(h, device="cuda") can run here, else (False, why not)."""
    ok, text = _core.cuda_available()
    return bool(ok), text


def compile(mdl_text_or_path: PathLike, batch_size: int, learning_rate: float, *,
            dtype: str = "float32", **optimizer: Any) -> int:
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
               dtype: str = "float32", **optimizer: Any) -> int:
    """A model handle from IR JSON (as written by `mdlc compile`); keywords as compile()."""
    _sources.check_keywords(optimizer, optim)       # names compile() and its keywords
    opt = optim(**optimizer)
    batch_size = check_int(batch_size, "batch_size")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating)) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise DataError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _core.create(ir_json, batch_size, float(learning_rate), dtype == "float64", opt)


def seed(n: int) -> None:
    """Seed the engine's RNG: later builds (and so training) are reproducible."""
    n = check_int(n, "seed", 0)
    _core.seed(n % (1 << 64))
    training.SHUFFLE[0] = np.random.default_rng(n)


def info(h: int) -> dict[str, Any]:
    """Batch size, widths, dtype, whether built and recurrent, and parameter shapes."""
    return dict(_core.info(check_handle(h)))


def build(h: int, threads: Optional[int] = None, device: str = "cpu") -> int:
    """Allocate and initialise the model's parameters and buffers; returns the handle.

    device="cuda" puts the model on the GPU (float32, every node kind; see docs/cuda.md): same
    initial parameters as on the CPU for the same seed, and every other call (train, predict,
    get/set_params, save) works unchanged; train/predict also take data already on the GPU (CuPy
    arrays, PyTorch CUDA tensors) without a copy. A build without the CUDA backend or a machine
    without a GPU raise DeviceError saying which.

    `threads` sets how many threads the engine may use (process-wide), all in its own worker
    pool: large matrix products (cut in pieces from ~4M multiply-adds up; smaller ones stay
    on one thread, where cutting only costs; chosen by measurement, docs/performance.md), the
    engine's own loops (activations, softmax rows, the optimizer update) and, in attn2d and
    energy blocks, chunks of samples; all cut by index, so results are the same for a fixed
    number of threads (and equal to rounding across thread counts). The default is 1 thread.
    """
    h = check_handle(h)
    if threads is not None:
        _core.set_threads(check_int(threads, "threads"))
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    _core.build(h, device)
    training.forget(h)
    return h


def fit(h: int, inputs: Data, expected: Data, *, epochs: int = 1, shuffle: bool = False,
        verbosity: int = 1, validation: Optional[tuple[Data, Data]] = None,
        validation_split: Optional[float] = None, metrics: Union[str, list[str], None] = None,
        early_stopping: Optional[int] = None, checkpoint: Optional[PathLike] = None,
        check_finite: bool = True, distributed: Any = False) -> History:
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
    distributed=True (or an mpi4py communicator), under `mpiexec -n K`: data-parallel training,
    each rank on its shard of every global batch of K x batch_size samples, gradients summed by
    the engine over the ranks (docs/distributed.md; needs `neuromorph[mpi]`).
    """
    return training.fit(h, inputs, expected, epochs=epochs, distributed=distributed,
                        shuffle=shuffle, verbosity=verbosity, validation=validation,
                        validation_split=validation_split, metrics=metrics,
                        early_stopping=early_stopping, checkpoint=checkpoint,
                        check_finite=check_finite, save=save)


def train(h: int, inputs: Data, expected: Data, verbosity: int = 1, *, epochs: int = 1,
          shuffle: bool = False, **options: Any) -> float:
    """fit() that returns the last epoch's mean training loss (per sample: a partial last
    batch weighted by its size). Options as fit(): validation, validation_split, metrics,
    early_stopping, checkpoint, check_finite, distributed."""
    hist = fit(h, inputs, expected, epochs=epochs, shuffle=shuffle, verbosity=verbosity,
               **options)
    return float(hist.epochs[-1]["loss"]) if hist.epochs else float("nan")


@overload
def history(h: int, parts: Literal[False] = ..., epochs: Literal[False] = ...) -> _Losses: ...
@overload
def history(h: int, parts: Literal[True], epochs: Literal[False] = ...) -> dict[str, _Losses]: ...
@overload
def history(h: int, parts: bool = ..., *, epochs: Literal[True]) -> History: ...
@overload
def history(h: int, parts: bool = ...,
            epochs: bool = ...) -> Union[_Losses, dict[str, _Losses], History]: ...


def history(h: int, parts: bool = False,
            epochs: bool = False) -> Union[_Losses, dict[str, _Losses], History]:
    """Every training batch loss since build() (or load()), in order.

    With epochs=True, the `History` of every fit since build (per-epoch loss, validation
    loss, metrics), restored by load() from the model file.

    With parts=True, a dict of arrays instead: "loss" (the total, as returned by train),
    "output" (the output's loss) and one entry per auxiliary loss a node adds, such as
    "cortex.wiring" for a column sheet with a wiring cost; loss = output + the auxiliaries.
    """
    h = check_handle(h)
    names = _core.info(h)["loss_parts"]  # HandleError for unknown or released handles
    if epochs:
        return training.FIT_HISTORY.get(h, training.History())
    chunks = training.HISTORY.get(h, [])
    total = np.concatenate(chunks) if chunks else np.zeros(0)
    if not parts:
        return total
    split = training.PARTS.get(h, [])
    table = np.concatenate(split) if split else np.zeros((0, len(names)))
    out = {"loss": total}
    for i, name in enumerate(names):
        out[name] = table[:, i].copy()
    return out


def energy(h: int, inputs: npt.ArrayLike, block: Optional[str] = None) -> np.ndarray:
    """The energy of an energy block along its descent, for each input sample.

    Returns an array (N, steps + 1): row i holds E^0 .. E^T of sample i (total energy: layer
    energies plus synapse energies, extensions-math.md 1a). `block` names the block (default:
    the model's first). Parameters and recurrent state are left as they were.
    """
    h, meta = built_model(h)
    blocks = [n["name"] for n in json.loads(_core.ir_json(h))["nodes"] if n["kind"] == "energy"]
    if not blocks:
        raise ShapeError("the model has no energy block")
    if block is None:
        block = blocks[0]
    elif block not in blocks:
        raise ShapeError(f"no energy block named {block!r}; the model has: {', '.join(blocks)}")
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    x, _ = as_batches(inputs, "inputs", meta["input_width"], meta["batch_size"], dt)
    return _core.energy(h, block, x)


def stats(h: int) -> dict[str, Any]:
    """Statistics of the last forward pass (train, evaluate, predict or gradients), per node:
    "<node>.count" for each neuron node, the activation count (neurons visited) of each sample
    of the last batch. Not part of the graph; no gradient."""
    return _core.stats(check_handle(h))


def inspect(h: int, inputs: npt.ArrayLike,
            nodes: Union[str, list[str], None] = None) -> dict[str, dict[str, np.ndarray]]:
    """Look inside the model: one forward pass in inference mode over `inputs` (any number of
    samples, (N, input width), or one sample as a vector) that records, per requested node
    (default: every node), {"output": (N, width), ...} and what its kind shows: attn2d attention
    weights and windows, column attention, responses and sheet geometry, an energy block's
    states and energy terms at every descent step, a neuron section's routes and router scores.
    Keys and shapes: docs/inspect.md. Nothing is changed (parameters, optimizer and recurrent
    state, `stats`), and train/predict record nothing. A GPU model is inspected on a CPU copy."""
    h, meta = built_model(h)
    names = [n["name"] for n in json.loads(_core.ir_json(h))["nodes"]]
    if nodes is None:
        wanted: list[str] = []
    else:
        if isinstance(nodes, str):
            wanted = [nodes]
        elif isinstance(nodes, (list, tuple)) and all(isinstance(n, str) for n in nodes):
            wanted = list(nodes)
        else:
            raise DataError(f"nodes must be a node name or a list of node names, got "
                            f"{nodes!r:.80}")
        for n in wanted:
            if not isinstance(n, str) or n not in names:
                raise ShapeError(f"nodes: no node named {n!r}; the model has: {', '.join(names)}")
        if not wanted:
            raise ShapeError("nodes: an empty list names no node (None inspects every node)")
    arr = as_numbers(inputs, "inputs")
    width, B = meta["input_width"], meta["batch_size"]
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[1:] == (B, width):
        arr = arr.reshape(-1, width)
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
        raise ShapeError(f"inputs must have shape (N, {width}) with N >= 1 (or one sample of "
                         f"{width} numbers); got {arr.shape}")
    N = arr.shape[0]
    pad = -N % B  # a partial last batch runs as predict runs it (the padding is never read)
    if pad:
        arr = np.concatenate([arr, np.repeat(arr[-1:], pad, axis=0)])
    dt = np.float64 if meta["dtype"] == "float64" else np.float32
    x, _ = as_batches(arr, "inputs", width, B, dt)
    if len(x) > 1:  # what one batch records, times the batches, must fit in memory
        _fits_in_memory(_core.inspect(h, wanted, x[:1], 0), B, N)
    out: dict[str, dict[str, np.ndarray]] = {n: {} for n in (wanted or names)}
    types = {"f": np.float64, "i": np.int64, "b": np.bool_}
    for full, kind, per_sample, values in _core.inspect(h, wanted, x, N % B):
        node = max((n for n in out if full.startswith(n + ".")), key=len)
        v = values[:N] if per_sample else values
        out[node][full[len(node) + 1:]] = v.astype(types[kind]) if kind != "f" else v
    return out


def _fits_in_memory(one_batch: list[tuple[str, str, bool, np.ndarray]], B: int, N: int) -> None:
    """OutOfMemoryError before a recording of N samples that would not fit (the engine's copy
    and numpy's are both alive at the end), instead of a process the OS kills midway."""
    per_sample = sum(v.nbytes for _, _, each, v in one_batch if each) / B
    need = 2 * per_sample * N
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: no check
        return
    if need > 0.8 * free:
        raise OutOfMemoryError(
            f"inspect: recording {N} samples takes about {need / 2**30:.1f} GiB "
            f"({per_sample / 2**20:.2f} MiB per sample), more than the {free / 2**30:.1f} GiB "
            f"of memory free; pass fewer samples, or name the nodes to record (nodes=...)")


def evaluate(h: int, inputs: Data, expected: Data) -> float:
    """Mean loss per sample over any number of samples (a partial last batch weighted by its
    size), without updating the parameters (recurrent state does advance)."""
    h, x, e, ids, meta = training.prepare(h, inputs, expected)
    losses, rows, _ = training._batches(h, x, e, ids,
                                        meta["batch_size"], "evaluate")
    return training.weighted_mean(losses, rows)


def gradients(h: int, inputs: Data,
              expected: Data) -> tuple[float, dict[str, npt.NDArray[Any]]]:
    """Loss of one batch (1 to batch_size samples) and the gradient of every parameter; no
    update, state unchanged."""
    h, x, e, ids, meta = training.prepare(h, inputs, expected)
    B = meta["batch_size"]
    if len(x) > B:
        raise ShapeError(f"gradients() takes one batch of at most {B} samples; got {len(x)}")
    rows = 0 if len(x) == B else len(x)
    loss, grads = _core.gradients(h, x[None], e[None], ids, rows)
    return float(loss), dict(grads)


def reset_state(h: int) -> None:
    """Zero the recurrent state (the values delayed edges read at the next sample)."""
    _core.reset_state(check_handle(h))


def get_params(h: int) -> dict[str, npt.NDArray[Any]]:
    """Copies of every parameter: '<layer>.weight' (out, in), '<layer>.bias' (out,), '<layer>.alpha'."""
    h, _ = built_model(h)
    return dict(_core.get_params(h))


def set_params(h: int, params: dict[str, npt.ArrayLike]) -> None:
    """Set some or all parameters. Everything is checked before anything is written."""
    h, meta = built_model(h)
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
    _core.release(check_handle(h))
    training.forget(h)
    distributed.forget(h)
    OUTPUTS.pop(h, None)
    text.forget(h)


def save(h: int, path: PathLike) -> None:
    """Write the model to one safetensors file: parameters, recurrent state, IR and settings,
    and the model's tokenizer when it has one (`text.attach_tokenizer`, `mdlc run --text`).

    The file is written next to `path` and renamed over it, so an interrupted save never
    destroys an earlier file. The `safetensors` package can read it.
    """
    h, _ = built_model(h)
    if distributed.skip_save(h):  # trained data-parallel: rank 0 writes, the others agree
        return
    meta = [("neuromorph_version", __version__)] + text.metadata_for(h)
    if h in training.FIT_HISTORY:
        meta.append(("history", training.FIT_HISTORY[h].to_json()))
    _core.save(h, os.fspath(path), meta)


def load(path: PathLike, device: str = "cpu") -> int:
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
            training.FIT_HISTORY[h] = training.History.from_json(file_meta["history"])
            training.HISTORY[h] = [training.FIT_HISTORY[h].batch_loss.copy()]
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
    _core.to_device(check_handle(h), device)
    return h
