"""`mdlc report MODEL [--data F] -o report.html`: one self-contained HTML page about a model.

    from neuromorph.report import build_report
    build_report("model.nm", data="digits.npz", out="report.html")

Sections, each an element with an id: `summary` (name, kinds, parameters per node, dtype,
batch size, widths), `graph` (Graphviz SVG when `dot` is installed, else a table of the
edges), `training` (the History saved in the model file), `pictures` (one `node-<name>`
section per node that has pictures: `neuromorph.viz` on what `nm.inspect` records for a few
samples of --data, or of synthetic inputs of the right shape, token ids in range).
Everything is inline: PNG images as data URIs, the SVG in the page, the style in a <style>
element; no scripts, fonts, links or network. Text is escaped.

MODEL is a model file written by `nm.save` / `mdlc run --save`; an .mdl file or a shipped
model's name gives a report of the freshly built, untrained model. Not here: the pictures
themselves (`neuromorph.viz`), the flags (`neuromorph.cli`).
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from . import _core, api, models, viz
from ._sequence import sequence_spec
from .data import data_kind, load_data
from .errors import DataError, NeuromorphError, ShapeError
from .model import _graph_svg, _node_rows
from .tasks import formal_text, make_task
from .text import tokenizer_of, windows
from .training import predict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["build_report", "report_command"]

SECTIONS = ("summary", "graph", "training", "pictures")
_KINDS_WITH_PICTURES = ("column", "attn2d", "energy", "neuron")
_DPI = 72

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .2em .5em; text-align: left; }
td.num { text-align: right; } th { background: #f4f4f4; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figcaption { font-size: .85em; color: #555; max-width: 640px; }
img { max-width: 100%; } pre { background: #f8f8f8; padding: .5em; overflow-x: auto; }
.note { color: #666; font-style: italic; }
.top { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.top > section { flex: 2 1 360px; min-width: 0; overflow-x: auto; }
.top > #summary { flex: 3 1 560px; }
#graph svg { max-width: 100%; max-height: 640px; height: auto; width: auto; }
"""


