"""The pipeline (parse -> passes -> IR) and the versioned IR JSON document.

The IR is the one contract between the compiler and the C++ runtime; its
format is documented in docs/ir.md. `compile_text(..., stop_after=STAGE)` stops
after any named stage and returns that stage's JSON view (`mdlc compile --emit`).
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import warnings
from pathlib import Path
import os
from typing import Any, Literal, Optional, Union, overload

from . import ast, passes
from .fnchecks import Fn, check_header
from .diagnostics import Diagnostic, MDLError, MDLWarning, Reporter, Source, Span
from .parser import parse
from .structs import STRUCT_KINDS

IR_FORMAT = "neuromorph-ir"
IR_VERSION = 3
# version 2 added structured node kinds; 3 added `cells`, embed/pool, and energy per-layer
# clamp, several out layers and learned beta
IR_VERSIONS_READ = (1, 2, 3)
STAGES = ("parse", "resolve", "structure", "widths", "delays", "ir")
# Every node kind an IR document can hold (the engine's table: csrc/core/ir.cpp kKindNames;
# tests/test_registry.py checks that they agree)
GRAPH_KINDS = ("input", "layer", "output", "merge", "split", "tap")
NODE_KINDS = GRAPH_KINDS + STRUCT_KINDS + ("energy",)


JSON = dict[str, Any]  # a JSON object: the IR document and its parts


class IR:
    """A compiled model: `doc` is the JSON-ready IR dict; `warnings` the diagnostics."""

    def __init__(self, doc: JSON, warnings_: list[Diagnostic]):
        self.doc = doc
        self.warnings = warnings_

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.doc, indent=indent)

    @property
    def recurrent(self) -> bool:
        return bool(self.doc["recurrent"])

    @property
    def nodes(self) -> list[JSON]:
        nodes: list[JSON] = self.doc["nodes"]
        return nodes

    def node(self, name: str) -> JSON:
        for n in self.nodes:
            if n["name"] == name or n.get("alias") == name:
                return n
        raise KeyError(name)

    def edges(self) -> list[JSON]:
        edges: list[JSON] = self.doc["edges"]
        return edges

    def __repr__(self) -> str:
        return f"<mdl.IR {len(self.nodes)} nodes, recurrent={self.recurrent}>"


def _fn(f: Optional[Fn]) -> Optional[JSON]:
    return f.to_json() if f else None


def _node_json(n: passes.GNode) -> JSON:
    d: dict[str, Any] = {"name": n.name, "kind": n.kind, "width": n.width,
                         "loc": {"line": n.span.line, "col": n.span.col}}
    inputs = []
    if n.pred is not None:
        inputs.append({"node": n.pred.name, "delayed": False})
    if n.kind == "merge":
        d["op"] = n.op
        assert n.target is not None  # resolved: a merge without its target is an error
        inputs.append({"node": n.target.name, "delayed": n.delayed})
    d["inputs"] = inputs
    if n.activation:
        d["activation"] = _fn(n.activation)
    if n.loss:
        d["loss"] = _fn(n.loss)
    if n.cells is not None:
        d["cells"] = n.cells
    if n.struct is not None:
        d["struct"] = n.struct.to_json()
    if n.energy is not None:
        d["energy"] = n.energy.to_json()
    if n.alias:
        d["alias"] = n.alias
    if n.owner is not None:
        d["branch"] = {"split": n.owner[0].name, "index": n.owner[1]}
    return d


def _edges(g: passes.Graph) -> list[JSON]:
    edges: list[JSON] = []
    for n in g.nodes:
        if n.pred is not None:
            kind = "branch" if n.pred.kind == "split" and n.owner and n.owner[0] is n.pred \
                else "chain"
            edges.append({"from": n.pred.name, "to": n.name, "kind": kind, "delayed": False})
        if n.kind == "merge":
            assert n.target is not None
            edges.append({"from": n.target.name, "to": n.name, "kind": "merge",
                          "delayed": n.delayed})
    return edges


def build_ir(g: passes.Graph) -> JSON:
    src = g.model.source
    return {
        "format": IR_FORMAT,
        "version": IR_VERSION,
        "source": {"file": src.filename, "text": src.text,
                   "sha256": hashlib.sha256(src.text.encode()).hexdigest()},
        "header": {"weight_init": _fn(g.header["weight_init"]),
                   "bias_init": _fn(g.header["bias_init"])},
        "input": g.main[0].name,
        "output": g.main[-1].name,
        "recurrent": g.recurrent,
        "nodes": [_node_json(n) for n in g.nodes],
        "edges": _edges(g),
        "order": [n.name for n in g.order],
    }


def _ast_json(model: ast.Model) -> JSON:
    """The AST as JSON-ready dicts and lists, built with a stack (no recursion)."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(model, root, 0)]
    while stack:
        x, parent, key = stack.pop()
        if dataclasses.is_dataclass(x):
            d: dict[str, Any] = {"type": type(x).__name__}
            for f in dataclasses.fields(x):
                if f.name != "source":
                    d[f.name] = None  # keeps the fields' order
                    stack.append((getattr(x, f.name), d, f.name))
            parent[key] = d
        elif isinstance(x, list):
            items: list[Any] = [None] * len(x)
            stack.extend((item, items, i) for i, item in enumerate(x))
            parent[key] = items
        elif isinstance(x, float) and not math.isfinite(x):
            parent[key] = str(x)  # a literal such as 1e999, refused by the later stages: JSON
            # has no infinity, so the parse view names it "inf" / "-inf"
        else:
            parent[key] = x
    out: JSON = root[0]
    return out


