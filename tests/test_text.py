"""Text and generation (MDL.md section 7): tokenizer, windows, baselines, model-file metadata,
`neuromorph.generate`, `Model.generate`, the formal language, `mdlc run --text` and
`mdlc generate`. Token models are the tiny causal model TINY (8 cells, vocabulary 6)."""
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdl
import neuromorph as nm
from mdl.cli import main as mdlc
from neuromorph import text
from neuromorph.generate import _sample, generate, sequence_spec
from neuromorph.tasks import FORMAL_ALPHABET, formal_text

from conftest import examples  # derandomized in CI; NEUROMORPH_HYPOTHESIS=random for more

TINY = """/xavier, zero/
(x, 8)
(e, embed, 8, vocab 6, dim 8)
(g, attn2d, 2x4, dim 8, heads 2, window 1, mask raster)
(y, 6, cells 8, <softmax>, <cross_entropy>)
"""
C, V, B = 8, 6, 4
CORPUS = "abcde\n" * 60                   # 6 distinct characters (vocab 6); each fixes the next


@pytest.fixture
def tiny():
    nm.seed(0)
    h = nm.build(nm.compile(TINY, B, 0.01, optimizer="adam"))
    yield h
    text.forget(h)
    nm.release(h)


def _mlp():
    nm.seed(0)
    return nm.build(nm.compile("/xavier,zero/ (x, 2) (h, 4, <tanh>) (y, 1, <sigmoid>, <mse>)",
                               4, 0.1))


# ---------------------------------------------------------------------------- tokenizer
@settings(max_examples=examples(200))
@given(st.text(min_size=1))
def test_tokenizer_round_trips_any_text(s):
    tok = text.CharTokenizer(s)
    ids = tok.encode(s)
    assert ids.dtype == np.int64 and ids.shape == (len(s),)
    assert tok.decode(ids) == s
    assert tok.vocab_size == len(set(s)) and tok.chars == "".join(sorted(set(s)))
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    back = text.CharTokenizer.from_json(tok.to_json())
    assert back == tok and hash(back) == hash(tok)


@settings(max_examples=examples(100))
@given(st.text(min_size=1), st.data())
def test_tokenizer_encodes_any_text_of_its_alphabet(s, data):
    tok = text.CharTokenizer(s)
    other = data.draw(st.text(alphabet=sorted(set(s))))
    assert tok.decode(tok.encode(other)) == other


def test_tokenizer_ids_are_sorted_characters():
    tok = text.CharTokenizer("ba\nb é")
    assert tok.chars == "\n abé"
    assert tok.encode("ab\n").tolist() == [2, 3, 0]
    assert tok.decode(np.array([4, 1, 0])) == "é \n"
    assert tok.decode([2.0, 3.0]) == "ab"
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


def test_tokenizer_errors():
    tok = text.CharTokenizer("abc")
    with pytest.raises(nm.DataError, match=r"character 'x' at position 2"):
        tok.encode("abxc")
    with pytest.raises(nm.DataError, match=r"'\\n' at position 0"):
        tok.encode("\nab")
    with pytest.raises(nm.DataError, match=r"ids\[1\] = 3 is outside 0 .. 2"):
        tok.decode([0, 3])
    with pytest.raises(nm.DataError, match="outside"):
        tok.decode([-1])
    with pytest.raises(nm.DataError, match="not an integer"):
        tok.decode([0.5])
    with pytest.raises(nm.ShapeError):
        tok.decode([[0, 1]])
    with pytest.raises(nm.DataError):
        text.CharTokenizer("")
    with pytest.raises(nm.DataError):
        text.CharTokenizer(b"abc")
    with pytest.raises(nm.DataError):
        tok.encode(b"abc")
    for bad in ("not json", "[1, 2]", '{"format": "other"}',
                json.dumps({"format": "neuromorph-char-tokenizer", "version": 1, "chars": "aa"}),
                json.dumps({"format": "neuromorph-char-tokenizer", "version": 9, "chars": "a"})):
        with pytest.raises(nm.DataError):
            text.CharTokenizer.from_json(bad)
    assert text.CharTokenizer("abc") != text.CharTokenizer("abd")


