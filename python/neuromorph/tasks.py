"""Synthetic tasks sized to a model, for `mdlc run` without data and for examples.

* recurrent models: a stream of random bits, y_t = 0.1 + 0.8 * x_{t-1} (needs memory);
* softmax + cross_entropy outputs: Gaussian class blobs, one-hot targets;
* hinge / huber_modified: ±1 labels from a random teacher network;
* a grid node (attn2d, column) right after the input and a 2-class softmax output: the
  spatially local rule "does the grid hold two horizontally adjacent 1s?" (grid_task);
* everything else: regression on a random teacher network, squashed into the output's range.

For token models (MDL.md section 7), `formal_text` writes a text with long-range structure:
key=value records whose queries must be answered from earlier in the line.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

_SQUASH: dict[str, Callable[[Any], Any]] = {
    "sigmoid": lambda t: 1 / (1 + np.exp(-t)), "tanh": np.tanh,
           "softmax": lambda t: np.exp(t) / np.exp(t).sum(-1, keepdims=True)}


def make_task(ir_doc: dict[str, Any], batch: int, n_batches: int,
              seed: int = 0) -> tuple[npt.NDArray[Any], npt.NDArray[Any], str]:
    """(inputs, expected, description) with shapes (n_batches, batch, width)."""
    rng = np.random.default_rng(seed)
    nodes = {n["name"]: n for n in ir_doc["nodes"]}
    n_in = nodes[ir_doc["input"]]["width"]
    out = nodes[ir_doc["output"]]
    n_out, act, loss = out["width"], out["activation"]["name"], out["loss"]["name"]
    N = n_batches * batch
    grid = _grid_node(ir_doc)
    seq = _sequence_node(ir_doc)
    special = _seed_task(ir_doc, N, seed)
    if special is not None:
        x, y, desc = special
    elif seq is not None and loss == "cross_entropy" and n_out == 2 and not ir_doc["recurrent"]:
        x, y = sequence_task(seq[0], seq[1], N, rng)
        desc = (f"sequences of {seq[0]} noisy one-hot tokens: class 1 when symbol 0 occurs more "
                f"often than symbol 1")
    elif grid is not None and loss == "cross_entropy" and n_out == 2 and not ir_doc["recurrent"]:
        H, W, channels = grid
        x, y = grid_task(H, W, N, rng, channels)
        desc = f"{H}x{W} grids of sparse bits: class 1 when two horizontally adjacent cells are 1"
    elif ir_doc["recurrent"]:
        x = (rng.random((N, n_in)) < 0.5).astype(np.float64)
        prev = np.vstack([np.zeros((1, n_in)), x[:-1]])[:, np.arange(n_out) % n_in]
        if loss in ("hinge", "huber_modified"):
            y, desc = 2 * prev - 1, "delayed bits: expected[t] = ±1 from input[t-1]"
        elif loss == "cross_entropy":
            y, desc = np.eye(n_out)[prev[:, 0].astype(int)], "delayed bit as a one-hot class"
        else:
            y, desc = 0.1 + 0.8 * prev, "delayed bits: expected[t] = 0.1 + 0.8 * input[t-1]"
    elif loss == "cross_entropy" and act == "softmax":
        centers = rng.normal(0, 2.0, (n_out, n_in))
        labels = rng.integers(0, n_out, N)
        x = centers[labels] + rng.normal(0, 1.0, (N, n_in))
        y = np.eye(n_out)[labels]
        desc = f"{n_out} Gaussian class blobs, one-hot targets"
    else:
        hidden = 32
        w1 = rng.normal(0, 1 / np.sqrt(n_in), (n_in, hidden))
        w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, n_out))
        x = rng.uniform(-1, 1, (N, n_in))
        t = np.tanh(x @ w1) @ w2 * 2
        if loss in ("hinge", "huber_modified"):
            y, desc = np.where(t >= 0, 1.0, -1.0), "±1 labels of a random teacher network"
        else:
            squash = _SQUASH.get(act)
            y = squash(t) if squash is not None else t
            desc = "regression on a random teacher network"
    def shape(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return a.reshape(n_batches, batch, -1).astype(np.float32)
    return shape(x), shape(y), desc


def _seed_task(ir_doc: dict[str, Any], N: int,
               seed: int) -> Optional[tuple[npt.NDArray[Any], npt.NDArray[Any], str]]:
    """The built-in data of the seed models of MDL.md section 7, or None:
    a token model (embed over C cells -> ... -> `cells C` softmax) learns formal_text;
    a column classifier of 8x8 images into 10 classes learns datasets.digits; an energy block
    with a clamped label layer (not the first) learns datasets.completion."""
    from . import datasets
    nodes = {n["name"]: n for n in ir_doc["nodes"]}
    out = nodes[ir_doc["output"]]
    first = _first_after_input(ir_doc)
    if ir_doc["recurrent"] or first is None:
        return None
    if first["kind"] == "embed" and out.get("cells") and out["loss"]["name"] == "cross_entropy":
        C, V = first["struct"]["in_width"], first["struct"]["options"]["vocab"]
        if out["cells"] == C and out["width"] == C * V and V >= len(FORMAL_ALPHABET):
            from .text import CharTokenizer, windows
            text = formal_text(N * C + C + 1, seed)
            ids = CharTokenizer(FORMAL_ALPHABET).encode(text)
            x, y = windows(ids, C)
            return (x[:N].astype(np.float64), y[:N].astype(np.float64),
                    f"windows of {C} characters of a formal language of recalled records "
                    f"(neuromorph.tasks.formal_text); targets: the next character at every cell")
    if nodes[ir_doc["input"]]["width"] == 64 and out["width"] == 10 \
            and out["loss"]["name"] == "cross_entropy" \
            and any(n["kind"] == "column" for n in ir_doc["nodes"]):
        x, labels = datasets.digits(N, seed)
        return x, np.eye(10)[labels], "8x8 images of the digits 0-9 (neuromorph.datasets.digits)"
    if first["kind"] == "energy":
        layers = first["energy"]["layers"]
        label = [l for l in layers[1:] if l.get("clamp")]
        if len(label) == 1 and layers[0]["size"] == out["width"]:
            x, y, _ = datasets.completion(N, layers[0]["size"], label[0]["size"], seed=seed)
            return (x, y, f"corrupted sign patterns (20% flipped) with their clamped label; "
                          f"target: the clean pattern (neuromorph.datasets.completion)")
    return None


def _first_after_input(ir_doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    first = [n for n in ir_doc["nodes"] if n["inputs"] and n["inputs"][0]["node"] == ir_doc["input"]]
    return first[0] if len(first) == 1 else None


def _sequence_node(ir_doc: dict[str, Any]) -> Optional[tuple[int, int]]:
    """(T, D) when the node after the input is a neuron node."""
    node = _first_after_input(ir_doc)
    if node is None or node["kind"] != "neuron":
        return None
    return node["struct"]["shape"][0], node["struct"]["options"]["dim"]


def sequence_task(T: int, D: int, n: int,
                  rng: np.random.Generator) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Noisy one-hot tokens over D >= 2 symbols; label 1 when symbol 0 outnumbers symbol 1."""
    sym = rng.integers(0, D, (n, T))
    x = np.eye(D)[sym] + rng.normal(0, 0.1, (n, T, D))
    label = ((sym == 0).sum(1) > (sym == 1).sum(1)).astype(int)
    return x.reshape(n, T * D), np.eye(2)[label]


