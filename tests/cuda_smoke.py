"""One build / gradients / two Adam steps with clipping / predict of every GPU test model, for
compute-sanitizer on a GPU machine (docs/cuda.md):

    compute-sanitizer --tool memcheck python3 tests/cuda_smoke.py
    compute-sanitizer --tool racecheck python3 tests/cuda_smoke.py
"""
import glob
import os
import sys

import numpy as np

import neuromorph as nm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cuda import CELLS, OPS, RECURRENT, _data  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
texts = [open(p).read() for p in sorted(glob.glob(os.path.join(ROOT, "tests", "gpu_models", "*.mdl")))]
texts += RECURRENT + CELLS + OPS[-3:]
texts += ["/xavier, zero/ (x, 33) (a, 64, <relu>) (b, 7, <gelu>) (y, 5, <softmax>, <cross_entropy>)"]
for i, t in enumerate(texts):
    h = nm.compile(t, 5, 0.01, optimizer="adam", grad_clip=1.0)
    nm.seed(1)
    nm.build(h, device="cuda")
    x, e = _data(h, np.random.default_rng(i), 2, 5)
    nm.gradients(h, x[:1], e[:1])
    nm.train(h, x, e, verbosity=0)
    nm.predict(h, x)
    nm.release(h)
print("models run on the GPU:", len(texts))
