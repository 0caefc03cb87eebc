"""Named compiler passes over the model graph (MDL.md section 2).

resolve    -> flatten the AST into graph nodes, unique names, merge targets
header     -> the header's weight and bias initialisers: known, right slot, parameters
structure  -> classify each node (its kind's activation, loss and options are checked here,
              through `_check_fn` and `structs.check_struct`); one input first, one output
              last on the main chain, branch ends merged
widths     -> every value's width; merge operands equal
delays     -> delayed edges by the depth-first rule of MDL.md 2.1, then the
              execution order (a topological order of the same-step edges)

Each pass records errors in a `Reporter` and keeps going where it can, so
independent mistakes are reported together. The function tables are in `functions.py`, the
node kinds with options (`STRUCT_KINDS`) and their tables in `structs.py`.
"""
from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from . import ast
from .diagnostics import NameIndex, Reporter, Span, did_you_mean
from .fnchecks import Fn, _a, _check_fn, check_header
from .functions import ACTIVATIONS, LOSSES, MERGE_OPS
from .energy import EnergyInfo, check_energy
from .limits import (MAX_CELLS, MAX_INT, MAX_PARAMS, MAX_VALUE_WIDTH, MAX_WIDTH, capped_prod,
                     int_literal, show)
from .structs import (MLP_ACTIVATIONS, PLAIN_KINDS, STRUCT_KINDS, StructInfo, brief,
                      check_struct, describe)

_WIDTH_RE = re.compile(r"[1-9][0-9]*")
_SHAPE_RE = re.compile(r"[1-9][0-9]*(x[1-9][0-9]*)*")


@dataclass(eq=False)
class GNode:
    """One node of the graph. `pred` is the chain predecessor (the value `u`)."""

    name: str
    kind: str  # input | layer | output | merge | split | tap | attn2d | column | unknown
    span: Span
    ast: Any = field(repr=False)  # the ast.Node it came from (Paren, Merge, ...: see `kind`)
    index: int = 0
    pred: Optional["GNode"] = None
    next: Optional["GNode"] = None
    branches: list[list["GNode"]] = field(default_factory=list)
    owner: Optional[tuple["GNode", int]] = None  # (split, branch index) for branch members
    width: Optional[int] = None
    activation: Optional[Fn] = None
    loss: Optional[Fn] = None
    target: Optional["GNode"] = None
    op: Optional[str] = None
    alias: Optional[str] = None
    consumers: list["GNode"] = field(default_factory=list)
    delayed: bool = False  # merge only: its target is read from the previous sample
    cells: Optional[int] = None  # layer/output with `cells C`: position-wise over C cells
    cells_span: Optional[Span] = None
    struct: Optional[StructInfo] = None  # structured kinds: shape, options, widths
    energy: Optional[EnergyInfo] = None  # energy blocks: members, options, widths

    @property
    def on_main_chain(self) -> bool:
        return self.owner is None


@dataclass
class Graph:
    model: ast.Model
    nodes: list[GNode] = field(default_factory=list)
    by_name: dict[str, GNode] = field(default_factory=dict)
    main: list[GNode] = field(default_factory=list)
    header: dict[str, Fn] = field(default_factory=dict)
    order: list[GNode] = field(default_factory=list)
    has_input: bool = False  # set by `structure` when it classifies a node as the input

    @property
    def recurrent(self) -> bool:
        return any(n.delayed for n in self.nodes)


# --------------------------------------------------------------------------- resolve

