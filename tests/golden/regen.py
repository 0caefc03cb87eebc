"""Rewrite the expected `.err` files from the compiler's current output.

Run only after a deliberate change to a message, then review `git diff tests/golden`:
the golden files are the reviewed, exact diagnostics.
"""
from pathlib import Path

import mdl

HERE = Path(__file__).parent


def render(path: Path) -> str:
    try:
        mdl.compile_text(path.read_text(encoding="utf-8"), path.name, warn=False)
    except mdl.MDLError as e:
        return str(e) + "\n"
    return "<compiled>\n"


if __name__ == "__main__":
    for p in sorted(HERE.glob("*.mdl")):
        p.with_suffix(".err").write_text(render(p), encoding="utf-8")
