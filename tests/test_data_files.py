"""`neuromorph.load_data` (issue 15 item 4): every format round-trips one known dataset, errors
name the file (and for tables the line and column), bools and integer labels are accepted."""
import os

import numpy as np
import pytest

import neuromorph as nm
from neuromorph.data import data_kind, image_classes, load_data

# the known dataset: 12 samples, 3 inputs, labels 0..2 (a classifier with 3 outputs)
X = np.round(np.random.default_rng(7).normal(size=(12, 3)), 4).astype(np.float32)
LABELS = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]
CLASSIFIER = "/xavier,zero/ (x, 3) (h, 5, <tanh>) (y, 3, <softmax>, <cross_entropy>)"
REGRESSOR = "/xavier,zero/ (x, 3) (y, 1, <linear>, <mse>)"


@pytest.fixture
def classifier():
    h = nm.compile(CLASSIFIER, 4, 0.1)
    nm.build(h)
    yield h
    nm.release(h)


def write_csv(path, rows, header=None, delimiter=","):
    lines = [delimiter.join(header)] if header else []
    lines += [delimiter.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows():
    return [[*map(float, x), int(y)] for x, y in zip(X, LABELS)]


# ---------------------------------------------------------------------------- NumPy files
def test_npz_default_keys(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=X, expected=ONE_HOT)
    x, e = load_data(tmp_path / "d.npz")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(e, ONE_HOT)


def test_npz_any_key_names(tmp_path):
    np.savez(tmp_path / "d.npz", features=X, target=LABELS)
    x, e = load_data(tmp_path / "d.npz", x="features", y="target")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(e, LABELS)          # labels kept as they are without model=
    with pytest.raises(nm.DataError, match=r"d\.npz has no array named 'inputs'; it holds "
                                           r"'features', 'target'.*--x KEY --y KEY"):
        load_data(tmp_path / "d.npz")


def test_npy_pair(tmp_path):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", ONE_HOT)
    x, e = load_data(tmp_path / "X.npy", y=tmp_path / "Y.npy")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(e, ONE_HOT)
    with pytest.raises(nm.DataError, match=r"X\.npy holds one array.*y="):
        load_data(tmp_path / "X.npy")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_data(tmp_path / "X.npy", y=tmp_path / "missing.npy")


def test_bool_arrays_become_0_1(tmp_path):
    xb = X > 0
    np.savez(tmp_path / "b.npz", inputs=xb, expected=ONE_HOT.astype(bool))
    x, e = load_data(tmp_path / "b.npz")
    assert x.dtype == np.float32 and e.dtype == np.float32
    np.testing.assert_array_equal(x, xb.astype(np.float32))
    np.testing.assert_array_equal(e, ONE_HOT)


def test_pickled_and_non_numeric_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", inputs=np.array([{"a": 1}] * 3, dtype=object),
             expected=np.zeros(3))
    with pytest.raises(nm.DataError, match=r"o\.npz: array 'inputs' holds Python objects"):
        load_data(tmp_path / "o.npz")
    np.savez(tmp_path / "s.npz", inputs=np.array(["a", "b"]), expected=np.zeros(2))
    with pytest.raises(nm.DataError, match=r"s\.npz: array 'inputs' holds <U1 values"):
        load_data(tmp_path / "s.npz")


def test_nan_is_reported_at_the_flat_sample_index(tmp_path):
    x = X.copy()
    x[5, 2] = np.nan
    np.savez(tmp_path / "n.npz", inputs=x, expected=ONE_HOT)
    with pytest.raises(nm.DataError, match=r"n\.npz: 'inputs' sample 5, column 2: nan"):
        load_data(tmp_path / "n.npz")
    e = ONE_HOT.copy()
    e[7, 0] = np.inf
    np.savez(tmp_path / "i.npz", inputs=X, expected=e)
    with pytest.raises(nm.DataError, match=r"i\.npz: 'expected' sample 7, column 0: inf"):
        load_data(tmp_path / "i.npz")


def test_sample_counts_must_agree(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=X, expected=ONE_HOT[:-1])
    with pytest.raises(nm.ShapeError, match=r"d\.npz: the inputs hold 12 samples but the "
                                            r"expected values hold 11"):
        load_data(tmp_path / "d.npz")


# ---------------------------------------------------------------------------- tables
def test_csv_with_header_target_by_name_and_by_index(tmp_path):
    f = write_csv(tmp_path / "d.csv", table_rows(), ["a", "b", "c", "label"])
    for target in (None, "label", 3, -1, "3"):        # default: the last column
        x, e = load_data(f, target=target)
        np.testing.assert_array_equal(x, X)
        np.testing.assert_array_equal(e[:, 0], LABELS)
    x, e = load_data(f, y="label")                    # y= is target= for a table
    np.testing.assert_array_equal(e[:, 0], LABELS)


