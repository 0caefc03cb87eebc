"""Energy blocks `[NAME, energy, options, members]` (MDL.md section 5, extensions-math.md 1e).

Validates the members (neuron layers with convex Lagrangians, synapses joining them), fills
every default and derives the block's widths. The dynamics and the backward live in the
engine (csrc/cpu/energy.cpp, docs/energy.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from . import ast
from .diagnostics import NameIndex, Reporter, Span, did_you_mean
from .limits import (MAX_PARAMS, MAX_VALUE_WIDTH, MAX_WIDTH, capped_prod, count, int_literal,
                     real_hint, real_problem)
from .structs import Opt, _a, _value, brief

# Lagrangians (name -> (parameter name or None, default or None = required, lower bound, open))
LAGRANGIANS: dict[str, tuple[Optional[str], Optional[float], Optional[float], bool]] = {
    "linear": (None, None, None, False), "identity": (None, None, None, False),
    "relu": (None, None, None, False),
    "repu": ("n", None, 1.0, True),
    "exp": ("beta", 1.0, 0.0, True), "rexp": ("beta", 1.0, 0.0, True),
    "tanh": ("beta", 1.0, 0.0, True), "sigmoid": ("beta", 1.0, 0.0, True),
    "softmax": ("beta", 1.0, 0.0, True),
    "layernorm": ("gamma", 1.0, 0.0, False), "spherical": ("gamma", 1.0, 0.0, False),
    "ghostmax": (None, None, None, False),
    "relu_leaky": ("slope", 0.01, 0.0, False), "relu_parametric": ("alpha", 0.25, 0.0, False),
    "elu": ("alpha", 1.0, 0.0, False), "selu": (None, None, None, False),
}
LAGRANGIAN_MAX = {"repu": 64.0}  # upper bounds of a Lagrangian's parameter (else 1e6)
NOT_CONVEX = {"gelu": "is not monotone", "swish": "is not monotone",
              "binary_step": "has no usable derivative"}
ROW_LAGRANGIANS = ("softmax", "layernorm", "spherical", "ghostmax")  # act over the last axis

BLOCK = {
    "steps": Opt("int", 4, lo=1, hi=10_000), "dt": Opt("num", 0.4, lo=0, lo_open=True),
    "clamp": Opt("flag", 1), "out": Opt("ref", None), "init": Opt("name", "zero", choices=("zero", "normal")),
}
NEURON = {"tau": Opt("num", 1.0, lo=0, lo_open=True), "bias": Opt("flag", 0),
          "clamp": Opt("flag", None), "learn": Opt("name", None, choices=("beta",))}
# Lagrangians whose parameter is an inverse temperature beta (`learn beta` may train it)
BETA_LAGRANGIANS = tuple(k for k, v in LAGRANGIANS.items() if v[0] == "beta")
SYN_MAX = 1 << 24  # any integer option of a synapse (the engine's bound, csrc/core/validate.cpp)
# kind -> ((min, max) layers joined, option table, default Lagrangian (name, params) or None)
SYNAPSES: dict[str, tuple[tuple[int, Optional[int]], dict[str, Opt],
                         Optional[tuple[str, list[float]]]]] = {
    # kind: ((min refs, max refs), options, default hidden Lagrangian or None = takes none)
    "dense": ((2, None), {"bias": Opt("flag", 0)}, None),
    "bias": ((1, 1), {}, None),
    "hidden": ((1, None), {"units": Opt("int", lo=1, required=True, hi=SYN_MAX),
                           "norm": Opt("flag", 0)},
               ("relu", [])),
    "tensor": ((1, None), {"units": Opt("int", lo=1, required=True, hi=SYN_MAX),
                           "heads": Opt("int", 1, lo=1, hi=SYN_MAX)},
               ("relu", [])),
    "attention": ((2, 2), {"heads": Opt("int", 1, lo=1, hi=SYN_MAX),
                           "qk": Opt("int", 64, lo=1, hi=SYN_MAX)},
                  ("softmax", [1.0])),
    "mixer": ((2, 2), {"heads": Opt("int", 1, lo=1, hi=SYN_MAX),
                       "qk": Opt("int", 16, lo=1, hi=SYN_MAX)},
              ("softmax", [1.0])),
    "conv": ((2, 2), {"kernel": Opt("int", lo=1, required=True, hi=SYN_MAX),
                      "stride": Opt("int", 1, lo=1, hi=SYN_MAX),
                      "pad": Opt("int", 0, lo=0, hi=SYN_MAX),
                      "pool": Opt("name", "none", choices=("none", "avg", "max")),
                      "window": Opt("int", 2, lo=1, hi=SYN_MAX),
                      "pstride": Opt("int", None, lo=1, hi=SYN_MAX)}, None),
}


@dataclass
class EnergyInfo:
    options: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    synapses: list[dict[str, Any]] = field(default_factory=list)
    in_width: Optional[int] = None
    out_width: Optional[int] = None
    member_spans: list[tuple[str, Span]] = field(default_factory=list)
    params: int = 0  # parameters the engine declares for the block

    def to_json(self) -> dict[str, Any]:
        return {"options": self.options, "layers": self.layers, "synapses": self.synapses,
                "in_width": self.in_width}


def _lagrangian(func: ast.Func, rep: Reporter, where: str) -> Optional[dict[str, Any]]:
    name = func.name
    if name in NOT_CONVEX:
        rep.error(f"`{name}` {NOT_CONVEX[name]}, so it has no convex Lagrangian and cannot be "
                  f"an energy {where}", func.name_span,
                  "use a monotone function: linear, relu, tanh, sigmoid, softmax, repu, exp, ...")
        return None
    spec = LAGRANGIANS.get(name)
    if spec is None:
        rep.error(f"unknown Lagrangian `{name}`", func.name_span,
                  did_you_mean(name, LAGRANGIANS) or "Lagrangians are: " + ", ".join(LAGRANGIANS))
        return None
    pname, default, lo, lo_open = spec
    if len(func.params) > 1:
        rep.error(f"`{name}` takes at most one parameter, got {len(func.params)}",
                  func.param_spans[1], "remove the extra parameters")
        return None
    if pname is None:
        if func.params:
            rep.error(f"the Lagrangian `{name}` takes no parameter", func.param_spans[0])
            return None
        return {"name": "linear" if name == "identity" else name, "params": []}
    if not func.params and default is None:
        rep.error(f"`{name}` needs its parameter {pname}", func.span, f"write `<{name}, 2>`")
        return None
    value = func.params[0] if func.params else default
    assert value is not None  # no parameter and no default: reported above
    problem = real_problem(value)
    if problem:
        text = rep.source.text_at(func.param_spans[0])
        rep.error(f"`{name}`'s {pname} `{brief(text)}` {problem}", func.param_spans[0],
                  real_hint(value))
        return None
    if value > LAGRANGIAN_MAX.get(name, math.inf):
        rep.error(f"`{name}`'s {pname} is at most {LAGRANGIAN_MAX[name]:g}, got {value:g}",
                  func.param_spans[0] if func.params else func.span)
        return None
    if lo is not None and (value < lo or (lo_open and value == lo)):
        rel = ">" if lo_open else "≥"
        rep.error(f"`{name}`'s {pname} must be {rel} {lo:g} for a convex Lagrangian, got {value:g}",
                  func.param_spans[0] if func.params else func.span)
        return None
    return {"name": name, "params": [value]}


def _opts(words: list[ast.Words], table: dict[str, Opt], what: str, rep: Reporter,
          anchor: Span) -> Optional[dict[str, Any]]:
    opts: dict[str, Any] = {}
    seen: dict[str, Span] = {}
    ok = True
    for w in words:
        key = w.atoms[0].text
        if w.atoms[0].kind != "name" or key not in table:
            rep.error(f"unknown option `{key}` for {what}", w.atoms[0].span,
                      did_you_mean(key, table) or
                      (f"options are: {', '.join(table)}" if table else f"{what} takes no options"))
            ok = False
            continue
        if key in seen:
            rep.error(f"option `{key}` is given twice (first at {seen[key].line}:{seen[key].col})",
                      w.atoms[0].span, "each option is given at most once")
            ok = False
            continue
        seen[key] = w.span
        spec = table[key]
        if spec.kind == "ref" and len(w.atoms) >= 2:  # one or more layer names
            opts[key] = [(a.text, a.span) for a in w.atoms[1:]]
            continue
        if len(w.atoms) != 2:
            rep.error(f"option `{key}` takes exactly one value", w.span, f"write `{key} VALUE`")
            ok = False
            continue
        v = _value(key, spec, w.atoms[1], rep)
        if v is None:
            ok = False
        else:
            opts[key] = v
    for key, spec in table.items():
        if spec.required and key not in seen:
            rep.error(f"{what} needs the option `{key}`", anchor, f"add `{key} N`")
            ok = False
        elif key not in opts and spec.default is not None:
            opts[key] = spec.default
    return opts if ok else None


def _shape(w: ast.Words, rep: Reporter) -> Optional[list[int]]:
    a = w.atoms[0]
    literals = [int_literal(t) for t in a.text.split("x")]
    dims = [d for d in literals if d is not None]
    if len(w.atoms) != 1 or a.kind not in ("shape", "number") \
            or len(dims) != len(literals) or a.text.startswith(("-", "+")):
        value = float(a.text) if len(w.atoms) == 1 and a.kind == "number" else math.nan
        hint = (f"write the size as an integer, `{int(value)}`"
                if 1 <= value <= MAX_WIDTH and value == int(value) else
                f"a layer holds 1 to {MAX_WIDTH} values" if value > MAX_WIDTH else None)
        rep.error(f"a neuron layer's size is a width or a shape such as `7x7x128`, got "
                  f"`{brief(' '.join(t.text for t in w.atoms))}`", w.span, hint)
        return None
    size = capped_prod(dims, MAX_WIDTH)
    if any(d < 1 for d in dims) or size > MAX_WIDTH:
        rep.error(f"bad layer size `{brief(a.text)}`", w.span,
                  f"a layer holds 1 to {MAX_WIDTH} values" if size > MAX_WIDTH else None)
        return None
    return dims


def check_energy(node: ast.Energy, rep: Reporter) -> Optional[EnergyInfo]:
    """Validate an energy block; None when it has errors (already reported)."""
    opts = _opts(node.options, BLOCK, "an energy block", rep, node.name_span)
    layers: dict[str, dict[str, Any]] = {}
    broken: set[str] = set()  # layers with errors: synapses naming them add no second error
    info = EnergyInfo(opts or {})
    syn_nodes = []
    ok = opts is not None
    for m in node.members:
        info.member_spans.append((m.name, m.name_span))
        words = m.words
        if words and words[0].atoms[0].text == "synapse":
            syn_nodes.append(m)
            continue
        if not words:
            rep.error(f"the neuron layer `{m.name}` needs a size", m.span,
                      f"write `({m.name}, 10, <tanh>)`")
            ok = False
            continue
        shape = _shape(words[0], rep)
        lopts = _opts(words[1:], NEURON, f"the neuron layer `{m.name}`", rep, m.name_span)
        funcs = m.funcs
        lag = None
        if len(funcs) != 1:
            rep.error(f"the neuron layer `{m.name}` needs exactly one Lagrangian, got {len(funcs)}",
                      funcs[1].span if len(funcs) > 1 else m.span, f"write `({m.name}, 10, <tanh>)`")
        else:
            lag = _lagrangian(funcs[0], rep, "neuron layer")
        if shape is None or lopts is None or lag is None:
            ok = False
            broken.add(m.name)
            continue
        if opts and opts["dt"] / lopts["tau"] > 1:
            rep.warn(f"dt / tau = {opts['dt'] / lopts['tau']:g} > 1 for `{m.name}`: explicit Euler "
                     f"steps may overshoot and the energy can rise", m.name_span,
                     "use a smaller dt or a larger tau")
        if lopts.get("learn") == "beta" and lag["name"] not in BETA_LAGRANGIANS:
            rep.error(f"`learn beta` trains a Lagrangian's inverse temperature, but `{lag['name']}` "
                      f"has none", funcs[0].name_span,
                      "use one of " + ", ".join(BETA_LAGRANGIANS) + ", or remove `learn beta`")
            ok = False
            broken.add(m.name)
            continue
        if m.name in layers:
            continue  # a repeated name (resolve reports it): the first layer keeps its index
        clamp_given = m.name if "clamp" in lopts else None
        layers[m.name] = {"name": m.name, "shape": shape, "size": math.prod(shape),
                          "tau": lopts["tau"], "bias": lopts["bias"], "lagrangian": lag,
                          "index": len(layers), "clamp": lopts.get("clamp"),
                          "learn_beta": int(lopts.get("learn") == "beta")}
        if clamp_given:
            info.member_spans.append(("clamp:" + m.name,
                                      _option_span(words[1:], "clamp") or m.name_span))
    if not layers:
        if broken:
            return None
        rep.error(f"the energy block `{node.name}` has no neuron layer", node.name_span,
                  "add members such as `(v, 784, <tanh>)`")
        return None
    info.layers = list(layers.values())
    names = NameIndex(layers)  # one index for every misspelt reference of this block
    by_index = {l["index"]: l for l in info.layers}
    values = params = 0
    for m in syn_nodes:
        syn = _synapse(m, layers, names, broken, rep)
        if syn is None:
            ok = False
            continue
        v, p = _synapse_footprint(syn, by_index)
        if v > MAX_VALUE_WIDTH or p > MAX_PARAMS:
            what = (f"holds {count(v)} values per sample; the most is {MAX_VALUE_WIDTH}"
                    if v > MAX_VALUE_WIDTH else
                    f"has {count(p)} parameters; the most is {MAX_PARAMS}")
            rep.error(f"the synapse `{m.name}` {what}", m.name_span,
                      "join smaller layers, or use fewer units, heads or a smaller qk")
            ok = False
            continue
        info.synapses.append(syn)
        values, params = values + v, params + p
    if opts is not None:
        ok = _outs(node, opts, layers, names, rep) and ok
        ok = _clamps(node, opts, info, rep) and ok
    if not ok or opts is None:
        return None
    size = sum(l["size"] for l in info.layers)
    values += 2 * (opts["steps"] + 2) * size  # states and gradients of every step, kept
    params += sum(l["size"] * l["bias"] + l["learn_beta"] for l in info.layers)
    if values > MAX_VALUE_WIDTH:
        rep.error(f"the energy block `{node.name}` holds {count(values)} values "
                  f"per sample ({opts['steps']} steps over {size} neurons); the most is "
                  f"{MAX_VALUE_WIDTH}", node.name_span, "use fewer steps or smaller layers")
        return None
    if params > MAX_PARAMS:
        rep.error(f"the energy block `{node.name}` has {count(params)} parameters; the "
                  f"most is {MAX_PARAMS}", node.name_span, "use smaller layers or synapses")
        return None
    info.params = params
    info.in_width = sum(l["size"] for l in info.layers if l["index"] == 0 or l["clamp"])
    info.out_width = sum(layers[name]["size"] for name in opts["out"])
    return info


def _option_span(words: list[ast.Words], key: str) -> Optional[Span]:
    for w in words:
        if w.atoms[0].text == key:
            return w.span
    return None


def _outs(node: ast.Energy, opts: dict[str, Any], layers: dict[str, dict[str, Any]],
          index: NameIndex, rep: Reporter) -> bool:
    """`out a b ...`: the output is the concatenation of these layers' activations."""
    out = opts.pop("out", None)
    if out is None:
        opts["out"] = [list(layers)[-1]]
        return True
    names: list[str] = []
    seen: set[str] = set()
    ok = True
    for name, span in out:
        if name not in layers:
            rep.error(f"`out {name}` is not a neuron layer of `{node.name}`", span,
                      did_you_mean(name, index))
            ok = False
        elif name in seen:
            rep.error(f"`out` names `{name}` twice", span, "name each output layer once")
            ok = False
        else:
            names.append(name)
            seen.add(name)
    opts["out"] = names
    return ok


