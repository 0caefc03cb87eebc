"""`mdlc run` and `mdlc generate`: the engine side of the command line.

`run` compiles a model (an .mdl file or a shipped model's name), builds it and trains it with
`neuromorph.fit` on a data file (`neuromorph.load_data`: .npz, .npy pair, CSV/TSV, folder of
images), a text (`--text`, for a causal token model) or a synthetic task, printing the
per-epoch history table; `generate` samples text from a saved token model. The flags are
defined in `neuromorph.cli` (the plug-in that adds these commands to `mdlc`), exit statuses
and error classes in `mdl.cli`. Errors: `UsageError` (exit 2) for what the user asked,
NeuromorphError (exit 3) for data and engine failures, KeyboardInterrupt handled here (save,
exit 130).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

import mdl
from mdl.cli import EXIT_INTERRUPTED, DataFailure, UsageError, read_source

from . import _core, models, training
from .api import (build, compile_ir, evaluate, fit, history, info, load, release, reset_state,
                  save, seed, train)
from .data import data_kind, image_classes, load_data
from ._sequence import SequenceSpec, sequence_spec
from .errors import NeuromorphError, ShapeError
from .generate import generate
from .tasks import FORMAL_ALPHABET, formal_text, make_task
from .text import (CharTokenizer, NGramModel, attach_tokenizer, bits_per_char, forget,
                   split_heldout, tokenizer_of, unigram_bits, windows)


def _model_file(arg: str) -> str:
    """An .mdl path as given, else the shipped model of that name (`mdlc run lstm-model`)."""
    if arg == "-" or os.path.exists(arg):
        return arg
    try:
        return models.path(arg)
    except FileNotFoundError as e:
        if os.sep in arg or "/" in arg or arg.endswith(".mdl"):
            return arg                           # a path: read_source reports "cannot read"
        raise UsageError(f"{arg} is neither a file nor a shipped model: {e}") from None


def _need_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install "
                         "'neuromorph[plot]' (or pip install matplotlib)")


def _check_flags(args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot see (each flag's own range is checked there)."""
    if (args.x is not None or args.y is not None) and not args.data:
        raise UsageError("--x and --y name arrays or columns of --data, which is not given")
    if args.early_stopping is not None and args.validation_split is None:
        raise UsageError("--early-stopping watches the validation loss: give --validation-split "
                         "too")
    if args.metrics:
        known = training.METRICS
        unknown = [m for m in args.metrics if m not in known]
        if unknown:
            raise UsageError(f"unknown metric {unknown[0]!r} in --metrics; the metrics are: "
                             f"{', '.join(sorted(known))}")


def _distributed_start(args: argparse.Namespace) -> None:
    """--distributed: MPI up (a usage error without mpi4py or a launcher); the ranks other
    than 0 train silently, so the job prints one report."""
    if not getattr(args, "distributed", False):
        return
    from mdl.cli import UsageError
    from . import distributed
    try:
        ctx = distributed.connect(True)
    except (ImportError, NeuromorphError) as e:
        raise UsageError(f"--distributed: {e}") from None
    if ctx is not None and ctx.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


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
    except ImportError:  # checked before training (_need_matplotlib); a broken install
        raise UsageError("--plot needs matplotlib, which did not import (pip install "
                         "'neuromorph[plot]'); the model trained and is unaffected") from None
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


def _token_spec(doc: dict[str, Any]) -> Optional[SequenceSpec]:
    """The SequenceSpec of a causal token model, or None for any other model."""
    try:
        return sequence_spec(doc)
    except ShapeError:
        return None