def _graph_json(g: passes.Graph, stage: str) -> JSON:
    nodes = []
    for n in g.nodes:
        d: JSON = {"name": n.name, "kind": n.kind, "pred": n.pred.name if n.pred else None}
        if n.kind == "merge":
            d["target"] = n.target.name if n.target else None
        if stage in ("widths", "delays"):
            d["width"] = n.width
        if stage == "delays" and n.kind == "merge":
            d["delayed"] = n.delayed
        nodes.append(d)
    out: JSON = {"stage": stage, "nodes": nodes}
    if stage == "delays":
        out["order"] = [n.name for n in g.order]
    return out


@overload
def compile_text(text: str, filename: str = ..., stop_after: Literal["ir"] = ...,
                 warn: bool = ...) -> IR: ...
@overload
def compile_text(text: str, filename: str = ..., *, stop_after: str,
                 warn: bool = ...) -> Union[IR, JSON]: ...
@overload
def compile_text(text: str, filename: str, stop_after: str,
                 warn: bool = ...) -> Union[IR, JSON]: ...


def compile_text(text: str, filename: str = "<string>", stop_after: str = "ir",
                 warn: bool = True) -> Union[IR, JSON]:
    """Compile MDL text. Returns an `IR` (or a stage's JSON dict with `stop_after`).

    Raises `MDLError` listing every error found. Warnings are attached to the IR and,
    with `warn=True`, also issued as `MDLWarning`s through the `warnings` module.
    """
    if stop_after not in STAGES:
        raise ValueError(f"stop_after must be one of {', '.join(STAGES)}, got {stop_after!r}")
    if not isinstance(text, str):
        raise TypeError(f"compile_text takes the model's text as a str, got {type(text).__name__}")
    # A large model allocates many small objects that all live to the end: the cyclic garbage
    # collector would re-scan them again and again (half the time of a 10 000-node model), and
    # finds nothing to free. Paused for large texts only, and always resumed.
    pause = len(text) > _GC_PAUSE_CHARS and gc.isenabled()
    if pause:
        gc.disable()
    try:
        result, rep = _compile(text, filename, stop_after)
    finally:
        if pause:
            gc.enable()
    if warn and rep is not None:
        for w in rep.warnings:
            warnings.warn(w.render(), MDLWarning, stacklevel=2)
    return result


_GC_PAUSE_CHARS = 50_000


def _compile(text: str, filename: str,
             stop_after: str) -> tuple[Union[IR, JSON], Optional[Reporter]]:
    """(the IR or a stage's JSON view, the reporter) or MDLError."""
    model = parse(text, filename)
    if stop_after == "parse":
        return {"stage": "parse", "ast": _ast_json(model)}, None
    rep = Reporter(model.source)
    g = passes.resolve(model, rep)
    if stop_after == "resolve":
        rep.raise_if_errors()
        return _graph_json(g, "resolve"), None
    check_header(g, rep)
    passes.structure(g, rep)
    passes.widths(g, rep)
    rep.raise_if_errors()
    if stop_after in ("structure", "widths"):
        return _graph_json(g, stop_after), None
    passes.delays(g, rep)
    rep.raise_if_errors()
    if stop_after == "delays":
        return _graph_json(g, "delays"), None
    passes.lint(g, rep)
    return IR(build_ir(g), rep.warnings), rep


@overload
def compile_file(path: Union[str, os.PathLike[str]], stop_after: Literal["ir"] = ...,
                 warn: bool = ...) -> IR: ...
@overload
def compile_file(path: Union[str, os.PathLike[str]], stop_after: str,
                 warn: bool = ...) -> Union[IR, JSON]: ...


def compile_file(path: Union[str, os.PathLike[str]], stop_after: str = "ir",
                 warn: bool = True) -> Union[IR, JSON]:
    """Compile the MDL file at `path` (diagnostics name the file). A file that is not UTF-8
    is an `MDLError` located at its first bad byte."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MDLError([_not_utf8(data, e, str(path))]) from None
    # as Path.read_text: universal newlines
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return compile_text(text, str(path), stop_after, warn)


def _not_utf8(data: bytes, err: UnicodeDecodeError, filename: str) -> Diagnostic:
    start = data.rfind(b"\n", 0, err.start) + 1
    line = data.count(b"\n", 0, err.start) + 1
    col = len(data[start:err.start].decode("utf-8", "replace")) + 1
    source = Source(data.decode("utf-8", "replace"), filename)
    return Diagnostic("error", f"the file is not UTF-8 text: byte 0x{data[err.start]:02x} "
                      f"is not part of a character", Span(line, col, col + 1),
                      "save the model as UTF-8", source)


def load_ir(doc_or_json: Union[str, bytes, JSON]) -> IR:
    """Wrap an IR dict or JSON text (e.g. written by `mdlc compile`) after checking its version."""
    doc = json.loads(doc_or_json) if isinstance(doc_or_json, (str, bytes)) else doc_or_json
    if not isinstance(doc, dict) or doc.get("format") != IR_FORMAT:
        raise ValueError(f"not a Neuromorph IR document (expected format {IR_FORMAT!r})")
    if doc.get("version") not in IR_VERSIONS_READ:
        raise ValueError(f"IR version {doc.get('version')!r} is not supported "
                         f"(this compiler reads version {IR_VERSION})")
    return IR(doc, [])