def _clamps(node: ast.Energy, opts: dict[str, Any], info: EnergyInfo, rep: Reporter) -> bool:
    """Which layers are held at the block's input. The first layer follows the block's
    `clamp` unless it says otherwise itself; any other layer is clamped by its own `clamp 1`."""
    block_span = _option_span(node.options, "clamp")
    spans = dict((k[6:], v) for k, v in info.member_spans if k.startswith("clamp:"))
    info.member_spans = [(k, v) for k, v in info.member_spans if not k.startswith("clamp:")]
    first = info.layers[0]
    if first["clamp"] is not None and block_span is not None and first["clamp"] != opts["clamp"]:
        rep.error(f"`{first['name']}` says `clamp {first['clamp']}` but the block says "
                  f"`clamp {opts['clamp']}`", spans[first["name"]],
                  "say it once: on the block (it applies to the first layer) or on the layer")
        return False
    if first["clamp"] is None:
        first["clamp"] = opts["clamp"]
    opts["clamp"] = first["clamp"]
    for layer in info.layers[1:]:
        layer["clamp"] = layer["clamp"] or 0
    return True


def _synapse(m: ast.Paren, layers: dict[str, dict[str, Any]], names: NameIndex, broken: set[str],
             rep: Reporter) -> Optional[dict[str, Any]]:
    words = m.words
    head = words[0]
    if len(head.atoms) != 2:
        rep.error(f"a synapse is `synapse KIND`, got `{' '.join(a.text for a in head.atoms)}`",
                  head.span, "kinds are: " + ", ".join(SYNAPSES))
        return None
    kind = head.atoms[1].text
    if kind not in SYNAPSES:
        rep.error(f"unknown synapse kind `{kind}`", head.atoms[1].span,
                  did_you_mean(kind, SYNAPSES) or "kinds are: " + ", ".join(SYNAPSES))
        return None
    (lo, hi), table, hidden_default = SYNAPSES[kind]
    if len(words) < 2:
        rep.error(f"the synapse `{m.name}` names no neuron layers", head.span,
                  f"write `({m.name}, synapse {kind}, a b)`")
        return None
    refs = []
    ok = True
    for a in words[1].atoms:
        if a.text in broken:
            ok = False
        elif a.text not in layers:
            rep.error(f"`{a.text}` is not a neuron layer of this energy block", a.span,
                      did_you_mean(a.text, names) or "synapses join the block's neuron layers")
            ok = False
        else:
            refs.append(layers[a.text])
    n = len(words[1].atoms)
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        rep.error(f"{_a(kind)} synapse joins {want} layer{'s' if (hi or lo) > 1 else ''}, "
                  f"`{m.name}` names {n}", words[1].span)
        ok = False
    opts = _opts(words[2:], table, f"{_a(kind)} synapse", rep, m.name_span)
    funcs = m.funcs
    hidden = None
    if funcs and hidden_default is None:
        rep.error(f"{_a(kind)} synapse has no hidden layer, so it takes no Lagrangian",
                  funcs[0].span, "remove it")
        ok = False
    elif len(funcs) > 1:
        rep.error("a synapse takes at most one (hidden) Lagrangian", funcs[1].span)
        ok = False
    elif funcs:
        hidden = _lagrangian(funcs[0], rep, "hidden layer")
        ok = ok and hidden is not None
    elif hidden_default is not None:
        hidden = {"name": hidden_default[0], "params": list(hidden_default[1])}
    if not ok or opts is None:
        return None
    if kind == "mixer" and _tokens(refs[0]) != _tokens(refs[1]):
        rep.error(f"a mixer joins layers with equal token counts; `{refs[0]['name']}` has "
                  f"{_tokens(refs[0])}, `{refs[1]['name']}` has {_tokens(refs[1])}", words[1].span)
        return None
    if kind == "conv" and not _conv_fits(m, refs, opts, words[1].span, rep):
        return None
    syn = {"name": m.name, "kind": kind, "refs": [r["index"] for r in refs], "options": opts}
    if hidden is not None:
        syn["hidden"] = hidden
    return syn


