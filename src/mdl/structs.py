"""Structured node kinds `(NAME, KIND, SHAPE, key value, ..., <act>)` (MDL.md section 5).

Each kind has an option table (type, default, range); `check_struct` validates one node's
fields against it, fills every default, and derives the node's input and output widths.
The math lives in the engine (docs/extensions.md); this module only decides what is legal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from . import ast
from .diagnostics import Reporter, Span, did_you_mean
from .functions import ACTIVATIONS
from .limits import (MAX_CELLS, MAX_INT, MAX_PARAMS, MAX_VALUE_WIDTH, capped_prod, count,
                     int_literal, real_hint, real_problem, show)

MAX_HIDDEN = 1 << 20  # units of a per-cell MLP (attn2d: round(mlp x dim); column: `mlp`)

# Activations a per-cell MLP can use: elementwise, no learned parameter.
MLP_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in ("softmax", "relu_parametric"))


@dataclass(frozen=True)
class Opt:
    kind: str                      # "int" | "num" | "flag" | a tuple of names in `choices`
    default: Any = None            # None: required or absent
    lo: Optional[float] = None     # inclusive lower bound
    lo_open: bool = False          # lower bound exclusive
    choices: tuple[str, ...] = ()
    required: bool = False
    doc: str = ""
    hi: Optional[float] = None     # inclusive upper bound (the engine's, csrc/core/validate.cpp)


ATTN2D = {
    "dim": Opt("int", lo=1, required=True, doc="features per cell", hi=1 << 16),
    "heads": Opt("int", 1, lo=1, doc="attention heads (divides dim)", hi=1 << 16),
    "window": Opt("int", 1, lo=0, doc="window radius r: a (2r+1)x(2r+1) window", hi=64),
    "depth": Opt("int", 1, lo=1, doc="untied blocks", hi=256),
    "iterations": Opt("int", 1, lo=1, doc="tied repeats of the blocks", hi=256),
    "mlp": Opt("num", 4, lo=0, lo_open=True, doc="MLP hidden size as a multiple of dim"),
    "rope": Opt("flag", 1, doc="2D axial rotary position embedding"),
    "proj": Opt("flag", 1, doc="learned Q/K/V/O projections (0: parameter-free attention)"),
    "mask": Opt("name", "none", choices=("none", "raster"), doc="raster: causal in raster order"),
    "vocab": Opt("int", None, lo=1, doc="the input is one token id per cell", hi=1 << 24),
}

COLUMN = {
    "dim": Opt("int", lo=1, required=True, doc="features per column", hi=1 << 16),
    "depth": Opt("int", 1, lo=1, doc="steps, weights shared", hi=256),
    "qk": Opt("int", 64, lo=1, doc="query/key width", hi=1 << 16),
    "mlp": Opt("int", 64, lo=1, doc="MLP hidden size per column", hi=1 << 20),
    "heads": Opt("int", 1, lo=1, doc="heads (divide dim and qk)", hi=1 << 16),
    "value": Opt("name", "input", choices=("input", "proj"), doc="value = the normed input or a projection"),
    "skip": Opt("flag", 0, doc="residual around the attention read-out"),
    "sigma": Opt("num", 2.0, lo=0, doc="width of the local bias init (0: zero init)"),
    "wiring": Opt("num", 0.0, lo=0, doc="wiring-cost weight lambda"),
    "power": Opt("num", 1.0, lo=0, lo_open=True, doc="distance exponent of the wiring cost", hi=64),
    "geometry": Opt("name", None, choices=("grid", "stack", "sphere", "none"), doc="column positions"),
    "offset": Opt("num", None, lo=0, doc="grid/sphere: sqrt(D^2+o^2); stack: layer distance"),
    "in": Opt("int", None, lo=1, doc="input columns"),
    "out": Opt("int", None, lo=1, doc="output columns (the last ones)"),
    "pos": Opt("flag", 0, doc="learned position embedding"),
    "inject": Opt("flag", 0, doc="re-add the input at every step"),
}

NEURON = {
    "dim": Opt("int", lo=1, required=True, doc="features per token", hi=1 << 16),
    "neurons": Opt("int", 16, lo=1, doc="neurons per section", hi=1 << 12),
    "attentive": Opt("int", 4, lo=0, doc="attentive neurons (the entry candidates)"),
    "heads": Opt("int", 4, lo=1, doc="heads of an attentive neuron", hi=1 << 12),
    "dendrites": Opt("int", 2, lo=0, doc="dendrite cells of the router (0: raw input)", hi=64),
    "synapses": Opt("int", 1, lo=0, doc="synapse cells after the axon", hi=64),
    "neighbors": Opt("int", None, lo=0, doc="neighbours each neuron may hand off to (4, at most neurons - 1)"),
    "threshold": Opt("num", 0.5, lo=0, lo_open=True, doc="firing threshold on the voltage"),
    "seed": Opt("int", 42, lo=0, doc="seed of the neighbour draw"),
    "sections": Opt("int", 1, lo=1, doc="sections (split mode with a combiner)", hi=1 << 12),
    "causal": Opt("flag", 0, doc="causal mask in attentive neurons"),
    "route": Opt("name", "sample", choices=("sample", "batch", "gate"), doc="routing granularity"),
    "dropout": Opt("num", 0.0, lo=0, doc="dropout on the axon and synapse cells while training"),
}

EMBED = {
    "vocab": Opt("int", lo=1, required=True, hi=1 << 24,
                 doc="number of token ids (ids are 0..vocab-1)"),
    "dim": Opt("int", lo=1, required=True, doc="features per cell", hi=1 << 16),
    "pos": Opt("name", "learned", choices=("learned", "none"), doc="a learned vector per cell"),
}

POOL = {
    "dim": Opt("int", lo=1, required=True, doc="features per cell", hi=1 << 16),
    "op": Opt("name", "mean", choices=("mean", "max", "first", "last"), doc="the reduction"),
}

TABLES = {"attn2d": ATTN2D, "column": COLUMN, "neuron": NEURON, "embed": EMBED, "pool": POOL}
STRUCT_KINDS = tuple(TABLES)
# Kinds without an MLP: they take no function (section 7 of MDL.md).
PLAIN_KINDS = ("embed", "pool")


@dataclass
class StructInfo:
    kind: str
    shape: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    in_width: Optional[int] = None
    out_width: Optional[int] = None
    params: int = 0  # parameters the engine declares for the node

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": self.shape, "options": self.options,
                "in_width": self.in_width}


def _shape(w: ast.Words, name: str, rep: Reporter) -> Optional[list[int]]:
    if len(w.atoms) != 1 or w.atoms[0].kind not in ("shape", "number"):
        rep.error(f"`{name}` needs a shape after its kind, such as `8x8`, got "
                  f"`{' '.join(a.text for a in w.atoms)}`", w.span, "write the shape as INTxINT")
        return None
    text = w.atoms[0].text
    literals = [int_literal(t) for t in text.split("x")]
    dims = [d for d in literals if d is not None]
    if not dims or len(dims) != len(literals) or any(d < 1 for d in dims) \
            or (w.atoms[0].kind == "number" and "." in text):
        rep.error(f"the shape of `{name}` must be positive integers, got `{brief(text)}`", w.span)
        return None
    cells = capped_prod(dims, MAX_CELLS)
    if cells > MAX_CELLS:
        rep.error(f"the shape of `{name}` has {show(cells, MAX_CELLS)} cells; the most is "
                  f"{MAX_CELLS}", w.span)
        return None
    return dims


def brief(text: str) -> str:
    """A literal for a message: as written, or its ends when it is very long."""
    return text if len(text) <= 24 else f"{text[:10]}…{text[-10:]}"


def _value(key: str, spec: Opt, atom: ast.Atom, rep: Reporter) -> Any:
    text = atom.text
    if spec.kind == "name":
        if atom.kind != "name" or text not in spec.choices:
            rep.error(f"`{key}` takes one of {', '.join(spec.choices)}, got `{brief(text)}`",
                      atom.span, did_you_mean(text, spec.choices))
            return None
        return text
    if atom.kind != "number":
        rep.error(f"`{key}` takes a number, got `{brief(text)}`", atom.span)
        return None
    v = float(text)  # a NUMBER always converts; a huge one to ±inf
    integral = spec.kind in ("int", "flag")
    if integral and math.isfinite(v) and v != int(v):
        rep.error(f"`{key}` takes an integer, got `{brief(text)}`", atom.span)
        return None
    if spec.kind == "flag" and v not in (0, 1):
        rep.error(f"`{key}` is 0 or 1, got `{brief(text)}`", atom.span)
        return None
    if spec.lo is not None and (v < spec.lo or (spec.lo_open and v == spec.lo)):
        rel = ">" if spec.lo_open else "≥"
        rep.error(f"`{key}` must be {rel} {spec.lo:g}, got `{brief(text)}`", atom.span)
        return None
    if spec.hi is not None and v > spec.hi:
        most = int(spec.hi) if float(spec.hi).is_integer() else spec.hi
        rep.error(f"`{key}` is at most {most}, got `{brief(text)}`", atom.span,
                  f"use a value from {spec.lo:g} to {most}" if spec.lo is not None else None)
        return None
    if integral and v > MAX_INT:
        rep.error(f"`{key}` is at most {MAX_INT}, got `{brief(text)}`", atom.span,
                  f"integers are 32-bit in the engine: use at most {MAX_INT}")
        return None
    if not integral and real_problem(v):
        rep.error(f"`{key}` {real_problem(v)}, got `{brief(text)}`", atom.span, real_hint(v))
        return None
    return int(v) if integral else v


def _options(node: ast.Paren, kind: str,
             rep: Reporter) -> tuple[dict[str, Any], dict[str, Span], bool]:
    table = TABLES[kind]
    opts: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    ok = True
    for w in node.words[2:]:
        key_atom = w.atoms[0]
        key = key_atom.text
        if key_atom.kind != "name" or key not in table:
            rep.error(f"unknown option `{key}` for {_a(kind)} node", key_atom.span,
                      did_you_mean(key, table) or f"{kind} options are: " + ", ".join(table))
            ok = False
            continue
        if key in spans:
            first = spans[key]
            rep.error(f"option `{key}` is given twice (first at {first.line}:{first.col})",
                      key_atom.span, "each option is given at most once")
            ok = False
            continue
        spans[key] = w.span
        if len(w.atoms) != 2:
            got = "no value" if len(w.atoms) == 1 else f"{len(w.atoms) - 1} values"
            rep.error(f"option `{key}` takes exactly one value, got {got}", w.span,
                      f"write `{key} VALUE`")
            ok = False
            continue
        v = _value(key, table[key], w.atoms[1], rep)
        if v is None:
            ok = False
        else:
            opts[key] = v
    for key, spec in table.items():
        if spec.required and key not in opts and key not in spans:
            rep.error(f"`{node.name}` ({kind}) needs the option `{key}`", node.words[1].span,
                      f"add `{key} N` ({spec.doc})")
            ok = False
        elif key not in opts and spec.default is not None:
            opts[key] = spec.default
    return opts, spans, ok


def check_struct(node: ast.Paren, kind: str, rep: Reporter) -> Optional[StructInfo]:
    """Validate a struct node's fields; None when it has errors (already reported)."""
    words = node.words
    if len(words[0].atoms) != 1:
        rep.error(f"unexpected `{' '.join(a.text for a in words[0].atoms[1:])}` after the kind "
                  f"`{kind}`", words[0].span, "separate the shape and options with commas")
        return None
    if len(words) < 2:
        rep.error(f"`{node.name}` ({kind}) needs a shape after its kind", words[0].span,
                  f"write `({node.name}, {kind}, 8x8, dim 32, ...)`")
        return None
    shape = _shape(words[1], node.name, rep)
    opts, spans, ok = _options(node, kind, rep)
    if shape is None or not ok:
        return None
    info = StructInfo(kind, shape, opts)
    check = {"attn2d": _check_attn2d, "column": _check_column, "neuron": _check_neuron,
             "embed": _check_embed, "pool": _check_pool}[kind]
    if not check(node, info, spans, rep) or not _fits(node, info, rep):
        return None
    return info