# ---------------------------------------------------------------------------- windows
def test_windows_shapes_and_content():
    ids = np.arange(20)
    x, y = text.windows(ids, 4)
    assert x.shape == y.shape == (4, 4) and x.dtype == y.dtype == np.int64
    assert x[1].tolist() == [4, 5, 6, 7] and y[1].tolist() == [5, 6, 7, 8]
    assert (y[:, :-1] == x[:, 1:]).all()
    x1, y1 = text.windows(ids, 4, stride=1)
    assert x1.shape == (16, 4) and (y1 == x1 + 1).all() and x1[-1].tolist() == [15, 16, 17, 18]
    assert text.windows([1, 2, 3], 4)[0].shape == (0, 4)
    assert text.windows(np.arange(5), 4)[0].shape == (1, 4)
    with pytest.raises(nm.DataError):
        text.windows(ids, 0)
    with pytest.raises(nm.DataError):
        text.windows(ids, 4, stride=0)


def test_split_heldout_is_the_tail():
    tr, te = text.split_heldout(np.arange(100), 0.1)
    assert tr.tolist() == list(range(90)) and te.tolist() == list(range(90, 100))
    assert len(text.split_heldout(np.arange(10), 0)[1]) == 0
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(nm.DataError):
            text.split_heldout(np.arange(10), bad)


# ---------------------------------------------------------------------------- baselines
def test_ngram_on_a_deterministic_sequence_approaches_zero_bits():
    seq = np.tile([0, 3, 1, 4, 2], 400)
    assert text.NGramModel(1, 5, 0.1).fit(seq).bits_per_char(seq) == pytest.approx(math.log2(5))
    prev = math.inf
    for alpha in (1.0, 0.1, 0.01, 0.001):
        bits = text.NGramModel(2, 5, alpha).fit(seq).bits_per_char(seq[5:])
        assert bits < prev
        prev = bits
    assert prev < 0.01
    m = text.NGramModel(3, 5, 0.1).fit(seq)
    assert m.n_params == 5 + 5 + 5        # distinct 1-, 2- and 3-grams


@settings(max_examples=examples(50))
@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(1, 4),
       st.lists(st.integers(0, 3), min_size=0, max_size=4))
def test_ngram_probabilities_sum_to_one(train_ids, n, context):
    m = text.NGramModel(n, 4, 0.3).fit(train_ids)
    total = sum(m.probabilities(context + [w])[-1] for w in range(4))
    assert total == pytest.approx(1.0)


def test_unigram_bits():
    uniform = np.tile(np.arange(4), 100)
    assert text.unigram_bits(uniform, uniform, 4) == pytest.approx(2.0)
    assert text.unigram_bits([0] * 99 + [1], [0] * 10, 2) < 0.05
    with pytest.raises(nm.DataError):
        text.unigram_bits([0, 5], [0], 4)
    with pytest.raises(nm.DataError):
        text.NGramModel(2, 4, alpha=0)
    with pytest.raises(nm.DataError):
        text.NGramModel(2, 4).bits_per_char([0, 1])     # not fitted


# ---------------------------------------------------------------------------- formal text
def test_formal_text_language():
    t = formal_text(5000, seed=3)
    assert len(t) == 5000 and set(t) <= set(FORMAL_ALPHABET) and len(FORMAL_ALPHABET) <= 16
    assert formal_text(5000, seed=3) == t and formal_text(5000, seed=4) != t
    assert formal_text(0) == ""
    for line in t.split("\n")[:-1]:                 # the last line may be cut
        words = line.split(" ")
        defs = dict(w.split("=") for w in words if "=" in w)
        queries = [w for w in words if w.startswith("?")]
        assert 2 <= len(defs) <= 4 and 1 <= len(queries) <= 2
        for q in queries:
            assert defs[q[1]] == q[2:]             # the answer is recalled from the line
            assert 1 <= len(q[2:]) <= 3


