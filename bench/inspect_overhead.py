"""What nm.inspect costs a model that never calls it: training speed of this build against a
baseline build (any other install of neuromorph, e.g. the commit before nm.inspect existed),
side by side in one run, rounds interleaved so that machine noise hits both alike.

    python bench/inspect_overhead.py --baseline /tmp/oldsite [--rounds 7]

Cases: case c (MLP 784-512-256-10 relu/relu/softmax + cross-entropy, batch 256, float32) and
the shipped columnformer-classifier (the column node holds the recording hooks). For this
build it also times training after a call to nm.inspect (a left-over probe would slow it).
Prints one JSON line per case: median µs per batch for each, and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# One timing, run in a fresh interpreter against whichever neuromorph is first on the path.
CHILD = r"""
import json, sys, time
import numpy as np
import neuromorph as nm
case, after_inspect = sys.argv[1], sys.argv[2] == "1"
rng = np.random.default_rng(0)
if case == "c":
    src = "/xavier, zero/\n(x, 784)\n(h1, 512, <relu>)\n(h2, 256, <relu>)\n(y, 10, <softmax>, <cross_entropy>)\n"
    B, n, w, o = 256, 100, 784, 10
else:
    src = sys.argv[3]
    B, n = 16, 250
nm.seed(1)
h = nm.compile(src, B, 0.01)
nm.build(h, threads=1)
w, o = nm.info(h)["input_width"], nm.info(h)["output_width"]
x = rng.normal(size=(n * B, w)).astype(np.float32)
e = np.zeros((n * B, o), np.float32)
e[np.arange(n * B), rng.integers(0, o, n * B)] = 1
if after_inspect and hasattr(nm, "inspect"):
    nm.inspect(h, x[:B])
nm.train(h, x[:2 * B], e[:2 * B], verbosity=0)  # warm-up
t = time.perf_counter()
nm.train(h, x, e, verbosity=0)
print(nm.__file__, file=sys.stderr)
print(json.dumps((time.perf_counter() - t) / n * 1e6))
"""


SHIM = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"


def once(site: str | None, case: str, after: bool) -> float:
    env = dict(os.environ)
    if site:  # the baseline install first: an editable install's import hook is taken out
        shim = pathlib.Path(site) / "_nm_bench_shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SHIM)
        env["PYTHONPATH"] = f"{shim}{os.pathsep}{site}"
    src = (ROOT / "models" / "columnformer-classifier.mdl").read_text()
    out = subprocess.run([sys.executable, "-c", CHILD, case, "1" if after else "0", src],
                         env=env, cwd="/", capture_output=True, text=True, check=True)
    where = out.stderr.strip().splitlines()[-1]
    if bool(site) != where.startswith(site or "//"):
        raise SystemExit(f"the {'baseline' if site else 'current'} run imported {where}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="a site folder holding another neuromorph")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cases", default="c,column")
    args = ap.parse_args()
    for case in args.cases.split(","):
        base, ours, after = [], [], []
        for _ in range(args.rounds):
            base.append(once(args.baseline, case, False))
            ours.append(once(None, case, False))
            after.append(once(None, case, True))
        b, o, a = (statistics.median(v) for v in (base, ours, after))
        spread = (max(base) - min(base)) / b
        print(json.dumps({"case": case, "baseline_us": round(b, 1), "ours_us": round(o, 1),
                          "ours_after_inspect_us": round(a, 1),
                          "ours_vs_baseline": round(o / b, 3),
                          "after_inspect_vs_ours": round(a / o, 3),
                          "baseline_spread": round(spread, 3), "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