def _footprint(info: StructInfo) -> tuple[int, int]:
    """(values the node holds per sample, parameters): the engine's tensors (csrc/cpu/*.cpp),
    the per-sample ones counted with what forward keeps for backward. Exact Python integers."""
    o, kind = info.options, info.kind
    cells = math.prod(info.shape)
    if kind == "attn2d":
        S, d, h, hid = cells, o["dim"], o["heads"], o["hidden"]
        steps = o["depth"] * o["iterations"]
        window = (2 * o["window"] + 1) ** 2
        params = o.get("vocab", 0) * d + o["depth"] * (
            4 * d + (4 * d * d if o["proj"] else 0) + 2 * hid * d + hid + d)
        values = steps * S * (8 * d + h * window + 2 * hid + 2) + S * (11 * d + hid)
        return values, params
    if kind == "column":
        N, d, kq, m, h = cells, o["dim"], o["qk"], o["mlp"], o["heads"]
        vproj = o["value"] == "proj"
        params = N * (4 * d + 2 * kq * d + kq + (2 * d * d if vproj else 0) + 2 * m * d + m
                      + (d if o["pos"] else 0)) + N * N
        step = 5 * N * d + 2 * N + 2 * N * kq + h * N * N + 2 * N * m
        values = o["depth"] * step + 6 * N * d + 2 * N * kq + N * m + N * N
        return values, params
    if kind == "neuron":
        T, D, S, N, A = info.shape[0], o["dim"], o["sections"], o["neurons"], o["attentive"]
        Ds = D // S
        cell = Ds * Ds + Ds
        per = (o["dendrites"] + 1 + o["synapses"]) * cell + 2 * Ds
        params = S * (N * per + A * 3 * Ds * Ds + (Ds * D + Ds if S > 1 else 0)) \
            + (D * D + 3 * D if S > 1 else 0)
        # every neuron's cells over the sequence, and the neighbour draw (N x N per section)
        values = T * D * (N * (o["dendrites"] + o["synapses"] + 4) + 4) + S * N * N
        return values, params
    if kind == "embed":
        D = o["dim"]
        return cells * D, o["vocab"] * D + (cells * D if o["pos"] == "learned" else 0)
    return cells * o["dim"], 0  # pool