def test_formal_text_needs_context():
    """Counts of short context cannot recall the answers; character frequencies do worse."""
    ids = text.CharTokenizer(FORMAL_ALPHABET).encode(formal_text(60000, seed=0))
    tr, te = text.split_heldout(ids, 0.2)
    tri = text.NGramModel(3, 16, 0.1).fit(tr).bits_per_char(te)
    assert tri < text.unigram_bits(tr, te, 16)
    # the first digit of an answer: about log2(8) = 3 bits under a 3-gram model
    m = text.NGramModel(3, 16, 0.1).fit(tr)
    p = m.probabilities(te)
    tok = text.CharTokenizer(FORMAL_ALPHABET)
    q = tok.encode("?")[0]
    answer_pos = np.flatnonzero(te[:-2] == q) + 2
    assert np.mean(-np.log2(p[answer_pos])) > 2.5


# ---------------------------------------------------------------------------- model files
def test_registry_and_metadata_entries():
    h = _mlp()
    try:
        tok = text.CharTokenizer("xyz")
        assert text.tokenizer_of(h) is None and text.metadata_for(h) == []
        text.attach_tokenizer(h, tok)
        assert text.tokenizer_of(h) == tok
        assert text.metadata_for(h) == [("tokenizer", tok.to_json())]
        with pytest.raises(nm.DataError):
            text.attach_tokenizer(h, "xyz")
        text.forget(h)
        assert text.tokenizer_of(h) is None
        text.forget(h)                                  # no error the second time
        with pytest.raises(nm.HandleError):
            text.tokenizer_of("1")
    finally:
        nm.release(h)


def test_read_metadata_of_a_saved_model(tmp_path):
    h = _mlp()
    try:
        tok = text.CharTokenizer("hello\nworld")
        text.attach_tokenizer(h, tok)
        path = tmp_path / "m.nm"
        nm._core.save(h, str(path), [("neuromorph_version", nm.__version__)]
                      + text.metadata_for(h))
        meta = text.read_file_metadata(path)
        assert meta["format"] == "neuromorph-model" and "ir" in meta
        assert text.tokenizer_from_metadata(meta) == tok
        h2 = nm.load(path)                              # the engine ignores the extra entry
        nm.release(h2)
    finally:
        text.forget(h)
        nm.release(h)


def test_save_and_load_carry_the_tokenizer(tmp_path):
    h = _mlp()
    tok = text.CharTokenizer("abc\n")
    try:
        text.attach_tokenizer(h, tok)
        nm.save(h, tmp_path / "m.nm")
    finally:
        text.forget(h)
        nm.release(h)
    assert text.tokenizer_from_metadata(text.read_file_metadata(tmp_path / "m.nm")) == tok
    h2 = nm.load(tmp_path / "m.nm")
    try:
        assert text.tokenizer_of(h2) == tok
    finally:
        text.forget(h2)
        nm.release(h2)
    m = nm.Model.load(tmp_path / "m.nm")
    assert m.tokenizer == tok
    handle = m.handle
    m.release()
    assert text.tokenizer_of(handle) is None


