"""Property tests: random text from the grammar and random valid models."""
import json
import warnings

import lark
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

import mdl
from mdl.parser import grammar_text

from conftest import examples  # derandomized in CI; NEUROMORPH_HYPOTHESIS=random for more

_GRAMMAR = lark.Lark(grammar_text(), parser="lalr", start="start")
_NAMES = st.sampled_from(["a", "b", "x", "input", "out", "g1", "recur", "sigmoid", "mse", "s"])
_TERMINALS = {
    "NAME": _NAMES,
    "NUMBER": st.sampled_from(["0", "1", "4", "-3", "2.5", ".5", "1e-3", "16"]),
    "SHAPE": st.sampled_from(["8x8", "2x3x4"]),
}


@settings(max_examples=examples(300), suppress_health_check=list(HealthCheck))
@given(from_lark(_GRAMMAR, explicit=_TERMINALS))
def test_grammar_text_compiles_or_raises_mdlerror(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ir = mdl.compile_text(text)
        except mdl.MDLError as e:
            assert e.diagnostics and all(d.line >= 1 for d in e.diagnostics)
            return
    assert mdl.load_ir(json.loads(ir.to_json())).doc == ir.doc


ACTS = ["sigmoid", "tanh", "relu", "linear", "swish", "gelu", "elu", "softmax", "relu_leaky, 0.1"]


@st.composite
def valid_models(draw):
    """A random valid model: layers, splits whose branches merge back, taps, delayed merges."""
    width = draw(st.integers(1, 6))
    lines, counter = ["/xavier,zero/", f"(input, {width})"], [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    pending_delayed = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["layer", "split", "tap", "delayed"]))
        if kind == "layer":
            lines.append(f"({fresh('l')}, {width}, <{draw(st.sampled_from(ACTS))}>)")
        elif kind == "split":
            s, ends = fresh("s"), []
            branches = []
            for _ in range(draw(st.integers(1, 3))):
                n = draw(st.integers(1, 3))
                names = [fresh("b") for _ in range(n)]
                branches.append(" ".join(f"({nm}, {width}, <{draw(st.sampled_from(ACTS))}>)"
                                         for nm in names))
                ends.append(names[-1])
            lines.append(f"[{s}, " + " | ".join(branches) + "]")
            for e in ends:
                op = draw(st.sampled_from(["additive", "multiplicative", "average"]))
                lines.append(f"{{{fresh('m')}, {e}, {op}}}")
        elif kind == "tap":
            t = fresh("t")
            lines.append(f"[{t}, [{t}v,]]")
            lines.append(f"{{{fresh('m')}, {t}v, additive}}")
        else:
            m, t = fresh("m"), fresh("t")
            lines.append(f"{{{m}, {t}v, additive}}")
            pending_delayed.append(t)
    for t in pending_delayed:
        lines.append(f"[{t}, [{t}v,]]")
    lines.append(f"(output, {draw(st.integers(1, 4))}, <sigmoid>, <mse>)")
    return "\n".join(lines), len(pending_delayed)


@settings(max_examples=examples(200))
@given(valid_models())
def test_valid_models_compile_and_round_trip(model):
    text, n_delayed = model
    ir = mdl.compile_text(text)
    doc = json.loads(ir.to_json())
    assert doc == ir.doc == mdl.compile_text(text).doc
    assert sum(e["delayed"] for e in doc["edges"]) == n_delayed
    assert doc["recurrent"] == (n_delayed > 0)
    # The order is a topological order of the same-step edges.
    pos = {name: i for i, name in enumerate(doc["order"])}
    for e in doc["edges"]:
        if not e["delayed"]:
            assert pos[e["from"]] < pos[e["to"]]
