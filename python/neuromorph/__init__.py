"""Neuromorph: compile MDL models and train them with the native engine."""
from . import _core

__version__ = _core.version()


def build_info() -> dict:
    """Facts about the engine build (version, IR version, whether CUDA was compiled)."""
    return dict(_core.build_info())
