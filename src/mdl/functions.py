"""The function tables of MDL.md section 3: names, slots, parameters and defaults.

This is data only; the checks that use it live in `passes.py` and the math in
the C++ engine. The IR writes every function with its parameters filled in, so
the runtime never needs to know a default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class FnSpec:
    name: str
    params: tuple[str, ...] = ()        # parameter names, in order
    defaults: tuple[float, ...] = ()    # defaults for the trailing parameters
    ignores_param: bool = False         # accepts a parameter and ignores it silently

    @property
    def required(self) -> int:
        return len(self.params) - len(self.defaults)

    def fill(self, given: list[float]) -> list[float]:
        """Given parameters followed by the defaults of the ones left out."""
        n_default_used = len(self.params) - len(given)
        return list(given) + list(self.defaults[len(self.defaults) - n_default_used:])


def _table(*specs: FnSpec) -> dict[str, FnSpec]:
    return {s.name: s for s in specs}


WEIGHT_INITS = _table(
    FnSpec("xavier"), FnSpec("he"), FnSpec("lecun"),
    FnSpec("uniform", ("a", "b")),
    FnSpec("normal", ("mean", "std")),
    FnSpec("orthogonal", ("gain",), (1.0,)),
)

BIAS_INITS = _table(
    FnSpec("zero"),
    FnSpec("const_flat", ("value",)),
    FnSpec("const_uneven", ("mean", "std")),
)

ACTIVATIONS = _table(
    FnSpec("sigmoid"), FnSpec("tanh"), FnSpec("relu"), FnSpec("linear"),
    FnSpec("binary_step"),
    FnSpec("relu_leaky", ("slope",), (0.01,)),
    FnSpec("relu_parametric", ("alpha",), (0.25,)),
    FnSpec("elu", ("alpha",), (1.0,)),
    FnSpec("selu"), FnSpec("softmax"),
    FnSpec("swish", ("beta",), (1.0,)),
    FnSpec("gelu"),
)

LOSSES = _table(
    FnSpec("mse"), FnSpec("mae"), FnSpec("mape"),
    FnSpec("huber", ("delta",), (1.0,)),
    FnSpec("huber_modified", ignores_param=True),
    FnSpec("cross_entropy"), FnSpec("hinge"),
)

MERGE_OPS = ("additive", "multiplicative", "average")

SLOT_TABLES = {
    "weight initialiser": WEIGHT_INITS,
    "bias initialiser": BIAS_INITS,
    "activation": ACTIVATIONS,
    "loss": LOSSES,
}


def slot_of(name: str) -> Optional[str]:
    """Which slot a known function name belongs to, or None."""
    for slot, table in SLOT_TABLES.items():
        if name in table:
            return slot
    return None
