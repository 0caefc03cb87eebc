"""`neuromorph.Model`: an object over the handle API (compile/build/train/... by handle).

    with nm.Model("models/lstm-model.mdl", batch_size=5, learning_rate=0.5) as m:
        m.build()
        m.fit(x, y, epochs=3)
        m.summary()                 # prints the node table (and returns its text)
        m.save("lstm.nm")
    m2 = nm.Model.load("lstm.nm")

A causal token model (MDL.md section 7) also samples: `m.tokenizer = CharTokenizer(text)`,
then `m.generate("prompt", 100)` returns the continuation as text (ids in, ids out without a
tokenizer); the tokenizer is saved in the model file.

In Jupyter a `Model` shows itself as an HTML table of its nodes and, where Graphviz's `dot`
is installed, the graph drawn by `mdlc dot` (`_repr_html_`).

The model is released when the `with` block ends, when `release()` is called, or when the
object is garbage-collected. Handles are never reused, so a stale handle can never reach
another model. This module holds no engine logic: every method is one call of the handle API.
"""
from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
import weakref
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core, api
from ._checks import Data, PathLike
from .errors import NeuromorphError
from .text import CharTokenizer, attach_tokenizer, tokenizer_of
from .training import History
from .text import forget as _forget_tokenizer

_DOT_TIMEOUT_S = 10.0  # a graph the size of ours renders in well under a second


class SummaryText(str):
    """The text `Model.summary()` returns: a plain `str`, except that it does not echo itself
    again at an interactive prompt (it was printed already), so Jupyter, IPython and the
    Python REPL show the table once, with real line breaks. Elsewhere (pytest messages,
    logging) its repr is the usual one."""

    def __repr__(self) -> str:
        if hasattr(sys, "ps1"):  # the plain interactive interpreter echoes results by repr
            return "<Model.summary(): printed above>"
        return str.__repr__(self)

    def _ipython_display_(self) -> None:  # the table is already in the cell's output
        pass


