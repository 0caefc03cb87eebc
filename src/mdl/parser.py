"""MDL text -> typed AST (`mdl.ast`). The only module that touches Lark.

Syntax errors become `MDLError`s with a location, the expected tokens in words,
and hints for the usual slips (missing header, unbalanced brackets, empty
split branch). No `lark.Tree` or `lark.Token` leaves this module.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import lark
from lark import Token, Transformer_NonRecursive, v_args
from lark.tree import Meta

from . import ast
from .diagnostics import Diagnostic, MDLError, Source, Span
from .limits import MAX_NESTING

_TERMINAL_WORDS = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "LESSTHAN": "`<`", "MORETHAN": "`>`", "SLASH": "`/`",
    "COMMA": "`,`", "VBAR": "`|`", "NAME": "a name", "NUMBER": "a number",
    "SHAPE": "a shape such as `8x8`", "ENERGY": "`energy`", "$END": "the end of the model",
}
_OPENERS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_BRACKET_RE = re.compile(r"\n|#[^\n]*|[()\[\]{}<>]")
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


def _span(tok: Any) -> Span:  # a lark Token: its positions are set (propagate_positions)
    end = tok.end_column if tok.end_line == tok.line else tok.column + len(str(tok).split("\n")[0])
    return Span(tok.line, tok.column, end)


def _meta_span(meta: Meta) -> Span:
    end = meta.end_column if meta.end_line == meta.line else meta.column + 1
    return Span(meta.line, meta.column, end)


def _number(tok: Token) -> float:
    return float(str(tok))


@v_args(inline=True)
class _Build(Transformer_NonRecursive):  # type: ignore[type-arg]  # lark's generic is untyped here
    """One small method per rule; returns `mdl.ast` dataclasses (iteratively: no recursion
    however deep the tree)."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def start(self, header: ast.Header, chain: list[ast.Node]) -> ast.Model:
        return ast.Model(header, chain, self.source, self.source.end_span())

    @v_args(meta=True, inline=True)
    def header(self, meta: Meta, weight: ast.Init, bias: ast.Init) -> ast.Header:
        return ast.Header(weight, bias, _meta_span(meta))

    def init(self, name: Token, *params: Token) -> ast.Init:
        return ast.Init(str(name), _span(name), [_number(p) for p in params],
                        [_span(p) for p in params])

    def chain(self, *nodes: ast.Node) -> list[ast.Node]:
        return list(nodes)

    def branch(self, *nodes: ast.Node) -> list[ast.Node]:
        return list(nodes)

    @v_args(meta=True, inline=True)
    def paren(self, meta: Meta, name: Token, *fields: Union[ast.Words, ast.Func]) -> ast.Paren:
        return ast.Paren(str(name), _span(name), list(fields), _meta_span(meta))

    def words(self, *toks: Token) -> ast.Words:
        kinds = {"NUMBER": "number", "SHAPE": "shape", "NAME": "name"}
        return ast.Words([ast.Atom(kinds[t.type], str(t), _span(t)) for t in toks])

    @v_args(meta=True, inline=True)
    def func(self, meta: Meta, name: Token, *params: Token) -> ast.Func:
        return ast.Func(str(name), _span(name), [_number(p) for p in params],
                        [_span(p) for p in params], _meta_span(meta))

    @v_args(meta=True, inline=True)
    def merge(self, meta: Meta, name: Token, target: Token, op: Token) -> ast.Merge:
        return ast.Merge(str(name), _span(name), str(target), _span(target), str(op),
                         _span(op), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def split(self, meta: Meta, name: Token, *branches: list[ast.Node]) -> ast.Split:
        return ast.Split(str(name), _span(name), list(branches), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def tap(self, meta: Meta, name: Token, alias: Token) -> ast.Tap:
        return ast.Tap(str(name), _span(name), str(alias), _span(alias), _meta_span(meta))

    @v_args(meta=True, inline=True)
    def energy(self, meta: Meta, name: Token, _kw: Token, *rest: Any) -> ast.Energy:
        options = [r for r in rest if isinstance(r, ast.Words)]
        members = [r for r in rest if isinstance(r, ast.Paren)]
        return ast.Energy(str(name), _span(name), options, members, _meta_span(meta))


def _bracket_errors(source: Source) -> Optional[Diagnostic]:
    """Unbalanced (), [], {}, <> found by a scan, so the message names both ends; and `[`
    nested deeper than MAX_NESTING (no later pass then meets a deeper tree)."""
    stack: list[tuple[str, int, int]] = []
    squares = 0
    ln, line_start = 1, 0
    for m in _BRACKET_RE.finditer(source.text):
        ch = m.group()
        if ch == "\n":
            ln, line_start = ln + 1, m.end()
            continue
        if ch[0] == "#":
            continue
        col = m.start() - line_start + 1
        if ch in _OPENERS:
            stack.append((ch, ln, col))
            if ch == "[":
                squares += 1
                if squares > MAX_NESTING:
                    return Diagnostic(
                        "error", f"`[` nested more than {MAX_NESTING} deep",
                        Span(ln, col, col + 1),
                        f"splits, taps and energy blocks nest at most {MAX_NESTING} deep; "
                        f"flatten the model, e.g. split once with several branches", source)
        elif ch in _CLOSERS:
            if not stack:
                return Diagnostic("error", f"unmatched `{ch}`", Span(ln, col, col + 1),
                                  f"remove it, or add the `{_CLOSERS[ch]}` that it closes",
                                  source)
            opener, oln, ocol = stack.pop()
            if opener == "[":
                squares -= 1
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


def _encoding_error(source: Source) -> Optional[Diagnostic]:
    """A character UTF-8 cannot hold (a lone surrogate, e.g. from text decoded with
    `surrogateescape`): located, as the IR stores the source as UTF-8."""
    try:
        source.text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        pos = e.start
    text = source.text
    ln = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return Diagnostic("error", f"U+{ord(text[pos]):04X} is a lone surrogate, not a character",
                      Span(ln, col, col + 1),
                      "the text was decoded from broken UTF-8 or UTF-16; save it as UTF-8",
                      source)


def _expected_words(expected: Iterable[str]) -> str:
    words = sorted({_TERMINAL_WORDS.get(e, f"`{e}`") for e in expected})
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_diagnostic(err: lark.exceptions.UnexpectedInput, source: Source) -> Diagnostic:
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = source.line(err.line)[err.column - 1: err.column]
        shown = f" `{ch}`" if ch.isprintable() else f" U+{ord(ch):04X}" if ch else ""
        return Diagnostic("error", f"unexpected character{shown}",
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
        branch_hint = ("put a node in the branch, or remove the `|`" if before.endswith("|")
                else "a split holds at least one branch: `[s, (a, 4, <relu>)]`")
        return Diagnostic("error", "empty branch: every branch of a split holds at least one node",
                          span, branch_hint, source)
    in_header = "(" not in source.text[: _offset(source, tok)]
    hint = ("the header is `/weight_init, bias_init/`, e.g. `/xavier, zero/`" if in_header
            else None)
    return Diagnostic("error", f"unexpected `{text}`; expected {_expected_words(expected)}",
                      span, hint, source)


def _offset(source: Source, tok: Any) -> int:  # a lark Token, as _span
    line: int = tok.line
    column: int = tok.column
    return sum(len(x) + 1 for x in source.text.split("\n", line - 1)[: line - 1]) + column - 1


def _first_token_diagnostic(source: Source) -> Optional[Diagnostic]:
    """A model must open with its header; give that message, not a token list."""
    for ln, text in enumerate(source.lines, start=1):
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


# --------------------------------------------------------------------------- fast path
#
# A direct tokenizer and parser for the same grammar, iterative, several times faster than
# Lark's. It is conservative: at the first thing it does not expect it gives up (`_Bail`) and
# `parse` runs Lark, whose result or syntax error is the answer. So Lark's grammar stays the
# definition (tests/test_fuzz_compiler.py checks that both give the same AST), and syntax
# errors keep Lark's expected-token lists.

# One token per match, after any whitespace: group 1 a comment, 2 a shape, 3 a number, 4 a name,
# 5 punctuation (the alternatives in Lark's order of priority: SHAPE, NUMBER, NAME).
_TOKEN_RE = re.compile(r"""[ \t\r\n\f]*(?:
    (\#[^\n]*)
  | ([0-9]+(?:x[0-9]+)+)
  | ([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | ([A-Za-z_][A-Za-z0-9_]*)
  | ([/,()<>{}\[\]|])
  | $)""", re.VERBOSE)
_KINDS = (None, None, "SHAPE", "NUMBER", "NAME", None)
_WORD_KINDS = {"NUMBER": "number", "SHAPE": "shape", "NAME": "name"}


class _Bail(Exception):
    """The fast parser met something it does not handle: Lark decides."""


def _tokens(text: str) -> list[tuple[str, str, int, int]]:
    """(kind, text, line, col) of every token; kind is NAME, NUMBER, SHAPE or the punctuation
    character. Lines count "\n" only, columns every character, as Lark does."""
    out: list[tuple[str, str, int, int]] = []
    append = out.append
    newlines = [m.start() for m in re.finditer("\n", text)]
    newlines.append(len(text) + 1)
    line, line_start, k = 1, 0, 0  # newlines[k]: the first newline not yet passed
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        if m.start() != pos:
            raise _Bail()  # a character no token starts with (finditer skipped it)
        pos = m.end()
        g = m.lastindex
        if g is None or g == 1:  # whitespace to the end, or a comment
            continue
        start = m.start(g)
        if start > newlines[k]:
            while newlines[k] < start:
                k += 1
            line, line_start = k + 1, newlines[k - 1] + 1
        value = m.group(g)
        append((_KINDS[g] or value, value, line, start - line_start + 1))
    if pos != len(text):
        raise _Bail()
    return out


_Tok = tuple[str, str, int, int]  # (kind, text, line, col)


def _tspan(tok: _Tok) -> Span:
    return Span(tok[2], tok[3], tok[3] + len(tok[1]))


def _outer(first: _Tok, last: _Tok) -> Span:
    """The span of a construct from token `first` to token `last` (as `_meta_span`)."""
    end = last[3] + len(last[1]) if last[2] == first[2] else first[3] + 1
    return Span(first[2], first[3], end)


class _Fast:
    def __init__(self, text: str, source: Source):
        self.toks = _tokens(text)
        self.toks.append(("$END", "", 0, 0))
        self.i = 0
        self.source = source

    def take(self, kind: str) -> _Tok:
        tok = self.toks[self.i]
        if tok[0] != kind:
            raise _Bail()
        self.i += 1
        return tok

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else "$END"

    def model(self) -> ast.Model:
        header = self.header()
        chain = self.chain()
        return ast.Model(header, chain, self.source, self.source.end_span())

    def header(self) -> ast.Header:
        first = self.take("/")
        weight = self.init()
        self.take(",")
        bias = self.init()
        last = self.take("/")
        return ast.Header(weight, bias, _outer(first, last))

    def init(self) -> ast.Init:
        name = self.take("NAME")
        params = []
        while self.peek() == "NUMBER":
            params.append(self.take("NUMBER"))
        return ast.Init(name[1], _tspan(name), [float(p[1]) for p in params],
                        [_tspan(p) for p in params])

    def chain(self) -> list[ast.Node]:
        """node* to the end; splits by an explicit stack of open frames."""
        top: list[ast.Node] = []
        cur = top
        # (`[`, name, branches, parent list) of each open split
        frames: list[tuple[_Tok, _Tok, list[list[ast.Node]], list[ast.Node]]] = []
        while True:
            kind = self.peek()
            if kind == "(":
                cur.append(self.paren())
            elif kind == "{":
                cur.append(self.merge())
            elif kind == "[":
                opener = self.take("[")
                name = self.take("NAME")
                self.take(",")
                nxt = self.peek()
                if nxt == "NAME" and self.toks[self.i][1] == "energy":
                    cur.append(self.energy(opener, name))
                elif nxt == "[" and self.peek(1) == "NAME" and (
                        self.peek(2) == "]" or (self.peek(2) == "," and self.peek(3) == "]")):
                    cur.append(self.tap(opener, name))
                elif nxt in ("(", "{", "["):
                    branch: list[ast.Node] = []
                    frames.append((opener, name, [branch], cur))
                    cur = branch
                else:
                    raise _Bail()
            elif kind in ("|", "]") and frames and cur:
                opener, name, branches, parent = frames[-1]
                closer = self.take(kind)
                if kind == "|":
                    cur = []
                    branches.append(cur)
                else:
                    frames.pop()
                    parent.append(ast.Split(name[1], _tspan(name), branches,
                                            _outer(opener, closer)))
                    cur = parent
            elif kind == "$END" and not frames:
                return top
            else:
                raise _Bail()

    def paren(self) -> ast.Paren:
        first = self.take("(")
        name = self.take("NAME")
        fields: list[Union[ast.Words, ast.Func]] = []
        while self.peek() == ",":
            self.i += 1
            if self.peek() == "<":
                fields.append(self.func())
            else:
                fields.append(self.words())
        last = self.take(")")
        return ast.Paren(name[1], _tspan(name), fields, _outer(first, last))

    def words(self) -> ast.Words:
        atoms = []
        toks = self.toks
        while toks[self.i][0] in _WORD_KINDS:
            tok = toks[self.i]
            atoms.append(ast.Atom(_WORD_KINDS[tok[0]], tok[1], _tspan(tok)))
            self.i += 1
        if not atoms:
            raise _Bail()
        return ast.Words(atoms)

    def func(self) -> ast.Func:
        first = self.take("<")
        name = self.take("NAME")
        params = []
        while self.peek() == ",":
            self.i += 1
            params.append(self.take("NUMBER"))
        last = self.take(">")
        return ast.Func(name[1], _tspan(name), [float(p[1]) for p in params],
                        [_tspan(p) for p in params], _outer(first, last))

    def merge(self) -> ast.Merge:
        first = self.take("{")
        name = self.take("NAME")
        self.take(",")
        target = self.take("NAME")
        self.take(",")
        op = self.take("NAME")
        last = self.take("}")
        return ast.Merge(name[1], _tspan(name), target[1], _tspan(target), op[1], _tspan(op),
                         _outer(first, last))

    def tap(self, opener: _Tok, name: _Tok) -> ast.Tap:
        self.take("[")
        alias = self.take("NAME")
        if self.peek() == ",":
            self.i += 1
        self.take("]")
        last = self.take("]")
        return ast.Tap(name[1], _tspan(name), alias[1], _tspan(alias), _outer(opener, last))

    def energy(self, opener: _Tok, name: _Tok) -> ast.Energy:
        self.take("NAME")  # `energy`
        options = []
        while True:
            self.take(",")
            if self.peek() == "(":
                break
            options.append(self.words())
        members = [self.paren()]
        while self.peek() == "(":
            members.append(self.paren())
        last = self.take("]")
        return ast.Energy(name[1], _tspan(name), options, members, _outer(opener, last))


def _parse_fast(text: str, source: Source) -> Optional[ast.Model]:
    try:
        return _Fast(text, source).model()
    except _Bail:
        return None


def _parse_lark(text: str, source: Source) -> ast.Model:
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise MDLError([_syntax_diagnostic(err, source)]) from None
    model: ast.Model = _Build(source).transform(tree)
    return model


def parse(text: str, filename: str = "<string>") -> ast.Model:
    """Parse MDL text into an `ast.Model`; raises `MDLError` on a syntax error."""
    source = Source(text, filename)
    early = (_encoding_error(source) or _first_token_diagnostic(source)
             or _bracket_errors(source))
    if early:
        raise MDLError([early])
    return _parse_fast(text, source) or _parse_lark(text, source)