def _synapse_footprint(syn: dict[str, Any],
                       layers: dict[int, dict[str, Any]]) -> tuple[int, int]:
    """(values per sample, parameters) of a synapse, as the engine declares them
    (csrc/cpu/energy.cpp); products stop growing past the bounds."""
    refs = [layers[r] for r in syn["refs"]]
    sizes = [r["size"] for r in refs]
    o, kind = syn["options"], syn["kind"]
    cap = max(MAX_PARAMS, MAX_VALUE_WIDTH)
    if kind == "dense":
        return 0, capped_prod(sizes, cap) + (sizes[-1] if o.get("bias") else 0)
    if kind == "bias":
        return 0, sizes[0]
    if kind == "hidden":
        return o["units"], o["units"] * sum(sizes)
    if kind == "tensor":
        return o["heads"] * o["units"], capped_prod([o["heads"], o["units"]] + sizes, cap)
    if kind in ("attention", "mixer"):
        (nq, dq), (nk, dk) = [(_tokens(r), r["shape"][-1]) for r in refs]
        h, z = o["heads"], o["qk"]
        if kind == "attention":
            return nq * nk * h + h * z * (nq + nk), (dq + dk) * h * z
        return 2 * nq * h * z, h * z * dq * dk
    a, b = refs  # conv
    return sizes[1], b["shape"][2] * a["shape"][2] * o["kernel"] ** 2