def resolve(model: ast.Model, rep: Reporter) -> Graph:
    """Flatten chains into GNodes, check names are unique, resolve merge targets."""
    g = Graph(model)
    defined: dict[str, Span] = {}

    def define(name: str, span: Span) -> None:
        if name in defined:
            first = defined[name]
            rep.error(f"`{name}` is already defined at {first.line}:{first.col}", span,
                      "every node name in a model is unique; rename one of them")
        else:
            defined[name] = span

    def add(node: ast.Node, pred: Optional[GNode],
            owner: Optional[tuple[GNode, int]]) -> GNode:
        gn = _make_node(node, rep)
        gn.index, gn.pred, gn.owner = len(g.nodes), pred, owner
        g.nodes.append(gn)
        define(gn.name, gn.span)
        g.by_name.setdefault(gn.name, gn)
        if isinstance(node, ast.Energy):
            for member in node.members:
                define(member.name, member.name_span)
        if isinstance(node, ast.Tap):
            define(node.alias, node.alias_span)
            g.by_name.setdefault(node.alias, gn)
            gn.alias = node.alias
        return gn

    # Text order, iteratively: a stack of chains being walked, each (its AST nodes, the next
    # index, the GNodes made so far, the predecessor, the owner). A split's branches are walked
    # before the node after it, as a recursive walk would.
    g.main = []
    stack: list[list[Any]] = [[model.chain, 0, g.main, None, None]]
    while stack:
        frame = stack[-1]
        chain, i, out, pred, owner = frame
        if i == len(chain):
            stack.pop()
            continue
        node = chain[i]
        gn = add(node, pred, owner)
        if out:
            out[-1].next = gn
        out.append(gn)
        frame[1], frame[3] = i + 1, gn
        if isinstance(node, ast.Split):
            gn.branches = [[] for _ in node.branches]
            for k in range(len(node.branches) - 1, -1, -1):
                stack.append([node.branches[k], 0, gn.branches[k], gn, (gn, k)])
    index = None
    for gn in g.nodes:
        if gn.kind == "merge":
            if gn.ast.target not in g.by_name and index is None:
                index = NameIndex(g.by_name)
            _resolve_merge(g, gn, rep, index)
    return g


def _make_node(node: ast.Node, rep: Reporter) -> GNode:
    if isinstance(node, ast.Merge):
        return GNode(node.name, "merge", node.name_span, node, op=node.op)
    if isinstance(node, ast.Split):
        return GNode(node.name, "split", node.name_span, node)
    if isinstance(node, ast.Tap):
        return GNode(node.name, "tap", node.name_span, node)
    if isinstance(node, ast.Energy):
        gn = GNode(node.name, "energy", node.name_span, node)
        gn.energy = check_energy(node, rep)
        if gn.energy is None:
            gn.kind = "unknown"
        else:
            gn.width = gn.energy.out_width
        return gn
    return GNode(node.name, "paren", node.name_span, node)  # classified by `structure`


def _resolve_merge(g: Graph, m: GNode, rep: Reporter, names: Optional[NameIndex]) -> None:
    node: ast.Merge = m.ast
    if node.op not in MERGE_OPS:
        rep.error(f"unknown merge operation `{node.op}`", node.op_span,
                  did_you_mean(node.op, MERGE_OPS) or "use additive, multiplicative or average")
    target = g.by_name.get(node.target)
    if target is None:
        rep.error(f"unknown merge target `{node.target}`", node.target_span,
                  did_you_mean(node.target, names) if names is not None else None)
        return
    m.target = target
    target.consumers.append(m)


# --------------------------------------------------------------------------- functions

# --------------------------------------------------------------------------- structure

def structure(g: Graph, rep: Reporter) -> None:
    """Classify parenthesised nodes and check the model's shape (MDL.md section 2)."""
    if not g.main:
        rep.error("the model has no nodes: expected an input `(name, width)` after the header",
                  g.model.end_span, "add `(x, 4)` and an output such as `(y, 1, <linear>, <mse>)`")
        return
    first, last = g.main[0], g.main[-1]
    for gn in g.nodes:
        if gn.kind == "paren":
            _classify_paren(g, gn, is_first=gn is first, is_last=gn is last, rep=rep)
    if first.kind not in ("input",) and first.kind != "unknown":
        if first.kind in ("layer", "output") + STRUCT_KINDS:
            pass  # reported by _classify_paren
        else:
            rep.error(f"a model starts with its input `(name, width)`, found a {first.kind}",
                      first.span, "put the input node right after the header")
    if last.kind not in ("output", "unknown") and last is not first:
        if last.kind not in ("layer",) + STRUCT_KINDS:  # reported by _classify_paren
            rep.error(f"the model has no output: its main chain ends in the {last.kind} "
                      f"`{last.name}`", last.span,
                      "end the main chain with an output such as `(y, 4, <sigmoid>, <mse>)`")
    elif last is first and last.kind == "input":
        rep.error("the model has no output", g.model.end_span,
                  "end the main chain with an output such as `(y, 4, <sigmoid>, <mse>)`")
    _check_branch_ends(g, rep)
    _check_merge_targets(g, rep)


