"""`neuromorph.Model`: an object over the handle API (compile/build/train/... by handle).

    with nm.Model("models/lstm-model.mdl", batch_size=5, learning_rate=0.5) as m:
        m.build()
        m.fit(x, y, epochs=3)
        print(m.summary())
        m.save("lstm.nm")
    m2 = nm.Model.load("lstm.nm")

A causal token model (MDL.md section 7) also samples: `m.tokenizer = CharTokenizer(text)`,
then `m.generate("prompt", 100)` returns the continuation as text (ids in, ids out without a
tokenizer); the tokenizer is saved in the model file.

The model is released when the `with` block ends, when `release()` is called, or when the
object is garbage-collected. Handles are never reused, so a stale handle can never reach
another model.
"""
from __future__ import annotations

import json
import weakref
from typing import Optional

import numpy as np

from . import _core
from .text import attach_tokenizer, tokenizer_of
from .text import forget as _forget_tokenizer


def _nm():
    import neuromorph
    return neuromorph


class Model:
    def __init__(self, mdl, batch_size: int, learning_rate: float, *, dtype: str = "float32",
                 **optimizer):
        self._handle = _nm().compile(mdl, batch_size, learning_rate, dtype=dtype, **optimizer)
        self._finalizer = weakref.finalize(self, _release_quietly, self._handle)

    @classmethod
    def _from_handle(cls, handle: int) -> "Model":
        obj = cls.__new__(cls)
        obj._handle = handle
        obj._finalizer = weakref.finalize(obj, _release_quietly, handle)
        return obj

    # ------------------------------------------------------------------ lifecycle
    @property
    def handle(self) -> int:
        return self._handle

    def build(self, threads: Optional[int] = None, device: str = "cpu") -> "Model":
        _nm().build(self._handle, threads=threads, device=device)
        return self

    def to(self, device: str) -> "Model":
        """Move the built model to "cpu" or "cuda" (parameters and optimizer state kept)."""
        _nm().to_device(self._handle, device)
        return self

    def release(self) -> None:
        if self._finalizer.alive:
            self._finalizer()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ training
    def fit(self, inputs, expected, epochs: int = 1, shuffle: bool = False,
            verbosity: int = 1) -> float:
        return _nm().train(self._handle, inputs, expected, verbosity, epochs=epochs,
                           shuffle=shuffle)

    def predict(self, inputs) -> np.ndarray:
        return _nm().predict(self._handle, inputs)

    def evaluate(self, inputs, expected) -> float:
        return _nm().evaluate(self._handle, inputs, expected)

    def gradients(self, inputs, expected):
        return _nm().gradients(self._handle, inputs, expected)

    def reset_state(self) -> None:
        _nm().reset_state(self._handle)

    @property
    def history(self) -> np.ndarray:
        return _nm().history(self._handle)

    @property
    def loss_parts(self) -> dict:
        """Per-batch training loss split into its parts (output loss, auxiliary losses)."""
        return _nm().history(self._handle, parts=True)

    def energy(self, inputs, block: Optional[str] = None) -> np.ndarray:
        """An energy block's energy along its descent, per sample (see neuromorph.energy)."""
        return _nm().energy(self._handle, inputs, block)

    @property
    def stats(self) -> dict:
        """Per-forward statistics of the last pass (neuron activation counts)."""
        return _nm().stats(self._handle)

    # ------------------------------------------------------------------ text
    @property
    def tokenizer(self):
        """The model's CharTokenizer (set here, or restored by load), or None."""
        return tokenizer_of(self._handle)

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        attach_tokenizer(self._handle, tok)

    def generate(self, prompt, n: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 seed=None):
        """Continue `prompt` by n sampled tokens (see neuromorph.generate.generate).

        A str prompt needs the model's tokenizer and returns the n new characters as a str
        (drawn among the tokenizer's characters only); a sequence of ids returns an int64
        array of n new ids.
        """
        from .generate import generate
        if isinstance(prompt, str):
            tok = self.tokenizer
            if tok is None:
                from .errors import StateError
                raise StateError("a text prompt needs the model's tokenizer, and this model has "
                                 "none: set Model.tokenizer = CharTokenizer(text), or pass ids")
            ids = generate(self._handle, tok.encode(prompt), n, temperature, top_k, seed,
                           vocab=min(tok.vocab_size, _model_vocab(self._handle)))
            return tok.decode(ids)
        return generate(self._handle, prompt, n, temperature, top_k, seed)

    # ------------------------------------------------------------------ parameters, files
    @property
    def params(self) -> dict:
        return _nm().get_params(self._handle)

    def load_params(self, params: dict) -> None:
        _nm().set_params(self._handle, params)

    def save(self, path) -> None:
        _nm().save(self._handle, path)

    @classmethod
    def load(cls, path, device: str = "cpu") -> "Model":
        return cls._from_handle(_nm().load(path, device=device))

    # ------------------------------------------------------------------ description
    @property
    def info(self) -> dict:
        return _nm().info(self._handle)

    @property
    def ir(self) -> dict:
        return json.loads(_core.ir_json(self._handle))

    def summary(self) -> str:
        """A table of the nodes: kind, width, function, inputs (delayed ones marked), parameters."""
        ir, info = self.ir, self.info
        shapes = {name: tuple(shape) for name, shape in info["params"]}
        rows = [("node", "kind", "width", "function", "inputs", "params")]
        total = 0
        for n in ir["nodes"]:
            count = sum(int(np.prod(s)) for k, s in shapes.items() if k.split(".")[0] == n["name"])
            total += count
            fn = n.get("activation", {}).get("name", n.get("op", ""))
            if n["kind"] == "tap":
                fn = f"[{n['alias']}]"
            if "loss" in n:
                fn += f" / {n['loss']['name']}"
            ins = ", ".join(i["node"] + (" [t-1]" if i["delayed"] else "") for i in n["inputs"])
            rows.append((n["name"], n["kind"], str(n["width"]), fn, ins, str(count or "")))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        delayed = sum(e["delayed"] for e in ir["edges"])
        lines.append("-" * len(lines[0]))
        lines.append(f"{total} parameters; {delayed} delayed edge{'s' if delayed != 1 else ''}"
                     f" ({'recurrent' if ir['recurrent'] else 'not recurrent'}); batch "
                     f"{info['batch_size']}, {info['dtype']}, "
                     f"{'built' if info['built'] else 'not built'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self._finalizer.alive:
            return "<neuromorph.Model (released)>"
        info = self.info
        return (f"<neuromorph.Model handle={self._handle} in={info['input_width']} "
                f"out={info['output_width']} batch={info['batch_size']} "
                f"{'built' if info['built'] else 'not built'}>")


def _model_vocab(handle: int) -> int:
    from .generate import sequence_spec
    return sequence_spec(json.loads(_core.ir_json(handle))).vocab


def _release_quietly(handle: int) -> None:
    _forget_tokenizer(handle)
    try:
        _core.release(handle)
    except Exception:  # already released through the handle API: nothing to do
        pass
