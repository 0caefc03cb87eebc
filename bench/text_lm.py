"""Held-out bits per character of the seed language models on a real text, side by side.

    python bench/text_lm.py [FILE ...] [--minutes M] [--models heptapod,genesis,mlp,ngram]

Default text: Vim's user manual (/usr/share/vim/vim*/doc/usr_*.txt), characters outside
printable ASCII and newline mapped to '?', tabs to spaces (96 symbols). The last 10% is held out. Every network
trains with Adam for the same wall-clock budget on windows of C+1 characters; the 4-gram is
an interpolated count model. One JSON line per model: bits/char on the held-out tail,
parameters, training seconds, steps. This is a report, not a test.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

import neuromorph as nm
from neuromorph import text as nt

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")


def corpus(paths):
    raw = "".join(open(p, encoding="utf-8", errors="replace").read() for p in paths)
    raw = raw.replace("\t", " ")
    return "".join(c if (32 <= ord(c) < 127 or c == "\n") else "?" for c in raw)


def n_params(h):
    return int(sum(np.prod(s) for _, s in nm.info(h)["params"]))


def train_for(h, x, y, seconds, batch):
    """Shuffled epochs over (x, y) until the budget is spent (whole chunks of 50 batches)."""
    rng = np.random.default_rng(0)
    start, steps = time.perf_counter(), 0
    n = (len(x) // batch) * batch
    while time.perf_counter() - start < seconds:
        order = rng.permutation(len(x))[:n]
        for k in range(0, n, 50 * batch):
            idx = order[k:k + 50 * batch]
            nm.train(h, x[idx], y[idx], verbosity=0)
            steps += len(idx) // batch
            if time.perf_counter() - start >= seconds:
                break
    return time.perf_counter() - start, steps


def network(name, text_or_path, train_ids, test_ids, C, seconds, lr, batch=32):
    nm.seed(0)
    h = nm.compile(text_or_path, batch, lr, optimizer="adam")
    nm.build(h)
    x, y = nt.windows(train_ids, C, stride=max(1, C // 4))
    secs, steps = train_for(h, x, y, seconds, batch)
    bpc = nt.bits_per_char(h, test_ids, C)
    out = {"model": name, "bits_per_char": round(bpc, 4), "params": n_params(h),
           "train_seconds": round(secs, 1), "steps": steps, "batch": batch}
    nm.release(h)
    return out


def mlp_bits(h, ids, C):
    """The MLP reads the 8 characters before each target (every held-out char after the 8th)."""
    win = np.lib.stride_tricks.sliding_window_view(ids, C + 1)
    x, t = win[:, :C], win[:, C]
    p = nm.predict(h, x)
    return float(-np.log2(np.maximum(p[np.arange(len(t)), t], 1e-12)).mean())


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--models", default="heptapod,genesis,mlp,ngram")
    args = ap.parse_args(argv)
    files = args.files or sorted(glob.glob("/usr/share/vim/vim*/doc/usr_*.txt"))
    text = corpus(files)
    tok = nt.CharTokenizer(text)
    ids = tok.encode(text)
    train_ids, test_ids = nt.split_heldout(ids, 0.1)
    V = tok.vocab_size
    print(json.dumps({"corpus": f"{len(files)} files", "chars": len(text), "alphabet": V,
                      "heldout_chars": len(test_ids)}), flush=True)
    sec = args.minutes * 60
    want = args.models.split(",")
    if "ngram" in want:
        for n in (1, 4):
            t = time.perf_counter()
            m = nt.NGramModel(n, V, alpha=0.05 if n > 1 else 1.0).fit(train_ids)
            print(json.dumps({"model": f"{n}-gram", "bits_per_char": round(m.bits_per_char(test_ids), 4),
                              "params": m.n_params, "train_seconds": round(time.perf_counter() - t, 1)}),
                  flush=True)
    if "heptapod" in want:
        print(json.dumps(network("heptapod-lm", os.path.join(MODELS, "heptapod-lm.mdl"),
                                 train_ids, test_ids, 64, sec, 2e-3)), flush=True)
    if "genesis" in want:
        print(json.dumps(network("genesis-lm", os.path.join(MODELS, "genesis-lm.mdl"),
                                 train_ids, test_ids, 64, sec, 2e-3)), flush=True)
    if "mlp" in want:
        # equal size to the grid LM: embed 8 chars x 16, one hidden layer, softmax head
        hidden = 500
        mlp = (f"/xavier, zero/ (x, 8) (e, embed, 8, vocab 96, dim 16, pos none) "
               f"(h, {hidden}, <relu>) (y, 96, <softmax>, <cross_entropy>)")
        nm.seed(0)
        h = nm.compile(mlp, 32, 2e-3, optimizer="adam")
        nm.build(h)
        win = np.lib.stride_tricks.sliding_window_view(train_ids, 9)
        x, t = win[:, :8], np.eye(96, dtype=np.float32)[win[:, 8]]
        secs, steps = train_for(h, x, t, sec, 32)
        print(json.dumps({"model": "mlp-last-8", "bits_per_char": round(mlp_bits(h, test_ids, 8), 4),
                          "params": n_params(h), "train_seconds": round(secs, 1), "steps": steps}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