def _classify_paren(g: Graph, gn: GNode, is_first: bool, is_last: bool, rep: Reporter) -> None:
    node: ast.Paren = gn.ast
    words, funcs = node.words, node.funcs
    if words and words[0].atoms[0].kind == "name":
        kind = words[0].atoms[0].text
        if kind in STRUCT_KINDS:
            _classify_struct(g, gn, kind, is_first, is_last, rep)
            return
        rep.error(f"expected a width after `{gn.name}`, got `{kind}`", words[0].span,
                  did_you_mean(kind, STRUCT_KINDS) or "a layer is `(name, width, <activation>)`")
        gn.kind = "unknown"
        return
    gn.width = _check_width(gn, rep)
    _layer_options(gn, words[1:], rep)
    if gn.cells is not None and gn.width is not None:
        if gn.width * gn.cells > MAX_VALUE_WIDTH:
            rep.error(f"`{gn.name}` gives {gn.cells} cells × width {gn.width} = "
                      f"{gn.cells * gn.width} values; the most is {MAX_VALUE_WIDTH}",
                      gn.cells_span, "use fewer cells or a smaller width")
            gn.width = None
        else:
            gn.width *= gn.cells
    if is_first:
        gn.kind = "input"
        g.has_input = True
        if gn.cells is not None:
            rep.error(f"`cells` splits a layer's input into cells, but `{gn.name}` is the model's "
                      f"input", gn.cells_span,
                      "give the input its full width, and `cells` to the layer that reads it")
        if funcs:
            rep.error(f"the input `{gn.name}` takes no function", funcs[0].span,
                      f"write `({gn.name}, {gn.width or 4})`")
        return
    if not funcs:
        gn.kind = "layer"
        if g.main[0].kind != "paren" and not g.has_input:
            gn.kind = "input"
            g.has_input = True
            rep.error(f"`{gn.name}` looks like the input, but the input must be the first node "
                      f"of the model", gn.span, "move it right after the header")
            return
        rep.error(f"`{gn.name}` has no activation function; only the input, the first node, "
                  f"has none", gn.span, f"write `({gn.name}, {gn.width or 4}, <relu>)`")
        return
    if len(funcs) > 2:
        rep.error(f"`{gn.name}` has {len(funcs)} functions; a layer has one (activation) and "
                  f"the output two (activation, loss)", funcs[2].span)
    gn.activation = _check_fn(funcs[0], "activation", ACTIVATIONS, rep)
    if len(funcs) == 1:
        gn.kind = "layer"
        if is_last:
            rep.error(f"the model has no output: the last node of the main chain, `{gn.name}`, "
                      f"has no loss", funcs[0].span,
                      f"add a loss: `({gn.name}, {gn.width or 4}, <{funcs[0].name}>, <mse>)`")
        return
    gn.kind = "output"
    gn.loss = _check_fn(funcs[1], "loss", LOSSES, rep)
    if not is_last:
        where = ("inside the split branch of `%s`" % gn.owner[0].name if gn.owner
                 else "in the middle of the main chain")
        rep.error(f"`{gn.name}` has a loss but sits {where}; only the output, the last node "
                  f"of the main chain, has a loss", funcs[1].span,
                  "remove the loss, or move this node to the end of the main chain")


def _layer_options(gn: GNode, words: list[ast.Words], rep: Reporter) -> None:
    """`cells C` (an INT or a SHAPE), the one option of a layer or output (MDL.md 7)."""
    for w in words:
        key = w.atoms[0]
        text = " ".join(a.text for a in w.atoms)
        if key.kind != "name" or key.text != "cells":
            rep.error(f"unexpected `{text}` in `{gn.name}`", w.span,
                      did_you_mean(key.text, ("cells",)) if key.kind == "name" else
                      "a layer is `(name, width, <activation>)` or `(name, width, cells C, "
                      "<activation>)`")
            continue
        if gn.cells_span is not None:
            first = gn.cells_span
            rep.error(f"option `cells` is given twice (first at {first.line}:{first.col})",
                      key.span, "each option is given at most once")
            continue
        gn.cells_span = w.span
        value = w.atoms[1] if len(w.atoms) == 2 else None
        if value is None or value.kind not in ("number", "shape") \
                or not _SHAPE_RE.fullmatch(value.text):
            got = "no value" if value is None and len(w.atoms) == 1 else f"`{text}`"
            rep.error(f"`cells` takes a positive count or a shape such as `8x8`, got {got}",
                      w.span, "write `cells 64` or `cells 8x8`")
            continue
        count = capped_prod((int_literal(d) or 0 for d in value.text.split("x")), MAX_CELLS)
        if count > MAX_CELLS:
            rep.error(f"`cells {brief(value.text)}` is more than {MAX_CELLS} cells", value.span)
            continue
        gn.cells = count


