"""What makes a model a causal token model: `sequence_spec` reads the cells and vocabulary
off an IR document (MDL.md section 7) and says what is missing when a model does not fit.

Shared by `neuromorph.generate` (sampling) and `neuromorph.text` (bits per character); it
only reads the IR dict and calls nothing in the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Optional

from .errors import ShapeError

__all__ = ["SequenceSpec", "sequence_spec"]

_NEEDS = ("generate needs a causal token model: the input feeds only an `embed` node (or an "
          "`attn2d` with `vocab`) over C cells, and the output is `(y, V, cells C, <softmax>, "
          "...)` with V the embed's vocab")


@dataclass(frozen=True)
class SequenceSpec:
    """What generation needs to know of a token model."""
    cells: int     # C: ids per sample, one per cell
    vocab: int     # V: the ids read (0 .. V-1) and the softmax width per cell
    embed: str     # the node that reads the ids
    output: str    # the output node


def sequence_spec(doc: dict[str, Any]) -> SequenceSpec:
    """The (cells, vocab) of a causal token model's IR document; ShapeError if it is not one.

    Checked: not recurrent; every node reading the input holds one id per cell (`embed`, or
    `attn2d` with `vocab`) over all C input values; the output has `cells C`, a softmax, and
    per-cell width equal to the vocabulary; no node mixes later cells into earlier ones
    (`attn2d` needs `mask raster`, `neuron` needs `causal 1`; `column`, `energy`, mixing
    `pool`s and dense layers without `cells` are refused).
    """
    if doc.get("recurrent"):
        raise ShapeError("generate needs a non-recurrent model; this one has delayed edges")
    nodes = {n["name"]: n for n in doc["nodes"]}
    x = nodes[doc["input"]]
    readers = [n for n in doc["nodes"] if any(i["node"] == x["name"] for i in n["inputs"])]
    vocab, C, embed = None, x["width"], None
    for n in readers:
        st = n.get("struct") or {}
        v = (st.get("options") or {}).get("vocab")
        if n["kind"] not in ("embed", "attn2d") or v is None:
            raise ShapeError(f"{_NEEDS}; node `{n['name']}` ({n['kind']}) reads the input "
                             f"as numbers, not token ids")
        cells = math.prod(st["shape"])
        if cells != C:
            raise ShapeError(f"{_NEEDS}; `{n['name']}` has {cells} cells but the input has "
                             f"{C} values")
        vocab = int(v) if vocab is None else min(vocab, int(v))
        embed = embed or n["name"]
    if embed is None:
        raise ShapeError(f"{_NEEDS}; nothing reads the input `{x['name']}`")
    out = nodes[doc["output"]]
    act = (out.get("activation") or {}).get("name")
    if out.get("cells") != C:
        raise ShapeError(f"{_NEEDS}; the output `{out['name']}` has no `cells {C}`"
                         + (f" (it has cells {out['cells']})" if out.get("cells") else ""))
    if act != "softmax":
        raise ShapeError(f"{_NEEDS}; the output `{out['name']}` has <{act}>, not <softmax>")
    per_cell = out["width"] // C
    if per_cell != vocab:
        raise ShapeError(f"{_NEEDS}; the output predicts {per_cell} ids per cell but "
                         f"`{embed}` reads a vocabulary of {vocab}")
    if C > 1:
        for n in doc["nodes"]:
            why = _mixes_cells(n)
            if why:
                raise ShapeError(f"generate needs a causal model (each cell sees only itself and "
                                 f"earlier cells); `{n['name']}` {why}")
    assert vocab is not None and embed is not None  # a reader of the input was found
    return SequenceSpec(cells=C, vocab=vocab, embed=embed, output=out["name"])


def _mixes_cells(node: dict[str, Any]) -> Optional[str]:
    """Why a node lets later cells reach earlier ones, or None."""
    kind = node["kind"]
    opts = (node.get("struct") or {}).get("options") or {}
    if kind == "attn2d" and opts.get("mask") != "raster":
        return "attends to every neighbour: give it `mask raster`"
    if kind == "neuron" and not opts.get("causal"):
        return "attends to every token: give it `causal 1`"
    if kind == "column":
        return "(a column sheet) attends across all cells"
    if kind == "energy":
        return "(an energy block) couples all of its units"
    if kind == "pool" and opts.get("op") != "first":
        return f"pools cells with op {opts.get('op')}"
    if kind == "layer" and not node.get("cells"):
        return "is a dense layer over all cells: give it `cells C` to make it position-wise"
    return None
