"""`mdlc`, the command-line compiler.

    mdlc check FILE...                      exit 0: all compile; 1: an error; 2: usage
    mdlc compile FILE [-o OUT] [--emit STAGE]
    mdlc dot FILE [-o OUT]
    mdlc run MODEL [--data FILE [--x KEY] [--y KEY] | --text F.txt] [--epochs N] ...
    mdlc generate MODEL.nm --prompt TEXT -n N [--temperature T] [--top-k K] [--seed S]
    mdlc --version

`run` and `generate` need the `neuromorph` engine (imported only by them: this module never
imports `neuromorph` at load time). `-` as FILE reads standard input; `run` also takes the
name of a shipped model (`mdlc run lstm-model`). Diagnostics go to stderr.

Exit status: 0 ok; 1 a compile error; 2 a usage error (bad flags or values, a missing file,
a missing optional package); 3 a data or runtime error (a NeuromorphError: unreadable or
malformed data, a corrupt model file, an engine failure); 130 interrupted by Ctrl-C (`run`
saves what it has first when --save is given).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from typing import Optional

from .diagnostics import MDLError
from .errors import NeuromorphError
from .ir import IR_VERSION, STAGES, compile_text

EXIT_OK, EXIT_COMPILE, EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad flags or values, a missing file or optional package: exit 2."""


class DataFailure(Exception):
    """Data or a file that cannot be used although it exists (besides NeuromorphError): exit 3."""


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


def version_text() -> str:
    """What `mdlc --version` prints: the compiler's version and IR version, and the engine's
    (imported here, lazily, so that the compiler alone still answers)."""
    from . import __version__
    lines = [f"mdlc {__version__} (the mdl compiler), writes IR version {IR_VERSION}"]
    try:
        import neuromorph
        info = neuromorph.build_info()
        cuda = "with CUDA" if info.get("cuda_built") else "without CUDA"
        lines.append(f"neuromorph {neuromorph.__version__} (the engine), reads IR version "
                     f"{info.get('ir_version')}, {cuda}")
    except Exception as e:  # any failure to load the engine is reported, never raised
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        lines.append(f"neuromorph: the engine is not available ({first})")
    return "\n".join(lines) + "\n"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the versions of mdlc, the engine and the IR, and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(version_text())
        parser.exit(0)


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def _real(lo: float, hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = True,
          what: str = ""):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and \
            (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = what or "number"
    return parse


def _names(text: str) -> list:
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


_POSITIVE = _real(0.0, lo_open=True, what="a positive number")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdlc", description="The Neuromorph MDL compiler.",
                                epilog="exit status: 0 ok, 1 compile error, 2 usage error, "
                                "3 data or runtime error, 130 interrupted")
    p.add_argument("--version", action=_Version)
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
    c = sub.add_parser("run", help="train a model on a data file (.npz, .npy, CSV/TSV, a "
                       "folder of images), a text, or a built-in synthetic task")
    c.add_argument("file", metavar="MODEL", help="an .mdl file, or the name of a shipped model "
                   "(lstm-model, readme-model, ...: neuromorph.models.names())")
    c.add_argument("--data", metavar="FILE", help="training data (neuromorph.load_data): .npz "
                   "(arrays `inputs` and `expected`, or --x/--y), X.npy with --y Y.npy, a CSV/TSV "
                   "table (target columns --y, default the last), or a folder of images per "
                   "class; a text file trains as --text")
    c.add_argument("--x", metavar="KEY", help="--data: the inputs' array in an .npz, or a "
                   "table's input columns (names or 0-based indices, comma-separated; default "
                   "every column that is not a target)")
    c.add_argument("--y", metavar="KEY", help="--data: the expected values' array in an .npz, "
                   "the .npy file of the expected values, or a table's target columns (names or "
                   "0-based indices, comma-separated; default the last column)")
    c.add_argument("--text", metavar="FILE", help="UTF-8 text for a causal token model (an "
                   "`embed` over C cells, output `cells C` with a softmax): trains on windows "
                   "of C+1 characters, reports held-out bits per character")
    c.add_argument("--context-stride", type=_int_at_least(1), default=None, metavar="S",
                   help="--text: start a window every S characters (default C: every "
                   "character is a target once per epoch; 1: every window)")
    c.add_argument("--heldout", type=_real(0.0, 1.0, what="a fraction in [0, 1)"), default=0.1,
                   metavar="F", help="--text: the fraction of the text, at its end, held out for "
                   "bits per character (default 0.1)")
    c.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw"), default=None,
                   help="default sgd; adam with --text or a token model")
    c.add_argument("--epochs", type=_int_at_least(1), default=5, metavar="N")
    c.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="B",
                   help="default 16 (5 for a recurrent model)")
    c.add_argument("--lr", type=_POSITIVE, default=None, metavar="LR", help="learning rate "
                   "(default 0.05 for sgd, 0.5 for a recurrent model, 0.003 for adam)")
    c.add_argument("--seed", type=_int_at_least(0), default=0)
    c.add_argument("--batches", type=_int_at_least(1), default=2000,
                   help="synthetic task size in batches")
    c.add_argument("--validation-split", type=_real(0.0, 1.0, lo_open=True,
                   what="a fraction in (0, 1)"), default=None, metavar="F",
                   help="hold out this fraction of the data (after a seeded shuffle, except "
                   "for a recurrent model's stream) and report the validation loss each epoch")
    c.add_argument("--metrics", type=_names, default=None, metavar="M,...",
                   help="metrics reported each epoch, e.g. accuracy,bits_per_char")
    c.add_argument("--early-stopping", type=_int_at_least(1), default=None, metavar="PATIENCE",
                   help="stop when the validation loss has not improved for PATIENCE epochs "
                   "(needs --validation-split)")
    c.add_argument("--checkpoint", metavar="PATH", help="save the model here after every epoch "
                   "that improves the (validation) loss (neuromorph.fit's checkpoint=)")
    c.add_argument("--verbosity", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 progress bar on a terminal, 2 a line per batch")
    c.add_argument("--save", metavar="OUT.nm", help="save the trained model (neuromorph.load "
                   "reads it); Ctrl-C saves what has been trained")
    c.add_argument("--plot", metavar="LOSS.png", help="plot the loss per batch (needs "
                   "matplotlib: pip install 'neuromorph[plot]')")
    c.set_defaults(fn=cmd_run)
    c = sub.add_parser("generate", help="sample text from a token model saved by "
                       "`mdlc run --text ... --save`")
    c.add_argument("file", metavar="MODEL.nm")
    c.add_argument("--prompt", default="", help="text to continue (characters of the "
                   "model's alphabet; default: empty)")
    c.add_argument("-n", type=_int_at_least(1), default=200, metavar="N",
                   help="characters to generate")
    c.add_argument("--temperature", type=_real(0.0, what="a number >= 0"), default=1.0,
                   metavar="T",
                   help="1: the model's distribution; lower: more likely characters; 0: greedy")
    c.add_argument("--top-k", type=_int_at_least(1), default=None, metavar="K",
                   help="sample only among the K most likely characters")
    c.add_argument("--seed", type=_int_at_least(0), default=None, help="for a reproducible sample")
    c.set_defaults(fn=cmd_generate)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns the exit status (argparse exits 2 itself on bad flags)."""
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except MDLError as e:          # a NeuromorphError too: caught first
        print(str(e), file=sys.stderr)
        return EXIT_COMPILE
    except UsageError as e:
        print(f"mdlc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (NeuromorphError, DataFailure) as e:
        print(f"mdlc: error: {e}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("mdlc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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
