"""Model files: exact round trips, the safetensors layout, and every kind of bad file."""
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import mdl
import neuromorph as nm

MODELS = Path(__file__).resolve().parents[1] / "models"
NAMES = ["small-model", "big-model", "gated-model", "lstm-model", "readme-model", "grid-model",
         "energy-model", "neuron-model",
         "column-model"]
warnings.simplefilter("ignore", mdl.MDLWarning)


def trained(name, dtype="float32"):
    h = nm.compile(MODELS / f"{name}.mdl", 5, 0.1, dtype=dtype)
    nm.seed(3)
    nm.build(h)
    w = nm.info(h)["input_width"]
    o = nm.info(h)["output_width"]
    rng = np.random.default_rng(0)
    x, e = rng.random((4, 5, w)), rng.random((4, 5, o))
    nm.train(h, x[:3], e[:3], verbosity=0)  # mid-stream: recurrent state is not zero
    return h, x[3:], e[3:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_round_trip_is_exact_including_the_next_step(name, dtype, tmp_path):
    h, x, e = trained(name, dtype)
    path = tmp_path / "m.nm"
    nm.save(h, path)
    g = nm.load(path)
    assert nm.info(g) == nm.info(h)
    for k, v in nm.get_params(h).items():
        assert np.array_equal(nm.get_params(g)[k], v)
    # The next training step (recurrent state included) is bit-identical.
    assert nm.train(g, x, e, verbosity=0) == nm.train(h, x, e, verbosity=0)
    for k, v in nm.get_params(h).items():
        assert np.array_equal(nm.get_params(g)[k], v)
    assert np.array_equal(nm.predict(g, x), nm.predict(h, x))
    nm.release(h)
    nm.release(g)


@pytest.mark.parametrize("seed", [5, 2**64 - 1])
def test_drawn_start_states_survive_save_load(seed, tmp_path):
    """An energy block with `init normal` draws its fixed start states at build, from the
    build's seed: the file records the seed, so the loaded model starts from the same states
    (it predicted 0.036 apart before the seed was saved)."""
    src = Path(__file__).resolve().parent / "gpu_models" / "energy_init_normal.mdl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = nm.compile(src, 4, 0.01)
    nm._core.seed(seed)
    nm.build(h)
    x = np.random.default_rng(0).normal(size=(8, nm.info(h)["input_width"]))
    nm.save(h, tmp_path / "m.nm")
    h2 = nm.load(tmp_path / "m.nm")
    try:
        np.testing.assert_array_equal(nm.predict(h2, x), nm.predict(h, x))
        np.testing.assert_array_equal(nm.energy(h2, x), nm.energy(h, x))
    finally:
        nm.release(h)
        nm.release(h2)


def test_the_safetensors_package_reads_it(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    h, _, _ = trained("lstm-model")
    nm.save(h, tmp_path / "m.nm")
    tensors = safetensors.load_file(str(tmp_path / "m.nm"))
    params = nm.get_params(h)
    for k, v in params.items():
        assert np.array_equal(tensors[k], v)
    assert {k for k in tensors if k.startswith("state.")} == {"state.last", "state.prevstate"}
    n = struct.unpack("<Q", (tmp_path / "m.nm").read_bytes()[:8])[0]
    meta = json.loads((tmp_path / "m.nm").read_bytes()[8:8 + n])["__metadata__"]
    assert meta["format"] == "neuromorph-model" and meta["batch_size"] == "5"
    assert json.loads(meta["ir"])["source"]["text"] == (MODELS / "lstm-model.mdl").read_text()


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    h, x, e = trained("readme-model")
    path = tmp_path / "m.nm"
    nm.save(h, path)
    first = path.read_bytes()
    nm.train(h, x, e, verbosity=0)
    nm.save(h, path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nm"]
    with pytest.raises(nm.ModelFileError, match="cannot write"):
        nm.save(h, tmp_path / "no" / "such" / "dir.nm")
    assert path.exists()


def header_of(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8:8 + n])


def rewrite(raw, edit):
    n, h = header_of(raw)
    edit(h)
    text = json.dumps(h).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def set_meta(key, value):
    return lambda h: h["__metadata__"].__setitem__(key, value)


def set_offsets(name, move):
    """Rewrite one tensor's data_offsets [b, e] to move(b, e, the header)."""
    def edit(h):
        b, e = h[name]["data_offsets"]
        h[name]["data_offsets"] = move(b, e, h)
    return edit


def end_of_data(h):
    return max(t["data_offsets"][1] for k, t in h.items() if k != "__metadata__")


@pytest.mark.parametrize("damage,match", [
    (lambda raw: raw[:5], "too short"),
    (lambda raw: raw[:100], "does not fit the file"),
    (lambda raw: raw[:-8], "outside the data"),
    (lambda raw: b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{not json at all" + raw[24:], "not valid JSON"),
    (lambda raw: rewrite(raw, set_meta("format", "other")), "not a Neuromorph model file"),
    (lambda raw: rewrite(raw, set_meta("format_version", "9")), "version 9 is not supported"),
    (lambda raw: rewrite(raw, set_meta("ir", "{}")), "stored model is invalid"),
    (lambda raw: rewrite(raw, set_meta("batch_size", "five")), "not a number"),
    (lambda raw: rewrite(raw, lambda h: h["a.weight"].__setitem__("shape", [128, 256])), "has shape"),
    (lambda raw: rewrite(raw, lambda h: h["a.weight"].__setitem__("dtype", "F16")), "must be F32"),
    (lambda raw: rewrite(raw, lambda h: h.pop("output.bias")), "'output.bias' is missing"),
    (lambda raw: rewrite(raw, lambda h: h.pop("__metadata__")), "no metadata"),
    # damaged data_offsets: each must be caught before a byte is read
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [b, e - 4])), "wrong size"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [b, e + 4])), "wrong size"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [-4, e - b - 4])),
     "no valid data_offsets"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [b, -e])), "no valid data_offsets"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [e, b])), "outside the data"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [b, e + 0.5])),
     "no valid data_offsets"),
    (lambda raw: rewrite(raw, set_offsets("a.bias", lambda b, e, h: [b])), "no valid data_offsets"),
    (lambda raw: rewrite(raw, set_offsets(  # same size, starting past the end of the data
        "a.bias", lambda b, e, h: [end_of_data(h) + 4, end_of_data(h) + 4 + e - b])),
     "outside the data"),
    (lambda raw: rewrite(raw, set_offsets(  # same size, ending just past the data
        "output.bias", lambda b, e, h: [b + 8, e + 8])), "outside the data"),
])
def test_bad_files_raise_a_clear_error(tmp_path, damage, match):
    h, x, _ = trained("readme-model")
    good = tmp_path / "good.nm"
    nm.save(h, good)
    bad = tmp_path / "bad.nm"
    bad.write_bytes(damage(good.read_bytes()))
    live = nm._core.live_models()
    with pytest.raises(nm.ModelFileError, match=match):
        nm.load(bad)
    assert nm._core.live_models() == live
    nm.predict(h, x)  # other models are untouched


