"""Training data from files: `load_data(path) -> (inputs, expected)` (also `mdlc run --data`).

    x, e = nm.load_data("train.npz")                     # arrays "inputs" and "expected"
    x, e = nm.load_data("train.npz", x="X", y="labels")  # any key names
    x, e = nm.load_data("X.npy", y="Y.npy")              # an .npy pair: two paths
    x, e = nm.load_data("iris.csv", target="species_id") # CSV/TSV: target columns, rest inputs
    x, e = nm.load_data("photos/")                       # a folder of images per class
    x, e = nm.load_data("data.csv", model=h)             # shaped for model h (labels one-hot)

Formats, chosen by what `path` is:
  * a folder: images per class, `path/CLASS/IMAGE` (needs Pillow: `pip install
    neuromorph[images]`). Labels are the sorted class-folder names; `expected` is one-hot
    (N, classes). Every image must have the same size (no resizing: a clear error names the
    odd file). Pixels become floats in [0, 1]: grey (H*W per sample) when every image is
    greyscale, else RGB (H*W*3, row-major, channels last; alpha dropped). Samples come
    class by class, files sorted by name. Hidden files and files without an image suffix
    are skipped.
  * `.npz`: `x`/`y` name the arrays (default "inputs" and "expected").
  * `.npy`: one array per file, so the inputs come from `path` and the expected values from
    `y=` (a second .npy path; `mdlc run --data X.npy --y Y.npy`).
  * `.csv`, `.tsv`, `.tab`, `.txt`, `.dat` holding a table of numbers: the delimiter comes
    from `delimiter=`, else from the suffix (.tsv/.tab: tab), else from the content (",",
    ";", tab or "|" when one splits the first lines evenly, else runs of whitespace, as
    np.savetxt writes). Lines starting with "#" and blank lines are skipped. A header row
    is detected (the first row has a cell that is not a number) unless `header=` says.
    `target=` (or `y=`) picks the target columns: a name, a 0-based index (negative from
    the end), or a list of them, or a comma-separated string; default the last column.
    `x=` picks the input columns the same way; default every other column. Cells must be
    numbers (true/false read as 1/0).
  * a text file that is not a table of numbers: DataError: prose trains a token model
    through `mdlc run MODEL --text FILE` (or neuromorph.text: CharTokenizer, windows).

Values: bool arrays become 0/1 floats, integer inputs floats; float arrays keep their dtype
(CSV and images give float32). A 1-D input array is N samples of width 1. NaN and inf are
refused, reported at the user's own coordinates: "data.csv:7:3" (line and column, 1-based,
counting the header and skipped lines) or "d.npz: 'inputs' sample 5, column 7".

With `model` (a handle or a `Model`), the arrays are also shaped for it: a 1-D integer
label array (or a single integral target column) for an output of width K > 1 with
cross_entropy becomes one-hot (N, K), a label outside 0..K-1 raising DataError at its row; a
1-D array for a width-1 output becomes (N, 1); and widths that do not fit the model raise
ShapeError naming the file. Without `model` integer labels are returned as they are.

This module reads files; it does not batch, shuffle or split (fit does).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from ._checks import PathLike
from .errors import DataError, ShapeError

__all__ = ["load_data", "data_kind", "image_classes", "IMAGE_SUFFIXES", "TABLE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".dat")
_TEXT_SUFFIXES = (".txt", ".text", ".md")
_SNIFF_DELIMITERS = (",", ";", "\t", "|")
_TRUE, _FALSE = ("true", "yes"), ("false", "no")

Columns = Union[None, int, str, Sequence[Union[int, str]]]


def load_data(path: PathLike, *, x: Columns = None, y: Columns = None, target: Columns = None,
              header: Optional[bool] = None, delimiter: Optional[str] = None,
              model: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, expected) read from a data file or folder; formats in the module docstring.

    x, y: .npz array names; for a table the input and target columns (y and target are the
    same for a table; give one). For .npy, y is the path of the expected array.
    header: a table's first row is names (True), data (False), or detected (None).
    delimiter: a table's delimiter (default: from the suffix or the content).
    model: a handle or Model the arrays are shaped for (integer labels one-hot, widths checked).
    Errors name the file (and, for a table, the line and column): FileNotFoundError for a
    missing path, DataError for content, ShapeError for shapes, ImportError for images
    without Pillow.
    """
    path = os.fspath(path)
    kind = data_kind(path)
    if kind != "table":
        for name, value in (("target", target), ("header", header), ("delimiter", delimiter)):
            if value is not None:
                raise DataError(f"{path}: {name}= applies to CSV/TSV tables, not to {_KIND[kind]}")
    if kind == "text":
        raise DataError(f"{path} is text, not a table of numbers: train a token model on it with "
                        f"`mdlc run MODEL --text {path}` (or in Python with neuromorph.text: "
                        f"CharTokenizer, windows)")
    if kind == "images":
        if x is not None or y is not None:
            raise DataError(f"{path}: a folder of images takes no x=/y= (labels are the class "
                            f"folders)")
        inputs, expected, _ = _images(path)
        where = _Where(path, "images")
    elif kind == "npz":
        inputs, expected, where = _npz(path, x, y)
    elif kind == "npy":
        inputs, expected, where = _npy(path, x, y)
    else:
        if y is not None and target is not None and y != target:
            raise DataError(f"{path}: give the target columns once (y= or target=), not both")
        inputs, expected, where = _table(path, x, target if target is not None else y,
                                         header, delimiter)
    if len(inputs) != len(expected):
        raise ShapeError(f"{path}: the inputs hold {len(inputs)} samples but the expected values "
                         f"hold {len(expected)}")
    if len(inputs) == 0:
        raise DataError(f"{path} holds no samples")
    if model is not None:
        inputs, expected = _fit_model(inputs, expected, model, where)
    return inputs, expected


