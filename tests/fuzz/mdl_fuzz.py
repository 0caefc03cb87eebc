"""MDL text fuzzing shared by tests/test_fuzz_compiler.py (Hypothesis, in CI) and
tests/fuzz/run_compiler_fuzz.py (a long seeded run): mutations of the shipped models and the
oracle every compiled text must satisfy.

The oracle: `mdl.compile_text` returns or raises `MDLError`, nothing else; an error is located
(every diagnostic has a line and a column, the message starts `file:line:col: error:`) and
printable as UTF-8; what compiles has an IR that JSON can hold without NaN or infinity, whose
integers fit the engine's int32 and whose reals and widths are within the compiler's bounds
(src/mdl/limits.py); and the fast parser agrees with Lark's on every text (same AST, or it
leaves the text to Lark).
"""
from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path

import mdl
from mdl import parser as mdl_parser
from mdl.diagnostics import Source
from mdl.ir import IR, STAGES, _ast_json
from mdl.limits import MAX_INT, MAX_REAL, MAX_VALUE_WIDTH

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {p.stem: p.read_text(encoding="utf-8") for p in sorted((ROOT / "models").glob("*.mdl"))}

# Seeds for what the shipped models do not show: every synapse kind, cells, pool, column
# geometries, a neuron with sections, delayed merges, taps in branches.
EXTRA = {
    "synapses": """/he, zero/
(x, 48)
[e, energy, steps 3, dt 0.2, out b c,
  (a, 4x4x3, <tanh>) (b, 2x2x3, <relu>) (c, 8, <softmax, 2>, tau 2, bias 1) (d, 3, <repu, 3>)
  (k, synapse conv, a b, kernel 3, stride 1, pad 1, pool max, window 2)
  (q, synapse attention, a b, heads 2, qk 4) (m, synapse mixer, a a, heads 1, qk 2)
  (t, synapse tensor, c d, units 5, heads 2, <exp>) (h, synapse hidden, a c, units 7, norm 1)
  (n, synapse dense, c d, bias 1) (p, synapse bias, d)]
(y, 2, <sigmoid>, <mse>)
""",
    "cells": """/orthogonal 2, const_uneven 0.1 0.2/
(x, 64)
(p, 8, cells 4x4, <relu_leaky, 0.2>)
(q, pool, 16, dim 8, op max)
(r, column, 2x2x2, dim 2, geometry stack, offset 1.5, power 2, wiring 0.1, in 4, out 4)
(y, 3, <softmax>, <cross_entropy>)
""",
    "graph": """/uniform -0.5 0.5, const_flat 0.1/
(x, 6)
{g, late, average}
[s, (a, 6, <elu, 2>) [t, [early,]] (b, 6, <selu>) | (c, 6, <swish, 0.5>)]
{m1, b, multiplicative}
{m2, c, additive}
{m3, early, additive}
(n, neuron, 2, dim 3, sections 3, neurons 3, attentive 1, heads 1, dropout 0.1, <tanh>)
[u, [late,]]
(y, 6, <relu_parametric>, <huber, 0.5>)
""",
}
SEEDS = {**SHIPPED, **EXTRA}

# Numbers that found bugs or sit at a bound: huge, tiny, negative, fractional, exponents.
NUMBERS = [
    "0", "-0", "1", "-1", "2", "3", "4", "8", "16", "0.5", ".5", "2.5", "1e-3", "-3", "+2", "1.",
    "8e0", "4e9", "1e999", "-1e999", "1e300", "-1e300", "1e-300", "1e-40", "5e-324", "1e-999",
    "1e6", "1000001", "999999.5", "2147483647", "2147483648", "4294967296", "4294967300",
    "4294967304", "3000000000", "16777216", "16777217", "1048576", "1048577", "67108864",
    "67108865", "46341", "65536", "9" * 30, "9" * 5000, "0" * 5000 + "1", "1" + "0" * 4400,
    "0.0000001", "1e-30", "1e-31",
]
NAMES = [
    "energy", "synapse", "cells", "dim", "heads", "window", "depth", "iterations", "mlp", "rope",
    "proj", "mask", "vocab", "qk", "value", "skip", "sigma", "wiring", "power", "geometry",
    "offset", "in", "out", "pos", "inject", "neurons", "attentive", "dendrites", "synapses",
    "neighbors", "threshold", "seed", "sections", "causal", "route", "dropout", "op", "steps",
    "dt", "clamp", "init", "tau", "bias", "learn", "units", "norm", "kernel", "stride", "pad",
    "pool", "pstride", "attn2d", "column", "neuron", "embed", "dense", "hidden", "tensor",
    "attention", "mixer", "conv", "additive", "average", "multiplicative", "relu", "softmax",
    "mse", "cross_entropy", "xavier", "uniform", "zero", "const_flat", "x", "y", "a", "b",
    "grid", "stack", "sphere", "none", "raster", "beta", "max", "mean", "last",
]
ALPHABET = list("()[]{}<>/,|#xeE.+-0123456789azZ_ \t\n") + [
    "\r", "\r\n", "\x0c", "\x0b", "\x00", "\x7f", "\ud800", "\udfff", "\u00e9", "\u2028",
    "\u0661", "\ufeff", "energy", "synapse", " 8x8", " 1e999", ", dim 1e999", "<", "]]",
]
DEPTHS = [1, 2, 3, 8, 63, 64, 65, 100, 300]

