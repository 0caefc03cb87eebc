"""The functions a model writes, checked against the tables of `functions.py`: the header's
weight and bias initialisers (the `header` pass, `check_header`) and a node's activation or
loss (`_check_fn`, called by the `structure` pass per node kind). `Fn` is the checked form
(name and every parameter, defaults filled in) that the IR writes.

Not here: which slot a node kind has (passes.py, structs.py) or any math (the engine).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from . import ast
from .diagnostics import Reporter, Span, did_you_mean
from .functions import BIAS_INITS, SLOT_TABLES, WEIGHT_INITS, FnSpec, slot_of
from .limits import real_hint, real_problem
from .structs import brief

__all__ = ["Fn", "check_header"]


@dataclass
class Fn:
    name: str
    params: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}


def _check_fn(func: ast.Func, slot: str, table: dict[str, FnSpec], rep: Reporter) -> Optional[Fn]:
    spec = table.get(func.name)
    if spec is None:
        other = slot_of(func.name)
        if other:
            rep.error(f"`{func.name}` is {_a(other)}, not {_a(slot)}", func.name_span,
                      _slot_hint(slot))
        else:
            rep.error(f"unknown {slot} `{func.name}`", func.name_span,
                      did_you_mean(func.name, table) or _slot_hint(slot))
        return None
    if len(func.params) > 1:
        rep.error(f"`{func.name}` takes at most one parameter, got {len(func.params)}",
                  func.param_spans[1], "remove the extra parameters")
        return None
    if not _reals_ok(func.name, func.params, func.param_spans, rep):
        return None
    if func.params and not spec.params:
        if not spec.ignores_param:
            p = func.params[0]
            rep.warn(f"`{func.name}` takes no parameter; `{p:g}` is ignored", func.param_spans[0])
        return Fn(func.name, [])
    params = spec.fill(func.params)
    if func.name == "huber" and params[0] <= 0:
        rep.error(f"huber's delta must be positive, got {params[0]:g}", func.param_spans[0])
    return Fn(func.name, params)


def _reals_ok(name: str, params: list[float], spans: list[Span], rep: Reporter) -> bool:
    """Every real parameter finite and within MAX_REAL (limits.py); reported if not."""
    ok = True
    for p, span in zip(params, spans):
        problem = real_problem(p)
        if problem:
            text = rep.source.text_at(span)
            rep.error(f"`{name}`'s parameter `{brief(text)}` {problem}", span, real_hint(p))
            ok = False
    return ok


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _slot_hint(slot: str) -> str:
    table = SLOT_TABLES[slot]
    plural = "losses" if slot == "loss" else slot + "s"
    return f"{plural} are: " + ", ".join(table)


def check_header(g: Any, rep: Reporter) -> None:
    """The `header` pass: the header's initialisers into g.header (passes.Graph)."""
    h = g.model.header
    for key, init, slot, table in (("weight_init", h.weight, "weight initialiser", WEIGHT_INITS),
                                   ("bias_init", h.bias, "bias initialiser", BIAS_INITS)):
        spec = table.get(init.name)
        if spec is None:
            other = slot_of(init.name)
            msg = (f"`{init.name}` is {_a(other)}, not {_a(slot)}" if other
                   else f"unknown {slot} `{init.name}`")
            hint = did_you_mean(init.name, table) if not other else None
            rep.error(msg, init.name_span, hint or _slot_hint(slot))
            continue
        n = len(init.params)
        if n < spec.required or n > len(spec.params):
            if not spec.params:
                takes = "no parameters"
            else:
                want = (f"{len(spec.params)}" if spec.required == len(spec.params)
                        else f"{spec.required} to {len(spec.params)}")
                takes = (f"{want} parameter{'s' if want != '1' else ''} "
                         f"({' '.join(spec.params)})")
            span = init.param_spans[len(spec.params)] if n > len(spec.params) else init.name_span
            rep.error(f"`{init.name}` takes {takes}, got {n}", span,
                      f"write `{init.name}{''.join(' ' + p for p in spec.params)}`"
                      if spec.params else f"write `{init.name}`")
            continue
        if not _reals_ok(init.name, init.params, init.param_spans, rep):
            continue
        params = spec.fill(init.params)
        _check_init_domain(init, params, rep)
        g.header[key] = Fn(init.name, params)


def _check_init_domain(init: ast.Init, p: list[float], rep: Reporter) -> None:
    if init.name == "uniform" and not p[0] < p[1]:
        rep.error(f"uniform needs a < b, got {p[0]:g} and {p[1]:g}", init.param_spans[1],
                  "write the lower bound first")
    if init.name in ("normal", "const_uneven") and p[1] < 0:
        rep.error(f"{init.name}'s standard deviation must not be negative, got {p[1]:g}",
                  init.param_spans[1])
