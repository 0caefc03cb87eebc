#!/usr/bin/env python3
"""Does the wiring cost make a column sheet's map smoother? (issue: "a column model trained
with wiring cost shows a smoother map than one without").

A Columnformer-like classifier of 8x8 digits (neuromorph.datasets.digits: classes that live in
where the strokes are) with one column per pixel, so the 8x8 sheet lies on the image:

    (pixels, 64) (patch, 8, cells 64, <linear>)
    (cortex, column, 8x8, dim 8, depth 2, qk 8, mlp 16, heads 1, skip 1, sigma S, wiring W, <gelu>)
    (readout, pool, 64, dim 8, op mean) (digit, 10, <softmax>, <cross_entropy>)

is trained with W = 0 and W > 0 (several seeds each; sigma 0: no local bias at the start, so
any locality is learned; sigma 2: the shipped model's default, local from the start). After
training, `nm.inspect` records the sheet on held-out digits and `neuromorph.viz.smoothness`
gives the map's smoothness: the mean cosine similarity of neighbouring columns' class
preferences (viz.preferences: mean response norm per class, relative to the sheet). Printed
beside it: the same figure for the columns shuffled on the sheet (the smoothness a map with no
spatial order would have: `null`), how far the columns attend (mean sheet distance under the
attention) and the held-out accuracy.

    python bench/smoothness.py                    # ~1.5 min on 2 cores
    python bench/smoothness.py --seeds 6 --epochs 6 --wiring 0.3,1 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

import neuromorph as nm
from neuromorph import viz
from neuromorph.datasets import digits

MODEL = """/xavier, zero/
(pixels, 64)
(patch, 8, cells 64, <linear>)
(cortex, column, 8x8, dim 8, depth 2, qk 8, mlp 16, heads 1, skip 1, sigma {sigma}, \
wiring {wiring}, <gelu>)
(readout, pool, 64, dim 8, op mean)
(digit, 10, <softmax>, <cross_entropy>)
"""


def train_and_measure(sigma: float, wiring: float, seed: int, epochs: int, n_train: int,
                      n_test: int) -> dict[str, float]:
    x, labels = digits(n_train, seed=100 + seed)
    xt, lt = digits(n_test, seed=999)
    nm.seed(seed)
    h = nm.compile(MODEL.format(sigma=sigma, wiring=wiring), 32, 0.003, optimizer="adam")
    try:
        nm.build(h)
        nm.fit(h, x, np.eye(10)[labels], epochs=epochs, shuffle=True, verbosity=0)
        acc = float(np.mean(nm.predict(h, xt).argmax(1) == lt))
        col = nm.inspect(h, xt, "cortex")["cortex"]
    finally:
        nm.release(h)
    prefs = viz.preferences(col, lt)
    rng = np.random.default_rng(seed)
    null = np.mean([viz.smoothness(col, prefs=prefs[rng.permutation(len(prefs))])
                    for _ in range(100)])
    attn = np.asarray(col["attention"]).mean(axis=(0, 1, 2))  # (C, C), rows sum to 1
    reach = float(np.mean(np.sum(attn * np.asarray(col["distance"]), axis=1)))
    return {"sigma": sigma, "wiring": wiring, "seed": seed,
            "smoothness": viz.smoothness(col, prefs=prefs), "null": float(null),
            "attention_distance": reach, "accuracy": acc}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train", type=int, default=3000, help="training digits")
    p.add_argument("--test", type=int, default=500, help="held-out digits inspected")
    p.add_argument("--wiring", default="0.3", help="wiring weights to compare with 0 (comma list)")
    p.add_argument("--sigma", default="0,2", help="bias-init widths (comma list)")
    p.add_argument("--json", metavar="OUT", help="write every run's figures here")
    args = p.parse_args(argv)
    weights = [0.0] + [float(w) for w in args.wiring.split(",")]
    sigmas = [float(s) for s in args.sigma.split(",")]
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    print(f"{'sigma':>5} {'wiring':>6}  {'smoothness':>17}  {'null':>6}  {'attn dist':>9}  "
          f"{'accuracy':>8}   per seed")
    for sigma in sigmas:
        for w in weights:
            runs = [train_and_measure(sigma, w, s, args.epochs, args.train, args.test)
                    for s in range(args.seeds)]
            rows.extend(runs)
            sm = np.array([r["smoothness"] for r in runs])
            print(f"{sigma:5g} {w:6g}  {sm.mean():7.3f} +- {sm.std(ddof=1) if len(sm) > 1 else 0:5.3f}"
                  f"  {np.mean([r['null'] for r in runs]):6.3f}"
                  f"  {np.mean([r['attention_distance'] for r in runs]):9.2f}"
                  f"  {np.mean([r['accuracy'] for r in runs]):8.2f}   "
                  f"{' '.join(f'{v:.3f}' for v in sm)}", flush=True)
    print(f"({args.seeds} seeds x {len(sigmas) * len(weights)} settings, {args.epochs} epochs on "
          f"{args.train} digits, inspected on {args.test} held-out digits; "
          f"{time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
