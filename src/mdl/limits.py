"""The compiler's bounds on numbers, sizes and nesting (docs/robustness.md, "Compiler").

Every number of a model is checked against these before it is used, so that any text either
compiles into an IR the engine can hold (finite reals, integers that fit its `int32`, sizes whose
products fit) or fails with a located `MDLError`. The helpers here never convert a literal
that could be huge: an integer is read only after its digits were counted, a product stops
growing as soon as it passes its bound, and a message never prints a number longer than a
literal of the source.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

MAX_INT = (1 << 31) - 1          # any integer: widths, counts, options (the engine's int32)
MAX_WIDTH = 1 << 24              # a layer's width (units per cell)
MAX_CELLS = 1 << 20              # cells of a shape (`cells 8x8`, a struct node's grid)
MAX_VALUE_WIDTH = 1 << 26        # values one node holds per sample (its value, its saved tensors)
MAX_PARAMS = (1 << 31) - 1       # parameters of one node, and of the whole model
MAX_REAL = 1e6                   # |x| of any real parameter or option (messages say "1e6")
MIN_REAL = 1e-30                 # |x| of a nonzero real (its reciprocal must fit a float32 too)
MAX_NESTING = 64                 # `[` brackets (splits, taps, energy blocks) inside each other

_MAX_DIGITS = 18                 # an integer literal with more digits is above every bound


def int_literal(text: str) -> Optional[int]:
    """The value of a literal `[+-]?[0-9]+`, MAX_INT + 1 for one too long to matter, or None
    when `text` is not such a literal. Never converts more than _MAX_DIGITS digits."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        value = MAX_INT + 1
    else:
        value = int(digits)
    return -value if text[:1] == "-" else value


def capped_prod(values: Iterable[int], cap: int) -> int:
    """The product of non-negative `values`, or cap + 1 as soon as it is larger than `cap`."""
    p = 1
    for v in values:
        p *= v
        if p > cap:
            return cap + 1
    return p


def real_problem(value: float) -> Optional[str]:
    """Why a real parameter is out of range, or None when it is fine."""
    if not math.isfinite(value) or abs(value) > MAX_REAL:
        return "is out of range: reals lie within ±1e6"
    if value != 0 and abs(value) < MIN_REAL:
        return f"is too small: a nonzero real is at least {MIN_REAL:g} in magnitude"
    return None


def show(n: int, cap: int) -> str:
    """A bounded count for a message: `n`, or `more than cap` for a capped product."""
    return f"more than {cap}" if n > cap else str(n)


def count(n: int) -> str:
    """An exact count for a message, `about 8.1e+09` when long (never a huge integer)."""
    if n < 10 ** 12:
        return str(n)
    if n.bit_length() > 1000:
        return "more than 1e300"
    return f"about {float(n):.1e}"


def real_hint(value: float) -> str:
    """The `help:` of a real out of range."""
    if math.isfinite(value) and value != 0 and abs(value) < MIN_REAL:
        return f"write 0, or a number of at least {MIN_REAL:g} in magnitude"
    return "write a finite number within ±1e6, such as `0.1`"
