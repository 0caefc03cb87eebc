"""The compiler on hostile text: only a located `MDLError` or success, bounded numbers in the IR.

* Every crash of issue 16 (and of the fuzzing since) as a named regression case.
* Mutations of the shipped models (tests/fuzz/mdl_fuzz.py: characters, tokens, numbers that
  are huge, tiny, negative or fractional, names, options, nesting, repetition) and text from
  the grammar with hostile numbers: the oracle of `mdl_fuzz.check` (only MDLError or success,
  located and printable errors, a JSON-safe IR whose numbers fit the engine) and the fast
  parser agreeing with Lark's.

Derandomized in CI (tests/conftest.py): about 2 250 texts in all, ~40 s. The long run is opt-in:
`NEUROMORPH_HYPOTHESIS=random` (ten times the examples, random), or
`python tests/fuzz/run_compiler_fuzz.py` (20 000 seeded texts and a summary; docs/testing.md).
"""
import json
import warnings

import lark
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.lark import from_lark

import mdl
from mdl.limits import MAX_NESTING
from mdl.parser import grammar_text

from conftest import examples
from fuzz.mdl_fuzz import NAMES, NUMBERS, check, run_one, same_parse

H = "/xavier, zero/\n(x, 4)\n"
OUT = "(y, 1, <linear>, <mse>)\n"
BIG = "9" * 5000  # over Python's 4 300-digit limit for int(str)


def _energy(size, extra=""):
    return (H + f"[e, energy{extra}, (v, {size}, <tanh>) (l, 4, <softmax>) "
            f"(s, synapse dense, v l)]\n" + OUT)


