"""The root of every Neuromorph exception, defined here so that both packages share it.

`mdl` never imports `neuromorph`, so the root lives in the compiler package:
`neuromorph.errors` imports this class as its own base, and `mdl.MDLError` derives from it.
This module holds only the root; the compiler's errors are in `diagnostics`, the engine's
in `neuromorph.errors`.
"""


class NeuromorphError(Exception):
    """Base class of every error Neuromorph raises on purpose (compile errors included):
    `except neuromorph.NeuromorphError` catches them all and nothing else."""