def test_nan_values_and_missing_files(tmp_path):
    h, _, _ = trained("readme-model")
    path = tmp_path / "m.nm"
    nm.save(h, path)
    raw = bytearray(path.read_bytes())
    n, hdr = header_of(bytes(raw))
    start = 8 + n + hdr["a.bias"]["data_offsets"][0]
    raw[start:start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))
    with pytest.raises(nm.ModelFileError, match="'a.bias' holds NaN"):
        nm.load(path)
    with pytest.raises(FileNotFoundError):
        nm.load(tmp_path / "missing.nm")


def test_save_needs_a_built_model(tmp_path):
    h = nm.compile(MODELS / "readme-model.mdl", 5, 0.1)
    with pytest.raises(nm.StateError):
        nm.save(h, tmp_path / "m.nm")


def test_overlapping_tensors_are_refused(tmp_path):
    """Two tensors sharing bytes: each is in bounds and of the right size, so only an overlap
    check sees it (safetensors itself refuses such files)."""
    h, _, _ = trained("readme-model")
    good = tmp_path / "good.nm"
    nm.save(h, good)
    n, hdr = header_of(good.read_bytes())
    wb, we = hdr["a.weight"]["data_offsets"]
    bb, be = hdr["a.bias"]["data_offsets"]
    assert be - bb < we - wb
    for start in (wb, we - (be - bb), we - 4):  # inside, flush against the end, straddling
        bad = tmp_path / "bad.nm"
        bad.write_bytes(rewrite(good.read_bytes(), set_offsets("a.bias", lambda b, e, _: [start, start + e - b])))
        with pytest.raises(nm.ModelFileError, match="overlap"):
            nm.load(bad)
    nm.release(h)


def test_header_longer_than_the_limit_is_refused(tmp_path):
    """A header over 100 MiB is refused by its length field before it is parsed, even when the
    file really is that long and the header is valid JSON (padded with spaces)."""
    h, _, _ = trained("readme-model")
    good = tmp_path / "good.nm"
    nm.save(h, good)
    raw = good.read_bytes()
    n, _ = header_of(raw)
    text = raw[8:8 + n] + b" " * ((100 << 20) + 8 - n)
    big = tmp_path / "big.nm"
    big.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(nm.ModelFileError, match=rf"header length {len(text)}"):
        nm.load(big)
    # the same padding under the limit passes the length check and is then caught by the
    # file's checksum (it covers the header): the length is what is refused above
    text = raw[8:8 + n] + b" " * ((1 << 20) - n)
    ok = tmp_path / "ok.nm"
    ok.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(nm.ModelFileError, match="checksum mismatch"):
        nm.load(ok)
    big.unlink()
    nm.release(h)
