"""Hostile IR (issue 16): IR documents mutated from every shipped model — numbers replaced by
0, -1, 0.5, huge or int32-overflowing values, keys dropped, types swapped — go to the engine
(compile_ir, build, predict) in a child process. Every one must give a typed error or a
working model: no signal, no untyped exception. The named reproducers of the issue run too."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mdl

MODELS = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.mdl"))
VALUES = [0, -1, 0.5, 2, 3, 1 << 31, 4294967304, 1e30, -1e30, "x", None, [], {}]

CHILD = r"""
import json, sys
import numpy as np
import neuromorph as nm
ok = typed = 0
for line in sys.stdin:
    doc = line.strip()
    if not doc:
        continue
    try:
        h = nm.compile_ir(doc, 2, 0.1)
        nm.seed(0)
        nm.build(h)
        w = nm.info(h)["input_width"]
        nm.predict(h, np.zeros((2, w)))
        nm.release(h)
        ok += 1
    except nm.NeuromorphError:
        typed += 1
    except MemoryError:
        typed += 1
print(json.dumps({"ok": ok, "typed": typed}))
"""


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("source",):
                continue
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _set(doc, path, value, drop=False):
    d = doc
    for p in path[:-1]:
        d = d[p]
    if drop and isinstance(d, dict):
        del d[path[-1]]
    else:
        d[path[-1]] = value


def hostile_documents(n, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    bases = []
    for path in MODELS:
        ir = mdl.compile_file(path, warn=False).doc
        ir["source"] = {"file": "", "text": "", "sha256": ""}  # keep the lines short
        bases.append(ir)
    while len(docs) < n:
        base = bases[rng.integers(len(bases))]
        doc = json.loads(json.dumps(base))
        leaves = list(_leaves(doc))
        for _ in range(int(rng.integers(1, 4))):
            path = leaves[rng.integers(len(leaves))]
            if rng.random() < 0.15:
                _set(doc, path, None, drop=True)
            else:
                _set(doc, path, VALUES[rng.integers(len(VALUES))])
            leaves = list(_leaves(doc))
        docs.append(json.dumps(doc))
    return docs


def _struct(name, **opts):
    """Mutator: set options of the first node of structured kind `name`."""
    def go(d):
        node = next(n for n in d["nodes"] if n.get("struct", {}).get("kind") == name)
        node["struct"]["options"].update(opts)
    return go


def _energy(mutate):
    def go(d):
        mutate(next(n for n in d["nodes"] if n["kind"] == "energy")["energy"])
    return go


REPRODUCERS = {  # (model file, mutation): the crashes issue 16 lists
    "uniform without parameters": ("readme-model", lambda d: d["header"].update(
        weight_init={"name": "uniform", "params": []})),
    "width 4294967304": ("readme-model", lambda d: d["nodes"][1].update(width=4294967304)),
    "attn2d heads 0": ("grid-model", _struct("attn2d", heads=0)),
    "attn2d dim 0": ("grid-model", _struct("attn2d", dim=0)),
    "attn2d window -3": ("grid-model", _struct("attn2d", window=-3)),
    "attn2d vocab -1": ("grid-model", _struct("attn2d", vocab=-1)),
    "neuron sections 0": ("neuron-model", _struct("neuron", sections=0)),
    "neuron sections 0.5": ("neuron-model", _struct("neuron", sections=0.5)),
    "neuron shape overflow": ("neuron-model", lambda d: next(
        n for n in d["nodes"] if n["kind"] == "neuron")["struct"].update(shape=[1 << 30])),
    "column in 2^31": ("column-model", _struct("column", **{"in": 2 ** 31})),
    "column out 2^40": ("column-model", _struct("column", out=2 ** 40)),
    "energy synapse without refs": ("energy-model", _energy(
        lambda e: e["synapses"][0].update(refs=[]))),
    "energy out naming no layer": ("energy-model", _energy(
        lambda e: e["options"].update(out=["nowhere"]))),
}


def _run(docs):
    r = subprocess.run([sys.executable, "-c", CHILD], input="\n".join(docs), text=True,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, f"the engine died (rc {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_hostile_ir_documents_give_typed_errors_only():
    docs = hostile_documents(1000)
    out = _run(docs)
    assert out["ok"] + out["typed"] == len(docs)
    assert out["typed"] > 500  # most mutations are refused


def test_named_reproducers():
    docs = []
    for name, (model, mutate) in REPRODUCERS.items():
        doc = mdl.compile_file(MODELS[0].parent / f"{model}.mdl", warn=False).doc
        mutate(doc)
        docs.append(json.dumps(doc))
    out = _run(docs)  # one child for all: a signal in any of them fails the test
    assert out == {"ok": 0, "typed": len(REPRODUCERS)}