class Model:
    """A compiled MDL model owned by this object (released with it).

    Parameters
    ----------
    mdl : str or os.PathLike
        MDL text, or the path of an ``.mdl`` file.
    batch_size : int
        Samples per training step (and the default chunk for predict/evaluate).
    learning_rate : float
        The optimizer's (peak) learning rate, > 0.
    dtype : {"float32", "float64"}
        Precision of parameters and arithmetic; float64 is for reference runs and gradient checks.
    **optimizer
        Optimizer and schedule keywords, as `neuromorph.compile` (``optimizer="adam"``,
        ``betas``, ``weight_decay``, ``grad_clip``, ``schedule``, ...).

    Raises
    ------
    mdl.MDLError
        The MDL text does not compile (the message points at the line and column).
    neuromorph.DataError
        A bad setting (batch size, learning rate, dtype, optimizer keyword) or a missing file.

    Call `build()` before training or predicting. Use as a context manager, or call
    `release()`, to free the engine's memory at a known point.
    """

    def __init__(self, mdl: PathLike, batch_size: int, learning_rate: float, *,
                 dtype: str = "float32", **optimizer: Any) -> None:
        self._handle = api.compile(mdl, batch_size, learning_rate, dtype=dtype, **optimizer)
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
        """The model's integer handle in the handle API (`neuromorph.train(m.handle, ...)`)."""
        return self._handle

    def build(self, threads: Optional[int] = None, device: str = "cpu") -> "Model":
        """Allocate and initialise parameters and buffers (reproducibly after `neuromorph.seed`).

        Parameters
        ----------
        threads : int, optional
            The engine's worker threads (process-wide): large matrix products cut in pieces,
            its loops, chunks of samples in attn2d and energy blocks; default 1.
        device : {"cpu", "cuda"}
            Where the model runs.

        Returns
        -------
        Model
            ``self``, so ``m = nm.Model(...).build()`` works.

        Raises
        ------
        neuromorph.DeviceError
            ``device="cuda"`` without a usable GPU or CUDA backend, or a model it cannot run.
        """
        api.build(self._handle, threads=threads, device=device)
        return self

    def to(self, device: str) -> "Model":
        """Move the built model to ``"cpu"`` or ``"cuda"``, keeping parameters and optimizer state.

        Returns ``self``. Raises `neuromorph.DeviceError` when the device cannot take it.
        """
        api.to_device(self._handle, device)
        return self

    def release(self) -> None:
        """Free the engine's memory for this model. Idempotent; later calls on it raise
        `neuromorph.HandleError`."""
        if self._finalizer.alive:
            self._finalizer()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ training
    def fit(self, inputs: Data, expected: Data, epochs: int = 1, shuffle: bool = False,
            verbosity: int = 1, **options: Any) -> History:
        """Train: one optimizer step per batch, `epochs` passes over the data.

        Parameters
        ----------
        inputs, expected : array_like
            ``(N, in)`` and ``(N, out)`` samples (any N >= 1), or ``(n_batches, B, width)``
            batches; class ids instead of one-hot targets for a cells output with cross-entropy.
        epochs : int
            Passes over the data (>= 1).
        shuffle : bool
            Reshuffle samples into new batches each epoch (non-recurrent models only).
        verbosity : int
            0 silent, 1 a progress bar (a widget in Jupyter), 2 one line per batch.
        **options
            Keywords of `neuromorph.fit`: ``validation=(x, y)``, ``validation_split``,
            ``metrics=["accuracy", ...]``, ``early_stopping=patience``, ``checkpoint=path``,
            ``check_finite``, ``distributed=True`` (data-parallel under ``mpiexec -n K``,
            docs/distributed.md).

        Returns
        -------
        History
            Per-epoch loss, validation loss and metrics, and every batch loss (as
            `neuromorph.fit`; also kept with the model and saved in its file).

        Raises
        ------
        neuromorph.StateError
            The model is not built.
        neuromorph.ShapeError, neuromorph.DataError
            Arrays of the wrong shape, or holding NaN/inf or non-numbers; bad options.
        neuromorph.DivergedError
            A non-finite loss or gradient (the model is left as before that batch).
        KeyboardInterrupt
            Ctrl-C; the model keeps every finished step.
        """
        return api.fit(self._handle, inputs, expected, epochs=epochs, shuffle=shuffle,
                         verbosity=verbosity, **options)

    def predict(self, inputs: Data) -> npt.NDArray[Any]:
        """The model's outputs for `inputs`, without training.

        ``(N, in)`` inputs (any N >= 1) give ``(N, out)``; ``(n_batches, B, in)`` give
        ``(n_batches, B, out)``. Recurrent models continue their stream (`reset_state` first to
        start from zeros). Raises `neuromorph.StateError` if not built, `neuromorph.ShapeError`
        or `neuromorph.DataError` for bad inputs.
        """
        return api.predict(self._handle, inputs)

    def evaluate(self, inputs: Data, expected: Data) -> float:
        """The mean batch loss on (inputs, expected), parameters unchanged (recurrent state
        advances). Same shapes and errors as `fit`."""
        return api.evaluate(self._handle, inputs, expected)

    def gradients(self, inputs: Data,
                  expected: Data) -> tuple[float, dict[str, npt.NDArray[Any]]]:
        """``(loss, {parameter name: gradient array})`` for one batch, without an update.

        Raises `neuromorph.ShapeError` when the data is not exactly one batch.
        """
        return api.gradients(self._handle, inputs, expected)

    def reset_state(self) -> None:
        """Zero the recurrent state (the values delayed edges read at the next sample)."""
        api.reset_state(self._handle)

    @property
    def history(self) -> npt.NDArray[np.float64]:
        """Every training batch loss since `build()` or `load()`, in order (a 1-D array)."""
        return api.history(self._handle)

    @property
    def loss_parts(self) -> dict[str, npt.NDArray[np.float64]]:
        """Per-batch training loss split into its parts: ``{"loss", "output", <aux losses>}``
        of 1-D arrays, with ``loss = output + auxiliaries``."""
        return api.history(self._handle, parts=True)

    def energy(self, inputs: npt.ArrayLike, block: Optional[str] = None) -> np.ndarray:
        """An energy block's energy along its descent, per sample: an ``(N, steps + 1)`` array.

        `block` names the block (default: the model's first). Raises `neuromorph.ShapeError`
        when the model has no such block. See `neuromorph.energy`.
        """
        return api.energy(self._handle, inputs, block)

    @property
    def stats(self) -> dict[str, Any]:
        """Statistics of the last forward pass: ``"<node>.count"`` (neurons visited per sample)
        for each neuron node."""
        return api.stats(self._handle)

    # ------------------------------------------------------------------ text
    @property
    def tokenizer(self) -> Optional[CharTokenizer]:
        """The model's `CharTokenizer` (set here, or restored by `load`), or None.

        Setting it attaches the tokenizer, which `save` then stores in the model file; set
        None to drop it. A value that is not a CharTokenizer raises `neuromorph.DataError`.
        """
        return tokenizer_of(self._handle)

    @tokenizer.setter
    def tokenizer(self, tok: Optional[CharTokenizer]) -> None:
        attach_tokenizer(self._handle, tok)

    def generate(self, prompt: Union[str, npt.ArrayLike], n: int, temperature: float = 1.0,
                 top_k: Optional[int] = None,
                 seed: Union[int, np.random.Generator, None] = None
                 ) -> Union[str, npt.NDArray[np.int64]]:
        """Continue `prompt` by `n` sampled tokens (see `neuromorph.generate.generate`).

        Parameters
        ----------
        prompt : str or sequence of int
            A str needs the model's tokenizer; ids work without one.
        n : int
            Tokens to generate.
        temperature : float
            0 takes the most probable token; T > 0 samples from p^(1/T).
        top_k : int, optional
            Sample among the k most probable tokens only.
        seed : int or numpy.random.Generator, optional
            For a reproducible draw (default: neuromorph's RNG, set by `neuromorph.seed`).

        Returns
        -------
        str or numpy.ndarray
            The n new characters for a str prompt (drawn among the tokenizer's characters), or
            an int64 array of n new ids.

        Raises
        ------
        neuromorph.StateError
            A str prompt on a model without a tokenizer, or a model not built.
        neuromorph.ShapeError
            The model is not a causal token model.
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
    def params(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of every parameter: ``{"<node>.weight": (out, in), "<node>.bias": (out,), ...}``.

        Raises `neuromorph.StateError` if the model is not built.
        """
        return api.get_params(self._handle)

    def load_params(self, params: dict[str, npt.ArrayLike]) -> None:
        """Set some or all parameters from ``{name: array}``; everything is checked first.

        Raises `neuromorph.ShapeError` (unknown name, wrong shape) or `neuromorph.DataError`
        (non-numbers, NaN/inf), leaving the model unchanged.
        """
        api.set_params(self._handle, params)

    def save(self, path: PathLike) -> None:
        """Write the model (parameters, recurrent and optimizer state, IR, tokenizer) to one
        safetensors file at `path`, atomically. `Model.load` reads it back."""
        api.save(self._handle, path)

    @classmethod
    def load(cls, path: PathLike, device: str = "cpu") -> "Model":
        """A built `Model` from a file written by `save`, on `device` ("cpu" or "cuda").

        Raises ``FileNotFoundError`` for a missing file and `neuromorph.ModelFileError` for a
        corrupt or foreign one.
        """
        return cls._from_handle(api.load(path, device=device))

    # ------------------------------------------------------------------ description
    @property
    def info(self) -> dict[str, Any]:
        """Batch size, input/output widths, dtype, device, learning rate, steps taken, whether
        built and recurrent, and the parameter shapes (``"params"``: [(name, shape), ...])."""
        return api.info(self._handle)

    @property
    def ir(self) -> dict[str, Any]:
        """The model's IR document (docs/ir.md) as a dict: nodes, edges, output, ..."""
        doc: dict[str, Any] = json.loads(_core.ir_json(self._handle))
        return doc

    def summary(self, *, quiet: bool = False) -> str:
        """Print a table of the nodes and return its text.

        One row per node: name, kind, width, function (activation, merge op or tap alias, then
        ``/ loss``), inputs (delayed ones marked ``[t-1]``) and parameter count; then the totals.

        Parameters
        ----------
        quiet : bool
            Only return the text, do not print it.

        Returns
        -------
        str
            The table (a `str` that does not echo again at an interactive prompt).
        """
        ir, info = self.ir, self.info
        rows = [("node", "kind", "width", "function", "inputs", "params")]
        total = 0
        for r in _node_rows(ir, info):
            total += r["params"]
            ins = ", ".join(i["node"] + (" [t-1]" if i["delayed"] else "") for i in r["inputs"])
            rows.append((r["name"], r["kind"], str(r["width"]), r["function"], ins,
                         str(r["params"] or "")))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(_totals(ir, info, total))
        text = SummaryText("\n".join(lines))
        if not quiet:
            print(text)
        return text

    def _repr_html_(self) -> str:
        """Jupyter's view: the node table, totals and (with Graphviz's `dot`) the graph as SVG."""
        try:
            ir, info = self.ir, self.info
        except NeuromorphError:
            return f"<p><code>{html.escape(repr(self))}</code></p>"
        rows = _node_rows(ir, info)
        total = sum(r["params"] for r in rows)
        e = html.escape
        head = ("<tr><th>node</th><th>kind</th><th>width</th><th>cells / shape</th>"
                "<th>activation / loss</th><th>inputs</th><th>parameters</th></tr>")
        body = []
        for r in rows:
            ins = ", ".join(e(i["node"]) + (" <i>[t-1]</i>" if i["delayed"] else "")
                            for i in r["inputs"])
            body.append(
                f"<tr><td><b>{e(r['name'])}</b></td><td>{e(r['kind'])}</td>"
                f"<td style='text-align:right'>{r['width']}</td><td>{e(r['shape'])}</td>"
                f"<td>{e(r['function'])}</td><td>{ins}</td>"
                f"<td style='text-align:right'>{r['params'] or ''}</td></tr>")
        parts = ["<div class='neuromorph-model'>",
                 f"<p><b>neuromorph.Model</b> &mdash; {len(rows)} nodes</p>",
                 "<table class='neuromorph-summary'>", f"<thead>{head}</thead>",
                 "<tbody>", *body, "</tbody>",
                 f"<tfoot><tr><td colspan='7'>{e(_totals(ir, info, total))}</td></tr></tfoot>",
                 "</table>"]
        svg = _graph_svg(ir)
        if svg:
            parts.append(f"<details open><summary>graph</summary>{svg}</details>")
        parts.append("</div>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        if not self._finalizer.alive:
            return "<neuromorph.Model (released)>"
        try:
            info = self.info
        except NeuromorphError:  # released through the handle API
            return f"<neuromorph.Model handle={self._handle} (released)>"
        n_params = sum(int(np.prod(s)) for _, s in info["params"])
        state = f"built on {info.get('device', 'cpu')}" if info["built"] else "not built"
        return (f"<neuromorph.Model handle={self._handle} in={info['input_width']} "
                f"out={info['output_width']} params={n_params} batch={info['batch_size']} "
                f"{info['dtype']} {state}>")


def _node_rows(ir: dict[str, Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per IR node: name, kind, width, shape (cells or struct grid), function,
    inputs and parameter count (the parameters named "<node>.*")."""
    counts: dict[str, int] = {}
    for name, shape in info["params"]:
        node = name.split(".")[0]
        counts[node] = counts.get(node, 0) + int(np.prod(shape))
    rows = []
    for n in ir["nodes"]:
        fn = n.get("activation", {}).get("name", n.get("op", ""))
        if n["kind"] == "tap":
            fn = f"[{n['alias']}]"
        if "loss" in n:
            fn += f" / {n['loss']['name']}"
        shape = ""
        if n.get("cells"):
            shape = f"{n['cells']} cells × {n['width'] // n['cells']}"
        elif "struct" in n:
            st = n["struct"]
            shape = "×".join(map(str, st["shape"])) + f" × dim {st['options']['dim']}"
        elif "energy" in n:
            shape = f"{len(n['energy']['layers'])} layers, {n['energy']['options']['steps']} steps"
        rows.append({"name": n["name"], "kind": n["kind"], "width": n["width"], "shape": shape,
                     "function": fn, "inputs": n["inputs"], "params": counts.get(n["name"], 0)})
    return rows


def _totals(ir: dict[str, Any], info: dict[str, Any], total: int) -> str:
    delayed = sum(e["delayed"] for e in ir["edges"])
    return (f"{total} parameters; {delayed} delayed edge{'s' if delayed != 1 else ''}"
            f" ({'recurrent' if ir['recurrent'] else 'not recurrent'}); batch "
            f"{info['batch_size']}, {info['dtype']}, {'built' if info['built'] else 'not built'}")


def _graph_svg(ir: dict[str, Any]) -> str:
    """The graph as inline SVG from `mdlc dot` text through Graphviz, or "" when `dot` is
    missing, slow or fails (the HTML view then shows the table alone)."""
    exe = shutil.which("dot")
    if exe is None:
        return ""
    try:
        import mdl
        from mdl.dot import to_dot
        text = to_dot(mdl.load_ir(ir))
        done = subprocess.run([exe, "-Tsvg"], input=text.encode("utf-8"), capture_output=True,
                              timeout=_DOT_TIMEOUT_S, check=False)
    except Exception:  # noqa: BLE001  (a picture is optional: any failure → no picture)
        return ""
    svg = done.stdout.decode("utf-8", "replace")
    start = svg.find("<svg")
    if done.returncode != 0 or start < 0 or "</svg>" not in svg:
        return ""
    return svg[start:svg.rindex("</svg>") + len("</svg>")]  # drop the XML prolog and doctype


def _model_vocab(handle: int) -> int:
    from .generate import sequence_spec
    return sequence_spec(json.loads(_core.ir_json(handle))).vocab


def _release_quietly(handle: int) -> None:
    """Release through the handle API (which also drops the handle's history, cached IR facts
    and tokenizer); a handle already released that way is not an error here."""
    _forget_tokenizer(handle)
    try:
        api.release(handle)
    except Exception:  # already released through the handle API: nothing to do
        pass
