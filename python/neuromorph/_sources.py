"""What compile() was given: MDL text, a path to an .mdl file, or a mistake, and its keywords.

Used by `neuromorph.compile`/`compile_ir` (and so `Model`); this module decides and checks,
it does not build anything.

The rule for strings: every MDL model has at least one parenthesised node `(name, width)`,
so a one-line string without `(` cannot be MDL text and is read as a path (`"lstm.txt"`,
`"models/lstm-model"`); a one-line string ending in `.mdl` is a path too. Anything else is
MDL text. A path that is not a file raises DataError "no such MDL file", naming a shipped
model when the string is one's name (`nm.models.path(name)`).
"""
from __future__ import annotations

import difflib
import inspect
import os
from typing import Callable, Iterable

import mdl

from .errors import DataError


def looks_like_path(src: str) -> bool:
    """Whether a string is read as a path rather than as MDL text (rule above)."""
    line = src.strip()
    return bool(line) and "\n" not in line and ("(" not in line or line.endswith(".mdl"))


def compile_source(src: object) -> "mdl.IR":
    """The IR of MDL text or of the .mdl file at a path (str or os.PathLike)."""
    if isinstance(src, os.PathLike) or (isinstance(src, str) and looks_like_path(src)):
        path = os.fspath(src)
        if not isinstance(path, str):
            raise DataError(f"compile() takes MDL text or a path, got bytes {path!r}")
        if os.path.isfile(path):
            return mdl.compile_file(path)
        if os.path.isdir(path):
            raise DataError(f"no such MDL file: {path} is a folder")
        raise DataError(f"no such MDL file: {path}{_shipped_hint(path)}")
    if isinstance(src, str):
        return mdl.compile_text(src)
    raise DataError(f"compile() takes MDL text or a path, got {type(src).__name__}")


def _shipped_hint(path: str) -> str:
    from . import models
    stem = os.path.basename(path.strip())
    stem = stem[:-4] if stem.endswith(".mdl") else stem
    if stem in models.names():
        return (f" (a shipped model has this name: compile(neuromorph.models.path({stem!r}), "
                f"...))")
    if "(" not in path:
        return (" (a one-line string without `(` is read as a path; MDL text has at least one "
                "`(name, width)` node)")
    return ""


def check_keywords(given: Iterable[str], optim: Callable[..., object],
                   fn: str = "compile()") -> None:
    """DataError naming `fn` and its keywords (dtype and those of `optim`, the validator of the
    optimizer settings) when `given` holds an unknown one; the validator's name stays private."""
    valid = ["dtype", *inspect.signature(optim).parameters]
    unknown = [k for k in given if k not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown {fn} option {unknown[0]!r}{hint}; the keywords of {fn} are: "
                        f"{', '.join(valid)}")
