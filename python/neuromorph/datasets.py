"""Small datasets the package makes itself, for the shipped seed models and their tests.

* `digits(n)`: 8x8 grey images of the digits 0-9 (a 5x7 stroke font placed at a random offset,
  strokes thickened or thinned at random, pixel noise), in the spirit of the UCI 8x8 digits,
  row-major pixels in [0, 1]; labels 0..9.
* `completion(n)`: HAMUX-style associative completion: P class prototypes in {-1, 1}^D; a
  sample is a corrupted prototype (a fraction of its signs flipped) beside its one-hot label,
  and the target is the clean prototype.

Not here: text corpora (neuromorph.text, neuromorph.tasks.formal_text).
"""
from __future__ import annotations

import numpy as np

# 5 wide x 7 high stroke glyphs, one string per row
_FONT = {
    0: [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    1: ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    2: [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    3: [".###.", "#...#", "....#", "..##.", "....#", "#...#", ".###."],
    4: ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    5: ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    6: ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    7: ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    8: [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    9: [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}
_GLYPHS = np.array([[[c == "#" for c in row] for row in _FONT[d]] for d in range(10)], float)


def digits(n: int, seed: int = 0, noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 64) float in [0, 1], labels (n,) int): 8x8 digits, row-major pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    out = np.zeros((n, 8, 8))
    for i, d in enumerate(labels):
        g = _GLYPHS[d].copy()
        if rng.random() < 0.3:  # a thicker stroke: smear one pixel right
            g = np.maximum(g, np.pad(g, ((0, 0), (1, 0)))[:, :5] * 0.7)
        g *= rng.uniform(0.6, 1.0, g.shape) * (rng.random(g.shape) > 0.08)  # faded, broken
        r, c = rng.integers(0, 2), rng.integers(0, 4)  # 7x5 glyph somewhere in 8x8
        out[i, r:r + 7, c:c + 5] = g
    out += rng.normal(0, noise, out.shape)
    return np.clip(out, 0, 1).reshape(n, 64), labels


def completion(n: int, dim: int = 64, classes: int = 10, flip: float = 0.2, seed: int = 0,
               prototypes_seed: int = 1234) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (n, dim + classes), targets (n, dim), labels (n,)).

    Inputs are a corrupted prototype (a fraction `flip` of its signs flipped) followed by the
    one-hot label; the target is the clean prototype in {-1, 1}. The prototypes are the same
    for every call with the same prototypes_seed, so train and test sets share them.
    """
    protos = np.where(np.random.default_rng(prototypes_seed).random((classes, dim)) < 0.5, -1.0, 1.0)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    clean = protos[labels]
    noisy = np.where(rng.random((n, dim)) < flip, -clean, clean)
    return np.hstack([noisy, np.eye(classes)[labels]]), clean, labels