_KIND = {"images": "a folder of images", "npz": "an .npz file", "npy": "an .npy file",
         "text": "a text file", "table": "a table"}


def data_kind(path: PathLike) -> str:
    """"images", "npz", "npy", "table" or "text": how load_data reads `path`.

    FileNotFoundError when nothing is there; DataError for a file of no known kind."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "images"
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    suffix = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK") and suffix in (".npz", ".zip", ""):
        return "npz"
    if suffix in (".npz", ".npy"):
        raise DataError(f"{path} is not a NumPy {suffix} file (its first bytes are {head[:8]!r})")
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{path} is one image: give the folder of class folders that holds it "
                        f"(FOLDER/CLASS/IMAGE)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not only a character cut at the 4096-byte boundary
            raise DataError(f"{path} is neither .npz, .npy, a CSV/TSV table nor UTF-8 text") \
                from None
        text = head[:e.start].decode("utf-8")
    if suffix in (".csv", ".tsv", ".tab") or _numeric_start(text):
        return "table"
    if suffix in _TEXT_SUFFIXES or suffix not in TABLE_SUFFIXES:
        return "text"
    return "table"


def _numeric_start(text: str) -> bool:
    """Whether the first data line of `text` splits into numbers (a header line allowed)."""
    lines = [ln for ln in text.splitlines()[:-1] or text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    for ln in lines[:2]:
        cells = _split_guess(ln)
        if cells and all(_number(c) is not None for c in cells):
            return True
    return False


def _split_guess(line: str) -> list[str]:
    for d in _SNIFF_DELIMITERS:
        if d in line:
            return line.split(d)
    return line.split()


# ---------------------------------------------------------------------------- locations
class _Where:
    """Names a sample (and column) of the user's data in error messages."""

    def __init__(self, path: str, kind: str, key: str = "", lines: Optional[list[int]] = None,
                 cols: Optional[list[int]] = None, y: Optional["_Where"] = None):
        self.path, self.kind, self.key, self.lines, self.cols = path, kind, key, lines, cols
        self.y = y if y is not None else self   # where the expected values are

    def __call__(self, i: int, j: Optional[int] = None) -> str:
        if self.lines is not None:           # a table: file:line:col
            col = "" if j is None or self.cols is None else f":{self.cols[j] + 1}"
            return f"{self.path}:{self.lines[i]}{col}"
        what = f"'{self.key}' " if self.key else ""
        return f"{self.path}: {what}sample {i}" + ("" if j is None else f", column {j}")


def _finite(arr: np.ndarray, where: Callable[..., str], what: str) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        idx = np.argwhere(~np.isfinite(arr))[0]
        if arr.ndim <= 2:
            loc = where(int(idx[0]), int(idx[1]) if arr.ndim == 2 else None)
        else:
            loc = f"{where(int(idx[0]))} at index {tuple(int(i) for i in idx)}"
        raise DataError(f"{loc}: {arr[tuple(idx)]} in {what} (NaN and inf are not data)")
    return arr


