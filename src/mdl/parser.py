"""MDL text -> typed AST (`mdl.ast`). The only module that touches Lark.

Syntax errors become `MDLError`s with a location, the expected tokens in words,
and hints for the usual slips (missing header, unbalanced brackets, empty
split branch). No `lark.Tree` or `lark.Token` leaves this module.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Optional

import lark
from lark import Transformer, v_args

from . import ast
from .diagnostics import Diagnostic, MDLError, Source, Span

_TERMINAL_WORDS = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "LESSTHAN": "`<`", "MORETHAN": "`>`", "SLASH": "`/`",
    "COMMA": "`,`", "VBAR": "`|`", "NAME": "a name", "NUMBER": "a number",
    "SHAPE": "a shape such as `8x8`", "ENERGY": "`energy`", "$END": "the end of the model",
}
_OPENERS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


def grammar_text() -> str:
    """The shipped grammar: inside the installed package, else the source tree's."""
    try:
        shipped = resources.files("mdl").joinpath("mdl.lark")
        if shipped.is_file():
            return shipped.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parents[2] / "grammars" / "mdl.lark"
    return repo.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True,
                     maybe_placeholders=False)


def _span(tok) -> Span:
    end = tok.end_column if tok.end_line == tok.line else tok.column + len(str(tok).split("\n")[0])
    return Span(tok.line, tok.column, end)


def _meta_span(meta) -> Span:
    end = meta.end_column if meta.end_line == meta.line else meta.column + 1
    return Span(meta.line, meta.column, end)


def _number(tok) -> float:
    return float(str(tok))


