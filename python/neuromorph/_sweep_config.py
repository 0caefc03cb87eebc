"""A sweep's configurations: the names `--set` may use and how they map onto the model text,
value and seed lists, the grid, and the key that identifies a trial (neuromorph.sweep).

A name is a training setting or a place the model already has (an option KEY on every node
carrying it, NODE.KEY, NODE.width, NODE.shape): `variant_text` writes a value there, token
for token, so the variant's diagnostics point into the original file. Not the running of
trials (neuromorph.sweep). Decisions: docs/sweep.md.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from typing import Any, Callable, Iterable, Union

from mdl import ast as _ast
from mdl import energy as _energy
from mdl import structs as _structs
from mdl.diagnostics import Span
from mdl.parser import parse as _parse

from .errors import NeuromorphError

# -------------------------------------------------------------------------- names and values
# Training settings a `--set` name may give (anything else names a part of the model).
TRAINING: dict[str, Callable[[Any], Any]] = {
    "lr": float, "batch": int, "epochs": int, "optimizer": str, "momentum": float,
    "weight_decay": float, "grad_clip": float, "schedule": str, "warmup": int,
    "min_lr": float, "step_size": int, "gamma": float}
_ALIASES = {"learning_rate": "lr", "batch_size": "batch"}
_OPTIMIZER_KEYS = ("momentum", "weight_decay", "grad_clip", "schedule", "warmup", "min_lr",
                   "step_size", "gamma")
# `key value` options a node may carry, from the compiler's own tables
OPTION_KEYS = frozenset(
    [k for table in _structs.TABLES.values() for k in table]
    + list(_energy.BLOCK) + list(_energy.NEURON)
    + [k for _, opts, _ in _energy.SYNAPSES.values() for k in opts] + ["cells"])
_TOKEN = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+(x[0-9]+)+"
                    r"|[A-Za-z_][A-Za-z0-9_]*")
_MINIMIZE = ("loss", "mse", "mae", "bits_per_char")


class SweepError(NeuromorphError, ValueError):
    """A sweep that cannot start: an unknown name, a bad value, an unusable folder."""


def _slots(model: _ast.Model) -> dict[str, list[Span]]:
    """Every settable place of the model: "NODE.width", "NODE.shape", "NODE.KEY" -> [Span]."""
    slots: dict[str, list[Span]] = {}

    def paren(p: _ast.Paren) -> None:
        words = p.words
        if words and len(words[0].atoms) == 1 and words[0].atoms[0].kind == "number":
            slots.setdefault(f"{p.name}.width", []).append(words[0].atoms[0].span)
        elif len(words) > 1 and len(words[1].atoms) == 1 and words[1].atoms[0].kind != "name":
            slots.setdefault(f"{p.name}.shape", []).append(words[1].atoms[0].span)
        for w in words[1:]:
            option(p.name, w)

    def option(node: str, w: _ast.Words) -> None:
        if len(w.atoms) == 2 and w.atoms[0].kind == "name" and w.atoms[0].text in OPTION_KEYS:
            slots.setdefault(f"{node}.{w.atoms[0].text}", []).append(w.atoms[1].span)

    def walk(nodes: list[_ast.Node]) -> None:
        for n in nodes:
            if isinstance(n, _ast.Paren):
                paren(n)
            elif isinstance(n, _ast.Split):
                for b in n.branches:
                    walk(b)
            elif isinstance(n, _ast.Energy):
                for w in n.options:
                    option(n.name, w)
                for m in n.members:
                    paren(m)
    walk(model.chain)
    return slots


def model_names(text: str, filename: str = "<string>") -> list[str]:
    """The names `settings` may use for this model besides the training settings: every
    option KEY (all nodes that carry it), NODE.KEY, NODE.width, NODE.shape (docs/sweep.md)."""
    slots = _slots(_parse(text, filename))
    keys = sorted({s.split(".", 1)[1] for s in slots if s.split(".", 1)[1] in OPTION_KEYS})
    return keys + sorted(slots)


def _resolve(name: str, slots: dict[str, list[Span]]) -> list[Span]:
    """The spans a model name stands for (SweepError naming the choices when none)."""
    if name in slots:
        return slots[name]
    if "." not in name:
        opts = [s for k, v in slots.items() if name in OPTION_KEYS and k.split(".", 1)[1] == name
                for s in v]
        node = slots.get(f"{name}.width") or slots.get(f"{name}.shape")
        if opts and node:
            raise SweepError(f"`{name}` is both an option and a node: write `{name}.width` or "
                             f"`NODE.{name}`")
        if opts:
            return opts
        if node:
            return node
    known = sorted(set(TRAINING) | {k.split(".", 1)[1] for k in slots} & OPTION_KEYS
                   | set(slots))
    raise SweepError(f"`{name}` is neither a training setting nor a part of the model; the "
                     f"names are: {', '.join(known)}")


def value_text(value: Any) -> str:
    """A value as one MDL token (SweepError if it is not a number, shape or name)."""
    if isinstance(value, bool):
        value = int(value)
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if not _TOKEN.fullmatch(text):
        raise SweepError(f"{value!r} is not one MDL token (a number, a shape such as 8x8, or a "
                         f"name)")
    return text


def variant_text(text: str, values: dict[str, Any], filename: str = "<string>") -> str:
    """The model text with each named value substituted (every other character unchanged, so
    a compile error of the variant points at the same line and column)."""
    slots = _slots(_parse(text, filename))
    edits = []
    for name, value in values.items():
        for span in _resolve(name, slots):
            edits.append((span.line, span.col, span.end_col, value_text(value)))
    lines = text.split("\n")
    for line, col, end, new in sorted(edits, reverse=True):
        s = lines[line - 1]
        lines[line - 1] = s[:col - 1] + new + s[end - 1:]
    return "\n".join(lines)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(training settings, model values, seed) of one trial's configuration."""
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for k, v in config.items():
        if k == "seed":
            continue
        k2 = _ALIASES.get(k, k)
        if k2 in TRAINING:
            try:
                train[k2] = TRAINING[k2](v)
            except (TypeError, ValueError):
                raise SweepError(f"{k}={v!r}: expected {TRAINING[k2].__name__}") from None
        else:
            model[k] = v
    return train, model, int(config.get("seed", 0))


