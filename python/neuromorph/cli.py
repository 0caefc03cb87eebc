"""The engine's commands of `mdlc`: `run`, `generate`, `sweep` and `report` (a plug-in of
`mdl.cli`).

`mdl.cli` is the compiler's command line and never imports the engine; it loads this module
through the entry point `neuromorph` of the group `mdl.commands` (pyproject.toml), calls
`add_commands` to add these sub-commands to its parser and `version_line` for `--version`.
This module holds the flags only; the commands run in `neuromorph.cli_run`,
`neuromorph.sweep` and `neuromorph.report`. Exit statuses and error classes are `mdl.cli`'s.
"""
from __future__ import annotations

import argparse
from typing import Any

from mdl.cli import UsageError, int_at_least, names, real

from . import api
from .cli_run import generate_command, run_command

_POSITIVE = real(0.0, lo_open=True, what="a positive number")


def version_line() -> str:
    """The engine's line of `mdlc --version`."""
    info = api.build_info()
    cuda = "with CUDA" if info.get("cuda_built") else "without CUDA"
    return (f"neuromorph {api.__version__} (the engine), reads IR version "
            f"{info.get('ir_version')}, {cuda}")


def add_commands(sub: Any) -> None:
    """Add `run`, `generate`, `sweep` and `report` to mdlc's sub-parsers."""
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
    c.add_argument("--context-stride", type=int_at_least(1), default=None, metavar="S",
                   help="--text: start a window every S characters (default C: every "
                   "character is a target once per epoch; 1: every window)")
    c.add_argument("--heldout", type=real(0.0, 1.0, what="a fraction in [0, 1)"), default=0.1,
                   metavar="F", help="--text: the fraction of the text, at its end, held out for "
                   "bits per character (default 0.1)")
    c.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw"), default=None,
                   help="default sgd; adam with --text or a token model")
    c.add_argument("--epochs", type=int_at_least(1), default=5, metavar="N")
    c.add_argument("--batch-size", type=int_at_least(1), default=None, metavar="B",
                   help="default 16 (5 for a recurrent model)")
    c.add_argument("--lr", type=_POSITIVE, default=None, metavar="LR", help="learning rate "
                   "(default 0.05 for sgd, 0.5 for a recurrent model, 0.003 for adam)")
    c.add_argument("--seed", type=int_at_least(0), default=0)
    c.add_argument("--batches", type=int_at_least(1), default=2000,
                   help="synthetic task size in batches")
    c.add_argument("--validation-split", type=real(0.0, 1.0, lo_open=True,
                   what="a fraction in (0, 1)"), default=None, metavar="F",
                   help="hold out this fraction of the data (after a seeded shuffle, except "
                   "for a recurrent model's stream) and report the validation loss each epoch")
    c.add_argument("--metrics", type=names, default=None, metavar="M,...",
                   help="metrics reported each epoch, e.g. accuracy,bits_per_char")
    c.add_argument("--early-stopping", type=int_at_least(1), default=None, metavar="PATIENCE",
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
    c.add_argument("--distributed", action="store_true", help="data-parallel training under "
                   "`mpiexec -n K` (or srun): each rank trains on its shard of every global "
                   "batch of K x --batch-size samples (neuromorph[mpi]; docs/distributed.md)")
    c.set_defaults(fn=run_command)
    c = sub.add_parser("generate", help="sample text from a token model saved by "
                       "`mdlc run --text ... --save`")
    c.add_argument("file", metavar="MODEL.nm")
    c.add_argument("--prompt", default="", help="text to continue (characters of the "
                   "model's alphabet; default: empty)")
    c.add_argument("-n", type=int_at_least(1), default=200, metavar="N",
                   help="characters to generate")
    c.add_argument("--temperature", type=real(0.0, what="a number >= 0"), default=1.0,
                   metavar="T",
                   help="1: the model's distribution; lower: more likely characters; 0: greedy")
    c.add_argument("--top-k", type=int_at_least(1), default=None, metavar="K",
                   help="sample only among the K most likely characters")
    c.add_argument("--seed", type=int_at_least(0), default=None, help="for a reproducible sample")
    c.set_defaults(fn=generate_command)
    _sweep_parser(sub)
    _report_parser(sub)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        from .sweep import sweep_command
    except ImportError as e:
        raise UsageError(f"`mdlc sweep` needs the neuromorph engine, which did not import: {e}")
    code: int = sweep_command(args)
    return code


def _sweep_parser(sub: Any) -> None:
    """`mdlc sweep` (neuromorph.sweep; docs/sweep.md)."""
    c = sub.add_parser("sweep", help="train many variants of a model at once (a grid or an "
                       "Optuna search) on a Dask cluster; needs 'neuromorph[sweep]'")
    c.add_argument("file", metavar="MODEL", help="an .mdl file or a shipped model's name")
    c.add_argument("--set", action="append", metavar="NAME=V1,V2,...", help="values to try: "
                   "a training setting (lr, batch, epochs, optimizer, momentum, weight_decay, "
                   "schedule, ...) or a part of the model (an option KEY on every node that has "
                   "it, NODE.KEY, NODE.width, NODE.shape); with --search, A:B or A:B:log is a "
                   "range; repeat for more names")
    c.add_argument("--seeds", default="0", metavar="S", help="seeds of every configuration: "
                   "N, A-B or a comma list (default 0)")
    c.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="one-thread workers of a local Dask cluster (default: one per CPU; 0: "
                   "serially in this process, no Dask)")
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use the workers of a "
                   "running Dask scheduler instead of a local cluster (-o and --data on a "
                   "shared filesystem)")
    c.add_argument("-o", "--output", default="sweep", metavar="DIR", help="results.jsonl and "
                   "models/ go here; a rerun skips the trials already finished (default sweep)")
    c.add_argument("--data", metavar="FILE", help="training data, as `mdlc run --data` "
                   "(default: the model's built-in task)")
    c.add_argument("--x", metavar="KEY", help="--data: the inputs' array or columns")
    c.add_argument("--y", metavar="KEY", help="--data: the expected values' array or columns")
    c.add_argument("--epochs", type=int_at_least(1), default=5, metavar="N",
                   help="epochs per trial unless --set epochs=... (default 5)")
    c.add_argument("--batches", type=int_at_least(1), default=200,
                   help="built-in task size in batches (default 200)")
    c.add_argument("--validation-split", type=real(0.0, 1.0, what="a fraction in [0, 1)"),
                   default=0.2, metavar="F", help="held-out fraction for val_loss (default 0.2; "
                   "0: none, the objective is then the training loss)")
    c.add_argument("--metrics", type=names, default=None, metavar="M,...",
                   help="extra metrics per trial, e.g. accuracy")
    c.add_argument("--objective", default=None, metavar="NAME", help="the metric that ranks "
                   "trials and that the search optimizes and prunes on (default val_loss; "
                   "loss without a validation split); accuracy is maximized, losses minimized")
    c.add_argument("--search", choices=("optuna",), default=None,
                   help="TPE search with median pruning instead of the full grid")
    c.add_argument("--trials", type=int_at_least(1), default=None, metavar="N",
                   help="--search: number of trials")
    c.set_defaults(fn=cmd_sweep)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_command
    code: int = report_command(args)
    return code


