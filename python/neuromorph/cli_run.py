"""`mdlc run`: compile a model, build it, train it on an .npz file or a synthetic task."""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

import mdl

from . import build, compile_ir, evaluate, history, release, reset_state, save, seed, train
from .errors import NeuromorphError
from .tasks import make_task


class RunError(Exception):
    pass


def _load_npz(path: str):
    try:
        with np.load(path) as data:
            if "inputs" not in data or "expected" not in data:
                raise RunError(f"{path} must hold arrays named 'inputs' and 'expected'; "
                               f"it holds {', '.join(data.files) or 'nothing'}")
            return data["inputs"], data["expected"]
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from None


def _mean_baseline(e: np.ndarray, loss: str) -> str:
    """What a constant prediction scores in the model's own loss, for scale ('' if undefined)."""
    flat = e.reshape(-1, e.shape[-1]).astype(np.float64)
    if loss == "mse":
        what, value = "the mean target", np.mean((flat - flat.mean(0)) ** 2)
    elif loss == "mae":
        what, value = "the median target", np.mean(np.abs(flat - np.median(flat, 0)))
    elif loss == "cross_entropy":
        p = np.maximum(flat.mean(0), 1e-12)
        what, value = "the class frequencies", np.mean(-(flat * np.log(p)).sum(1))
    elif loss == "hinge":
        what, value = "zero", 1.0
    else:
        return ""
    return f"  (for scale: always predicting {what} gives {loss} {value:.4g})"


def _plot(losses: np.ndarray, path: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RunError("--plot needs matplotlib, which is not installed "
                       "(pip install matplotlib); the model trained and is unaffected") from None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(losses, lw=0.6, alpha=0.5, label="batch loss")
    k = max(1, len(losses) // 100)
    if len(losses) >= 2 * k:
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k - 1, len(losses)), smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if losses.min() > 0 else "linear")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_command(args) -> int:
    from mdl.cli import UsageError, _read
    text, name = _read(args.file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = mdl.compile_text(text, name, warn=False)
    for w in ir.warnings:
        print(w.render(), file=sys.stderr)
    batch = args.batch_size or (5 if ir.recurrent else 16)
    loss_name = ir.node(ir.doc["output"])["loss"]["name"]
    lr = args.lr or (0.5 if ir.recurrent else 0.05)
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    try:
        if args.data:
            x, e = _load_npz(args.data)
            desc = f"data from {args.data}"
        else:
            x, e, desc = make_task(ir.doc, batch, args.batches, args.seed)
        seed(args.seed)
        h = compile_ir(ir.to_json(), batch, lr)
        try:
            build(h)
            kind = "recurrent stream" if ir.recurrent else "batched"
            print(f"{name}: {kind} model, batch {batch}, learning rate {lr}; {desc}")
            baseline = _mean_baseline(np.asarray(e), loss_name) if not args.data else ""
            if baseline:
                print(baseline)
            start = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                if ir.recurrent:
                    reset_state(h)
                loss = train(h, x, e, verbosity=args.verbosity)
                print(f"  epoch {epoch}/{args.epochs}: mean training loss {loss:.6g}")
            if ir.recurrent:
                reset_state(h)
            final = evaluate(h, x, e)
            secs = time.perf_counter() - start
            n = (x.shape[0] if np.ndim(x) == 3 else len(x) // batch) * args.epochs
            print(f"  final loss {final:.6g} (evaluated from a fresh state); "
                  f"{n} training batches in {secs:.2f} s")
            parts = history(h, parts=True)
            for key in list(parts)[2:]:  # auxiliary losses, included in the loss above
                print(f"  of the last batch's loss, {key}: {parts[key][-1]:.6g}")
            if args.save:
                save(h, args.save)
                print(f"  saved to {args.save}")
            if args.plot:
                _plot(history(h), args.plot, name)
                print(f"  loss curve in {args.plot}")
        finally:
            release(h)
    except (RunError, NeuromorphError) as err:
        raise UsageError(str(err)) from None
    return 0