def parse_values(text: str) -> list[Union[int, float, str]]:
    """`0.01,0.1` -> [0.01, 0.1] (ints, floats, else strings); a range `a:b[:log]` stays a
    string for the search."""
    out: list[Union[int, float, str]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise SweepError(f"empty value in {text!r}")
        try:
            out.append(int(part))
        except ValueError:
            try:
                out.append(float(part))
            except ValueError:
                out.append(part)
    return out


def parse_seeds(text: str) -> list[int]:
    """`0-4` -> [0..4]; `0,3,7`; `0-2,9`."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise SweepError(f"seeds are N, A-B (A <= B) or a comma list of those; got {text!r}")
        lo = int(m.group(1))
        seeds.extend(range(lo, int(m.group(2) or lo) + 1))
    return list(dict.fromkeys(seeds))


def grid(settings: dict[str, list[Any]], seeds: Iterable[int]) -> list[dict[str, Any]]:
    """Every combination of the settings' values, for every seed (settings in given order)."""
    names = list(settings)
    for n in names:
        if any(isinstance(v, str) and _is_range(v) for v in settings[n]):
            raise SweepError(f"{n}: a range ({settings[n]}) needs search='optuna'")
    return [dict(zip(names, combo), seed=s)
            for combo in itertools.product(*(settings[n] for n in names)) for s in seeds]


def _is_range(v: str) -> bool:
    return re.fullmatch(r"[^:,]+:[^:,]+(:log)?", v) is not None


def trial_key(model_hash: str, data_id: str, config: dict[str, Any], fixed: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over everything that decides a trial's result."""
    doc = json.dumps({"model": model_hash, "data": data_id, "config": config, "fixed": fixed},
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                st = os.stat(p)
                h.update(f"{os.path.relpath(p, path)}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()
    with open(path, "rb") as fb:
        for chunk in iter(lambda: fb.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
