"""`mdlc`, the command-line compiler.

    mdlc check FILE...                      exit 0: all compile; 1: an error; 2: usage
    mdlc compile FILE [-o OUT] [--emit STAGE]
    mdlc dot FILE [-o OUT]
    mdlc run MODEL [--data F.npz | --text F.txt] [--epochs N] ...
    mdlc generate MODEL.nm --prompt TEXT -n N [--temperature T] [--top-k K] [--seed S]

`run` and `generate` need the `neuromorph` engine. `-` as FILE reads standard input.
Diagnostics go to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Optional

from .diagnostics import MDLError
from .ir import STAGES, compile_text


class UsageError(Exception):
    pass


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: not UTF-8 text") from None


def _compile(path: str, stop_after: str = "ir"):
    text, name = _read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_text(text, name, stop_after=stop_after, warn=False)
    for w in getattr(result, "warnings", []):
        print(w.render(), file=sys.stderr)
    return result


def _write(text: str, out: Optional[str]) -> None:
    if out in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise UsageError(f"cannot write {out}: {e.strerror}") from None


def cmd_check(args) -> int:
    status = 0
    for path in args.files:
        try:
            _compile(path)
            if not args.quiet:
                print(f"{path if path != '-' else '<stdin>'}: ok", file=sys.stderr)
        except MDLError as e:
            print(str(e), file=sys.stderr)
            status = 1
    return status


def cmd_compile(args) -> int:
    result = _compile(args.file, args.emit)
    text = result.to_json() if args.emit == "ir" else json.dumps(result, indent=2)
    _write(text + "\n", args.output)
    return 0


def cmd_dot(args) -> int:
    from .dot import to_dot
    _write(to_dot(_compile(args.file)), args.output)
    return 0


def cmd_run(args) -> int:
    try:
        from neuromorph.cli_run import run_command
    except ImportError as e:
        raise UsageError(f"`mdlc run` needs the neuromorph engine, which did not import: {e}")
    return run_command(args)


def cmd_generate(args) -> int:
    try:
        from neuromorph.cli_run import generate_command
    except ImportError as e:
        raise UsageError(f"`mdlc generate` needs the neuromorph engine, which did not import: {e}")
    return generate_command(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdlc", description="The Neuromorph MDL compiler.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="compile files and report diagnostics")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing for files that compile")
    c.set_defaults(fn=cmd_check)
    c = sub.add_parser("compile", help="write the IR JSON (or a pass's view with --emit)")
    c.add_argument("file", metavar="FILE")
    c.add_argument("-o", "--output", metavar="OUT")
    c.add_argument("--emit", choices=STAGES, default="ir", help="stop after this stage")
    c.set_defaults(fn=cmd_compile)
    c = sub.add_parser("dot", help="write a Graphviz graph (delayed edges dashed)")
    c.add_argument("file", metavar="FILE")
    c.add_argument("-o", "--output", metavar="OUT")
    c.set_defaults(fn=cmd_dot)
    c = sub.add_parser("run", help="train a model on an .npz file, a text, or a built-in "
                       "synthetic task")
    c.add_argument("file", metavar="MODEL")
    c.add_argument("--data", metavar="FILE.npz", help="arrays `inputs` and `expected`")
    c.add_argument("--text", metavar="FILE", help="UTF-8 text for a causal token model (an "
                   "`embed` over C cells, output `cells C` with a softmax): trains on windows "
                   "of C+1 characters, reports held-out bits per character")
    c.add_argument("--context-stride", type=int, default=None, metavar="S",
                   help="--text: start a window every S characters (default C: every "
                   "character is a target once per epoch; 1: every window)")
    c.add_argument("--heldout", type=float, default=0.1, metavar="F",
                   help="--text: the fraction of the text, at its end, held out for "
                   "bits per character (default 0.1)")
    c.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw"), default=None,
                   help="default sgd; adam with --text or a token model")
    c.add_argument("--epochs", type=int, default=5)
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--lr", type=float, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--batches", type=int, default=2000, help="synthetic task size in batches")
    c.add_argument("--verbosity", type=int, default=1)
    c.add_argument("--save", metavar="OUT.nm", help="save the trained model (neuromorph.load reads it)")
    c.add_argument("--plot", metavar="LOSS.png", help="plot the loss per batch (needs matplotlib)")
    c.set_defaults(fn=cmd_run)
    c = sub.add_parser("generate", help="sample text from a token model saved by "
                       "`mdlc run --text ... --save`")
    c.add_argument("file", metavar="MODEL.nm")
    c.add_argument("--prompt", default="", help="text to continue (characters of the "
                   "model's alphabet; default: empty)")
    c.add_argument("-n", type=int, default=200, metavar="N", help="characters to generate")
    c.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="1: the model's distribution; lower: more likely characters; 0: greedy")
    c.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample only among the K most likely characters")
    c.add_argument("--seed", type=int, default=None, help="for a reproducible sample")
    c.set_defaults(fn=cmd_generate)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except MDLError as e:
        print(str(e), file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"mdlc: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `mdlc run ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    # `python -m mdl.cli`: run the importable module, so that the UsageError raised by
    # neuromorph.cli_run (imported from mdl.cli) is the class main() catches
    from mdl.cli import entry as _entry
    _entry()