def _classify_struct(g: Graph, gn: GNode, kind: str, is_first: bool, is_last: bool,
                     rep: Reporter) -> None:
    node: ast.Paren = gn.ast
    gn.kind = kind
    gn.struct = check_struct(node, kind, rep)
    if gn.struct is None:
        gn.kind = "unknown"
    funcs = node.funcs
    if is_first:
        rep.error(f"a model starts with its input `(name, width)`, found the {kind} node "
                  f"`{gn.name}`", gn.span, "put an input such as `(x, 2048)` before it")
    elif is_last:
        rep.error(f"the model has no output: its main chain ends in the {kind} node `{gn.name}`",
                  gn.span, "end the main chain with an output such as `(y, 10, <softmax>, "
                           "<cross_entropy>)`")
    if kind in PLAIN_KINDS:
        if funcs:
            rep.error(f"{_a(kind)} node takes no function", funcs[0].span,
                      f"remove `<{funcs[0].name}>`, or put a layer after `{gn.name}`")
        if gn.struct is not None:
            gn.width = gn.struct.out_width
        return
    if len(funcs) > 1:
        rep.error(f"`{gn.name}` has {len(funcs)} functions; a {kind} node takes one, the "
                  f"activation of its MLP", funcs[1].span, "remove the extra function")
    if funcs:
        fn = _check_fn(funcs[0], "activation", ACTIVATIONS, rep)
        if fn is not None and fn.name not in MLP_ACTIVATIONS:
            rep.error(f"the MLP of {_a(kind)} node needs an elementwise activation without "
                      f"learned parameters, got `{fn.name}`", funcs[0].name_span,
                      "use e.g. <gelu>, <relu> or <swish>")
            fn = None
        gn.activation = fn
    else:
        gn.activation = Fn("swish" if kind == "neuron" else "gelu", [1.0] if kind == "neuron" else [])
    if gn.activation is not None and gn.activation.name == "gelu":
        # the structured kinds' sources use the exact erf GELU (extensions-math.md section 0);
        # the IR names it, so the engine never guesses which form a node computes
        gn.activation = Fn("gelu_erf", [])
    if gn.struct is not None:
        gn.width = gn.struct.out_width


def _check_width(gn: GNode, rep: Reporter) -> Optional[int]:
    words = gn.ast.words
    if not words:
        rep.error(f"`{gn.name}` has no width", gn.span, f"write `({gn.name}, 4, ...)`")
        return None
    w = words[0]
    text = " ".join(a.text for a in w.atoms)
    if len(w.atoms) != 1 or w.atoms[0].kind == "shape" or not _WIDTH_RE.fullmatch(text):
        what = "a shape" if w.atoms[0].kind == "shape" else f"`{brief(text)}`"
        rep.error(f"width of `{gn.name}` must be a positive integer, got {what}", w.span)
        return None
    value = int_literal(text)
    assert value is not None  # _WIDTH_RE matched
    if value > MAX_WIDTH:
        rep.error(f"width of `{gn.name}` is {show(value, MAX_INT)}; the largest width is "
                  f"{MAX_WIDTH}", w.span)
        return None
    return value


def _check_branch_ends(g: Graph, rep: Reporter) -> None:
    for split in (n for n in g.nodes if n.kind == "split"):
        for branch in split.branches:
            end = branch[-1]
            if end.kind == "split":
                rep.error(f"a branch of `{split.name}` ends in the split `{end.name}`; a branch "
                          f"must end in a value that a merge reads", end.span)
            elif not end.consumers and end.kind not in ("unknown",):
                rep.error(f"a branch of `{split.name}` ends in `{end.name}`, which no merge reads",
                          end.span, f"merge it with `{{m, {end.alias or end.name}, additive}}`, "
                                    f"or remove the branch")


def _check_merge_targets(g: Graph, rep: Reporter) -> None:
    for m in g.nodes:
        t = m.target
        if m.kind != "merge" or t is None or t.kind in ("tap", "unknown"):
            continue
        is_branch_end = t.owner is not None and t.next is None
        node: ast.Merge = m.ast
        if t.kind == "split":
            rep.error(f"merge target `{t.name}` is a split, which has no value of its own",
                      node.target_span, f"tap the value before it with `[t, [v,]]` and merge `v`")
        elif not is_branch_end:
            where = "on the main chain" if t.on_main_chain else "inside a branch"
            rep.error(f"merge target `{t.name}` is a layer {where} that already has a successor; "
                      f"merge targets are branch ends or taps", node.target_span,
                      f"tap it with `[{t.name}_tap, [{t.name}_value,]]` right after `{t.name}` and "
                      f"merge `{t.name}_value`")