def _grid_node(ir_doc: dict[str, Any]) -> Optional[tuple[int, int, int]]:
    """(H, W, channels) when the node after the input is a 2-D attn2d or column node."""
    first = [n for n in ir_doc["nodes"] if n["inputs"] and n["inputs"][0]["node"] == ir_doc["input"]]
    if len(first) != 1 or "struct" not in first[0] or len(first[0]["struct"]["shape"]) != 2:
        return None
    st = first[0]["struct"]
    H, W = st["shape"]
    if st["in_width"] == H * W:  # token ids (attn2d with vocab)
        return H, W, 0
    if st["in_width"] % (H * W):
        return None
    return H, W, st["in_width"] // (H * W)


def grid_task(H: int, W: int, n: int, rng: np.random.Generator,
              channels: int = 0) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Sparse random bit grids; label 1 when some row holds two adjacent 1s (about half do).

    channels 0: one value (the bit, a token id) per cell; channels c >= 2: the bit one-hot in
    the first two of c features per cell. Returns (x (n, H*W*max(1,c)), one-hot y (n, 2)).
    """
    p = np.sqrt(1 - 0.5 ** (1 / max(1, H * (W - 1))))  # P(no adjacent pair) ~ 1/2
    bits = (rng.random((n, H, W)) < p).astype(np.float64)
    label = (bits[:, :, 1:] * bits[:, :, :-1]).reshape(n, -1).max(1).astype(int)
    flat = bits.reshape(n, H * W)
    if channels == 0:
        x = flat
    else:
        x = np.zeros((n, H * W, channels))
        x[:, :, 0], x[:, :, 1] = 1 - flat, flat
        x = x.reshape(n, -1)
    return x, np.eye(2)[label]


FORMAL_KEYS = "abcd"
FORMAL_VALUES = "01234567"
FORMAL_ALPHABET = "".join(sorted(set(FORMAL_KEYS + FORMAL_VALUES + "=?\n ")))  # 16 symbols


def formal_text(n_chars: int, seed: int = 0) -> str:
    """A text of exactly n_chars characters in a 16-symbol language of recalled records.

    Each line defines 2 to 4 distinct keys (a-d, random order) with random values of 1 to 3
    digits (0-7), then asks 1 or 2 of them back, each query `?k` followed by the key's value:

        c=5 a=03 d=741 ?a03 ?c5
        b=26 d=4 ?d4

    Keys, values and which keys are asked are random (uniform); everything else is fixed by
    the line. An answer is determined by a definition up to ~30 characters back, so a model
    that reads the whole line predicts it exactly, while an n-gram model of short context or
    a unigram model pays about log2(8) = 3 bits per answer digit. Values of varying length
    keep positions from repeating with a fixed period. The text is cut at n_chars (its last
    line may be incomplete). Alphabet: FORMAL_ALPHABET (newline, space, digits 0-7, "=",
    "?", a-d). Deterministic for a given seed.
    """
    if isinstance(n_chars, bool) or not isinstance(n_chars, (int, np.integer)) or n_chars < 0:
        from .errors import DataError
        raise DataError(f"n_chars must be an integer >= 0, got {n_chars!r}")
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < n_chars:
        n_keys = int(rng.integers(2, len(FORMAL_KEYS) + 1))
        keys = [FORMAL_KEYS[k] for k in rng.permutation(len(FORMAL_KEYS))[:n_keys]]
        values = ["".join(FORMAL_VALUES[d] for d in rng.integers(0, len(FORMAL_VALUES),
                                                                 int(rng.integers(1, 4))))
                  for _ in range(n_keys)]
        asked = rng.permutation(n_keys)[:int(rng.integers(1, 3))]
        words = [f"{k}={v}" for k, v in zip(keys, values)] + [f"?{keys[i]}{values[i]}"
                                                               for i in asked]
        line = " ".join(words) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n_chars]