def run_command(args: argparse.Namespace) -> int:
    _check_flags(args)
    if args.plot:
        _need_matplotlib()                       # before training, not after it
    text, name = read_source(_model_file(args.file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = mdl.compile_text(text, name, warn=False)
    for w in ir.warnings:
        print(w.render(), file=sys.stderr)
    _distributed_start(args)
    batch = args.batch_size or (5 if ir.recurrent else 16)
    text_file = args.text
    try:
        data_type = data_kind(args.data) if args.data else None
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    if data_type == "text":
        if text_file:
            raise UsageError(f"--data {args.data} is text, and --text is given too: give one")
        if args.x is not None or args.y is not None:
            raise UsageError(f"--data {args.data} is text: --x and --y do not apply")
        text_file, args.data = args.data, None   # prose trains as --text
        args.text = text_file
    if text_file and args.data:
        raise UsageError("give either --data or --text, not both")
    spec = _token_spec(ir.doc)
    if text_file or (spec is not None and not args.data):
        if spec is None:
            try:
                spec = sequence_spec(ir.doc)        # raises: says why it is not one
            except ShapeError as err:
                raise UsageError(f"--text needs a causal token model: {err}") from None
        for flag in ("validation_split", "metrics", "early_stopping", "checkpoint"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} applies to --data and the synthetic "
                                 f"tasks; a --text run holds out the end of the text instead "
                                 f"(--heldout) and reports its bits per character")
        optimizer = args.optimizer or "adam"
        lr = args.lr or (0.003 if optimizer in ("adam", "adamw") else 0.05)
        return _run_text(args, ir, name, spec, batch, lr, optimizer)
    if not args.data and any(n["kind"] == "embed" for n in ir.doc["nodes"]):
        try:
            sequence_spec(ir.doc)
        except ShapeError as err:
            raise UsageError(f"the model reads token ids (`embed`); the built-in task for "
                             f"token ids trains a causal token model, which this is not ({err}); "
                             f"give --data FILE") from None
    optimizer = args.optimizer or "sgd"
    lr = args.lr or (0.003 if optimizer in ("adam", "adamw") else 0.5 if ir.recurrent else 0.05)
    if not args.data:
        x, e, desc = make_task(ir.doc, batch, args.batches, args.seed)
    seed(args.seed)
    h = compile_ir(ir.to_json(), batch, lr, optimizer=optimizer)
    try:
        build(h)
        if args.data:
            x, e, desc = _run_data(args, h, ir.recurrent)
        kind = "recurrent stream" if ir.recurrent else "batched"
        opt = "" if optimizer == "sgd" else f"{optimizer}, "
        header = [f"{name}: {kind} model, batch {batch}, {opt}learning rate {lr}; {desc}"]
        if getattr(args, "distributed", False):  # the batch is each rank's shard
            from . import distributed
            header[0] = header[0].replace(f"batch {batch},", f"batch {batch} per rank x "
                                          f"{distributed.size()} ranks,", 1)
        if not args.data:
            loss_name = ir.node(ir.doc["output"])["loss"]["name"]
            header.append(_mean_baseline(np.asarray(e), loss_name))
        return _train_and_report(args, h, x, e, name, ir.recurrent, header)
    finally:
        release(h)


def _run_data(args: argparse.Namespace, h: int,
              recurrent: bool) -> tuple[npt.NDArray[Any], npt.NDArray[Any], str]:
    """(inputs, expected, description) of --data, shaped for model h; a seeded shuffle before
    a validation split of a non-recurrent model, so the held-out part is not one class."""
    try:
        x, e = load_data(args.data, x=args.x, y=args.y, model=h)
    except (FileNotFoundError, ImportError) as err:
        raise UsageError(str(err)) from None
    desc = f"{len(x) if np.ndim(x) == 2 else x.shape[0] * x.shape[1]} samples from {args.data}"
    if os.path.isdir(args.data):
        classes = image_classes(args.data)
        desc += f" ({len(classes)} classes: {', '.join(classes)})"
    if args.validation_split is not None and not recurrent and np.ndim(x) == 2:
        order = np.random.default_rng(args.seed).permutation(len(x))
        x, e = x[order], e[order]
        desc += "; shuffled (--seed) before the validation split"
    return x, e, desc


def _train_and_report(args: argparse.Namespace, h: int, x: npt.NDArray[Any], e: npt.NDArray[Any],
                      name: str, recurrent: bool, header: list[str]) -> int:
    """The header, fit, the history table, the final loss, --save and --plot.

    Ctrl-C from the header's first line on saves with --save and exits 130 (a test waits for
    that line before it sends SIGINT)."""
    start = time.perf_counter()
    try:
        print("\n".join(line for line in header if line), flush=True)
        hist = fit(h, x, e, epochs=args.epochs, shuffle=not recurrent,
                   verbosity=args.verbosity, validation_split=args.validation_split,
                   metrics=args.metrics, early_stopping=args.early_stopping,
                   checkpoint=args.checkpoint,
                   distributed=getattr(args, "distributed", False))
    except KeyboardInterrupt:
        return _interrupted(args, h)
    secs = time.perf_counter() - start
    print(hist.table())                          # says so when early stopping ended it
    if args.validation_split is None:
        if recurrent:
            reset_state(h)
        final = evaluate(h, x, e)
        print(f"  final loss on the training data {final:.6g} (evaluated from a fresh state); "
              f"{len(hist.batch_loss)} training batches in {secs:.2f} s")
    else:
        val = hist.epochs[-1].get("val_loss") if hist.epochs else None
        shown = f"{val:.6g}" if isinstance(val, (int, float)) else "-"
        print(f"  final loss on the validation data {shown}; {len(hist.batch_loss)} training "
              f"batches in {secs:.2f} s")
    parts = history(h, parts=True)
    for key in list(parts)[2:]:  # auxiliary losses, included in the loss above
        print(f"  of the last batch's loss, {key}: {parts[key][-1]:.6g}")
    if args.save:
        save(h, args.save)
        print(f"  saved to {args.save}")
    if args.plot:
        _plot(np.asarray(hist.batch_loss), args.plot, name)
        print(f"  loss curve in {args.plot}")
    return 0


def _interrupted(args: argparse.Namespace, h: int) -> int:
    """Ctrl-C during training: keep the finished batches, save them with --save, exit 130."""
    sys.stderr.flush()
    n = len(history(h))
    print(f"\n  interrupted (Ctrl-C) after {n} training batch{'es' * (n != 1)}", flush=True)
    if args.save:
        save(h, args.save)
        print(f"  saved what was trained to {args.save}", flush=True)
    return EXIT_INTERRUPTED


# ---------------------------------------------------------------------------- text models
_NGRAM_ORDER = 3


def _run_text(args: argparse.Namespace, ir: mdl.IR, name: str, spec: SequenceSpec, batch: int,
              lr: float, optimizer: str) -> int:
    """`mdlc run --text`: train a causal token model on windows of C+1 characters.

    Every epoch cuts the windows from a random offset in [0, stride), shuffles them
    (reproducibly, from --seed) and drops the ones that do not fill a last batch, so each
    epoch trains on the same number of whole batches and a different remainder sits out.
    Reports held-out bits per character (text.bits_per_char: non-overlapping windows of the
    tail) next to count baselines on the same characters.
    """
    C, V = spec.cells, spec.vocab
    stride = args.context_stride if args.context_stride is not None else C
    if stride < 1:
        raise UsageError(f"--context-stride must be at least 1, got {stride}")
    if not 0 <= args.heldout < 1:
        raise UsageError(f"--heldout must be a fraction in [0, 1), got {args.heldout}")
    if args.text:
        corpus, _ = read_source(args.text)
        source = args.text
        desc = f"text from {args.text}"
        if not corpus:
            raise UsageError(f"{args.text} is empty")
    else:
        if V < len(FORMAL_ALPHABET):
            raise UsageError(f"a token model without --text trains on the built-in formal text, "
                             f"which has {len(FORMAL_ALPHABET)} symbols, but `{spec.embed}` reads "
                             f"a vocabulary of {V}: give --text FILE, or vocab >= "
                             f"{len(FORMAL_ALPHABET)}")
        n_chars = math.ceil((args.batches * batch * stride + C + 1) / (1 - args.heldout)) + C
        corpus, source = formal_text(n_chars, args.seed), "the formal text"
        desc = ("the built-in formal text (key=value records recalled later in the line, "
                "neuromorph.tasks.formal_text)")
    tok = CharTokenizer(corpus)
    if tok.vocab_size > V:
        raise UsageError(
            f"{source} has {tok.vocab_size} distinct characters but the model reads a vocabulary "
            f"of {V}: it needs vocab >= {tok.vocab_size} (`vocab {tok.vocab_size}` on "
            f"`{spec.embed}` and a per-cell width of {tok.vocab_size} on the output "
            f"`{spec.output}`)")
    ids = tok.encode(corpus)
    train_ids, held = split_heldout(ids, args.heldout)
    x, _ = windows(train_ids[stride - 1:], C, stride)   # the fewest windows of any offset
    usable = len(x) // batch * batch
    if usable == 0:
        raise UsageError(f"the training part of {source} ({len(train_ids)} characters) gives "
                         f"{len(x)} windows of {C + 1} characters, fewer than one batch of "
                         f"{batch}: use a longer text, a smaller --batch-size or --context-stride")
    if args.heldout > 0 and len(held) < C + 1:
        raise UsageError(f"the held-out tail ({len(held)} characters) is shorter than one window "
                         f"of {C + 1}: use a larger --heldout or a longer text")
    seed(args.seed)
    h = compile_ir(ir.to_json(), batch, lr, optimizer=optimizer)
    try:
        build(h)
        attach_tokenizer(h, tok)
        rng = np.random.default_rng(args.seed)
        start = time.perf_counter()
        try:
            print(f"{name}: token model over {C} cells, vocabulary {V} ({tok.vocab_size} "
                  f"characters used); batch {batch}, {optimizer}, learning rate {lr}; {desc}")
            print(f"  {len(train_ids)} training characters in {len(x)} windows (stride "
                  f"{stride}), {usable // batch} batches an epoch; {len(held)} held out",
                  flush=True)
            for epoch in range(1, args.epochs + 1):
                # a random first window start: across epochs every alignment of the text
                # to the cells is seen, not only multiples of the stride
                xe, ye = windows(train_ids[int(rng.integers(stride)):], C, stride)
                order = rng.permutation(len(xe))[:usable]
                loss = train(h, xe[order].reshape(-1, batch, C),
                             ye[order].reshape(-1, batch, C), verbosity=args.verbosity,
                             distributed=getattr(args, "distributed", False))
                print(f"  epoch {epoch}/{args.epochs}: mean training loss {loss:.6g} nats "
                      f"({loss / math.log(2):.4f} bits per character)")
        except KeyboardInterrupt:
            return _interrupted(args, h)
        secs = time.perf_counter() - start
        n_params = sum(int(np.prod(shape)) for _, shape in info(h)["params"])
        print(f"  {usable // batch * args.epochs} training batches in {secs:.2f} s; "
              f"{n_params} parameters")
        if args.heldout > 0:
            _report_heldout(h, C, V, train_ids, held)
        else:
            print("  no held-out tail (--heldout 0): no bits per character to report")
        if args.save:
            save(h, args.save)                      # with the attached tokenizer
            print(f"  saved to {args.save} (with its tokenizer: mdlc generate "
                  f"{args.save} --prompt ...)")
        if args.plot:
            _plot(history(h), args.plot, name)
            print(f"  loss curve in {args.plot}")
    finally:
        forget(h)
        release(h)
    return 0


def _report_heldout(h: int, C: int, V: int, train_ids: np.ndarray, held: np.ndarray) -> None:
    """Held-out bits per character of the model and of count baselines, same characters."""
    bpc = bits_per_char(h, held, C)
    n_scored = (len(held) - 1) // C * C          # held[1 : n_scored + 1], as bits_per_char
    scored = held[1:n_scored + 1]
    uni = unigram_bits(train_ids, scored, V)
    ngram = NGramModel(_NGRAM_ORDER, V, alpha=0.1).fit(train_ids)
    tri = float(-np.log2(ngram.probabilities(held[:n_scored + 1])[1:]).mean())
    print(f"  held-out: {bpc:.4f} bits per character over {n_scored} characters")
    print(f"  for scale on the same characters: character frequencies give {uni:.4f}; a "
          f"{_NGRAM_ORDER}-gram count model ({ngram.n_params} counts) gives {tri:.4f}")


def _write_out(text: str) -> None:
    """Print text; a terminal that cannot show a character gets UTF-8 bytes instead."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8", "replace"))


def generate_command(args: argparse.Namespace) -> int:
    """`mdlc generate MODEL.nm --prompt TEXT -n N`: print the prompt and its continuation."""
    try:
        h = load(args.file)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except NeuromorphError as e:             # a corrupt or foreign file: exit 3
        raise DataFailure(f"cannot load {args.file}: {e}") from None
    try:
        tok = tokenizer_of(h)                           # restored by load from the file
        if tok is None:
            raise UsageError(f"{args.file} holds no tokenizer, so its ids cannot be read as "
                             f"text: save it with `mdlc run MODEL --text FILE --save OUT.nm` "
                             f"(or attach one in Python: Model.tokenizer = CharTokenizer(text))")
        try:
            prompt_ids = tok.encode(args.prompt)
        except NeuromorphError as e:
            raise UsageError(f"the prompt does not fit the model's alphabet: {e}; the alphabet "
                             f"is {tok.chars!r}") from None
        spec = sequence_spec(json.loads(_core.ir_json(h)))
        if tok.vocab_size > spec.vocab:
            raise UsageError(f"{args.file}: its tokenizer has {tok.vocab_size} characters but "
                             f"the model reads a vocabulary of {spec.vocab}")
        ids = generate(h, prompt_ids, args.n, args.temperature, args.top_k, args.seed,
                       vocab=tok.vocab_size)
        _write_out(args.prompt + tok.decode(ids) + "\n")
    except NeuromorphError as e:
        raise UsageError(str(e)) from None
    finally:
        forget(h)
        release(h)
    return 0
