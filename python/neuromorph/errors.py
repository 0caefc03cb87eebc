"""Typed exceptions of the Neuromorph runtime (the engine raises these by name).

The root, `NeuromorphError`, is defined in `mdl.errors` (the compiler never imports this
package) and is the same class here: `mdl.MDLError` is a `NeuromorphError` too.
"""
from mdl.errors import NeuromorphError

__all__ = ["NeuromorphError", "HandleError", "StateError", "ShapeError", "DataError", "IRError",
           "DeviceError", "OutOfMemoryError", "ModelFileError", "DivergedError"]


class HandleError(NeuromorphError, ValueError):
    """An unknown or already released model handle."""


class StateError(NeuromorphError, RuntimeError):
    """The call does not fit the model's state (e.g. train before build)."""


class ShapeError(NeuromorphError, ValueError):
    """Data or a parameter has the wrong shape."""


class DataError(NeuromorphError, ValueError):
    """Data has the wrong type or holds NaN/inf, or a setting is out of range."""


class IRError(NeuromorphError, ValueError):
    """A malformed or wrong-version IR document."""


class DeviceError(NeuromorphError, RuntimeError):
    """A device that this build or machine does not have."""


class OutOfMemoryError(NeuromorphError, MemoryError):
    """The engine could not allocate a model's buffers."""


class ModelFileError(NeuromorphError, ValueError):
    """A model file that is corrupt, truncated, hand-edited or of another format or version."""


class DivergedError(NeuromorphError, FloatingPointError):
    """Training met a non-finite loss or gradient. The message names the batch and the first
    node (or parameter gradient) holding a non-finite value; the model keeps its state from
    before that batch."""