_SMALLER = {
    "attn2d": "use fewer cells, or a smaller dim, depth, iterations, window or mlp",
    "column": "use fewer columns (each attends to every other), or a smaller dim, qk, mlp or depth",
    "neuron": "use a shorter sequence, a smaller dim, or fewer neurons, dendrites or synapses",
    "embed": "use a smaller vocab or dim",
    "pool": "use fewer cells or a smaller dim",
}


def _fits(node: ast.Paren, info: StructInfo, rep: Reporter) -> bool:
    """The node's tensors fit the engine: values per sample and parameters bounded."""
    values, params = _footprint(info)
    info.params = params
    span, hint = node.words[1].span, _SMALLER[info.kind]
    if values > MAX_VALUE_WIDTH:
        rep.error(f"`{node.name}` ({describe(info)}) holds {count(values)} values per "
                  f"sample; the most is {MAX_VALUE_WIDTH}", span, hint)
        return False
    if params > MAX_PARAMS:
        rep.error(f"`{node.name}` ({describe(info)}) has {count(params)} parameters; the "
                  f"most is {MAX_PARAMS}", span, hint)
        return False
    return True


def _span(spans: dict[str, Span], key: str, node: ast.Paren) -> Span:
    span: Span = spans.get(key, node.words[1].span)
    return span