@dataclass
class _Inputs:
    """The samples the pictures are drawn from, and what they are."""
    x: npt.NDArray[Any]
    classes: Optional[npt.NDArray[np.int64]]  # one class per sample, when the output has them
    what: str
    class_source: str = ""
    notes: list[str] = field(default_factory=list)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _anchor(name: str) -> str:
    return "node-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _png(fig: "Figure") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_html(fig: "Figure", caption: str) -> str:
    return (f'<figure><img alt="{_e(caption)}" src="{_png(fig)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------- the model
def _open(model: str, seed: int) -> tuple[int, str]:
    """(handle, how it was opened): a saved model file, or an .mdl / shipped model built
    fresh (untrained)."""
    if os.path.exists(model) and not model.endswith(".mdl"):
        return api.load(model), "saved model file"
    if not os.path.exists(model):
        if model in models.names():
            model = models.path(model)
        else:
            raise FileNotFoundError(f"no such model file: {model} (nor a shipped model: "
                                    f"{', '.join(models.names())})")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model's warnings are mdlc check's business
        h = api.compile(model, 16, 0.01)
    api.seed(seed)
    api.build(h)
    return h, "MDL source, built untrained (seed %d)" % seed


def _param_counts(ir: dict[str, Any], info: dict[str, Any]) -> dict[str, int]:
    """Parameters per node: those named "<node>.*", an energy block's also by its synapses'
    and layers' names."""
    owner: dict[str, str] = {}
    for n in ir["nodes"]:
        owner[n["name"]] = n["name"]
        for part in (n.get("energy") or {}).get("synapses", []) + \
                (n.get("energy") or {}).get("layers", []):
            owner.setdefault(part["name"], n["name"])
    counts: dict[str, int] = {}
    for name, shape in info["params"]:
        node = owner.get(name.split(".")[0], name.split(".")[0])
        counts[node] = counts.get(node, 0) + int(np.prod(shape))
    return counts


def _summary(name: str, opened: str, ir: dict[str, Any], info: dict[str, Any],
             h: int) -> str:
    counts = _param_counts(ir, info)
    kinds = sorted({n["kind"] for n in ir["nodes"]})
    tok = tokenizer_of(h)
    facts = [("model", name), ("opened from", opened), ("node kinds", ", ".join(kinds)),
             ("nodes", len(ir["nodes"])), ("parameters", f"{sum(counts.values()):,}"),
             ("dtype", info["dtype"]), ("batch size", info["batch_size"]),
             ("input width", info["input_width"]), ("output width", info["output_width"]),
             ("recurrent", "yes" if info["recurrent"] else "no"),
             ("training steps taken", info.get("steps", 0)),
             ("loss", " + ".join(info.get("loss_parts", [])) or "output"),
             ("engine", f"neuromorph {api.__version__}")]
    if tok is not None:
        facts.append(("tokenizer", f"{tok.vocab_size} characters"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    nodes = []
    for r in _node_rows(ir, info):
        ins = ", ".join(i["node"] + (" [t-1]" if i["delayed"] else "") for i in r["inputs"])
        nodes.append(f"<tr><td>{_e(r['name'])}</td><td>{_e(r['kind'])}</td>"
                     f"<td class='num'>{r['width']}</td><td>{_e(r['shape'])}</td>"
                     f"<td>{_e(r['function'])}</td><td>{_e(ins)}</td>"
                     f"<td class='num'>{counts.get(r['name'], 0):,}</td></tr>")
    head = ("<tr><th>node</th><th>kind</th><th>width</th><th>cells / shape</th>"
            "<th>activation / loss</th><th>inputs</th><th>parameters</th></tr>")
    return (f'<section id="summary"><h2>Summary</h2><table>{rows}</table>'
            f"<h3>Nodes</h3><table><thead>{head}</thead><tbody>{''.join(nodes)}</tbody>"
            f"</table></section>")


def _graph(ir: dict[str, Any]) -> str:
    svg = _graph_svg(ir)  # mdl.dot.to_dot through Graphviz; "" without `dot`
    if svg:
        body = f"<div class='graph'>{svg}</div>"
    else:
        rows = "".join(f"<tr><td>{_e(e['from'])}</td><td>{_e(e['to'])}</td>"
                       f"<td>{_e(e.get('kind', ''))}</td>"
                       f"<td>{'delayed (t-1)' if e.get('delayed') else ''}</td></tr>"
                       for e in ir["edges"])
        body = ("<p class='note'>Graphviz (`dot`) is not installed: the edges as a table.</p>"
                "<table><thead><tr><th>from</th><th>to</th><th>kind</th><th></th></tr></thead>"
                f"<tbody>{rows}</tbody></table>")
    return f'<section id="graph"><h2>Graph</h2>{body}</section>'


def _training(h: int) -> str:
    hist = api.history(h, epochs=True)
    if not len(hist) and not hist.batch_loss.size:
        body = "<p class='note'>Not trained: the model file holds no training history.</p>"
    else:
        try:
            fig = _figure_html(viz.history_curves(hist), "loss per batch and per epoch; "
                               "validation loss and metrics when they were measured")
        except ImportError as err:
            fig = f"<p class='note'>{_e(err)}</p>"
        best = f"; best epoch {hist.best_epoch}" if hist.best_epoch else ""
        body = (f"<p>{len(hist)} epochs, {hist.batch_loss.size} batches{_e(best)}"
                f"{' (stopped early)' if hist.stopped_early else ''}.</p>{fig}"
                f"<pre>{_e(hist.table())}</pre>")
    return f'<section id="training"><h2>Training</h2>{body}</section>'


# ---------------------------------------------------------------------------- the samples
def _vocab(ir: dict[str, Any]) -> Optional[int]:
    """The vocabulary of the nodes that read the input as token ids, or None."""
    found = [int(n["struct"]["options"]["vocab"]) for n in ir["nodes"]
             if n.get("struct") and n["struct"]["options"].get("vocab") is not None
             and any(i["node"] == ir["input"] for i in n["inputs"])]
    return min(found) if found else None


def _classes(ir: dict[str, Any], expected: Optional[npt.NDArray[Any]], h: int,
             x: npt.NDArray[Any]) -> tuple[Optional[npt.NDArray[np.int64]], str]:
    """One class per sample: the expected one-hot's arg-max, else the model's prediction;
    None when the output is per cell or one number."""
    out = next(n for n in ir["nodes"] if n["name"] == ir["output"])
    if out.get("cells") or out["width"] < 2:
        return None, ""
    if expected is not None and expected.ndim == 2 and expected.shape[1] == out["width"]:
        return expected.argmax(1).astype(np.int64), "the expected class"
    return predict(h, x).argmax(1).astype(np.int64), "the class the model predicts"


def _token_windows(h: int, ir: dict[str, Any], text: str, samples: int,
                   where: str) -> tuple[npt.NDArray[Any], str]:
    """Windows of a text encoded by the model's own tokenizer (a token model saved by
    `mdlc run --text ... --save`); DataError for a character outside its alphabet."""
    tok = tokenizer_of(h)
    if tok is None:
        raise DataError(f"{where} is text: a report reads text only for a token model saved "
                        f"with its tokenizer (`mdlc run MODEL --text FILE --save OUT.nm`)")
    C = sequence_spec(ir).cells
    x, _ = windows(tok.encode(text), C)
    if not len(x):
        raise DataError(f"{where} holds fewer than {C + 1} characters: no window to inspect")
    return x[:samples].astype(np.float64), f"the first {min(samples, len(x))} windows of {C} " \
        f"characters of {where}, encoded by the model's tokenizer"


def _inputs(h: int, ir: dict[str, Any], info: dict[str, Any], data: Optional[str],
            samples: int, seed: int, x_key: Optional[str], y_key: Optional[str]) -> _Inputs:
    width = info["input_width"]
    expected: Optional[npt.NDArray[Any]] = None
    if data is not None and data_kind(data) == "text":
        with open(data, encoding="utf-8") as f:
            x, what = _token_windows(h, ir, f.read(), samples, os.path.basename(data))
    elif data is not None:
        x, e = load_data(data, x=x_key, y=y_key, model=h)
        x, expected = x.reshape(-1, width)[:samples], np.asarray(e)
        expected = expected.reshape(-1, expected.shape[-1])[:samples]
        what = f"the first {len(x)} samples of {os.path.basename(data)}"
    elif (tok := tokenizer_of(h)) is not None:  # a text model: the built-in text, its ids
        try:
            x, what = _token_windows(h, ir, formal_text((samples + 1) * width + 1, seed),
                                     samples, "the built-in formal text")
        except (DataError, ShapeError):  # its alphabet lacks the formal text's symbols
            ids = min(_vocab(ir) or tok.vocab_size, tok.vocab_size)
            x = np.random.default_rng(seed).integers(0, ids, (samples, width)).astype(float)
            what = f"{samples} random token-id sequences (ids 0..{ids - 1})"
    else:
        batch = info["batch_size"]
        try:
            x, e, desc = make_task(ir, batch, max(1, math.ceil(samples / batch)), seed)
            x, expected = x.reshape(-1, width)[:samples], e.reshape(-1, e.shape[-1])[:samples]
            what = f"{len(x)} synthetic samples ({desc})"
        except Exception:  # noqa: BLE001  (an unusual model: plain random inputs instead)
            x = np.random.default_rng(seed).normal(size=(samples, width))
            what = f"{samples} random inputs (standard normal)"
        vocab = _vocab(ir)
        if vocab is not None and not (np.all(x == np.round(x)) and x.min() >= 0
                                      and x.max() < vocab):
            x = np.random.default_rng(seed).integers(0, vocab, (len(x), width)).astype(float)
            what, expected = f"{len(x)} random token-id sequences (ids 0..{vocab - 1})", None
    classes, source = _classes(ir, expected, h, x)
    return _Inputs(np.asarray(x, dtype=np.float64), classes, what, source)


# ---------------------------------------------------------------------------- pictures
def _column_pictures(d: dict[str, Any], inp: _Inputs) -> list[str]:
    out = []
    if inp.classes is not None and len(np.unique(inp.classes)) > 1:
        s = viz.smoothness(d, inp.classes)
        out.append(_figure_html(viz.topographic_map(d, inp.classes), (
            f"each column's preferred class ({inp.class_source}; the class whose samples raise "
            f"the column's mean response norm most above the sheet's mean for that class); "
            f"smoothness {s:.3f} = mean cosine similarity of neighbouring columns' class "
            f"preferences (near 0 for a map with no spatial order)")))
    C = np.asarray(d["position"]).shape[0]
    centre = C // 2
    out.append(_figure_html(viz.column_attention(d), "attention between columns, sample 0, "
                            "last step, mean over heads (row: the attending column)"))
    out.append(_figure_html(viz.column_attention(d, column_id=centre),
                            f"where column {centre} attends, drawn on the sheet"))
    wiring = np.asarray(d.get("wiring", np.zeros(1)))
    if wiring.size and np.any(wiring):
        inp.notes.append(f"mean wiring cost per sample: {wiring.sum(axis=(1, 2)).mean():.4g}")
    return out


def _attn2d_pictures(d: dict[str, Any], inp: _Inputs) -> list[str]:
    H, W = (int(v) for v in np.asarray(d["grid"]).ravel()[:2])
    cell = (H // 2, W // 2)
    apps = np.asarray(d["attention"]).shape[1]
    out = [_figure_html(viz.grid_attention(d, cell, application=-1),
                        f"where cell {cell} attends in the last block application, sample 0, "
                        f"mean over heads")]
    if apps > 1:
        out.append(_figure_html(viz.grid_attention(d, cell, application=0),
                                f"the same cell in the first application (of {apps})"))
    return out


def _energy_pictures(d: dict[str, Any], inp: _Inputs) -> list[str]:
    return [_figure_html(viz.energy_descent(d), "energy of sample 0 along the descent: each "
                         "layer's and synapse's term and the total"),
            _figure_html(viz.state_trajectory(d), "each layer's state along the descent, "
                         "sample 0")]


def _neuron_pictures(d: dict[str, Any], inp: _Inputs) -> list[str]:
    P = np.asarray(d["route"]).shape[1]
    count = np.asarray(d.get("count", np.zeros(1)), dtype=np.float64)
    if count.size:
        inp.notes.append(f"neurons visited per sample: mean {count.mean():.3g}")
    return [_figure_html(viz.routing(d, section=p), f"the route of sample 0 through section "
                         f"{p}: visited neurons in order (red arrows), the voltage at each "
                         f"visited neuron, the router's entry scores (orange); right: how "
                         f"often each neuron is visited and entered over all samples")
            for p in range(min(P, 2))]


_PICTURES: dict[str, Callable[[dict[str, Any], _Inputs], list[str]]] = {
    "column": _column_pictures, "attn2d": _attn2d_pictures,
    "energy": _energy_pictures, "neuron": _neuron_pictures}


def _pictures(h: int, ir: dict[str, Any], inp: Optional[_Inputs], why_not: str) -> str:
    nodes = [n for n in ir["nodes"] if n["kind"] in _KINDS_WITH_PICTURES]
    parts = ['<section id="pictures"><h2>Inside the model</h2>']
    if not nodes:
        parts.append("<p class='note'>This model has no node with pictures (they are drawn "
                     f"for {', '.join(_KINDS_WITH_PICTURES)} nodes).</p></section>")
        return "".join(parts)
    if inp is None:
        parts.append(f"<p class='note'>{_e(why_not)}</p></section>")
        return "".join(parts)
    parts.append(f"<p>Recorded by <code>nm.inspect</code> on {_e(inp.what)}.</p>")
    seen: dict[str, Any] = {}
    try:
        seen = api.inspect(h, inp.x, nodes=[n["name"] for n in nodes])
    except NeuromorphError as err:
        why_not = f"nm.inspect failed: {err}"
    for n in nodes:
        inp.notes = []
        parts.append(f'<section id="{_anchor(n["name"])}" class="node">'
                     f"<h3>{_e(n['name'])} <small>({_e(n['kind'])})</small></h3>")
        try:
            if n["name"] not in seen:
                raise DataError(why_not or f"nm.inspect recorded nothing for {n['name']}")
            figs = _PICTURES[n["kind"]](seen[n["name"]], inp)
            parts.extend(f"<p>{_e(note)}</p>" for note in inp.notes)
            parts.extend(figs)
        except ImportError as err:
            parts.append(f"<p class='note'>{_e(err)}</p>")
        except DataError as err:
            parts.append(f"<p class='note'>no pictures: {_e(err)}</p>")
        parts.append("</section>")
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------------- the page
def build_report(model_path: str, data: Optional[str] = None, out: str = "report.html", *,
                 samples: int = 64, seed: int = 0, x: Optional[str] = None,
                 y: Optional[str] = None) -> str:
    """Write the HTML report of a model to `out` and return its path.

    model_path: a model file (nm.save / `mdlc run --save`), or an .mdl file / shipped
    model's name (built untrained). data: a data file as `mdlc run --data` reads it
    (neuromorph.load_data; x/y name its arrays or columns); the pictures are drawn from its
    first `samples` samples, or from synthetic inputs without it."""
    model_path = os.fspath(model_path)
    h, opened = _open(model_path, seed)
    try:
        ir: dict[str, Any] = json.loads(_core.ir_json(h))
        info = api.info(h)
        name = os.path.basename(model_path)
        inp: Optional[_Inputs] = None
        why_not = ""
        try:
            inp = _inputs(h, ir, info, data, samples, seed, x, y)
        except NeuromorphError as err:
            if data is not None:
                raise
            why_not = f"no pictures: no inputs could be made for this model ({err})"
        body = [f"<header id='title'><h1>{_e(name)}</h1><p>A neuromorph model report.</p>"
                "</header>", "<div class='top'>", _summary(name, opened, ir, info, h), _graph(ir),
                "</div>", _training(h),
                _pictures(h, ir, inp, why_not)]
    finally:
        api.release(h)
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(name)}: neuromorph report</title>"
            "<link rel='icon' href='data:,'>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


def report_command(args: argparse.Namespace) -> int:
    """`mdlc report` (flags in neuromorph.cli)."""
    from mdl.cli import UsageError
    if (args.x is not None or args.y is not None) and not args.data:
        raise UsageError("--x and --y name arrays or columns of --data, which is not given")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise UsageError(f"cannot write {args.output}: there is no folder {folder}")
    try:
        out = build_report(args.file, args.data, args.output, samples=args.samples,
                           seed=args.seed, x=args.x, y=args.y)
    except (FileNotFoundError, ImportError) as err:
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"cannot write {args.output}: {err.strerror}") from None
    print(f"report of {args.file} written to {out}")
    return 0