def test_model_file_metadata_garbage(tmp_path):
    def write(name, data):
        p = tmp_path / name
        p.write_bytes(data)
        return p

    def header(obj):
        raw = json.dumps(obj).encode()
        return struct.pack("<Q", len(raw)) + raw

    bad = [write("short", b"\x01\x02"),
           write("length", struct.pack("<Q", 1 << 40) + b"{}"),
           write("json", struct.pack("<Q", 5) + b"{abc}"),
           write("utf8", struct.pack("<Q", 2) + b"\xff\xfe"),
           write("list", header([1, 2])),
           write("meta", header({"__metadata__": [1]})),
           write("values", header({"__metadata__": {"a": 1}}))]
    for p in bad:
        with pytest.raises(nm.ModelFileError):
            text.read_file_metadata(p)
    assert text.read_file_metadata(write("plain", header({}))) == {}
    with pytest.raises(FileNotFoundError):
        text.read_file_metadata(tmp_path / "missing.nm")
    assert text.tokenizer_from_metadata({"format": "neuromorph-model"}) is None
    with pytest.raises(nm.ModelFileError):
        text.tokenizer_from_metadata({"tokenizer": "{broken"})


# ---------------------------------------------------------------------------- the model's shape
def _doc(src):
    return mdl.compile_text(src).doc


def test_sequence_spec_of_token_models():
    spec = sequence_spec(_doc(TINY))
    assert (spec.cells, spec.vocab, spec.embed, spec.output) == (8, 6, "e", "y")
    grid = TINY.replace("(e, embed, 8,", "(e, embed, 2x4,").replace("vocab 6, dim 8)",
                                                                    "vocab 6, dim 8, pos none)")
    assert sequence_spec(_doc(grid)).cells == 8


@pytest.mark.parametrize("change, words", [
    (("mask raster", "mask none"), "mask raster"),
    (("<softmax>", "<sigmoid>"), "softmax"),
    (("vocab 6", "vocab 7"), "vocabulary of 7"),
    (("(y, 6, cells 8, <softmax>, <cross_entropy>)",
      "(h, 16, <tanh>) (y, 6, cells 8, <softmax>, <cross_entropy>)"), "dense layer"),
    (("(y, 6, cells 8,", "(y, 48,"), "cells 8"),
])
def test_sequence_spec_refuses_other_models(change, words):
    with pytest.raises(nm.ShapeError, match=words):
        sequence_spec(_doc(TINY.replace(*change)))


def test_sequence_spec_refuses_recurrent_and_numeric_models():
    lstm = Path(__file__).resolve().parents[1] / "models" / "lstm-model.mdl"
    with pytest.raises(nm.ShapeError, match="non-recurrent"):
        sequence_spec(mdl.compile_file(lstm).doc)
    with pytest.raises(nm.ShapeError, match="reads the input as numbers"):
        sequence_spec(_doc("/xavier,zero/ (x, 2) (h, 4, <tanh>) (y, 2, <softmax>, "
                           "<cross_entropy>)"))


# ---------------------------------------------------------------------------- sampling
def test_sample_follows_temperature_and_top_k():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.3, 0.2, 0.0])
    draws = np.array([_sample(p, 1.0, None, rng, 0) for _ in range(20000)])
    assert np.allclose(np.bincount(draws, minlength=4) / len(draws), p, atol=0.015)
    draws = np.array([_sample(p, 1.0, 2, rng, 0) for _ in range(5000)])
    assert set(draws.tolist()) == {0, 1}
    assert np.mean(draws == 0) == pytest.approx(0.5 / 0.8, abs=0.03)
    sharp = np.array([_sample(p, 0.05, None, rng, 0) for _ in range(2000)])
    assert np.mean(sharp == 0) > 0.99
    flat = np.array([_sample(p, 50.0, None, rng, 0) for _ in range(6000)])
    assert 3 not in flat and np.mean(flat == 2) > 0.3          # zero stays impossible
    assert _sample(np.array([0.2, 0.4, 0.4]), 0.0, None, rng, 0) == 1
    with pytest.raises(nm.StateError):
        _sample(np.array([np.nan, 0.5]), 1.0, None, rng, 3)


def _trained(h, epochs=30):
    """A few epochs on CORPUS so that the model's distributions are far from uniform."""
    tok = text.CharTokenizer(CORPUS)
    x, y = text.windows(tok.encode(CORPUS), C, stride=1)
    n = len(x) // B * B
    nm.train(h, x[:n], y[:n], verbosity=0, epochs=epochs)
    return tok


