"""The long compiler fuzz run (opt-in; CI runs a bounded sample in tests/test_fuzz_compiler.py).

    python tests/fuzz/run_compiler_fuzz.py            # 20 000 mutated texts, seeds 0..19 999
    python tests/fuzz/run_compiler_fuzz.py -n 100000 --start 20000

Each case is a shipped model (or one of the extra seeds) with 1 to 4 mutations (mdl_fuzz.py);
the oracle is `mdl_fuzz.run_one`: only `MDLError` (located, printable) or success, a finite
and bounded IR, and the fast parser agreeing with Lark. Prints a summary (outcomes, mutations
that reached each outcome, the slowest case) and every finding with the seed that repeats it:

    python -c "import sys; sys.path.insert(0, 'tests'); from fuzz.mdl_fuzz import *; \\
               print(mutated(SEED)); run_one(SEED)"

Exit status 1 when anything other than `ok` / `error` came out.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mdl_fuzz import mutated, run_one  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20_000, help="cases (default 20000)")
    ap.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--show", type=int, default=5, help="findings printed in full (default 5)")
    args = ap.parse_args(argv)

    outcomes: collections.Counter = collections.Counter()
    findings: list[tuple[int, str, str]] = []
    slowest = (0.0, None)
    t0 = time.perf_counter()
    for seed in range(args.start, args.start + args.n):
        t = time.perf_counter()
        try:
            outcome = run_one(seed)
        except Exception as e:  # a finding: anything but MDLError or success
            outcome = f"{type(e).__name__}"
            findings.append((seed, outcome, traceback.format_exc()))
        dt = time.perf_counter() - t
        if dt > slowest[0]:
            slowest = (dt, seed)
        outcomes[outcome] += 1
        done = seed - args.start + 1
        if done % 2000 == 0:
            print(f"  {done} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    total = time.perf_counter() - t0

    print(f"compiler fuzz: {args.n} mutated MDL texts (seeds {args.start}.."
          f"{args.start + args.n - 1}) in {total:.1f} s")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome:24} {count}")
    print(f"  slowest case: seed {slowest[1]}, {slowest[0] * 1000:.0f} ms "
          f"({len(mutated(slowest[1]))} characters)")
    if findings:
        print(f"{len(findings)} findings (anything but MDLError or success):")
        for seed, outcome, tb in findings[: args.show]:
            print(f"--- seed {seed}: {outcome}\n{tb}")
        print("seeds:", " ".join(str(s) for s, _, _ in findings))
        return 1
    print("no findings: every text compiled or raised a located MDLError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