def _numeric(arr: np.ndarray, path: str, key: str) -> np.ndarray:
    """bool -> float32 0/1; integers and floats kept; anything else refused."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        return arr
    raise DataError(f"{path}: array '{key}' holds {arr.dtype} values, not numbers (numbers or "
                    f"bools are data)")


def _as_inputs(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 1:
        arr = arr[:, None]
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


# ---------------------------------------------------------------------------- NumPy files
def _npz(path: str, x: Columns, y: Columns) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Where]:
    xk = "inputs" if x is None else x
    yk = "expected" if y is None else y
    if not isinstance(xk, str) or not isinstance(yk, str):
        k, flag = (xk, "x") if not isinstance(xk, str) else (yk, "y")
        raise DataError(f"{path}: {flag}= names an array of the .npz file, got {k!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (xk, yk) if k not in data.files]
            if missing:
                raise DataError(f"{path} has no array named {missing[0]!r}; it holds "
                                f"{', '.join(repr(f) for f in data.files) or 'nothing'} (name the "
                                f"arrays with x=/y=, or --x KEY --y KEY)")
            xs, ys = _read_array(data, xk, path), _read_array(data, yk, path)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read {path}: {e}") from None
    return _pair_arrays(xs, ys, path, xk, yk)


def _read_array(data: Any, key: str, path: str) -> np.ndarray:
    try:
        arr: np.ndarray = data[key]
        return arr
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: array {key!r} holds Python objects (pickled), not numbers: "
                            f"save it as a numeric array") from None
        raise


def _npy(path: str, x: Columns,
         y: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Where]:  # y: the targets' path
    if x is not None:
        raise DataError(f"{path}: an .npy file holds one array; x= applies to .npz files (the "
                        f"inputs are {path} itself)")
    if y is None:
        raise DataError(f"{path} holds one array (the inputs): give the expected values' .npy "
                        f"file too, as y= (mdlc run --data {path} --y EXPECTED.npy)")
    ypath = os.fspath(y)
    if not os.path.isfile(ypath):
        raise FileNotFoundError(f"no such data file: {ypath}")
    arrays = []
    for p in (path, ypath):
        try:
            arrays.append(np.load(p, allow_pickle=False))
        except ValueError as e:
            what = "holds Python objects (pickled), not numbers" if "pickle" in str(e) else str(e)
            raise DataError(f"cannot read {p}: {what}") from None
        except (OSError, EOFError) as e:
            raise DataError(f"cannot read {p}: {e}") from None
        if not isinstance(arrays[-1], np.ndarray):
            raise DataError(f"{p} is not an .npy array")
    xs, ys, where = _pair_arrays(arrays[0], arrays[1], path, "", "", ypath)
    return xs, ys, where


def _pair_arrays(xs: np.ndarray, ys: np.ndarray, path: str, xk: str, yk: str,
                 ypath: Optional[str] = None) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Where]:
    """Checked arrays of an .npz file (keys xk, yk) or an .npy pair (path, ypath)."""
    ypath = ypath or path
    xs, ys = _numeric(xs, path, xk or "inputs"), _numeric(ys, ypath, yk or "expected")
    for arr, k, p in ((xs, xk, path), (ys, yk, ypath)):
        if arr.ndim == 0:
            raise ShapeError(f"{p}: {f'array {k!r}' if k else 'the array'} is a single number, "
                             f"not samples")
    yw = _Where(ypath, "npz", yk)
    where = _Where(path, "npz", xk, y=yw)
    _finite(xs, where, "the inputs")
    _finite(ys, yw, "the expected values")
    return _as_inputs(xs), ys, where


# ---------------------------------------------------------------------------- tables
def _number(cell: str) -> Optional[float]:
    s = cell.strip()
    try:
        return float(s)
    except ValueError:
        low = s.lower()
        return 1.0 if low in _TRUE else 0.0 if low in _FALSE else None


def _delimiter(path: str, sample: str, given: Optional[str]) -> Optional[str]:
    """The delimiter (None: runs of whitespace)."""
    if given is not None:
        if given in ("", " ", "whitespace"):
            return None
        if given in ("\\t", "tab"):
            return "\t"
        if len(given) != 1:
            raise DataError(f"delimiter must be one character, got {given!r}")
        return given
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    lines = [ln for ln in sample.splitlines()[:20]
             if ln.strip() and not ln.lstrip().startswith("#")]
    for d in _SNIFF_DELIMITERS:
        counts = {ln.count(d) for ln in lines[:10]}
        if lines and len(counts) == 1 and counts.pop() > 0:
            return d
    if suffix == ".csv" and not any(len(ln.split()) > 1 for ln in lines):
        return ","
    return None


def _rows(path: str, delim: Optional[str]) -> Iterator[tuple[int, list[str]]]:
    """(physical line number, cells) of every non-blank, non-comment row."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if delim is None:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield n, line.split()
        return
    reader = csv.reader(io.StringIO(text), delimiter=delim, skipinitialspace=True)
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if row[0].lstrip().startswith("#"):
                continue
            yield reader.line_num, row
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from None