# --------------------------------------------------------------------------- widths

def widths(g: Graph, rep: Reporter) -> None:
    """Width of every value; merge operands must be equal; parameters bounded."""
    producers: dict[int, GNode] = {}

    def _producer(gn: GNode) -> GNode:
        """The node that computes the value a split or tap passes on (memoised: linear)."""
        return producers.get(id(gn), gn)

    for gn in g.nodes:  # text order: a predecessor always comes first
        if gn.kind in ("merge", "split", "tap") and gn.pred is not None:
            gn.width = gn.pred.width
        if gn.kind in ("split", "tap") and gn.pred is not None:
            producers[id(gn)] = producers.get(id(gn.pred), gn.pred)
    _parameters(g, rep)
    for gn in g.nodes:
        if gn.cells is not None and gn.kind in ("layer", "output") and gn.pred is not None \
                and gn.pred.width is not None and gn.pred.width % gn.cells:
            src = _producer(gn.pred).name
            rep.error(f"`cells {gn.cells}` splits the input of `{gn.name}` into {gn.cells} equal "
                      f"cells, but `{src}` gives width {gn.pred.width}, not a multiple of "
                      f"{gn.cells}", gn.cells_span,
                      f"use a cell count that divides {gn.pred.width}, or make `{src}` "
                      f"{gn.cells} × (features per cell) wide")
        if gn.energy is not None and gn.pred is not None and gn.pred.width is not None \
                and gn.pred.width != gn.energy.in_width:
            src = _producer(gn.pred).name
            first = gn.energy.layers[0]["name"]
            rep.error(f"the energy block `{gn.name}` takes width {gn.energy.in_width} (its first "
                      f"neuron layer `{first}`), but `{src}` gives width {gn.pred.width}",
                      gn.span, f"make `{src}` {gn.energy.in_width} wide, or resize `{first}`")
        if gn.struct is None or gn.pred is None or gn.pred.width is None:
            continue
        if gn.pred.width != gn.struct.in_width:
            src = _producer(gn.pred).name
            info = gn.struct
            what = ("one token id per cell" if "vocab" in info.options
                    else f"{info.in_width // info.options['dim']} "
                         f"{ {'column': 'columns', 'neuron': 'tokens'}.get(info.kind, 'cells')} × "
                         f"dim {info.options['dim']}")
            hint = (f"an embed reads token ids, not features: give it the model's input "
                    f"`({src}, {info.in_width})`" if info.kind == "embed" else
                    f"make `{src}` {info.in_width} wide, e.g. with a dense layer "
                    f"`({src}_to_{gn.name}, {info.in_width}, <linear>)` before `{gn.name}`")
            rep.error(f"`{gn.name}` ({describe(info)}) takes width {info.in_width} ({what}), but "
                      f"`{src}` gives width {gn.pred.width}", gn.ast.words[1].span, hint)
    for m in g.nodes:
        if m.kind != "merge" or m.target is None or m.width is None or m.target.width is None:
            continue
        if m.width != m.target.width:
            assert m.pred is not None  # a merge reads its chain predecessor
            src = _producer(m.pred).name
            rep.error(f"merge `{m.name}` combines `{src}` (width {m.width}) with "
                      f"`{m.ast.target}` (width {m.target.width}); merge operands must have "
                      f"equal widths", m.ast.target_span,
                      f"make `{src}` and `{m.ast.target}` the same width")


def _parameters(g: Graph, rep: Reporter) -> None:
    """Each dense layer's weights (width x input per cell) and the model's parameters in all
    are at most MAX_PARAMS (limits.py)."""
    total = 0
    for gn in g.nodes:
        params = 0
        if gn.kind in ("layer", "output") and gn.width is not None and gn.pred is not None \
                and gn.pred.width is not None:
            cells = gn.cells or 1
            units, fan_in = gn.width // cells, gn.pred.width // cells
            params = units * fan_in + units
            if params > MAX_PARAMS:
                rep.error(f"`{gn.name}` has {units} × {fan_in} weights; a node has at most "
                          f"{MAX_PARAMS} parameters", gn.ast.words[0].span,
                          "make the layer or its input narrower")
                return
        elif gn.struct is not None:
            params = gn.struct.params
        elif gn.energy is not None:
            params = gn.energy.params
        total += params
        if total > MAX_PARAMS:
            rep.error(f"the model has more than {MAX_PARAMS} parameters by `{gn.name}`",
                      gn.span, "make the model smaller")
            return


