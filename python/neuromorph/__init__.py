"""Neuromorph: compile MDL models and train them with the native engine.

    import neuromorph as nm
    h = nm.compile("/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)", 4, 0.5)
    nm.seed(0); nm.build(h)
    loss = nm.train(h, inputs, expected)      # (n_batches, 4, 2) and (n_batches, 4, 1)
    nm.predict(h, inputs); nm.release(h)

Models are addressed by integer handles. Errors are typed (`neuromorph.errors`); a failed
call leaves every model as it was.

This file only re-exports: the functions live in `neuromorph.api`, their argument checks in
`neuromorph._checks`, the training loop and its per-handle records in `neuromorph.training`,
the object interface in `neuromorph.model`.
"""
from __future__ import annotations

from . import _blas  # noqa: F401  (loads the OpenBLAS library before the engine: first)
from . import _sources, models, text, training, viz  # viz: matplotlib loads on first picture
# private names, the same objects as before the split: tests read the per-handle records
from ._checks import OUTPUTS as _OUTPUTS
from ._checks import as_batches as _as_batches
from ._checks import built_model as _model
from ._checks import check_handle as _check_handle
from ._checks import check_int as _check_int
from ._checks import class_ids as _class_ids
from ._checks import finite as _finite
from ._checks import optim as _optim
from ._checks import output as _output
from .api import (__version__, build, build_info, compile, compile_ir, cuda_available, energy,
                  evaluate, fit, get_params, gradients, history, info, inspect, load, predict,
                  release, reset_state, save, seed, set_params, stats, to_device, train)
from .data import load_data
from .errors import (DataError, DeviceError, DivergedError, HandleError, IRError,
                     ModelFileError, NeuromorphError, OutOfMemoryError, ShapeError, StateError)
from .generate import generate
from .model import Model
from .sweep import sweep  # many trainings at once on Dask (docs/sweep.md)
from .training import FIT_HISTORY as _FIT_HISTORY
from .training import HISTORY as _HISTORY
from .training import PARTS as _PARTS
from .training import SHUFFLE as _SHUFFLE
from .training import History

__all__ = ["compile", "compile_ir", "seed", "build", "train", "evaluate", "predict", "gradients",
           "reset_state", "get_params", "set_params", "release", "info", "build_info", "save", "load",
           "history", "energy", "stats", "inspect", "cuda_available", "to_device", "Model", "generate",
           "text",
           "NeuromorphError", "HandleError", "StateError", "ShapeError", "DataError", "IRError",
           "DeviceError", "OutOfMemoryError", "ModelFileError", "DivergedError", "fit", "History",
           "load_data", "models", "sweep"]
