"""`mdlc`, the command-line compiler, and the command line's plug-in point for the engine.

    mdlc check FILE...                      exit 0: all compile; 1: an error; 2: usage
    mdlc compile FILE [-o OUT] [--emit STAGE]
    mdlc dot FILE [-o OUT]
    mdlc --version

The commands that need the engine (`run`, `generate`, `sweep`) are not defined here: packages
register them under the entry-point group `mdl.commands` (neuromorph's is `neuromorph.cli`),
a module with `add_commands(subparsers)` and `version_line()`. They are loaded only when the
command line asks for something besides check/compile/dot, so this package never imports the
engine (and `mdlc check` works without it). A plug-in reads sources with `read_source`,
raises `UsageError`/`DataFailure` and builds flags with `int_at_least`, `real` and `names`.
`-` as FILE reads standard input. Diagnostics go to stderr.

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
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from .diagnostics import MDLError
from .errors import NeuromorphError
from .ir import IR_VERSION, STAGES, compile_text

EXIT_OK, EXIT_COMPILE, EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad flags or values, a missing file or optional package: exit 2."""


class DataFailure(Exception):
    """Data or a file that cannot be used although it exists (besides NeuromorphError): exit 3."""


PLUGIN_GROUP = "mdl.commands"
OWN_COMMANDS = ("check", "compile", "dot")


class CommandPlugin(Protocol):
    """What a module registered under the entry-point group `mdl.commands` provides."""

    def add_commands(self, sub: Any) -> None:
        """Add sub-commands to `sub` (argparse sub-parsers), each with `set_defaults(fn=...)`,
        fn(args) returning the exit status."""

    def version_line(self) -> str:
        """One line for `mdlc --version` (the plug-in's version)."""


def read_source(path: str) -> tuple[str, str]:
    """(text, name) of a source file, `-` for standard input; UsageError when unreadable."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: not UTF-8 text") from None


def _compile(path: str, stop_after: str = "ir") -> Any:
    text, name = read_source(path)
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


def cmd_check(args: argparse.Namespace) -> int:
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


def cmd_compile(args: argparse.Namespace) -> int:
    result = _compile(args.file, args.emit)
    text = result.to_json() if args.emit == "ir" else json.dumps(result, indent=2)
    _write(text + "\n", args.output)
    return 0


def cmd_dot(args: argparse.Namespace) -> int:
    from .dot import to_dot
    _write(to_dot(_compile(args.file)), args.output)
    return 0


_LOADED: Optional[list[tuple[str, Union[CommandPlugin, Exception]]]] = None


def plugins() -> list[tuple[str, Union[CommandPlugin, Exception]]]:
    """(name, module) of each `mdl.commands` plug-in, or (name, the error) for one that did
    not import; loaded once."""
    global _LOADED
    if _LOADED is None:
        from importlib.metadata import entry_points
        _LOADED = []
        for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
            try:
                _LOADED.append((ep.name, ep.load()))
            except Exception as e:  # a broken engine is reported, never raised
                _LOADED.append((ep.name, e))
    return _LOADED


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def version_text() -> str:
    """What `mdlc --version` prints: the compiler's version and IR version, and each
    plug-in's line (the engine's), or why it is not available."""
    from . import __version__
    lines = [f"mdlc {__version__} (the mdl compiler), writes IR version {IR_VERSION}"]
    found = plugins()
    for name, plugin in found:
        if isinstance(plugin, Exception):
            lines.append(f"{name}: the engine is not available ({_first_line(plugin)})")
        else:
            try:
                lines.append(plugin.version_line())
            except Exception as e:
                lines.append(f"{name}: the engine is not available ({_first_line(e)})")
    if not found:
        lines.append("neuromorph: the engine is not available (not installed: no "
                     f"`{PLUGIN_GROUP}` entry point)")
    return "\n".join(lines) + "\n"


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS,
                 help: str = "print the versions of mdlc, the engine and the IR, and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        sys.stdout.write(version_text())
        parser.exit(0)


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer >= lo."""
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


def real(lo: float, hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = True,
         what: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in the range (`what` says it in words)."""
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


def names(text: str) -> list[str]:
    """An argparse type: comma-separated names."""
    parts = [t.strip() for t in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return parts


def _parser(with_plugins: bool = True) -> argparse.ArgumentParser:
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
    if with_plugins:
        for _, plugin in plugins():
            if not isinstance(plugin, Exception):
                plugin.add_commands(sub)
    return p


def commands(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-command names of an `mdlc` parser (the compiler's and the plug-ins')."""
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def _unavailable(argv: Sequence[str]) -> Optional[str]:
    """Why the command asked for is missing: a plug-in that did not load (else None)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    failed = [(n, e) for n, e in plugins() if isinstance(e, Exception)]
    if command is None or not failed:
        return None
    name, err = failed[0]
    return (f"`mdlc {command}` is not a compiler command; the engine's commands come from "
            f"{name}, which did not import: {_first_line(err)}")


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; returns the exit status (argparse exits 2 itself on bad flags)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with_plugins = not (argv and argv[0] in OWN_COMMANDS)  # the compiler alone: no engine
    parser = _parser(with_plugins)
    if with_plugins and argv and not argv[0].startswith("-") and argv[0] not in commands(parser):
        why = _unavailable(argv)
        if why:
            print(f"mdlc: error: {why}", file=sys.stderr)
            return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
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
    # `python -m mdl.cli`: run the importable module, so that the UsageError raised by a
    # plug-in (which imports mdl.cli) is the class main() catches
    from mdl.cli import entry as _entry
    _entry()
