"""Compiler diagnostics: source spans, errors and warnings, and the one formatter.

Every message the compiler emits goes through `Diagnostic.render`, which prints
`file:line:col: error: message`, the source line, a caret under the offending
token and an optional `help:` line. This module knows nothing about the grammar.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from .errors import NeuromorphError


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range on one line of the source (end_col exclusive)."""

    line: int
    col: int
    end_col: int

    def to_json(self) -> dict[str, int]:
        return {"line": self.line, "col": self.col, "end_col": self.end_col}


@dataclass
class Source:
    """The text being compiled and the name it is reported under."""

    text: str
    filename: str = "<string>"

    @functools.cached_property
    def lines(self) -> list[str]:
        """The source's lines, split where Lark counts lines (at "\n" only), without a final
        empty line or a line's trailing "\r". Computed once: diagnostics index it."""
        parts = self.text.split("\n")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()
        return [p[:-1] if p.endswith("\r") else p for p in parts]

    def line(self, n: int) -> str:
        lines = self.lines
        return lines[n - 1] if 1 <= n <= len(lines) else ""

    def text_at(self, span: Span) -> str:
        """The source text under a one-line span (a literal as it was written)."""
        return self.line(span.line)[span.col - 1: span.end_col - 1]

    def end_span(self) -> Span:
        lines = self.lines
        return Span(len(lines), len(lines[-1]) + 1, len(lines[-1]) + 2)


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
            text, col, width = _window(self.source.line(self.span.line), self.span)
            gutter = str(self.span.line)
            pad = " " * len(gutter)
            # Keep tabs in the caret line so the caret lands under the token.
            lead = _NOT_TAB.sub(" ", text[: col - 1])
            out.append(f" {gutter} | {text}")
            out.append(f" {pad} | {lead}{'^' * width}")
        if self.hint:
            out.append(f"help: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


# Characters the one-line snippet cannot show as they are: controls other than the tab (a
# "\r" would return the cursor, a form feed or NUL garble a terminal), other line breaks,
# lone surrogates (not UTF-8). Each is shown as one U+FFFD, so the caret stays in its column.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


_NOT_TAB = re.compile("[^\t]")
_SNIPPET = 200   # a longer source line is shown as a window around the span:
_CONTEXT = 60    # this many characters on each side, and a caret at most this wide


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub("\ufffd", text)


def _window(line: str, span: Span) -> tuple[str, int, int]:
    """(the snippet, the span's column in it, the caret's width). A long line (a model on one
    line, a huge literal) is cut to a window around the span, marked with `…`, so that each
    diagnostic prints a bounded snippet however long the line and however many errors it has."""
    width = max(1, span.end_col - span.col)
    if len(line) <= _SNIPPET:
        return _printable(line), span.col, width
    width = min(width, _CONTEXT)
    start = max(0, span.col - 1 - _CONTEXT)
    end = min(len(line), span.col - 1 + width + _CONTEXT)
    head = "…" if start > 0 else ""
    tail = "…" if end < len(line) else ""
    return head + _printable(line[start:end]) + tail, span.col - start + len(head), width


class MDLError(NeuromorphError, ValueError):
    """One or more compile errors. `diagnostics` lists them in source order.

    A `NeuromorphError` (the root of every Neuromorph error) and a `ValueError`."""

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


class NameIndex:
    """Candidate names for `did_you_mean`, for tables as large as a model (its node names).

    A small table is searched whole, as `did_you_mean` does. A large one is indexed once by
    each name's one-character deletions, so a lookup costs time in the word's length, not the
    table's: it finds the names one edit away (insert, delete, substitute, swap), then ranks
    them as difflib does."""

    SMALL = 200
    _LONGEST = 40  # longer names are only found when spelled exactly

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self._index: Optional[dict[str, list[str]]] = None

    @staticmethod
    def _keys(word: str) -> set[str]:
        keys = {word}
        if len(word) <= NameIndex._LONGEST:
            keys.update(word[:i] + word[i + 1:] for i in range(len(word)))
        return keys

    def close(self, word: str) -> Optional[str]:
        if len(self.names) <= self.SMALL:
            return _closest(word, tuple(self.names))
        if self._index is None:
            self._index = {}
            for name in self.names:
                for key in self._keys(name):
                    self._index.setdefault(key, []).append(name)
        found: dict[str, None] = {}
        for key in self._keys(word):
            for name in self._index.get(key, ()):
                found[name] = None
        close = difflib.get_close_matches(word, list(found), n=1, cutoff=0.6)
        return close[0] if close else None


@functools.lru_cache(maxsize=1024)
def _closest(word: str, names: tuple[str, ...]) -> Optional[str]:
    """difflib's closest match (cached: a model repeats its misspellings)."""
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, candidates: Union[Iterable[str], NameIndex]) -> Optional[str]:
    """A `help:` text naming the closest candidate, or None when nothing is close. Pass a
    `NameIndex` for a table that grows with the model (one per table, built once)."""
    index = candidates if isinstance(candidates, NameIndex) else NameIndex(candidates)
    close = index.close(word)
    return f"did you mean `{close}`?" if close else None