def _report_parser(sub: Any) -> None:
    """`mdlc report` (neuromorph.report; docs/inspect.md)."""
    c = sub.add_parser("report", help="write one self-contained HTML page about a saved model: "
                       "summary, graph, training curves and pictures of what its nodes do "
                       "(pictures need 'neuromorph[plot]')")
    c.add_argument("file", metavar="MODEL", help="a model file saved by `mdlc run --save` or "
                   "neuromorph.save; an .mdl file or a shipped model's name gives the report "
                   "of the untrained model")
    c.add_argument("--data", metavar="FILE", help="draw the pictures from the first samples of "
                   "this data file, read as `mdlc run --data` reads it (default: synthetic "
                   "inputs of the model's shape)")
    c.add_argument("--x", metavar="KEY", help="--data: the inputs' array or columns")
    c.add_argument("--y", metavar="KEY", help="--data: the expected values' array or columns")
    c.add_argument("-o", "--output", default="report.html", metavar="OUT.html",
                   help="where to write the page (default report.html)")
    c.add_argument("--samples", type=int_at_least(1), default=64, metavar="N",
                   help="how many samples to inspect (default 64)")
    c.add_argument("--seed", type=int_at_least(0), default=0,
                   help="for the synthetic inputs and an .mdl model's initial parameters")
    c.set_defaults(fn=cmd_report)
