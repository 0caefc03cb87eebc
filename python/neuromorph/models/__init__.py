"""The example models shipped with Neuromorph, by name.

    import neuromorph as nm
    nm.models.names()                    # ['big-model', ..., 'lstm-model', ...]
    h = nm.compile(nm.models.path("lstm-model"), 5, 0.5)

`mdlc run lstm-model` resolves the same names. An installed package holds the `.mdl` files
next to this module (CMakeLists.txt installs the source tree's `models/` here); a source
checkout, where this folder holds only this file, falls back to the repository's `models/`
(as `mdl.parser` does for the grammar). This module only finds files; it compiles nothing.
"""
from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

__all__ = ["names", "path", "folder"]


def folder() -> Path:
    """The folder holding the shipped `.mdl` files."""
    try:
        here = resources.files(__name__)
        if isinstance(here, Path) and any(here.glob("*.mdl")):
            return here
    except (ModuleNotFoundError, FileNotFoundError, TypeError):  # pragma: no cover
        pass
    here = Path(__file__).resolve().parent
    if any(here.glob("*.mdl")):
        return here
    return Path(__file__).resolve().parents[3] / "models"


def names() -> list[str]:
    """The names of the shipped models (file names without `.mdl`), sorted."""
    return sorted(p.stem for p in folder().glob("*.mdl"))


def path(name: str) -> str:
    """The path of the shipped model `name` (with or without `.mdl`), for compile() or mdlc.

    An unknown name raises FileNotFoundError listing the shipped names (and the closest one)."""
    stem = str(name)[:-4] if str(name).endswith(".mdl") else str(name)
    file = folder() / f"{stem}.mdl"
    if "/" in stem or "\\" in stem or not file.is_file():
        known = names()
        close = difflib.get_close_matches(stem, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FileNotFoundError(f"no shipped model named {name!r}{hint}; the shipped models "
                                f"are: {', '.join(known)}")
    return str(file)