def _check_attn2d(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    o, shape = info.options, info.shape
    if len(shape) != 2:
        rep.error(f"an attn2d grid is HxW, got a shape of rank {len(shape)}", node.words[1].span,
                  "write the grid as e.g. `8x8`")
        return False
    d, h = o["dim"], o["heads"]
    ok = True
    if not o["proj"] and h != 1:
        rep.error(f"`proj 0` is the parameter-free single-head attention, but `heads` is {h}",
                  _span(spans, "heads", node), "remove `heads`, or use `proj 1`")
        ok = False
    elif d % h:
        rep.error(f"`heads {h}` does not divide `dim {d}`", _span(spans, "heads", node),
                  f"use a number of heads that divides {d}")
        ok = False
    elif o["rope"] and (d // h) % 4:
        rep.error(f"2D RoPE needs a head size divisible by 4, but dim {d} / heads {h} = {d // h}",
                  _span(spans, "rope", node) if "rope" in spans else _span(spans, "dim", node),
                  "change dim or heads, or write `rope 0`")
        ok = False
    o["hidden"] = max(1, int(round(o["mlp"] * d)))
    if o["hidden"] > MAX_HIDDEN:
        rep.error(f"`mlp {o['mlp']:g}` × dim {d} is an MLP of {count(o['hidden'])} units; the most "
                  f"is {MAX_HIDDEN}", _span(spans, "mlp", node), "use a smaller mlp")
        ok = False
    cells = shape[0] * shape[1]
    info.in_width = cells if "vocab" in o else cells * d
    info.out_width = cells * d
    return ok


def _geometry(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    o, shape = info.options, info.shape
    rank_default = {1: None, 2: "grid", 3: "stack"}
    want = {"grid": 2, "stack": 3, "sphere": 1, "none": 1}
    if len(shape) > 3:
        rep.error(f"a column sheet is N, HxW or LxHxW, got a shape of rank {len(shape)}",
                  node.words[1].span)
        return False
    geo = o.get("geometry") or rank_default[len(shape)]
    if geo is None:
        rep.error(f"`{node.name}` has {shape[0]} columns and no layout: a single number needs "
                  f"`geometry sphere` or `geometry none`", node.words[1].span,
                  "add `geometry sphere`, or give the sheet as HxW")
        return False
    if want[geo] != len(shape):
        forms = {1: "N", 2: "HxW", 3: "LxHxW"}
        rep.error(f"`geometry {geo}` needs a shape {forms[want[geo]]}, got "
                  f"`{'x'.join(map(str, shape))}`", _span(spans, "geometry", node),
                  f"write the shape as {forms[want[geo]]}, or pick the geometry of that shape")
        return False
    o["geometry"] = geo
    o.setdefault("offset", 2.0 if geo == "stack" else 0.0)
    if geo == "none" and o["wiring"] > 0:
        rep.error("`geometry none` has no distances, so there is no wiring cost to weigh",
                  _span(spans, "wiring", node), "remove `wiring`, or give the sheet a geometry")
        return False
    return True


def _check_column(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    if not _geometry(node, info, spans, rep):
        return False
    o, shape = info.options, info.shape
    n = math.prod(shape)
    layer = shape[1] * shape[2] if o["geometry"] == "stack" else n
    o.setdefault("in", layer)
    o.setdefault("out", layer)
    ok = True
    for key in ("in", "out"):
        if o[key] > n:
            rep.error(f"`{key} {o[key]}` is more than the {n} columns of `{node.name}`",
                      _span(spans, key, node), f"use at most {n}")
            ok = False
    d, h = o["dim"], o["heads"]
    for key in ("dim", "qk"):
        if o[key] % h:
            rep.error(f"`heads {h}` does not divide `{key} {o[key]}`", _span(spans, "heads", node),
                      f"use a number of heads that divides {key}")
            ok = False
            break
    if n * n > 4_000_000:
        rep.warn(f"`{node.name}` has {n} columns: its attention bias alone is {n * n} parameters "
                 f"and every sample-step stores {n * n} attention weights per head",
                 node.words[1].span)
    info.in_width = o["in"] * d
    info.out_width = o["out"] * d
    return ok


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + f"`{kind}`"


def _check_neuron(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    o, shape = info.options, info.shape
    if len(shape) != 1:
        rep.error(f"a neuron section takes a sequence length T, got a shape of rank {len(shape)}",
                  node.words[1].span, "write the length as one number, e.g. `16`")
        return False
    n, ok = o["neurons"], True
    o.setdefault("neighbors", min(4, n - 1))
    if o["attentive"] > n:
        rep.error(f"`attentive {o['attentive']}` is more than the {n} neurons",
                  _span(spans, "attentive", node), f"use at most {n}")
        ok = False
    if o["neighbors"] > n - 1:
        rep.error(f"`neighbors {o['neighbors']}`: a neuron has only {n - 1} other neurons",
                  _span(spans, "neighbors", node), f"use at most {n - 1}")
        ok = False
    if o["dropout"] >= 1:
        rep.error(f"`dropout` is a probability in [0, 1), got {o['dropout']:g}",
                  _span(spans, "dropout", node))
        ok = False
    if o["threshold"] >= 1:
        rep.error(f"`threshold` is a voltage in (0, 1), got {o['threshold']:g}",
                  _span(spans, "threshold", node))
        ok = False
    d, s_ = o["dim"], o["sections"]
    if d % s_:
        rep.error(f"`sections {s_}` does not divide `dim {d}`", _span(spans, "sections", node))
        ok = False
    elif o["attentive"] and (d // s_) % o["heads"]:
        rep.error(f"`heads {o['heads']}` does not divide the section width {d // s_}",
                  _span(spans, "heads", node), "change heads, dim or sections")
        ok = False
    if o["causal"]:
        rep.warn("`causal 1` masks attention, but the router's voltage still averages over the "
                 "whole sequence, so routing sees later tokens", _span(spans, "causal", node))
    info.in_width = info.out_width = shape[0] * d
    return ok


def _cells_by_dim(node: ast.Paren, info: StructInfo, spans: dict[str, Span],
                  rep: Reporter) -> Optional[int]:
    """The cells × dim value width of an embed/pool node, or None (reported) when too wide."""
    cells, dim = math.prod(info.shape), int(info.options["dim"])
    if cells * dim > MAX_VALUE_WIDTH:
        rep.error(f"`{node.name}` has {cells} cells × dim {dim} = {cells * dim} values; the most "
                  f"is {MAX_VALUE_WIDTH}", _span(spans, "dim", node))
        return None
    return cells * dim


def _check_embed(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    width = _cells_by_dim(node, info, spans, rep)
    info.in_width, info.out_width = math.prod(info.shape), width
    return width is not None


def _check_pool(node: ast.Paren, info: StructInfo, spans: dict[str, Span], rep: Reporter) -> bool:
    width = _cells_by_dim(node, info, spans, rep)
    info.in_width, info.out_width = width, info.options["dim"]
    return width is not None


def describe(info: StructInfo) -> str:
    """`attn2d 8x8, dim 32` - how widths errors name the node."""
    return f"{info.kind} {'x'.join(map(str, info.shape))}, dim {info.options['dim']}"
