"""Graphviz `dot` text of a compiled model: delayed edges dashed, branches clustered."""
from __future__ import annotations

from typing import Any

from .ir import IR

_SHAPES = {"input": "invhouse", "output": "house", "layer": "box", "merge": "circle",
           "split": "triangle", "tap": "cds", "attn2d": "box3d", "column": "box3d", "neuron": "box3d",
           "energy": "doubleoctagon", "embed": "component", "pool": "trapezium"}


def _label(n: dict[str, Any]) -> str:
    if n["kind"] in ("layer", "output"):
        width = (f"{n['cells']} cells x {n['width'] // n['cells']}" if n.get("cells")
                 else str(n["width"]))
        text = f"{n['name']}\\n{width} {n['activation']['name']}"
        return text + (f"\\n{n['loss']['name']}" if "loss" in n else "")
    if "struct" in n:
        st = n["struct"]
        shape = "x".join(map(str, st["shape"]))
        return f"{n['name']}\\n{st['kind']} {shape}\\ndim {st['options']['dim']}"
    if "energy" in n:
        en = n["energy"]
        return (f"{n['name']}\\nenergy, {len(en['layers'])} layers, {len(en['synapses'])} "
                f"synapses\\n{en['options']['steps']} steps")
    if n["kind"] == "merge":
        return f"{n['name']}\\n{n['op']}"
    if n["kind"] == "tap":
        return f"{n['name']}\\n[{n['alias']}]"
    return f"{n['name']}\\n{n['width']}"


def to_dot(ir: IR) -> str:
    lines = ["digraph mdl {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for n in ir.nodes:
        lines.append(f'  "{n["name"]}" [label="{_label(n)}", shape={_SHAPES[n["kind"]]}];')
    for e in ir.edges():
        attrs = []
        if e["delayed"]:
            attrs += ["style=dashed", 'label="t-1"', "constraint=false"]
        elif e["kind"] == "merge":
            attrs.append("color=gray40")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f'  "{e["from"]}" -> "{e["to"]}"{suffix};')
    lines.append("}")
    return "\n".join(lines) + "\n"
