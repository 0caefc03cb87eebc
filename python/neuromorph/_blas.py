"""Make the OpenBLAS of `scipy-openblas32` loadable before `_core` imports.

The extension's RPATH already points at it inside one site-packages; loading it here by
absolute path also covers installs where the two packages sit in different folders.
"""
import ctypes
import os

try:
    import scipy_openblas32 as _sob

    ctypes.CDLL(os.path.join(_sob.get_lib_dir(), _sob.get_library(True)), mode=ctypes.RTLD_GLOBAL)
except (ImportError, OSError, IndexError):  # the engine falls back to its own kernels
    pass