@v_args(inline=True)
class _Build(Transformer):
    """One small method per rule; returns `mdl.ast` dataclasses."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def start(self, header, chain):
        return ast.Model(header, chain, self.source, self.source.end_span())

    @v_args(meta=True, inline=True)
    def header(self, meta, weight, bias):
        return ast.Header(weight, bias, _meta_span(meta))

    def init(self, name, *params):
        return ast.Init(str(name), _span(name), [_number(p) for p in params],
                        [_span(p) for p in params])

    def chain(self, *nodes):
        return list(nodes)

    def branch(self, *nodes):
        return list(nodes)

    @v_args(meta=True, inline=True)
    def paren(self, meta, name, *fields):
        return ast.Paren(str(name), _span(name), list(fields), _meta_span(meta))

    def words(self, *toks):
        kinds = {"NUMBER": "number", "SHAPE": "shape", "NAME": "name"}
        return ast.Words([ast.Atom(kinds[t.type], str(t), _span(t)) for t in toks])

    @v_args(meta=True, inline=True)
    def func(self, meta, name, *params):
        return ast.Func(str(name), _span(name), [_number(p) for p in params],
                        [_span(p) for p in params], _meta_span(meta))

    @v_args(meta=True, inline=True)
    def merge(self, meta, name, target, op):
        return ast.Merge(str(name), _span(name), str(target), _span(target), str(op),
                         _span(op), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def split(self, meta, name, *branches):
        return ast.Split(str(name), _span(name), list(branches), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def tap(self, meta, name, alias):
        return ast.Tap(str(name), _span(name), str(alias), _span(alias), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def energy(self, meta, name, _kw, *rest):
        options = [r for r in rest if isinstance(r, ast.Words)]
        members = [r for r in rest if isinstance(r, ast.Paren)]
        return ast.Energy(str(name), _span(name), options, members, _meta_span(meta))


def _bracket_errors(source: Source) -> Optional[Diagnostic]:
    """Unbalanced (), [], {}, <> found by a scan, so the message names both ends."""
    stack: list[tuple[str, int, int]] = []
    for ln, text in enumerate(source.text.splitlines(), start=1):
        for col, ch in enumerate(text.split("#", 1)[0], start=1):
            if ch in _OPENERS:
                stack.append((ch, ln, col))
            elif ch in _CLOSERS:
                if not stack:
                    return Diagnostic("error", f"unmatched `{ch}`", Span(ln, col, col + 1),
                                      f"remove it, or add the `{_CLOSERS[ch]}` that it closes",
                                      source)
                opener, oln, ocol = stack.pop()
                if _OPENERS[opener] != ch:
                    return Diagnostic(
                        "error",
                        f"`{ch}` does not close `{opener}` opened at {oln}:{ocol}",
                        Span(ln, col, col + 1),
                        f"close `{opener}` with `{_OPENERS[opener]}` first", source)
    if stack:
        opener, ln, col = stack[-1]
        return Diagnostic("error", f"unclosed `{opener}`", Span(ln, col, col + 1),
                          f"add the matching `{_OPENERS[opener]}`", source)
    return None


def _expected_words(expected) -> str:
    words = sorted({_TERMINAL_WORDS.get(e, f"`{e}`") for e in expected})
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_diagnostic(err: lark.exceptions.UnexpectedInput, source: Source) -> Diagnostic:
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = source.line(err.line)[err.column - 1: err.column]
        return Diagnostic("error", f"unexpected character `{ch}`",
                          Span(err.line, err.column, err.column + 1),
                          "MDL uses names, numbers and ( ) [ ] { } < > / , | only", source)
    tok = getattr(err, "token", None)
    expected = getattr(err, "expected", None) or getattr(err, "accepts", None) or set()
    if tok is None or tok.type == "$END":
        span = source.end_span()
        return Diagnostic("error", f"unexpected end of model; expected {_expected_words(expected)}",
                          span, None, source)
    span = _span(tok)
    text = str(tok)
    if tok.line == 1 and tok.column <= 1 + len(source.line(1)) - len(source.line(1).lstrip()) \
            and "SLASH" in expected and tok.type != "SLASH":
        return Diagnostic("error", "missing header: a model starts with `/weight_init, bias_init/`",
                          span, "start the model with `/xavier, zero/`", source)
    if tok.type in ("VBAR", "RSQB") and {"LPAR", "LSQB", "LBRACE"} <= set(expected):
        before = source.line(tok.line)[: tok.column - 1].rstrip()
        hint = ("put a node in the branch, or remove the `|`" if before.endswith("|")
                else "a split holds at least one branch: `[s, (a, 4, <relu>)]`")
        return Diagnostic("error", "empty branch: every branch of a split holds at least one node",
                          span, hint, source)
    in_header = "(" not in source.text[: _offset(source, tok)]
    hint = ("the header is `/weight_init, bias_init/`, e.g. `/xavier, zero/`" if in_header
            else None)
    return Diagnostic("error", f"unexpected `{text}`; expected {_expected_words(expected)}",
                      span, hint, source)


def _offset(source: Source, tok) -> int:
    lines = source.text.splitlines(keepends=True)
    return sum(len(x) for x in lines[: tok.line - 1]) + tok.column - 1


def _first_token_diagnostic(source: Source) -> Optional[Diagnostic]:
    """A model must open with its header; give that message, not a token list."""
    for ln, text in enumerate(source.text.splitlines(), start=1):
        body = text.split("#", 1)[0]
        stripped = body.lstrip()
        if stripped:
            if stripped[0] != "/":
                col = len(body) - len(stripped) + 1
                return Diagnostic("error",
                                  "missing header: a model starts with `/weight_init, bias_init/`",
                                  Span(ln, col, col + 1), "start the model with `/xavier, zero/`",
                                  source)
            return None
    return Diagnostic("error", "empty model: expected a header, an input and an output",
                      Span(1, 1, 2), "a minimal model is `/xavier, zero/ (x, 4) (y, 1, <linear>, <mse>)`",
                      source)


def parse(text: str, filename: str = "<string>") -> ast.Model:
    """Parse MDL text into an `ast.Model`; raises `MDLError` on a syntax error."""
    source = Source(text, filename)
    early = _first_token_diagnostic(source) or _bracket_errors(source)
    if early:
        raise MDLError([early])
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise MDLError([_syntax_diagnostic(err, source)]) from None
    return _Build(source).transform(tree)
