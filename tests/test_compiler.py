"""The compiler on valid input: every construct and function, the example models' wiring."""
import json
import warnings
from pathlib import Path

import pytest

import mdl
from mdl.functions import ACTIVATIONS, BIAS_INITS, LOSSES, WEIGHT_INITS

MODELS = Path(__file__).resolve().parents[1] / "models"


def delayed_edges(ir):
    return {(e["from"], e["to"]) for e in ir.edges() if e["delayed"]}


def node_inputs(ir, name):
    return [(i["node"], i["delayed"]) for i in ir.node(name)["inputs"]]


def compile_quiet(text, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mdl.compile_text(text, **kw)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_activation(act):
    ir = compile_quiet(f"/xavier,zero/ (x, 3) (h, 5, <{act}>) (y, 2, <{act}>, <mse>)")
    assert ir.node("h")["activation"]["name"] == act
    assert len(ir.node("h")["activation"]["params"]) == len(ACTIVATIONS[act].params)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss(loss):
    ir = compile_quiet(f"/xavier,zero/ (x, 3) (y, 2, <softmax>, <{loss}>)")
    assert ir.node("y")["loss"]["name"] == loss


@pytest.mark.parametrize("w", ["xavier", "he", "lecun", "uniform -0.1 0.1", "normal 0 0.05",
                               "orthogonal", "orthogonal 2"])
@pytest.mark.parametrize("b", ["zero", "const_flat 0.1", "const_uneven 0.1 0.5"])
def test_every_initialiser(w, b):
    ir = mdl.compile_text(f"/{w},{b}/ (x, 3) (y, 2, <linear>, <mse>)")
    h = ir.doc["header"]
    assert h["weight_init"]["name"] == w.split()[0]
    assert h["bias_init"]["name"] == b.split()[0]
    assert len(h["weight_init"]["params"]) == len(WEIGHT_INITS[w.split()[0]].params)
    assert len(h["bias_init"]["params"]) == len(BIAS_INITS[b.split()[0]].params)


def test_defaults_are_filled_in():
    ir = mdl.compile_text("/orthogonal,zero/ (x, 3) (h, 4, <relu_leaky>) (a, 4, <elu, 0.5>)"
                          "(y, 1, <swish>, <huber>)")
    assert ir.doc["header"]["weight_init"]["params"] == [1.0]
    assert ir.node("h")["activation"]["params"] == [0.01]
    assert ir.node("a")["activation"]["params"] == [0.5]
    assert ir.node("y")["activation"]["params"] == [1.0]
    assert ir.node("y")["loss"]["params"] == [1.0]


@pytest.mark.parametrize("num,value", [("1", 1.0), ("-0.5", -0.5), ("+2", 2.0), (".25", 0.25),
                                       ("5.", 5.0), ("1e-3", 1e-3), ("-2.5E+1", -25.0)])
def test_number_forms(num, value):
    ir = mdl.compile_text(f"/uniform -100 100,const_flat {num}/ (x,1)(y,1,<linear>,<mse>)")
    assert ir.doc["header"]["bias_init"]["params"] == [value]


def test_whitespace_comments_crlf_tabs():
    text = ("# leading comment\r\n/xavier ,\tzero/ # header\r\n\t(input,4)#c\r\n"
            "(a ,4,< relu >)\r\n\r\n(output , 2 , <sigmoid> , <mse>)   # end")
    ir = mdl.compile_text(text)
    assert [n["name"] for n in ir.nodes] == ["input", "a", "output"]
    ir2 = mdl.compile_text("/xavier,zero/(input,4)(a,4,<relu>)(output,2,<sigmoid>,<mse>)")
    assert [n["width"] for n in ir.nodes] == [n["width"] for n in ir2.nodes]


def test_small_model_wiring():
    ir = mdl.compile_file(MODELS / "small-model.mdl", warn=False)
    assert node_inputs(ir, "gate") == [("input", False), ("link", True)]
    assert delayed_edges(ir) == {("link", "gate")}
    assert ir.recurrent
    assert node_inputs(ir, "a") == [("gate", False)]
    assert ir.node("recur") is ir.node("link")


def test_big_model_wiring():
    ir = mdl.compile_file(MODELS / "big-model.mdl")
    assert delayed_edges(ir) == {("g", "c2")}
    # standby reads stalerecur (tap of f) in the same step, though it is written later.
    assert node_inputs(ir, "standby") == [("d", False), ("stale", False)]
    assert ir.node("stale")["alias"] == "stalerecur"
    assert node_inputs(ir, "c1") == [("c", False), ("e", False)]
    assert node_inputs(ir, "c") == [("b1", False)]
    order = ir.doc["order"]
    assert order.index("stale") < order.index("standby") < order.index("e") < order.index("c1")
    assert ir.node("output")["loss"] == {"name": "huber_modified", "params": []}


def test_gated_model_wiring():
    ir = mdl.compile_file(MODELS / "gated-model.mdl")
    assert delayed_edges(ir) == {("doubleforget", "gate")}
    assert node_inputs(ir, "forget") == [("link", False)]
    assert node_inputs(ir, "output") == [("link", False)]
    assert ir.node("b")["activation"] == {"name": "swish", "params": [5.9]}


def test_lstm_model_wiring():
    ir = mdl.compile_file(MODELS / "lstm-model.mdl")
    assert delayed_edges(ir) == {("last", "a"), ("prevstate", "state0")}
    assert node_inputs(ir, "a") == [("input", False), ("last", True)]
    assert node_inputs(ir, "pi") == [("process", False), ("include", False)]
    assert node_inputs(ir, "state0") == [("forget", False), ("prevstate", True)]
    assert node_inputs(ir, "state1") == [("state0", False), ("pi", False)]
    assert node_inputs(ir, "lastc") == [("statep", False), ("add", False)]
    for gate in ("include", "process", "add", "forget"):
        assert node_inputs(ir, gate)[0][0] in ("b",)
    assert ir.node("forget")["inputs"] == [{"node": "b", "delayed": False}]


def test_readme_model():
    ir = mdl.compile_file(MODELS / "readme-model.mdl")
    assert [(n["name"], n["width"]) for n in ir.nodes] == [("input", 128), ("a", 256), ("output", 4)]
    assert not ir.recurrent


def test_self_merge_is_an_accumulator():
    ir = mdl.compile_text("/xavier,zero/ (x, 2) [s, (p, 2, <linear>) {acc, acc, additive}]"
                          "{m, acc, average} (y, 2, <linear>, <mse>)")
    assert delayed_edges(ir) == {("acc", "acc")}


def test_merge_reads_tap_by_either_name_and_taps_feed_several_merges():
    ir = mdl.compile_text("/xavier,zero/ (x, 2) [t, [v,]] (h, 2, <tanh>) {m1, v, additive}"
                          "{m2, t, multiplicative} (y, 2, <linear>, <mse>)")
    assert node_inputs(ir, "m1") == [("h", False), ("t", False)]
    assert node_inputs(ir, "m2") == [("m1", False), ("t", False)]
    assert not ir.recurrent


def test_warnings_do_not_fail():
    with pytest.warns(mdl.MDLWarning, match="binary_step"):
        ir = mdl.compile_text("/xavier,zero/ (x,2)(h,3,<tanh>)(b,3,<binary_step>)(y,1,<linear>,<mse>)")
    assert any("binary_step" in w.message for w in ir.warnings)
    with pytest.warns(mdl.MDLWarning, match="ignored"):
        mdl.compile_text("/xavier,zero/ (x,2)(y,1,<relu, 5.9>,<mse>)")


def test_ir_is_deterministic_and_round_trips():
    text = (MODELS / "lstm-model.mdl").read_text()
    a, b = mdl.compile_text(text, "m.mdl").to_json(), mdl.compile_text(text, "m.mdl").to_json()
    assert a == b
    doc = json.loads(a)
    assert doc["format"] == mdl.IR_FORMAT and doc["version"] == mdl.IR_VERSION
    assert mdl.load_ir(a).doc == doc
    assert sorted(doc["order"]) == sorted(n["name"] for n in doc["nodes"])


def test_load_ir_rejects_other_versions():
    doc = mdl.compile_text("/xavier,zero/ (x,1)(y,1,<linear>,<mse>)").doc
    with pytest.raises(ValueError, match="version"):
        mdl.load_ir(dict(doc, version=99))
    with pytest.raises(ValueError, match="format"):
        mdl.load_ir({"nodes": []})


@pytest.mark.parametrize("stage", mdl.STAGES)
def test_every_stage_can_be_emitted(stage):
    out = mdl.compile_file(MODELS / "big-model.mdl", stop_after=stage)
    text = out.to_json() if stage == "ir" else json.dumps(out)
    assert "standby" in text
    if stage == "delays":
        assert {n["name"]: n.get("delayed") for n in out["nodes"]}["c2"] is True


def test_dot_draws_delayed_edges_dashed():
    dot = mdl.to_dot(mdl.compile_file(MODELS / "lstm-model.mdl"))
    assert dot.startswith("digraph")
    assert '"last" -> "a" [style=dashed' in dot
    assert '"prevstate" -> "state0" [style=dashed' in dot
    assert '"include" -> "pi"' in dot and '"include" -> "pi" [style=dashed' not in dot