_TOKEN = re.compile(r"[0-9]+(?:x[0-9]+)+|[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    r"|[A-Za-z_][A-Za-z0-9_]*|[^\s]")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.x])[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                     r"(?![0-9x])")
_NAME = re.compile(r"(?<![0-9])[A-Za-z_][A-Za-z0-9_]*")
_PAREN = re.compile(r"\([^()]*\)")


def _pick(rng: random.Random, pattern: re.Pattern, text: str):
    found = list(pattern.finditer(text))
    return rng.choice(found) if found else None


def _splice(text: str, m, new: str) -> str:
    return text[: m.start()] + new + text[m.end():]


def _insert_char(text, rng):
    i = rng.randint(0, len(text))
    return text[:i] + rng.choice(ALPHABET) + text[i:]


def _delete_char(text, rng):
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + text[i + 1:]


def _replace_char(text, rng):
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + rng.choice(ALPHABET) + text[i + 1:]


def _duplicate_token(text, rng):
    m = _pick(rng, _TOKEN, text)
    if m is None:
        return text
    return text[: m.end()] + rng.choice(["", " "]) + m.group() + text[m.end():]


def _delete_token(text, rng):
    m = _pick(rng, _TOKEN, text)
    return text if m is None else _splice(text, m, "")


def _replace_number(text, rng):
    m = _pick(rng, _NUMBER, text)
    if m is None:
        return text
    r = rng.random()
    if r < 0.6:
        new = rng.choice(NUMBERS)
    elif r < 0.8:
        new = str(rng.choice([-1, 1]) * rng.randint(0, 1 << rng.choice([4, 16, 31, 32, 64])))
    else:
        new = repr(rng.choice([-1, 1]) * rng.random() * 10.0 ** rng.randint(-40, 40))
    return _splice(text, m, new)


def _replace_name(text, rng):
    m = _pick(rng, _NAME, text)
    if m is None:
        return text
    others = [n.group() for n in _NAME.finditer(text)]
    return _splice(text, m, rng.choice(NAMES + others))


def _add_option(text, rng):
    m = _pick(rng, _PAREN, text)
    if m is None:
        return text
    option = f", {rng.choice(NAMES)} {rng.choice(NUMBERS + NAMES)}"
    return text[: m.end() - 1] + option + text[m.end() - 1:]


def _nest(text, rng):
    """A node wrapped in splits `depth` deep (the branch ends are not merged: mostly errors,
    but every pass walks the nesting)."""
    m = _pick(rng, _PAREN, text)
    if m is None:
        return text
    depth = rng.choice(DEPTHS)
    opening = "".join(f"[n{i}, " for i in range(depth))
    return _splice(text, m, opening + m.group() + "]" * depth)


def _nest_valid(text, rng):
    """Splits nested `depth` deep whose innermost branch is merged right after: compiles when
    the depth is within the bound."""
    depth = rng.choice(DEPTHS)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("(") and i > 0:
            width = re.match(r"\((\w+), (\d+)", line)
            if width and "," in line and "<" in line:
                w = width.group(2)
                inner = f"(deep, {w}, <relu>)"
                nest = "".join(f"[n{k}, " for k in range(depth)) + inner + "]" * depth
                lines.insert(i + 1, nest + "\n{deepm, deep, additive}")
                return "\n".join(lines)
    return text


def _repeat_node(text, rng):
    m = _pick(rng, _PAREN, text)
    if m is None:
        return text
    k = rng.choice([2, 10, 100])
    return text[: m.end()] + (" " + m.group()) * k + text[m.end():]


def _shuffle_lines(text, rng):
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    op = rng.randrange(3)
    if op == 0:
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 1:
        lines.insert(j, lines[i])
    else:
        del lines[i]
    return "\n".join(lines)


MUTATIONS = {
    "insert_char": _insert_char, "delete_char": _delete_char, "replace_char": _replace_char,
    "duplicate_token": _duplicate_token, "delete_token": _delete_token,
    "replace_number": _replace_number, "replace_name": _replace_name, "add_option": _add_option,
    "nest": _nest, "nest_valid": _nest_valid, "repeat_node": _repeat_node,
    "shuffle_lines": _shuffle_lines,
}
# replace_number twice as often: the numbers are where the bounds live
_WEIGHTED = list(MUTATIONS) + ["replace_number", "replace_number"]


def mutate(text: str, rng: random.Random, n: int) -> str:
    for _ in range(n):
        text = MUTATIONS[rng.choice(_WEIGHTED)](text, rng)
    return text


def mutated(seed: int) -> str:
    """One fuzz case of the seeded stream: a seed model with 1 to 4 mutations."""
    rng = random.Random(seed)
    name = rng.choice(sorted(SEEDS))
    return mutate(SEEDS[name], rng, rng.randint(1, 4))


# --------------------------------------------------------------------------- the oracle

def _bounded(doc) -> None:
    """Every number of an IR (or stage view) finite and within the compiler's bounds."""
    todo = [doc]
    while todo:
        x = todo.pop()
        if isinstance(x, dict):
            width = x.get("width")
            if isinstance(width, int) and not isinstance(width, bool):
                assert 1 <= width <= MAX_VALUE_WIDTH, f"width {width} out of bounds in {x}"
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
        elif isinstance(x, bool) or x is None or isinstance(x, str):
            pass
        elif isinstance(x, int):
            assert -MAX_INT <= x <= MAX_INT, f"integer {x} does not fit int32"
        elif isinstance(x, float):
            assert abs(x) <= MAX_REAL, f"real {x!r} out of bounds"
        else:
            raise AssertionError(f"unexpected {type(x).__name__} in the IR: {x!r}")


def same_parse(text: str) -> None:
    """The fast parser gives Lark's AST, or gives up (then Lark's answer is the answer)."""
    source = Source(text)
    if (mdl_parser._encoding_error(source) or mdl_parser._first_token_diagnostic(source)
            or mdl_parser._bracket_errors(source)):
        return
    fast = mdl_parser._parse_fast(text, source)
    if fast is None:
        return
    try:
        slow = mdl_parser._parse_lark(text, Source(text))
    except mdl.MDLError as e:
        raise AssertionError(f"the fast parser accepted what Lark refuses:\n{e}") from None
    assert _ast_json(fast) == _ast_json(slow), "the fast parser's AST differs from Lark's"


def check(text: str, stop_after: str = "ir") -> str:
    """'ok' or 'error' for a text; AssertionError (or any other exception) is a finding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = mdl.compile_text(text, "fuzz.mdl", stop_after=stop_after, warn=False)
    except mdl.MDLError as e:
        assert e.diagnostics
        for d in e.diagnostics:
            assert d.span is not None and d.line >= 1 and d.col >= 1, d
        message = str(e)
        message.encode("utf-8")  # printable: no lone surrogate reaches a message
        assert message.startswith(f"fuzz.mdl:{e.line}:{e.col}: error: "), message[:200]
        return "error"
    doc = result.doc if isinstance(result, IR) else result
    json.dumps(doc, allow_nan=False)
    if stop_after != "parse":  # the parse view shows the literals as written, unchecked
        _bounded(doc)
    if isinstance(result, IR):
        mdl.load_ir(result.to_json())
        mdl.to_dot(result)
    return "ok"


def run_one(seed: int) -> str:
    """The whole check of one seeded case (what the long run repeats)."""
    text = mutated(seed)
    same_parse(text)
    rng = random.Random(~seed)
    stage = "ir" if rng.random() < 0.8 else rng.choice(STAGES)
    return check(text, stage)