def test_generate_is_reproducible_and_in_range(tiny):
    a = generate(tiny, [1, 2, 3], 20, seed=5)
    b = generate(tiny, np.array([1, 2, 3]), 20, seed=5)
    assert a.dtype == np.int64 and a.shape == (20,) and (a == b).all()
    assert a.min() >= 0 and a.max() < V
    nm.seed(11)
    c = generate(tiny, [1, 2, 3], 20)
    nm.seed(11)
    assert (generate(tiny, [1, 2, 3], 20) == c).all()
    assert generate(tiny, [1], 0).shape == (0,)
    assert generate(tiny, [], 5, seed=1).shape == (5,)


def test_generate_reads_the_last_filled_cell(tiny):
    tok = _trained(tiny)
    prompt = tok.encode("abc")
    x = np.zeros((1, C))
    x[0, :3] = prompt
    p = nm.predict(tiny, x).reshape(C, V)[2]
    assert generate(tiny, prompt, 1, temperature=0)[0] == int(np.argmax(p))
    # greedy continuation is deterministic and agrees with itself step by step
    g = generate(tiny, prompt, 10, temperature=0)
    assert (generate(tiny, prompt, 10, temperature=0, seed=99) == g).all()
    assert (generate(tiny, np.concatenate([prompt, g[:4]]), 6, temperature=0) == g[4:]).all()
    # top_k=1 samples the arg-max whatever the temperature
    assert (generate(tiny, prompt, 10, temperature=2.0, top_k=1, seed=3) == g).all()
    # the trained model continues the corpus
    assert tok.decode(g) == "de\nabcde\na"


def test_generate_slides_a_long_prompt(tiny):
    tok = _trained(tiny)
    prompt = tok.encode("cde\nabcde\nabcde")                   # 16 ids, C = 8
    long = generate(tiny, prompt, 12, temperature=0)
    assert (generate(tiny, prompt[-C:], 12, temperature=0) == long).all()
    assert (generate(tiny, prompt, 12, seed=4) == generate(tiny, prompt[-C:], 12, seed=4)).all()


def test_causal_mask_makes_unfilled_cells_irrelevant(tiny):
    """What generate relies on: the output at cell c does not depend on cells after c."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (1, C)).astype(float)
    y0 = nm.predict(tiny, x).reshape(C, V)
    for c in range(C - 1):
        x2 = x.copy()
        x2[0, c + 1:] = rng.integers(0, V, C - c - 1)
        y2 = nm.predict(tiny, x2).reshape(C, V)
        np.testing.assert_allclose(y2[:c + 1], y0[:c + 1], rtol=1e-5, atol=1e-6)


def test_generate_draws_within_a_smaller_vocab(tiny):
    """A tokenizer with fewer characters than the model's vocab: only its ids are drawn."""
    draws = generate(tiny, [0], 200, temperature=5.0, seed=1, vocab=3)
    assert draws.max() < 3 and set(draws.tolist()) == {0, 1, 2}
    assert set(generate(tiny, [0], 200, temperature=5.0, seed=1).tolist()) == set(range(V))
    with nm.Model(TINY, B, 0.1) as m:
        nm.seed(0)
        m.build()
        m.tokenizer = text.CharTokenizer("ab\n")
        assert set(m.generate("a", 100, temperature=5.0, seed=0)) == set("ab\n")
    for bad in (0, V + 1, 2.0, True):
        with pytest.raises(nm.DataError, match="vocab"):
            generate(tiny, [0], 3, vocab=bad)
    with pytest.raises(nm.DataError, match="top_k"):
        generate(tiny, [0], 3, vocab=3, top_k=4)