def test_csv_several_targets_and_chosen_inputs(tmp_path):
    f = write_csv(tmp_path / "d.csv", table_rows(), ["a", "b", "c", "label"])
    x, e = load_data(f, target=["a", "c"])
    np.testing.assert_array_equal(e, X[:, [0, 2]])
    np.testing.assert_array_equal(x, np.c_[X[:, 1], LABELS].astype(np.float32))
    x, e = load_data(f, target="a,c", x="b")
    np.testing.assert_array_equal(x, X[:, [1]])
    np.testing.assert_array_equal(e, X[:, [0, 2]])
    with pytest.raises(nm.DataError, match=r"no column named 'z' \(the columns are 'a', 'b', "
                                           r"'c', 'label'\)"):
        load_data(f, target="z")
    with pytest.raises(nm.DataError, match="index 4 is out of range"):
        load_data(f, target=4)


def test_headerless_tsv_semicolon_and_whitespace_tables(tmp_path):
    for name, delim in (("d.tsv", "\t"), ("d.csv", ";"), ("d.dat", "|")):
        x, e = load_data(write_csv(tmp_path / name, table_rows(), delimiter=delim))
        np.testing.assert_array_equal(x, X)
        np.testing.assert_array_equal(e[:, 0], LABELS)
    np.savetxt(tmp_path / "saved.txt", np.c_[X, LABELS], header="a b c label")
    assert data_kind(tmp_path / "saved.txt") == "table"
    x, e = load_data(tmp_path / "saved.txt")           # '#' header line skipped
    np.testing.assert_allclose(x, X, rtol=1e-6)
    np.testing.assert_array_equal(e[:, 0], LABELS)
    x, e = load_data(write_csv(tmp_path / "forced.csv", table_rows()), delimiter=",",
                     header=False)
    np.testing.assert_array_equal(x, X)


def test_csv_errors_name_line_and_column(tmp_path):
    rows = table_rows()
    rows[5][1] = "abc"                                 # data row 6 = line 7 with the header
    f = write_csv(tmp_path / "d.csv", rows, ["a", "b", "c", "label"])
    with pytest.raises(nm.DataError, match=r"d\.csv:7:2: 'abc' is not a number \(column 'b'\)"):
        load_data(f)
    rows = table_rows()
    rows[0][2] = ""
    with pytest.raises(nm.DataError, match=r"e\.csv:2:3: an empty cell is not a number"):
        load_data(write_csv(tmp_path / "e.csv", rows, ["a", "b", "c", "label"]))
    rows = table_rows()
    rows[3][0] = "nan"
    with pytest.raises(nm.DataError, match=r"n\.csv:5:1: 'nan' is not a finite number"):
        load_data(write_csv(tmp_path / "n.csv", rows, ["a", "b", "c", "label"]))
    text = (tmp_path / "d.csv").read_text().splitlines()
    text[3] = "1,2,3"
    (tmp_path / "short.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(nm.DataError, match=r"short\.csv:4: 3 fields, but the header \(line 1\) "
                                           r"has 4"):
        load_data(tmp_path / "short.csv")


