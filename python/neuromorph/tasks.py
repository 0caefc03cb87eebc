"""Synthetic tasks sized to a model, for `mdlc run` without data and for examples.

* recurrent models: a stream of random bits, y_t = 0.1 + 0.8 * x_{t-1} (needs memory);
* softmax + cross_entropy outputs: Gaussian class blobs, one-hot targets;
* hinge / huber_modified: ±1 labels from a random teacher network;
* everything else: regression on a random teacher network, squashed into the output's range.
"""
from __future__ import annotations

import numpy as np

_SQUASH = {"sigmoid": lambda t: 1 / (1 + np.exp(-t)), "tanh": np.tanh,
           "softmax": lambda t: np.exp(t) / np.exp(t).sum(-1, keepdims=True)}


def make_task(ir_doc: dict, batch: int, n_batches: int, seed: int = 0):
    """(inputs, expected, description) with shapes (n_batches, batch, width)."""
    rng = np.random.default_rng(seed)
    nodes = {n["name"]: n for n in ir_doc["nodes"]}
    n_in = nodes[ir_doc["input"]]["width"]
    out = nodes[ir_doc["output"]]
    n_out, act, loss = out["width"], out["activation"]["name"], out["loss"]["name"]
    N = n_batches * batch
    if ir_doc["recurrent"]:
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
            y = _SQUASH.get(act, lambda v: v)(t)
            desc = "regression on a random teacher network"
    shape = lambda a: a.reshape(n_batches, batch, -1).astype(np.float32)
    return shape(x), shape(y), desc