def test_generate_argument_errors(tiny):
    for kwargs in ({"n": -1}, {"n": 1.5}, {"n": True}, {"temperature": -0.1},
                   {"temperature": math.nan}, {"temperature": math.inf}, {"temperature": "1"},
                   {"top_k": 0}, {"top_k": V + 1}, {"top_k": 2.0}, {"seed": -1},
                   {"seed": "x"}):
        args = {"n": 3, **kwargs}
        with pytest.raises(nm.DataError):
            generate(tiny, [0, 1], **args)
    for prompt in ([0, V], [-1], [0.5], ["a"], "ab", 3):
        with pytest.raises(nm.DataError):
            generate(tiny, prompt, 3)
    with pytest.raises(nm.ShapeError):
        generate(tiny, [[0, 1]], 3)
    with pytest.raises(nm.HandleError):
        generate(10 ** 6, [0], 3)
    h = nm.compile(TINY, B, 0.1)
    try:
        with pytest.raises(nm.StateError, match="not built"):
            generate(h, [0], 3)
    finally:
        nm.release(h)
    m = _mlp()
    try:
        with pytest.raises(nm.ShapeError, match="generate needs"):
            generate(m, [0], 3)
    finally:
        nm.release(m)


def test_model_generate_with_and_without_tokenizer():
    with nm.Model(TINY, B, 0.01, optimizer="adam") as m:
        nm.seed(0)
        m.build()
        with pytest.raises(nm.StateError, match="tokenizer"):
            m.generate("ab", 3)
        assert m.tokenizer is None
        tok = text.CharTokenizer(CORPUS)
        ids = m.generate(tok.encode("ab"), 4, seed=2)
        assert ids.shape == (4,) and ids.dtype == np.int64
        m.tokenizer = tok
        out = m.generate("ab", 4, seed=2)
        assert isinstance(out, str) and len(out) == 4 and out == m.tokenizer.decode(ids)
        with pytest.raises(nm.DataError, match="'z' at position 1"):
            m.generate("az", 4)
        m.tokenizer = None
        assert m.tokenizer is None


def test_bits_per_char(tiny):
    tok = text.CharTokenizer(CORPUS)
    ids = tok.encode(CORPUS)
    before = text.bits_per_char(tiny, ids)
    assert before == pytest.approx(text.bits_per_char(tiny, ids, C, batch=3))
    x, y = text.windows(ids, C)
    p = nm.predict(tiny, x).reshape(-1, C, V)
    manual = -np.log2(np.take_along_axis(p, y[:, :, None], 2)).mean()
    assert before == pytest.approx(manual, rel=1e-6)
    _trained(tiny)
    after = text.bits_per_char(tiny, ids)
    assert after < 0.5 * text.unigram_bits(ids, ids, V) < before
    # the loss of nm.evaluate with class ids is the same figure in nats
    n = len(x) // B * B
    assert nm.evaluate(tiny, x[:n], y[:n]) / math.log(2) == pytest.approx(
        -np.log2(np.take_along_axis(nm.predict(tiny, x[:n]).reshape(-1, C, V),
                                    y[:n, :, None], 2)).mean(), rel=1e-4)
    with pytest.raises(nm.ShapeError):
        text.bits_per_char(tiny, ids, 4)
    with pytest.raises(nm.DataError, match="at least 9"):
        text.bits_per_char(tiny, ids[:5])


# ---------------------------------------------------------------------------- command line
@pytest.fixture
def files(tmp_path):
    model = tmp_path / "tiny.mdl"
    model.write_text(TINY)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS * 3)
    return model, corpus, tmp_path