def _table(path: str, xcols: Any, ycols: Any, header: Optional[bool],  # Columns, then lists
           delimiter: Optional[str]) -> tuple[npt.NDArray[Any], npt.NDArray[Any], _Where]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            sample = f.read(65536)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    delim = _delimiter(path, sample, delimiter)
    rows = list(_rows(path, delim))
    if not rows:
        raise DataError(f"{path} holds no rows")
    first_line, first = rows[0]
    if header is None:
        header = any(_number(c) is None for c in first)
    names = [c.strip() for c in first] if header else None
    if header:
        rows = rows[1:]
    width = len(first)
    if not rows:
        raise DataError(f"{path} holds a header row and no data")
    ycols = _columns(ycols, names, width, path, "target") if ycols is not None else [width - 1]
    if xcols is None:
        xcols = [j for j in range(width) if j not in ycols]
    else:
        xcols = _columns(xcols, names, width, path, "input")
    if not xcols:
        raise DataError(f"{path} has {width} column{'s' * (width != 1)}, all of them targets: "
                        f"no input columns are left")
    values = np.empty((len(rows), width), dtype=np.float64)
    lines = []
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}:{line}: {len(row)} field{'s' * (len(row) != 1)}, but the "
                            f"{'header' if header else 'first row'} (line {first_line}) has "
                            f"{width}")
        try:
            values[i] = [float(c) for c in row]
        except ValueError:
            for j, c in enumerate(row):
                v = _number(c)
                if v is None:
                    what = "an empty cell" if not c.strip() else f"{c.strip()!r}"
                    col = f" (column {names[j]!r})" if names else ""
                    raise DataError(f"{path}:{line}:{j + 1}: {what} is not a number{col}") \
                        from None
                values[i, j] = v
        lines.append(line)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        i, j = (int(k) for k in bad[0])
        raise DataError(f"{path}:{lines[i]}:{j + 1}: {rows[i][1][j].strip()!r} is not a finite "
                        f"number (NaN and inf are not data)")
    where = _Where(path, "table", lines=lines, cols=xcols,
                   y=_Where(path, "table", lines=lines, cols=ycols))
    return values[:, xcols].astype(np.float32), values[:, ycols].astype(np.float32), where


def _columns(spec: Columns, names: Optional[list[str]], width: int, path: str,
             what: str) -> list[int]:
    if isinstance(spec, str):
        items: list[Any] = [s.strip() for s in spec.split(",")] if "," in spec and \
            (names is None or spec not in names) else [spec]
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        items = [int(spec)]
    else:
        try:
            items = list(spec)  # type: ignore[arg-type]  # anything else: TypeError, reported
        except TypeError:
            raise DataError(f"{path}: {what} columns are names or indices, got {spec!r}") from None
    if not items:
        raise DataError(f"{path}: no {what} columns given")
    out: list[int] = []
    listing = (f"the columns are {', '.join(repr(n) for n in names)}" if names
               else f"the table has no header and {width} columns (0 .. {width - 1})")
    for item in items:
        if isinstance(item, str) and names and item in names:
            j = names.index(item)
        else:
            try:
                k = int(item) if not isinstance(item, bool) else None
            except (TypeError, ValueError):
                k = None
            if k is None:
                raise DataError(f"{path}: no column named {item!r} ({listing})")
            if not -width <= k < width:
                raise DataError(f"{path}: {what} column index {k} is out of range ({listing}; "
                                f"indices count from 0, negative ones from the end)")
            j = k % width
        if j in out:
            raise DataError(f"{path}: {what} column {item!r} is named twice")
        out.append(j)
    return out