def test_csv_lines_count_blank_and_comment_lines(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("# made by hand\na,b,label\n\n1,2,0\n3,x,1\n")
    with pytest.raises(nm.DataError, match=r"c\.csv:5:2: 'x' is not a number"):
        load_data(f)


def test_csv_bool_words(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text("a,b,label\n1,true,False\n0,FALSE,true\n")
    x, e = load_data(f)
    np.testing.assert_array_equal(x, [[1, 1], [0, 0]])
    np.testing.assert_array_equal(e, [[0], [1]])


def test_text_file_points_to_mdlc_run_text(tmp_path):
    f = tmp_path / "story.txt"
    f.write_text("Once upon a time there was a model.\nIt trained.\n")
    assert data_kind(f) == "text"
    with pytest.raises(nm.DataError, match=r"story\.txt is text.*mdlc run MODEL --text"):
        load_data(f)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such data file: .*nothing\.csv"):
        load_data(tmp_path / "nothing.csv")


# ---------------------------------------------------------------------------- model shaping
def test_integer_labels_become_one_hot_for_a_cross_entropy_output(tmp_path, classifier):
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    x, e = load_data(tmp_path / "d.npz", model=classifier)
    np.testing.assert_array_equal(e, ONE_HOT)
    f = write_csv(tmp_path / "d.csv", table_rows(), ["a", "b", "c", "label"])
    x, e = load_data(f, model=classifier)              # a single integral target column
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(e, ONE_HOT)
    m = nm.Model(CLASSIFIER, 4, 0.1)                   # a Model works as well as a handle
    np.testing.assert_array_equal(load_data(f, model=m)[1], ONE_HOT)


def test_labels_outside_the_classes_name_the_row(tmp_path, classifier):
    labels = LABELS.copy()
    labels[4] = 3
    np.savez(tmp_path / "d.npz", inputs=X, expected=labels)
    with pytest.raises(nm.DataError, match=r"d\.npz: 'expected' sample 4: class label 3 is not "
                                           r"an integer in 0\.\.2"):
        load_data(tmp_path / "d.npz", model=classifier)
    rows = table_rows()
    rows[8][3] = 1.5
    f = write_csv(tmp_path / "d.csv", rows, ["a", "b", "c", "label"])
    with pytest.raises(nm.DataError, match=r"d\.csv:10:4: class label 1\.5 is not an integer"):
        load_data(f, model=classifier)


def test_widths_that_do_not_fit_the_model_name_the_file(tmp_path, classifier):
    np.savez(tmp_path / "d.npz", inputs=X[:, :2], expected=ONE_HOT)
    with pytest.raises(nm.ShapeError, match=r"d\.npz: the inputs have 2 values per sample but "
                                            r"the model reads 3"):
        load_data(tmp_path / "d.npz", model=classifier)


def test_a_1d_target_for_a_width_1_output(tmp_path):
    h = nm.compile(REGRESSOR, 4, 0.1)
    try:
        np.savez(tmp_path / "d.npz", inputs=X, expected=X[:, 0])
        x, e = load_data(tmp_path / "d.npz", model=h)
        assert e.shape == (12, 1)
    finally:
        nm.release(h)


def test_loaded_data_trains(tmp_path, classifier):
    np.savez(tmp_path / "d.npz", inputs=X, expected=LABELS)
    x, e = load_data(tmp_path / "d.npz", model=classifier)
    loss = nm.train(classifier, x, e, verbosity=0)
    assert np.isfinite(loss)


def test_exported_as_nm_load_data():
    assert nm.load_data is load_data


# ---------------------------------------------------------------------------- images
def test_images_need_pillow(tmp_path, monkeypatch):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    with pytest.raises(ImportError, match=r"needs Pillow.*neuromorph\[images\]"):
        load_data(tmp_path)


def _image_folder(root, mode="L", size=(4, 3)):
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = {}
    for k, cls in enumerate(["zebra", "ant", "mole"]):  # sorted: ant, mole, zebra
        (root / cls).mkdir(parents=True)
        for i in range(k + 1):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
            pixels[(cls, i)] = arr
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return pixels


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_image_folder_round_trips(tmp_path, mode):
    pytest.importorskip("PIL")
    pixels = _image_folder(tmp_path / "imgs", mode)
    assert image_classes(tmp_path / "imgs") == ["ant", "mole", "zebra"]
    x, e = load_data(tmp_path / "imgs")
    order = [("ant", 0), ("ant", 1), ("mole", 0), ("mole", 1), ("mole", 2), ("zebra", 0)]
    want = np.stack([pixels[k].reshape(-1) for k in order]).astype(np.float32) / 255
    np.testing.assert_allclose(x, want, rtol=1e-6)
    assert x.dtype == np.float32 and x.shape == (6, 12 * (3 if mode == "RGB" else 1))
    np.testing.assert_array_equal(e, np.eye(3)[[0, 0, 1, 1, 1, 2]])


def test_image_folder_of_mixed_sizes_names_the_odd_file(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    _image_folder(tmp_path / "imgs")
    Image.new("L", (5, 5)).save(tmp_path / "imgs" / "mole" / "odd.png")
    with pytest.raises(nm.DataError, match=r"mole.odd\.png is 5x5 pixels but .*ant.0\.png is "
                                           r"4x3: all images must have one size"):
        load_data(tmp_path / "imgs")


def test_image_folder_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(nm.DataError, match="holds no class folders"):
        load_data(tmp_path / "flat")
    pytest.importorskip("PIL")
    (tmp_path / "flat" / "empty").mkdir()
    with pytest.raises(nm.DataError, match=r"class 'empty'\) holds no images"):
        load_data(tmp_path / "flat")
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "x.png").write_bytes(b"not a png")
    with pytest.raises(nm.DataError, match=r"cannot read the image .*x\.png"):
        load_data(tmp_path / "bad")
    with pytest.raises(nm.DataError, match="takes no x=/y="):
        load_data(tmp_path / "bad", y="labels")
    assert os.path.isdir(tmp_path / "bad")
