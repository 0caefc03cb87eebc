"""Sampling from a causal token model (MDL.md section 7, "Generation and text").

`generate(h, prompt_ids, n)` continues a sequence of token ids with a model whose input is
one id per cell (an `embed` node, or an `attn2d` with `vocab`) over C cells and whose output
is `cells C` with a softmax over the same vocabulary, causally masked. `sequence_spec` reads
that shape off the IR and says what is missing when a model does not fit.

This module only drives the engine's forward pass (`training.predict`) and samples; it
trains nothing and knows nothing of characters (`neuromorph.text` maps text to ids). What a
token model is (`sequence_spec`) lives in `neuromorph._sequence`, shared with `text`.
"""
from __future__ import annotations

import json
import math
from collections import deque
from typing import Any, Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._checks import check_handle
from ._sequence import SequenceSpec, sequence_spec
from .errors import DataError, StateError
from .text import as_ids
from .training import SHUFFLE, predict

__all__ = ["generate", "sequence_spec", "SequenceSpec"]


def generate(h: int, prompt_ids: npt.ArrayLike, n: int, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Union[int, np.random.Generator, None] = None,
             vocab: Optional[int] = None) -> npt.NDArray[np.int64]:
    """n new token ids continuing prompt_ids, sampled from the model (an int64 array).

    The prompt fills the first cells of the window (cells after it hold id 0, which a causal
    model never reads); each step reads the softmax of the last filled cell, the model's
    distribution of the next id, draws from it, and writes the id into the next cell. Once
    all C cells are filled the window slides by one, so a prompt longer than C keeps its
    last C ids. An empty prompt starts from the single id 0 (for a CharTokenizer of a
    multi-line text, the newline), which is not part of the result.

    temperature: 0 takes the most probable id (ties: the smallest); T > 0 samples from
    p^(1/T), renormalised. top_k: keep only the k most probable ids before sampling.
    seed: an int (or a numpy Generator) for a reproducible draw; None draws from
    neuromorph's shuffle RNG, so nm.seed(s) makes the result reproducible too.
    vocab: draw only ids 0 .. vocab-1 (renormalised), e.g. a tokenizer's vocab_size when the
    model's vocabulary is larger than the text's alphabet; default: every id the model has.

    The model must be a built causal token model (sequence_spec says what that means);
    otherwise ShapeError. Bad arguments raise DataError.
    """
    info = _core.info(check_handle(h))                  # HandleError for a bad handle
    if not info["built"]:
        raise StateError(f"model {h} is not built: call neuromorph.build({h}) first")
    spec = sequence_spec(json.loads(_core.ir_json(int(h))))
    n = _count(n)
    temperature = _temperature(temperature)
    limit = spec.vocab if vocab is None else _vocab(vocab, spec.vocab)
    top_k = _top_k(top_k, limit)
    rng = _rng(seed)
    prompt = as_ids(prompt_ids, spec.vocab, "prompt_ids")
    C = spec.cells

    def next_distribution(window: np.ndarray, last: int) -> np.ndarray:
        y = predict(h, window[None, :])
        return np.asarray(y[0], dtype=np.float64).reshape(C, spec.vocab)[last, :limit]

    return _sample_loop(next_distribution, C, prompt, n, temperature, top_k, rng)


_Next = Callable[[npt.NDArray[np.int64], int], npt.NDArray[np.float64]]  # (window, cell) -> p


def _sample_loop(next_distribution: _Next, C: int, prompt: np.ndarray, n: int, temperature: float,
                 top_k: Optional[int], rng: np.random.Generator) -> np.ndarray:
    """The generation loop, given next_distribution(window (C,), last filled cell) -> p (V,)."""
    context = deque(prompt.tolist() if len(prompt) else [0], maxlen=C)
    out = np.zeros(n, dtype=np.int64)
    window = np.zeros(C, dtype=np.int64)
    for step in range(n):
        filled = len(context)
        window[:] = 0
        window[:filled] = list(context)
        p = next_distribution(window, filled - 1)
        out[step] = _sample(p, temperature, top_k, rng, filled - 1)
        context.append(int(out[step]))
    return out


def _sample(p: np.ndarray, temperature: float, top_k: Optional[int],
            rng: np.random.Generator, cell: int) -> int:
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise StateError(f"the model's output at cell {cell} is not a probability distribution "
                         f"(NaN, inf or all zero: has training diverged?)")
    if temperature == 0:
        return int(np.argmax(p))
    with np.errstate(divide="ignore"):
        logits = np.log(p) / temperature
    if top_k is not None and top_k < len(p):
        keep = np.argsort(-logits, kind="stable")[:top_k]
        masked = np.full_like(logits, -np.inf)
        masked[keep] = logits[keep]
        logits = masked
    q = np.exp(logits - logits.max())
    cum = np.cumsum(q)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(p) - 1))


def _count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"n (how many ids to generate) must be an integer >= 0, got {n!r}")
    return int(n)


def _temperature(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
            or not math.isfinite(t) or t < 0:
        raise DataError(f"temperature must be a finite number >= 0 (0: greedy), got {t!r}")
    return float(t)


def _top_k(k: object, vocab: int) -> Optional[int]:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= vocab:
        raise DataError(f"top_k must be None or an integer in 1 .. {vocab} (the vocabulary), "
                        f"got {k!r}")
    return int(k)


def _vocab(v: object, model_vocab: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= model_vocab:
        raise DataError(f"vocab must be None or an integer in 1 .. {model_vocab} (the model's "
                        f"vocabulary), got {v!r}")
    return int(v)


def _rng(seed: object) -> np.random.Generator:
    if seed is None:
        return SHUFFLE[0]
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be None or an integer >= 0, got {seed!r}")
    return np.random.default_rng(int(seed))