# ---------------------------------------------------------------------------- images
def image_classes(folder: PathLike) -> list[str]:
    """The class names of an image folder (its sorted sub-folders): label i is the i-th."""
    folder = os.fspath(folder)
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _images(folder: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any], list[str]]:
    classes = image_classes(folder)
    if not classes:
        raise DataError(f"{folder} holds no class folders: a folder of images is FOLDER/CLASS/"
                        f"IMAGE, one sub-folder per class")
    files, labels = [], []
    for k, c in enumerate(classes):
        sub = os.path.join(folder, c)
        found = sorted(f for f in os.listdir(sub) if not f.startswith(".")
                       and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
                       and os.path.isfile(os.path.join(sub, f)))
        if not found:
            raise DataError(f"{sub} (class {c!r}) holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += [os.path.join(sub, f) for f in found]
        labels += [k] * len(found)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading the images in {folder} needs Pillow, which is not installed: "
                          f"pip install 'neuromorph[images]' (or pip install Pillow)") from None
    pictures, size, first, grey = [], None, None, True
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                pic = im.copy()
        except Exception as e:  # Pillow raises many types for a bad file
            raise DataError(f"cannot read the image {f}: {e}") from None
        if size is None:
            size, first = pic.size, f
        elif pic.size != size:
            raise DataError(f"{f} is {pic.size[0]}x{pic.size[1]} pixels but {first} is "
                            f"{size[0]}x{size[1]}: all images must have one size (resize them "
                            f"first; load_data does not)")
        grey = grey and pic.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")
        pictures.append(pic)
    arrays = [_pixels(p, grey) for p in pictures]
    x = np.stack(arrays).reshape(len(arrays), -1)
    onehot = np.zeros((len(labels), len(classes)), dtype=np.float32)
    onehot[np.arange(len(labels)), labels] = 1.0
    return x, onehot, classes


def _pixels(pic: Any, grey: bool) -> np.ndarray:  # pic: a PIL.Image
    """One image as float32 in [0, 1]: (H, W) grey or (H, W, 3) RGB."""
    if pic.mode.startswith("I"):
        arr = np.asarray(pic, dtype=np.float64)
        top = 65535.0 if pic.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top, 0.0, 1.0)
        return (arr if grey else np.repeat(arr[..., None], 3, axis=-1)).astype(np.float32)
    arr = np.asarray(pic.convert("L" if grey else "RGB"), dtype=np.float32)
    return arr / 255.0


# ---------------------------------------------------------------------------- model shaping
def _model_io(model: Any) -> tuple[int, int, int, str]:  # a handle or a Model
    """(input width, output width, output cells, output loss) of a handle or Model."""
    from . import _core
    h = getattr(model, "handle", model)
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise DataError(f"model= takes a model handle or a Model, got {type(model).__name__}")
    meta = _core.info(int(h))
    doc = json.loads(_core.ir_json(int(h)))
    out = next(n for n in doc["nodes"] if n["name"] == doc["output"])
    return (int(meta["input_width"]), int(meta["output_width"]), int(out.get("cells", 1)),
            out["loss"]["name"])


def _fit_model(x: np.ndarray, e: np.ndarray, model: Any,
               where: _Where) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    n_in, n_out, cells, loss = _model_io(model)
    ywhere = where.y
    path = where.path
    if x.ndim > 2 and not (x.ndim == 3 and x.shape[-1] == n_in) \
            and math.prod(x.shape[1:]) == n_in:
        x = x.reshape(len(x), -1)                    # e.g. (N, 28, 28) images for 784 inputs
    labels = e.ndim == 1 or (e.ndim == 2 and e.shape[1] == 1)
    if labels and loss == "cross_entropy" and cells == 1 and n_out > 1:
        e = _one_hot(e.reshape(-1), n_out, ywhere)
    elif e.ndim == 1:
        e = e[:, None]
    if x.shape[-1] != n_in:
        raise ShapeError(f"{path}: the inputs have {x.shape[-1]} value{'s' * (x.shape[-1] != 1)} "
                         f"per sample but the model reads {n_in}")
    if e.shape[-1] not in (n_out, cells if cells > 1 else n_out):
        raise ShapeError(f"{ywhere.path}: the expected values have {e.shape[-1]} per sample but "
                         f"the model's output has width {n_out}"
                         + (f" ({cells} cells: give {cells} class ids per sample, or {n_out} "
                            f"values)" if cells > 1 else ""))
    return x, e


def _one_hot(labels: np.ndarray, k: int, where: _Where) -> np.ndarray:
    """(N,) class ids 0..k-1 (integers, or integral floats) -> (N, k) float32 one-hot."""
    if np.issubdtype(labels.dtype, np.floating):
        bad = np.flatnonzero((labels != np.floor(labels)) | (labels < 0) | (labels >= k))
    else:
        bad = np.flatnonzero((labels < 0) | (labels >= k))
    if len(bad):
        i = int(bad[0])
        value = labels[i].item()
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        raise DataError(f"{where(i, 0) if where.lines is not None else where(i)}: class label "
                        f"{shown} is not an integer in 0..{k - 1} (the model's output has "
                        f"{k} classes)")
    out = np.zeros((len(labels), k), dtype=np.float32)
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return out
