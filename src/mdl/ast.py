"""Typed syntax tree of an MDL model, as the parser builds it.

Nothing here is validated beyond what the grammar guarantees: a `Paren` may
still have a fractional width or a misplaced loss. The passes decide that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from .diagnostics import Source, Span


@dataclass
class Atom:
    """One word of a field: a number, a shape (`8x8`) or a name."""

    kind: str  # "number" | "shape" | "name"
    text: str
    span: Span


@dataclass
class Words:
    """A field made of atoms: a width `4`, a kind `attn2d`, an option `dim 32`."""

    atoms: list[Atom]

    @property
    def span(self) -> Span:
        a, b = self.atoms[0].span, self.atoms[-1].span
        return Span(a.line, a.col, b.end_col if b.line == a.line else a.end_col)


@dataclass
class Func:
    """`<name, p, ...>` in an activation or loss slot."""

    name: str
    name_span: Span
    params: list[float]
    param_spans: list[Span]
    span: Span


@dataclass
class Init:
    """A header initialiser: `uniform -0.1 0.1`."""

    name: str
    name_span: Span
    params: list[float]
    param_spans: list[Span]


@dataclass
class Header:
    weight: Init
    bias: Init
    span: Span


Field = Union[Words, Func]


@dataclass
class Paren:
    """`(name, field, ...)`: input, layer, output or an extension node."""

    name: str
    name_span: Span
    fields: list[Field]
    span: Span

    @property
    def funcs(self) -> list[Func]:
        return [f for f in self.fields if isinstance(f, Func)]

    @property
    def words(self) -> list[Words]:
        return [f for f in self.fields if isinstance(f, Words)]


@dataclass
class Merge:
    """`{name, target, op}`."""

    name: str
    name_span: Span
    target: str
    target_span: Span
    op: str
    op_span: Span
    span: Span


@dataclass
class Split:
    """`[name, chain | chain ...]`."""

    name: str
    name_span: Span
    branches: list[list["Node"]]
    span: Span


@dataclass
class Tap:
    """`[name, [alias,]]`: names the chain's value at this point."""

    name: str
    name_span: Span
    alias: str
    alias_span: Span
    span: Span


@dataclass
class Energy:
    """`[name, energy, key value, ..., member ...]` (members are Paren nodes)."""

    name: str
    name_span: Span
    options: list[Words]
    members: list[Paren]
    span: Span


Node = Union[Paren, Merge, Split, Tap, Energy]


@dataclass
class Model:
    header: Header
    chain: list[Node]
    source: Source = field(repr=False, default_factory=lambda: Source(""))
    end_span: Optional[Span] = None
