"""`mdlc run` and `mdlc generate`: the engine side of the command line.

`run` compiles a model, builds it and trains it on an .npz file, a text (`--text`, for a
causal token model) or a synthetic task; `generate` samples text from a saved token model.
Argument parsing lives in `mdl.cli`; this module is imported only when a command needs the
engine.
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings

import numpy as np

import mdl

from . import (build, compile_ir, evaluate, history, info, load, release, reset_state, save,
               seed, train)
from .errors import NeuromorphError, ShapeError
from .generate import generate, sequence_spec
from .tasks import FORMAL_ALPHABET, formal_text, make_task
from .text import (CharTokenizer, NGramModel, attach_tokenizer, bits_per_char, forget,
                   split_heldout, tokenizer_of, unigram_bits, windows)


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


def _token_spec(doc: dict):
    """The SequenceSpec of a causal token model, or None for any other model."""
    try:
        return sequence_spec(doc)
    except ShapeError:
        return None


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
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    text_file = getattr(args, "text", None)
    if text_file and args.data:
        raise UsageError("give either --data or --text, not both")
    spec = _token_spec(ir.doc)
    if text_file or (spec is not None and not args.data):
        if spec is None:
            try:
                sequence_spec(ir.doc)
            except ShapeError as e:
                raise UsageError(f"--text needs a causal token model: {e}") from None
        optimizer = getattr(args, "optimizer", None) or "adam"
        lr = args.lr or (0.003 if optimizer in ("adam", "adamw") else 0.05)
        return _run_text(args, ir, name, spec, batch, lr, optimizer)
    if not args.data and any(n["kind"] == "embed" for n in ir.doc["nodes"]):
        try:
            sequence_spec(ir.doc)
        except ShapeError as e:
            raise UsageError(f"the model reads token ids (`embed`); the built-in task for "
                             f"token ids trains a causal token model, which this is not ({e}); "
                             f"give --data FILE.npz") from None
    optimizer = getattr(args, "optimizer", None) or "sgd"
    lr = args.lr or (0.003 if optimizer in ("adam", "adamw") else 0.5 if ir.recurrent else 0.05)
    try:
        if args.data:
            x, e = _load_npz(args.data)
            desc = f"data from {args.data}"
        else:
            x, e, desc = make_task(ir.doc, batch, args.batches, args.seed)
        seed(args.seed)
        h = compile_ir(ir.to_json(), batch, lr, optimizer=optimizer)
        try:
            build(h)
            kind = "recurrent stream" if ir.recurrent else "batched"
            opt = "" if optimizer == "sgd" else f"{optimizer}, "
            print(f"{name}: {kind} model, batch {batch}, {opt}learning rate {lr}; {desc}")
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


# ---------------------------------------------------------------------------- text models
_NGRAM_ORDER = 3


def _run_text(args, ir, name: str, spec, batch: int, lr: float, optimizer: str) -> int:
    """`mdlc run --text`: train a causal token model on windows of C+1 characters.

    Every epoch cuts the windows from a random offset in [0, stride), shuffles them
    (reproducibly, from --seed) and drops the ones that do not fill a last batch, so each
    epoch trains on the same number of whole batches and a different remainder sits out.
    Reports held-out bits per character (text.bits_per_char: non-overlapping windows of the
    tail) next to count baselines on the same characters.
    """
    from mdl.cli import UsageError, _read
    C, V = spec.cells, spec.vocab
    stride = args.context_stride if args.context_stride is not None else C
    if stride < 1:
        raise UsageError(f"--context-stride must be at least 1, got {stride}")
    if not 0 <= args.heldout < 1:
        raise UsageError(f"--heldout must be a fraction in [0, 1), got {args.heldout}")
    if args.text:
        corpus, _ = _read(args.text)
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
    try:
        seed(args.seed)
        h = compile_ir(ir.to_json(), batch, lr, optimizer=optimizer)
        try:
            build(h)
            attach_tokenizer(h, tok)
            print(f"{name}: token model over {C} cells, vocabulary {V} ({tok.vocab_size} "
                  f"characters used); batch {batch}, {optimizer}, learning rate {lr}; {desc}")
            print(f"  {len(train_ids)} training characters in {len(x)} windows (stride "
                  f"{stride}), {usable // batch} batches an epoch; {len(held)} held out")
            rng = np.random.default_rng(args.seed)
            start = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                # a random first window start: across epochs every alignment of the text
                # to the cells is seen, not only multiples of the stride
                xe, ye = windows(train_ids[int(rng.integers(stride)):], C, stride)
                order = rng.permutation(len(xe))[:usable]
                loss = train(h, xe[order].reshape(-1, batch, C), ye[order].reshape(-1, batch, C),
                             verbosity=args.verbosity)
                print(f"  epoch {epoch}/{args.epochs}: mean training loss {loss:.6g} nats "
                      f"({loss / math.log(2):.4f} bits per character)")
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
    except (RunError, NeuromorphError) as err:
        raise UsageError(str(err)) from None
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


def generate_command(args) -> int:
    """`mdlc generate MODEL.nm --prompt TEXT -n N`: print the prompt and its continuation."""
    from mdl.cli import UsageError
    try:
        h = load(args.file)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except NeuromorphError as e:
        raise UsageError(f"cannot load {args.file}: {e}") from None
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
        from . import _core
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