# --------------------------------------------------------------------------- delays

def _tree_children(gn: GNode) -> list[GNode]:
    kids = [b[0] for b in gn.branches if b]
    if gn.next is not None:
        kids.append(gn.next)
    return kids


def delays(g: Graph, rep: Reporter) -> None:
    """Mark delayed merge edges (MDL.md 2.1) and compute the execution order.

    The walk follows the text tree: a node's split branches in text order, then its main
    successor. Visiting a node `t`, each merge that reads `t` and is on the walk's stack
    (an ancestor of `t`, or `t` itself) closes a cycle: that edge is delayed.
    """
    if not g.main:
        return
    on_stack: set[int] = set()
    stack: list[tuple[GNode, list[GNode]]] = []

    def enter(gn: GNode) -> None:
        on_stack.add(id(gn))
        for m in gn.consumers:
            if id(m) in on_stack:
                m.delayed = True
        stack.append((gn, _tree_children(gn)[::-1]))

    enter(g.main[0])
    while stack:
        gn, todo = stack[-1]
        if todo:
            enter(todo.pop())
        else:
            stack.pop()
            on_stack.discard(id(gn))
    g.order = _schedule(g, rep)


def _schedule(g: Graph, rep: Reporter) -> list[GNode]:
    """Topological order of same-step edges, ties broken by text order."""
    deps: dict[int, list[GNode]] = {id(n): [] for n in g.nodes}
    users: dict[int, list[GNode]] = {id(n): [] for n in g.nodes}
    for n in g.nodes:
        srcs = [n.pred] if n.pred is not None else []
        if n.kind == "merge" and n.target is not None and not n.delayed:
            srcs.append(n.target)
        for s in srcs:
            deps[id(n)].append(s)
            users[id(s)].append(n)
    missing = {id(n): len(deps[id(n)]) for n in g.nodes}
    ready = [(n.index, n) for n in g.nodes if missing[id(n)] == 0]
    heapq.heapify(ready)
    order: list[GNode] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for u in users[id(n)]:
            missing[id(u)] -= 1
            if missing[id(u)] == 0:
                heapq.heappush(ready, (u.index, u))
    if len(order) != len(g.nodes):
        stuck = [n for n in g.nodes if missing[id(n)] > 0 and n.kind == "merge"
                 and n.target is not None and not n.delayed]
        for m in stuck:
            if missing[id(m.target)] > 0:
                rep.error(f"merge `{m.name}` reads `{m.ast.target}` in the same step, but "
                          f"`{m.ast.target}` itself depends on `{m.name}` in that step",
                          m.ast.target_span,
                          "no order computes both; read one of them through a tap on a path "
                          "that closes the cycle (a delayed edge)")
                break
    return order


# --------------------------------------------------------------------------- warnings

def lint(g: Graph, rep: Reporter) -> None:
    """Warnings: things that compile but are probably not what the author meant."""
    trained_before: Optional[set[int]] = None
    for gn in g.nodes:
        if gn.activation and gn.activation.name == "binary_step":
            if trained_before is None:
                trained_before = _after_trainable(g)
            if id(gn) in trained_before:
                rep.warn(f"`{gn.name}` uses binary_step, which passes no gradient: the layers "
                         f"before it will not learn through it", gn.ast.funcs[0].name_span)
    out = g.main[-1] if g.main else None
    if out is not None and out.kind == "output" and out.loss and out.activation:
        if out.loss.name == "cross_entropy" and out.activation.name not in ("softmax", "sigmoid"):
            rep.warn(f"cross_entropy expects probabilities, but `{out.name}` uses "
                     f"`{out.activation.name}`", out.ast.funcs[0].name_span,
                     "use `<softmax>` on the output")


def _after_trainable(g: Graph) -> set[int]:
    """ids of the nodes that read, through one or more edges (delayed ones too), the value of
    a node with parameters: one walk forward from all of those, so linear in the graph."""
    users: dict[int, list[GNode]] = {}
    for n in g.nodes:
        for src in (n.pred, n.target):
            if src is not None:
                users.setdefault(id(src), []).append(n)
    trainable = ("layer", "output", "energy") + STRUCT_KINDS
    todo = [n for n in g.nodes if n.kind in trainable]
    seen: set[int] = set()
    while todo:
        n = todo.pop()
        for u in users.get(id(n), ()):
            if id(u) not in seen:
                seen.add(id(u))
                todo.append(u)
    return seen
