"""Cost of check_finite (DivergedError detection) on case c, side by side in one run.

    python bench/check_finite.py [--repeats 7]

Case c of shared/spec/performance.md (784->512->256->10 softmax-CE, batch 256, 1 thread),
plain SGD (the fused path: the loss, then bounds on each layer's gradient and new weights) and
Adam (the loss, every gradient, and the new parameters and state before they are kept). Alternates on/off runs and prints the median time ratio as JSON.
"""
import argparse
import json
import time

import numpy as np

import neuromorph as nm
from neuromorph import _core

CASE_C = "/xavier, zero/ (x, 784) (a, 512, <relu>) (b, 256, <relu>) (y, 10, <softmax>, <cross_entropy>)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batches, 256, 784), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, (args.batches, 256))]
    for opt in ("sgd", "adam"):
        h = nm.compile(CASE_C, 256, 0.001, optimizer=opt)
        nm.seed(0)
        nm.build(h, threads=1)
        _core.train(h, x[:2], y[:2])  # warm-up
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for on in (True, False):
                _core.set_check_finite(h, on)
                t = time.perf_counter()
                _core.train(h, x, y)
                times[on].append((time.perf_counter() - t) / args.batches)
        on, off = np.median(times[True]), np.median(times[False])
        print(json.dumps({"case": "c", "batch": 256, "optimizer": opt,
                          "us_per_step_checked": round(on * 1e6, 1),
                          "us_per_step_unchecked": round(off * 1e6, 1),
                          "cost_ratio": round(on / off, 4)}), flush=True)
        nm.release(h)


if __name__ == "__main__":
    main()
