"""Compiler diagnostics: source spans, errors and warnings, and the one formatter.

Every message the compiler emits goes through `Diagnostic.render`, which prints
`file:line:col: error: message`, the source line, a caret under the offending
token and an optional `help:` line. This module knows nothing about the grammar.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range on one line of the source (end_col exclusive)."""

    line: int
    col: int
    end_col: int

    def to_json(self) -> dict:
        return {"line": self.line, "col": self.col, "end_col": self.end_col}


@dataclass
class Source:
    """The text being compiled and the name it is reported under."""

    text: str
    filename: str = "<string>"

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 1 <= n <= len(lines) else ""

    def end_span(self) -> Span:
        lines = self.text.splitlines() or [""]
        n = len(lines)
        return Span(n, len(lines[-1]) + 1, len(lines[-1]) + 2)


@dataclass
class Diagnostic:
    severity: str  # "error" | "warning"
    message: str
    span: Optional[Span]
    hint: Optional[str] = None
    source: Optional[Source] = field(default=None, repr=False)

    @property
    def filename(self) -> str:
        return self.source.filename if self.source else "<string>"

    @property
    def line(self) -> int:
        return self.span.line if self.span else 0

    @property
    def col(self) -> int:
        return self.span.col if self.span else 0

    def render(self) -> str:
        head = f"{self.filename}:{self.line}:{self.col}: {self.severity}: {self.message}"
        out = [head]
        if self.span and self.source:
            text = self.source.line(self.span.line)
            gutter = str(self.span.line)
            pad = " " * len(gutter)
            # Keep tabs in the caret line so the caret lands under the token.
            lead = "".join(c if c == "\t" else " " for c in text[: self.span.col - 1])
            width = max(1, self.span.end_col - self.span.col)
            out.append(f" {gutter} | {text}")
            out.append(f" {pad} | {lead}{'^' * width}")
        if self.hint:
            out.append(f"help: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class MDLError(Exception):
    """One or more compile errors. `diagnostics` lists them in source order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.line, d.col))
        first = self.diagnostics[0]
        self.filename, self.line, self.col = first.filename, first.line, first.col
        self.hint = first.hint
        super().__init__("\n".join(d.render() for d in self.diagnostics))


class MDLWarning(UserWarning):
    """A compile warning (the model compiles; something in it is suspicious)."""


class Reporter:
    """Collects diagnostics of one compilation so independent errors are all reported."""

    def __init__(self, source: Source):
        self.source = source
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, message: str, span: Optional[Span], hint: Optional[str] = None) -> None:
        self.errors.append(Diagnostic("error", message, span, hint, self.source))

    def warn(self, message: str, span: Optional[Span], hint: Optional[str] = None) -> None:
        self.warnings.append(Diagnostic("warning", message, span, hint, self.source))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise MDLError(self.errors)


def did_you_mean(word: str, candidates: Iterable[str]) -> Optional[str]:
    """A `help:` text naming the closest candidate, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
