"""Character-level text for token models (MDL.md section 7, "Generation and text").

This module holds the Python side of text models: a character tokenizer (`CharTokenizer`),
training windows cut from an id sequence (`windows`, `split_heldout`), the held-out
bits-per-character of a model (`bits_per_char`), count-based baselines (`NGramModel`,
`unigram_bits`) and the plumbing that stores a tokenizer in a model file (a per-handle
registry and the safetensors `__metadata__` entry "tokenizer").

It is not a subword tokenizer, holds no model math (the engine computes every forward pass)
and does not sample: generation lives in `neuromorph.generate`.

    tok = CharTokenizer(text)                 # alphabet: the sorted distinct characters
    ids = tok.encode(text)                    # int64 ids, 0 .. tok.vocab_size - 1
    train_ids, test_ids = split_heldout(ids, 0.1)
    x, y = windows(train_ids, C)              # (n, C) inputs and (n, C) class-id targets
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._sequence import sequence_spec
from .errors import DataError, HandleError, ModelFileError, ShapeError
from .training import predict

__all__ = ["CharTokenizer", "windows", "split_heldout", "bits_per_char", "NGramModel",
           "unigram_bits", "attach_tokenizer", "tokenizer_of", "forget", "metadata_for",
           "read_file_metadata", "tokenizer_from_metadata"]

_TOKENIZER_FORMAT = "neuromorph-char-tokenizer"
_MAX_HEADER = 100 << 20   # the engine refuses larger safetensors headers too


# ---------------------------------------------------------------------------- tokenizer
class CharTokenizer:
    """One id per character: id i is the i-th character of the sorted alphabet.

    `CharTokenizer(text)` takes the distinct characters of `text` (any str: newlines,
    unicode; sorted by code point). `encode` maps a str to an int64 array of ids, `decode`
    maps ids back; `decode(encode(s)) == s` for every s over the alphabet. A character
    outside the alphabet, or an id outside 0 .. vocab_size - 1, raises DataError.
    """

    __slots__ = ("_chars", "_codes", "_order")

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise DataError(f"CharTokenizer takes a str, got {type(text).__name__}")
        if not text:
            raise DataError("CharTokenizer needs a non-empty text: the alphabet would be empty")
        self._set("".join(sorted(set(text))))

    def _set(self, chars: str) -> None:
        self._chars = chars
        self._codes = np.fromiter(map(ord, chars), dtype=np.int64, count=len(chars))
        self._order = np.argsort(self._codes, kind="stable")

    @classmethod
    def from_chars(cls, chars: str) -> "CharTokenizer":
        """A tokenizer whose id i is chars[i] (distinct characters, in the order given)."""
        if not isinstance(chars, str) or not chars:
            raise DataError("a tokenizer alphabet must be a non-empty str")
        seen: set[str] = set()
        for i, c in enumerate(chars):
            if c in seen:
                raise DataError(f"a tokenizer alphabet must not repeat characters; {c!r} at "
                                f"position {i} repeats")
            seen.add(c)
        tok = cls.__new__(cls)
        tok._set(chars)
        return tok

    @property
    def chars(self) -> str:
        """The alphabet: chars[i] is the character of id i."""
        return self._chars

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters (ids are 0 .. vocab_size - 1)."""
        return len(self._chars)

    def encode(self, text: str) -> np.ndarray:
        """The ids of the characters of `text`, an int64 array of len(text)."""
        if not isinstance(text, str):
            raise DataError(f"encode takes a str, got {type(text).__name__}")
        codes = np.fromiter(map(ord, text), dtype=np.int64, count=len(text))
        sorted_codes = self._codes[self._order]
        pos = np.searchsorted(sorted_codes, codes)
        pos_c = np.minimum(pos, len(sorted_codes) - 1)
        known = sorted_codes[pos_c] == codes
        if not known.all():
            i = int(np.argmin(known))
            raise DataError(f"character {text[i]!r} at position {i} is not in the tokenizer's "
                            f"alphabet of {self.vocab_size} characters")
        return self._order[pos_c].astype(np.int64)

    def decode(self, ids: npt.ArrayLike) -> str:
        """The text of a sequence of ids (ints or integral numbers in 0 .. vocab_size - 1)."""
        arr = as_ids(ids, self.vocab_size, "ids")
        chars = self._chars
        return "".join([chars[i] for i in arr.tolist()])

    def to_json(self) -> str:
        """A JSON text that `from_json` turns back into an equal tokenizer."""
        return json.dumps({"format": _TOKENIZER_FORMAT, "version": 1, "chars": self._chars},
                          ensure_ascii=True)

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "CharTokenizer":
        """The tokenizer of a `to_json()` text; DataError for anything else."""
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as e:
            raise DataError(f"a tokenizer description must be JSON text: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != _TOKENIZER_FORMAT:
            raise DataError(f"not a Neuromorph character tokenizer (format must be "
                            f"{_TOKENIZER_FORMAT!r})")
        if doc.get("version") != 1:
            raise DataError(f"tokenizer version {doc.get('version')!r} is not supported "
                            f"(this version reads 1)")
        chars: Any = doc.get("chars")  # from_chars checks it is a str
        return cls.from_chars(chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other._chars == self._chars

    def __hash__(self) -> int:
        return hash(("CharTokenizer", self._chars))

    def __len__(self) -> int:
        return len(self._chars)

    def __repr__(self) -> str:
        shown = self._chars if len(self._chars) <= 40 else self._chars[:37] + "..."
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={shown!r})"


def as_ids(ids: npt.ArrayLike, vocab: int, name: str = "ids") -> np.ndarray:
    """`ids` as a 1-D int64 array, each integral and in 0 .. vocab - 1 (DataError otherwise)."""
    if isinstance(ids, (str, bytes)):
        raise DataError(f"{name} must be a sequence of integer ids, got {type(ids).__name__}")
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be a sequence of integer ids: {e}") from None
    if arr.ndim == 0:
        raise DataError(f"{name} must be a 1-D sequence of ids, got a scalar")
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be a 1-D sequence of ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{name}[{i}] = {arr[i]!r} is not an integer")
    out_of_range = (arr < 0) | (arr >= vocab)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise DataError(f"{name}[{i}] = {arr[i].item()!r} is outside 0 .. {vocab - 1} "
                        f"(vocabulary of {vocab})")
    return arr.astype(np.int64)


# ---------------------------------------------------------------------------- windows
def windows(ids: npt.ArrayLike, C: int,
            stride: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs from an id sequence: windows of C+1 consecutive ids.

    Window k starts at k * stride (default stride C: windows overlap in one id, so every id
    after the first is a target exactly once). Returns (inputs, targets), both (n, C) int64:
    inputs are a window's first C ids, targets its last C (the next id at every cell). A
    sequence shorter than C+1 gives n = 0.
    """
    C = _positive_int(C, "C")
    stride = C if stride is None else _positive_int(stride, "stride")
    arr = _int_sequence(ids, "ids")
    if len(arr) < C + 1:
        return np.zeros((0, C), np.int64), np.zeros((0, C), np.int64)
    win = np.lib.stride_tricks.sliding_window_view(arr, C + 1)[::stride]
    return np.ascontiguousarray(win[:, :C]), np.ascontiguousarray(win[:, 1:])


def split_heldout(ids: npt.ArrayLike, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the held-out part is the last round(len * fraction) ids."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0 <= fraction < 1:
        raise DataError(f"the held-out fraction must be a number in [0, 1), got {fraction!r}")
    arr = _int_sequence(ids, "ids")
    k = int(round(len(arr) * float(fraction)))
    return arr[:len(arr) - k], arr[len(arr) - k:]


def bits_per_char(h: int, ids: npt.ArrayLike, C: Optional[int] = None,
                  batch: Optional[int] = None) -> float:
    """A token model's bits per character on an id sequence (e.g. a held-out tail).

    The sequence is cut into non-overlapping windows of C+1 ids (`windows(ids, C)`); the
    model predicts every window at once (`neuromorph.predict`), and the score is the mean of
    -log2 p(target) over every cell of every window. So the scored characters are
    ids[1 : n*C + 1], each exactly once: the first id (no context) and a remainder shorter
    than a window are not scored; a character at cell c was predicted from the c+1 ids
    before it in its window. Probabilities below 1e-12 count as 1e-12 (about 40 bits).

    C defaults to the model's (the cells of its embed); `batch` is how many windows go to
    one predict call (default 256; memory only, the result does not depend on it).
    The model must be a token model as `neuromorph.generate` needs (ShapeError otherwise).
    """
    spec = sequence_spec(_ir(h))
    if C is None:
        C = spec.cells
    elif _positive_int(C, "C") != spec.cells:
        raise ShapeError(f"the model reads windows of {spec.cells} ids, got C={C}")
    batch = 256 if batch is None else _positive_int(batch, "batch")
    arr = as_ids(ids, spec.vocab, "ids")
    x, y = windows(arr, C)
    if len(x) == 0:
        raise DataError(f"bits_per_char needs at least {C + 1} ids (one window), got {len(arr)}")
    total = 0.0
    for k in range(0, len(x), batch):
        p = predict(h, x[k:k + batch]).reshape(-1, C, spec.vocab)
        t = y[k:k + batch]
        picked = np.take_along_axis(p, t[:, :, None], axis=2)[:, :, 0].astype(np.float64)
        if not np.isfinite(picked).all():
            raise DataError("the model's output holds NaN or inf (has training diverged?)")
        total += float(-np.log2(np.maximum(picked, 1e-12)).sum())
    return total / y.size


def _ir(h: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_core.ir_json(int(h)))
    return doc


# ---------------------------------------------------------------------------- baselines
_Table = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # sorted codes, their counts


class NGramModel:
    """A count model of order n over ids 0 .. vocab_size - 1, for scale next to a network.

    Probabilities are interpolated additive smoothing, defined recursively:
    order 1 is add-alpha, P1(w) = (c(w) + alpha) / (N + alpha V); order k > 1 mixes the
    k-gram counts with order k-1 as a prior of weight alpha V:
    Pk(w | h) = (c(h w) + alpha V P(k-1)(w | h')) / (c(h ·) + alpha V), h' = h without its
    oldest id. Every level sums to 1, unseen ids keep a nonzero probability, and on a
    deterministic sequence the bits per id fall towards 0 as alpha does.

    The first ids of a scored sequence use the contexts they have (id t uses min(t, n-1)
    earlier ids). `n_params` is the number of stored counts: the distinct k-grams seen, for
    k = 1 .. n (their context totals are sums of these and not counted again).
    """

    def __init__(self, n: int, vocab_size: int, alpha: float = 0.1):
        self.n = _positive_int(n, "n")
        self.vocab_size = _positive_int(vocab_size, "vocab_size")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
                or not math.isfinite(alpha) or alpha <= 0:
            raise DataError(f"alpha must be a positive finite number, got {alpha!r}")
        self.alpha = float(alpha)
        if self.vocab_size ** self.n >= 1 << 62:
            raise DataError(f"an order-{self.n} model over {self.vocab_size} ids is too large "
                            f"to index (vocab_size ** n must be below 2**62)")
        self._grams: list[_Table] = []   # per order k: (sorted k-gram codes, counts)
        self._ctx: list[_Table] = []     # per order k: (sorted context codes, totals)
        self._total = 0

    def fit(self, ids: npt.ArrayLike) -> "NGramModel":
        """Count every k-gram (k = 1 .. n) of the sequence; replaces earlier counts."""
        arr = as_ids(ids, self.vocab_size, "ids")
        if len(arr) == 0:
            raise DataError("fit needs at least one id")
        self._grams, self._ctx = [], []
        self._total = len(arr)
        for k in range(1, self.n + 1):
            codes = self._codes(arr, k)
            g, c = np.unique(codes, return_counts=True)
            self._grams.append((g, c))
            ctx, inverse = np.unique(g // self.vocab_size, return_inverse=True)
            self._ctx.append((ctx, np.bincount(inverse, weights=c).astype(np.int64)))
        return self

    @property
    def n_params(self) -> int:
        """Stored counts: the distinct k-grams seen in fit, k = 1 .. n."""
        return int(sum(len(g) for g, _ in self._grams))

    def _codes(self, arr: np.ndarray, k: int) -> np.ndarray:
        """Code of the k-gram ending at each position t >= k - 1 (oldest id most significant)."""
        V = self.vocab_size
        codes = np.zeros(max(0, len(arr) - k + 1), dtype=np.int64)
        for j in range(k):
            codes = codes * V + arr[j:len(arr) - k + 1 + j]
        return codes

    @staticmethod
    def _lookup(table: _Table,
                keys: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        sorted_keys, values = table
        if len(sorted_keys) == 0:
            return np.zeros(len(keys))
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return np.where(sorted_keys[pos] == keys, values[pos], 0).astype(np.float64)

    def probabilities(self, ids: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(ids[t] | the ids before it) for every t, float64."""
        if not self._grams:
            raise DataError("the n-gram model has not been fitted: call fit(ids) first")
        arr = as_ids(ids, self.vocab_size, "ids")
        V, prior = self.vocab_size, self.alpha * self.vocab_size
        p = (self._lookup(self._grams[0], arr) + self.alpha) / (self._total + prior)
        for k in range(2, self.n + 1):
            if len(arr) < k:
                break
            codes = self._codes(arr, k)
            num = self._lookup(self._grams[k - 1], codes)
            den = self._lookup(self._ctx[k - 1], codes // V)
            tail = p[k - 1:]
            p = np.concatenate([p[:k - 1], (num + prior * tail) / (den + prior)])
        return np.asarray(p, dtype=np.float64)

    def bits_per_char(self, ids: npt.ArrayLike) -> float:
        """Mean -log2 P(id | context) over every id of the sequence."""
        p = self.probabilities(ids)
        if len(p) == 0:
            raise DataError("bits_per_char needs at least one id")
        return float(-np.log2(p).mean())


def unigram_bits(train_ids: npt.ArrayLike, test_ids: npt.ArrayLike, V: int,
                 alpha: float = 1.0) -> float:
    """Bits per id of the test ids under add-alpha character frequencies of the train ids."""
    return NGramModel(1, V, alpha).fit(train_ids).bits_per_char(test_ids)


# ---------------------------------------------------------------------------- model files
_TOKENIZERS: dict[int, CharTokenizer] = {}   # handle -> CharTokenizer


def attach_tokenizer(h: int, tok: Optional[CharTokenizer]) -> None:
    """Record the tokenizer of model handle h (saved with it by nm.save); None forgets it."""
    if tok is None:
        forget(h)
        return
    if not isinstance(tok, CharTokenizer):
        raise DataError(f"attach_tokenizer takes a CharTokenizer, got {type(tok).__name__}")
    _TOKENIZERS[_handle(h)] = tok


def tokenizer_of(h: int) -> Optional[CharTokenizer]:
    """The tokenizer attached to handle h (by attach_tokenizer or nm.load), or None."""
    return _TOKENIZERS.get(_handle(h))


def forget(h: int) -> None:
    """Drop handle h's tokenizer (when the model is released); no error if it has none."""
    _TOKENIZERS.pop(_handle(h), None)


def metadata_for(h: int) -> list[tuple[str, str]]:
    """File metadata entries for handle h: [("tokenizer", json)] or [] without a tokenizer."""
    tok = tokenizer_of(h)
    return [] if tok is None else [("tokenizer", tok.to_json())]


def read_file_metadata(path: Union[str, "os.PathLike[str]"]) -> dict[str, str]:
    """The `__metadata__` dict (str -> str) of a safetensors file such as a saved model.

    Reads only the header: 8 bytes little-endian length, then that many bytes of JSON. A
    file without `__metadata__` gives {}; anything malformed raises ModelFileError, a
    missing file FileNotFoundError.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: too short to be a model file")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n > size - 8:
            raise ModelFileError(f"{path}: header length {n} does not fit the file "
                                 f"(truncated or not a model file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(f"{path}: the header is not valid JSON (corrupt file?)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise ModelFileError(f"{path}: __metadata__ must map strings to strings")
    return dict(meta)


def tokenizer_from_metadata(meta: dict[str, str]) -> Optional[CharTokenizer]:
    """The tokenizer stored in file metadata (read_file_metadata), or None if there is none.

    A "tokenizer" entry that does not describe a tokenizer raises ModelFileError.
    """
    if not isinstance(meta, dict) or "tokenizer" not in meta:
        return None
    try:
        return CharTokenizer.from_json(meta["tokenizer"])
    except DataError as e:
        raise ModelFileError(f"the model file's tokenizer is unreadable: {e}") from None


# ---------------------------------------------------------------------------- helpers
def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _int_sequence(ids: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    """A 1-D int64 array of integral values (any range)."""
    if isinstance(ids, (str, bytes)):
        raise DataError(f"{name} must be a sequence of integer ids, got {type(ids).__name__}")
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be a 1-D sequence of ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not (np.isfinite(arr)
                                                      & (arr == np.round(arr))).all():
        raise DataError(f"{name} must hold integers")
    return arr.astype(np.int64)


def _handle(h: object) -> int:
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
        raise HandleError(f"a model handle is an int returned by compile(), got {type(h).__name__}")
    return int(h)