# (text, (line, col) of the first error, a fragment of its message)
REGRESSIONS = {
    # issue 16, item 3: non-MDLError exceptions
    "dim_1e999_overflow": (H + "(g, attn2d, 2x2, dim 1e999)\n" + OUT, (3, 22), "`dim` is at most"),
    "energy_size_8e0": (_energy("8e0"), (3, 17), "a neuron layer's size is a width or a shape"),
    "energy_size_4e9": (_energy("4e9"), (3, 17), "a neuron layer's size is a width or a shape"),
    "width_5000_digits": (H + f"(a, {BIG}, <relu>)\n" + OUT, (3, 5), "the largest width is"),
    "option_5000_digits": (H + f"(g, attn2d, 2x2, dim {BIG})\n" + OUT, (3, 22), "`dim` is at most"),
    "shape_5000_digits": (H + f"(g, attn2d, {BIG}x2, dim 4)\n" + OUT, (3, 13), "cells; the most"),
    "cells_5000_digits": (H + f"(a, 4, cells {BIG}, <relu>)\n" + OUT, (3, 14), "is more than"),
    "energy_size_5000_digits": (_energy(BIG), (3, 17), "bad layer size"),
    "energy_steps_5000_digits": (_energy("4", f", steps {BIG}"), (3, 19), "`steps` is at most"),
    "init_param_5000_digits": (f"/uniform 0 {BIG}, zero/\n(x, 4)\n" + OUT, (1, 12), "out of range"),
    "splits_nested_250": (H + "".join(f"[s{i}, (a{i}, 4, <relu>) " for i in range(250))
                          + "]" * 250 + "\n" + OUT,
                          (3, 1 + len("".join(f"[s{i}, (a{i}, 4, <relu>) "
                                              for i in range(MAX_NESTING)))),
                          f"nested more than {MAX_NESTING} deep"),
    "lone_surrogate_comment": (H + "# \ud800\n" + OUT, (3, 3), "lone surrogate"),
    "lone_surrogate_in_name": (H + "(a\udfff, 4, <relu>)\n" + OUT, (3, 3), "lone surrogate"),
    # issue 16, item 4: accepted, but the engine cannot run it
    "relu_leaky_1e999": (H + "(a, 4, <relu_leaky, 1e999>)\n" + OUT, (3, 21), "out of range"),
    "vocab_4294967300": (H + "(g, attn2d, 2x2, dim 4, vocab 4294967300)\n" + OUT, (3, 31),
                         "`vocab` is at most 16777216"),
    "units_3000000000": (H + "[e, energy, (v, 4, <tanh>) (l, 4, <softmax>) "
                         "(s, synapse hidden, v l, units 3000000000)]\n" + OUT, (3, 77),
                         "`units` is at most 16777216"),
    "uniform_1e300": ("/uniform 0 1e300, zero/\n(x, 4)\n" + OUT, (1, 12), "out of range"),
    # the same family, found while bounding
    "swish_tiny_beta": (H + "(a, 4, <swish, 1e-40>)\n" + OUT, (3, 16), "is too small"),
    "normal_std_1e7": ("/normal 0 1e7, zero/\n(x, 4)\n" + OUT, (1, 11), "out of range"),
    "column_sigma_1e999": (H + "(c, column, 2x2, dim 1, sigma 1e999)\n" + OUT, (3, 31),
                           "`sigma` is out of range"),
    "attn2d_window_overflows_int": (H + "(g, attn2d, 2x2, dim 4, window 1000000000)\n" + OUT,
                                    (3, 32), "`window` is at most 64"),
    "attn2d_values_per_sample": (H + "(g, attn2d, 1024x1024, dim 64, window 8)\n" + OUT,
                                 (3, 13), "values per sample"),
    "attn2d_mlp_too_wide": (H + "(g, attn2d, 64x64, dim 64, mlp 100000)\n" + OUT, (3, 28),
                            "is an MLP of 6400000 units"),
    "column_too_many_columns": (H + "(c, column, 300x300, dim 1)\n" + OUT, (3, 13),
                                "values per sample"),
    "embed_table_too_big": ("/xavier, zero/\n(x, 4)\n(e, embed, 4, vocab 16777216, dim 256)\n"
                            + OUT, (3, 12), "parameters; the most is 2147483647"),
    "neuron_too_many_neurons": (H + "(n, neuron, 1, dim 4, neurons 2000000000)\n" + OUT,
                                (3, 31), "`neurons` is at most 4096"),
    "neuron_values_per_sample": (H + "(n, neuron, 1024, dim 1024)\n" + OUT, (3, 13),
                                 "values per sample"),
    "cells_times_width": (H + "(a, 16777216, cells 1024, <relu>)\n" + OUT, (3, 15),
                          "values; the most is 67108864"),
    "dense_weights_too_many": ("/xavier, zero/\n(x, 16777216)\n(a, 16777216, <relu>)\n" + OUT,
                               (3, 5), "weights; a node has at most"),
    "model_parameters_in_all": ("/xavier, zero/\n(x, 40000)\n"
                                + "".join(f"(a{i}, 40000, <relu>)\n" for i in range(2))
                                + OUT, (4, 2), "the model has more than 2147483647 parameters"),
    "energy_steps_times_layers": (_energy("4000", ", steps 10000"), (3, 2), "values per sample"),
    "energy_dense_product": (H + "[e, energy, (v, 4000, <tanh>) (w, 4000, <tanh>) "
                             "(u, 4000, <tanh>) (s, synapse dense, v w u)]\n" + OUT, (3, 68),
                             "parameters; the most is 2147483647"),
    "conv_pad_not_below_kernel": (H + "[e, energy, (v, 4x4x1, <tanh>) (w, 2x2x1, <tanh>) "
                                  "(k, synapse conv, v w, kernel 1, pad 1, stride 3)]\n" + OUT,
                                  (3, 69), "is not less than `kernel 1`"),
    "duplicate_energy_layer_then_conv": (
        "/xavier, zero/\n(x, 48)\n[e, energy, (a, 4x4x3, <tanh>) (b, 2x2x3, <relu>) "
        "(b, 22x3, <relu>) (c, 8, <tanh>) (k, synapse conv, a b, kernel 3, stride 2, pad 1)]\n"
        + OUT,
        (3, 52), "`b` is already defined"),
    "nul_character": (H + "(a, 4, <relu>)\x00\n" + OUT, (3, 15), "unexpected character U+0000"),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name):
    text, (line, col), fragment = REGRESSIONS[name]
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_text(text, "r.mdl", warn=False)
    e = info.value
    assert (e.line, e.col) == (line, col), str(e)[:2000]
    assert fragment in e.diagnostics[0].message, str(e)[:2000]
    assert str(e).startswith(f"r.mdl:{line}:{col}: error: ")
    str(e).encode("utf-8")  # printable, even for a surrogate in the source
    assert check(text) == "error"


