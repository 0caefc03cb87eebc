"""The compiler's tables and the engine's agree, both ways: every name the compiler can write
into the IR is one the engine reads (node kinds, activations, losses, merges, initialisers,
Lagrangians, synapse kinds, poolings), every name the engine reads is one the compiler writes,
and every structured kind has its engine unit registered (core/struct_node.h)."""
from __future__ import annotations

import json
import pathlib
import warnings

import pytest

from mdl import compile_file, dot, energy, functions, ir, structs
from neuromorph import _core

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENGINE = _core.tables()

# Names the compiler writes that are not user-facing table entries (and the reverse): each
# with its reason. Nothing else may differ.
INTERNAL = {
    # attn2d/column MLPs use the exact GELU; the user's `gelu` is the tanh form (passes.py)
    "activations": {"gelu_erf"},
}
ALIASES = {
    # `identity` is written as `linear`; `relu_parametric` is the engine's leaky form
    "lagrangians": {"identity": None, "relu_parametric": "relu_leaky"},
}

PYTHON = {
    "node_kinds": set(ir.NODE_KINDS),
    "activations": set(functions.ACTIVATIONS),
    "losses": set(functions.LOSSES),
    "merges": set(functions.MERGE_OPS),
    "weight_inits": set(functions.WEIGHT_INITS),
    "bias_inits": set(functions.BIAS_INITS),
    "lagrangians": set(energy.LAGRANGIANS),
    "synapses": set(energy.SYNAPSES),
    "pools": set(energy.SYNAPSES["conv"][1]["pool"].choices),
}


@pytest.mark.parametrize("table", sorted(PYTHON))
def test_compiler_and_engine_tables_agree(table):
    engine = set(ENGINE[table])
    python = PYTHON[table] | INTERNAL.get(table, set())
    for alias, target in ALIASES.get(table, {}).items():
        python.discard(alias)
        assert target is None or target in engine, f"{alias} -> {target}"
    assert python - engine == set(), f"the compiler writes {table} the engine does not read"
    assert engine - python == set(), f"the engine reads {table} the compiler never writes"
    assert len(ENGINE[table]) == len(engine), f"a name twice in the engine's {table}"


def test_every_structured_kind_is_registered_in_the_engine():
    struct = set(structs.STRUCT_KINDS) | {"energy"}
    assert set(ENGINE["registered_kinds"]) == struct
    assert struct <= set(ENGINE["node_kinds"])


def test_the_graph_drawing_knows_every_kind():
    assert set(dot._SHAPES) == set(ir.NODE_KINDS)


def test_shipped_models_use_only_names_the_engine_reads():
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted((ROOT / "models").glob("*.mdl")) + sorted(
                (ROOT / "tests" / "gpu_models").glob("*.mdl")):
            doc = json.loads(compile_file(path).to_json())
            seen |= {n["kind"] for n in doc["nodes"]}
    assert seen <= set(ENGINE["node_kinds"])
    assert seen >= {"input", "layer", "output", "attn2d", "column", "neuron", "energy"}