def test_cli_run_text_and_generate(files, capsys):
    model, corpus, tmp = files
    out = tmp / "tiny.nm"
    assert mdlc(["run", str(model), "--text", str(corpus), "--epochs", "3", "--batch-size", "4",
                 "--verbosity", "0", "--context-stride", "2", "--save", str(out)]) == 0
    report = capsys.readouterr().out
    assert "bits per character" in report and "parameters" in report
    assert "character frequencies give" in report and "training batches in" in report
    tok = text.tokenizer_from_metadata(text.read_file_metadata(out))
    assert tok == text.CharTokenizer(CORPUS)
    argv = ["generate", str(out), "--prompt", "abc", "-n", "12", "--seed", "3"]
    assert mdlc(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("abc") and len(first) == 3 + 12 + 1 and set(first) <= set(CORPUS)
    assert mdlc(argv) == 0
    assert capsys.readouterr().out == first
    assert mdlc(["generate", str(out), "-n", "5", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) == 6


def test_cli_generate_with_a_vocab_larger_than_the_alphabet(files, capsys):
    model, corpus, tmp = files
    small = tmp / "small.txt"
    small.write_text("ab\n" * 200)                      # 3 characters, vocab is 6
    out = tmp / "small.nm"
    assert mdlc(["run", str(model), "--text", str(small), "--epochs", "1", "--batch-size", "4",
                 "--verbosity", "0", "--save", str(out)]) == 0
    capsys.readouterr()
    assert mdlc(["generate", str(out), "--prompt", "a", "-n", "40", "--temperature", "3",
                 "--seed", "0"]) == 0
    assert set(capsys.readouterr().out) <= set("ab\n")


def test_cli_generate_errors_exit_2(files, capsys):
    model, corpus, tmp = files
    out = tmp / "tiny.nm"
    assert mdlc(["run", str(model), "--text", str(corpus), "--epochs", "1", "--batch-size", "4",
                 "--verbosity", "0", "--save", str(out)]) == 0
    capsys.readouterr()
    assert mdlc(["generate", str(out), "--prompt", "xyz", "-n", "3"]) == 2
    assert "'x' at position 0" in capsys.readouterr().err
    assert mdlc(["generate", str(out), "--prompt", "ab", "-n", "3", "--top-k", "99"]) == 2
    assert "top_k" in capsys.readouterr().err
    assert mdlc(["generate", str(tmp / "missing.nm"), "-n", "3"]) == 2
    h = _mlp()
    nm.save(h, tmp / "plain.nm")
    nm.release(h)
    assert mdlc(["generate", str(tmp / "plain.nm"), "-n", "3"]) == 2
    assert "holds no tokenizer" in capsys.readouterr().err
    (tmp / "junk.nm").write_bytes(b"garbage!garbage!")
    assert mdlc(["generate", str(tmp / "junk.nm"), "-n", "3"]) == 3   # corrupt data: exit 3


def test_cli_generate_subprocess_prints_no_traceback(files):
    model, corpus, tmp = files
    r = subprocess.run([sys.executable, "-m", "mdl.cli", "generate", str(tmp / "none.nm"),
                        "--prompt", "a", "-n", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "mdlc: error" in r.stderr


def test_cli_run_text_errors_exit_2(files, capsys):
    model, corpus, tmp = files
    wide = tmp / "wide.txt"
    wide.write_text("abcdefg\n" * 50)                     # 8 characters, vocab is 6
    assert mdlc(["run", str(model), "--text", str(wide)]) == 2
    err = capsys.readouterr().err
    assert "8 distinct characters" in err and "vocab >= 8" in err
    short = tmp / "short.txt"
    short.write_text("abc\n")
    assert mdlc(["run", str(model), "--text", str(short), "--batch-size", "4"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_flag:                      # argparse checks it
        mdlc(["run", str(model), "--text", str(corpus), "--heldout", "1.5"])
    assert bad_flag.value.code == 2
    assert mdlc(["run", str(model), "--text", str(tmp / "missing.txt")]) == 2
    lstm = str(Path(__file__).resolve().parents[1] / "models" / "lstm-model.mdl")
    assert mdlc(["run", lstm, "--text", str(corpus)]) == 2
    assert "--text needs a causal token model" in capsys.readouterr().err