def test_nesting_at_the_bound_compiles_and_one_more_does_not():
    def nested(depth):
        body = "(deep, 4, <relu>)"
        for i in reversed(range(depth)):  # split i's branch: split i+1, then its end e_i
            body = f"[s{i}, {body} (e{i}, 4, <relu>)]"
        merges = "".join(f"{{m{i}, e{i}, additive}}\n" for i in range(depth))
        return H + body + "\n" + merges + OUT
    ir = mdl.compile_text(nested(MAX_NESTING), warn=False)
    assert ir.node("deep")["branch"] == {"split": f"s{MAX_NESTING - 1}", "index": 0}
    assert check(nested(MAX_NESTING)) == "ok"
    with pytest.raises(mdl.MDLError, match=f"nested more than {MAX_NESTING} deep"):
        mdl.compile_text(nested(MAX_NESTING + 1), warn=False)


def test_bounds_are_inclusive():
    """The largest values the bounds allow compile (and their IR holds them exactly)."""
    ir = mdl.compile_text("/uniform -1e6 1e6, const_flat 1e-30/\n(x, 4)\n"
                          "(a, 4, <relu_leaky, -1e6>)\n(n, neuron, 1, dim 4, seed 2147483647)\n"
                          "(y, 16777216, <linear>, <mse>)\n", warn=False)
    assert ir.doc["header"]["weight_init"]["params"] == [-1e6, 1e6]
    assert ir.node("n")["struct"]["options"]["seed"] == 2147483647
    assert ir.node("y")["width"] == 1 << 24
    json.dumps(ir.doc, allow_nan=False)


def test_a_file_that_is_not_utf8_is_a_located_error(tmp_path):
    path = tmp_path / "latin1.mdl"
    path.write_bytes(b"/xavier, zero/\n(x, 4) # caf\xe9\n" + OUT.encode())
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_file(path, warn=False)
    assert (info.value.line, info.value.col) == (2, 13)
    assert "not UTF-8 text: byte 0xe9" in str(info.value)


def test_form_feed_and_lone_cr_count_lines_as_the_parser_does():
    """Lines end at "\\n" only (as Lark counts them): a form feed or a lone "\\r" on an
    earlier line does not shift the location or the snippet of a later error."""
    text = "/xavier, zero/\x0c(x, 4)\r(a, 4, <sigmod>)\n(y, 1, <linear>, <mse>)\n"
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_text(text, "m.mdl", warn=False)
    lines = str(info.value).splitlines()
    assert lines[0] == "m.mdl:1:31: error: unknown activation `sigmod`"
    assert lines[1] == " 1 | /xavier, zero/\ufffd(x, 4)\ufffd(a, 4, <sigmod>)"
    assert lines[2].index("^") == lines[1].index("sigmod")


def test_snippets_of_long_lines_are_windows():
    """A model on one line with an error per node: each snippet is a bounded window around its
    span (so the message grows linearly with the errors, not with errors x line length)."""
    text = H.replace("\n", " ") + " ".join(f"(l{i}, 4, <relux>)" for i in range(2000)) + " " + OUT
    with pytest.raises(mdl.MDLError) as info:
        mdl.compile_text(text, warn=False)
    assert len(info.value.diagnostics) == 2000
    lines = str(info.value).splitlines()
    assert max(map(len, lines)) < 200
    snippet, caret = lines[-3], lines[-2]
    assert snippet.startswith(" 1 | …") and snippet.endswith(OUT.strip())
    assert snippet[caret.index("^"):].startswith("relux")


@settings(max_examples=examples(2000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 32 - 1))
def test_mutated_models(seed):
    """A shipped model with 1 to 4 mutations: MDLError or success, bounded IR, same parse."""
    run_one(seed)


_GRAMMAR = lark.Lark(grammar_text(), parser="lalr", start="start")
_TERMINALS = {
    "NAME": st.sampled_from(NAMES),
    "NUMBER": st.sampled_from(NUMBERS),
    "SHAPE": st.sampled_from(["8x8", "2x3x4", "1x1", "4x4x3", "0x2", "99999999999x99999999999",
                              "1x" * 40 + "1"]),
}


@settings(max_examples=examples(200), deadline=None, suppress_health_check=list(HealthCheck))
@given(from_lark(_GRAMMAR, explicit=_TERMINALS))
def test_grammar_text_with_hostile_numbers(text):
    same_parse(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(text)