def _tokens(layer: dict[str, Any]) -> int:
    shape = layer["shape"]
    return 1 if len(shape) == 1 else math.prod(shape[:-1])


def _conv_fits(m: ast.Paren, refs: list[dict[str, Any]], o: dict[str, Any], span: Span,
               rep: Reporter) -> bool:
    a, b = refs
    if len(a["shape"]) != 3 or len(b["shape"]) != 3:
        rep.error(f"a conv synapse joins two HxWxC layers; `{a['name']}` is "
                  f"{'x'.join(map(str, a['shape']))}, `{b['name']}` is "
                  f"{'x'.join(map(str, b['shape']))}", span)
        return False
    H, W, _ = a["shape"]
    k, s, p = o["kernel"], o["stride"], o["pad"]
    if p >= k:
        rep.error(f"`pad {p}` is not less than `kernel {k}`: the outer windows would see only "
                  f"padding", span, f"use a pad of at most {k - 1}")
        return False
    oh, ow = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    if oh < 1 or ow < 1:
        rep.error(f"kernel {k} does not fit `{a['name']}` ({H}x{W}) with pad {p}", span)
        return False
    w = o["window"]
    ps = o.setdefault("pstride", w)  # written even without pooling: the IR holds every value
    if o["pool"] != "none":
        oh, ow = (oh - w) // ps + 1, (ow - w) // ps + 1
    if [oh, ow] != b["shape"][:2]:
        rep.error(f"the conv of `{a['name']}` gives a {oh}x{ow} map, but `{b['name']}` is "
                  f"{b['shape'][0]}x{b['shape'][1]}", span,
                  "change kernel, stride, pad or pooling, or the layer's shape")
        return False
    return True
