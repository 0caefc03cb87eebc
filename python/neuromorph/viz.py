"""Pictures of what `nm.inspect` records (docs/inspect.md), one function per picture, each
returning a matplotlib `Figure` (the `plot` extra: pip install 'neuromorph[plot]').

    import neuromorph as nm
    from neuromorph import viz
    seen = nm.inspect(h, x)
    viz.topographic_map(seen["cortex"], labels).savefig("map.png")
    viz.smoothness(seen["cortex"], labels)          # a number: how smooth the map is

* a `column` sheet: `topographic_map` (preferred class per column on the sheet; numbers from
  `preferences`, `preferred` and `smoothness`), `column_attention`;
* an `attn2d` grid: `grid_attention` (where one cell attends);
* an `energy` block: `energy_descent` (each term and the total per step), `state_trajectory`;
* a `neuron` section: `routing` (the route through the neurons, entry scores);
* a `neuromorph.History`: `history_curves`.

Figures are built with the object API (`matplotlib.figure.Figure`), never pyplot's global
state, so they work headless and in threads; save them with `fig.savefig(...)`. A dict of the
wrong kind or an index out of range raises `neuromorph.errors.DataError` naming what was
expected and what was given. Not here: the HTML report (`neuromorph.report`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .errors import DataError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .training import History

__all__ = ["topographic_map", "preferences", "preferred", "smoothness", "neighbours",
           "grid_attention", "column_attention", "energy_descent", "state_trajectory",
           "routing", "history_curves"]

Inspected = Mapping[str, Any]  # one node's entry of nm.inspect: key -> numpy array
_Floats = npt.NDArray[np.float64]

_COLUMN = ("attention", "response", "position", "shape", "distance")
_ATTN2D = ("attention", "window", "mask", "grid")
_NEURON = ("route", "voltage", "scores", "neighbors", "attentive")


def _figure(width: float, height: float) -> "Figure":
    """A new Figure, or ImportError saying how to get matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("neuromorph.viz needs matplotlib, which is not installed: pip install "
                          "'neuromorph[plot]' (or pip install matplotlib)") from None
    return Figure(figsize=(width, height), layout="constrained")


def _need(d: Inspected, keys: Sequence[str], kind: str) -> None:
    if not isinstance(d, Mapping):
        raise DataError(f"expected the dict nm.inspect records for a `{kind}` node, got "
                        f"{type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"expected the dict nm.inspect records for a `{kind}` node (keys "
                        f"{', '.join(keys)}); got keys {', '.join(sorted(d)) or '(none)'}, "
                        f"without {', '.join(missing)}")


def _index(value: int, n: int, what: str) -> int:
    """value as an index into n things (negative from the end), or DataError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{what} must be an integer, got {value!r}")
    if not -n <= value < n:
        raise DataError(f"{what} {value} is out of range: there are {n} (0..{n - 1})")
    return int(value) % n


def _array(d: Inspected, key: str, ndim: int, kind: str) -> npt.NDArray[Any]:
    a = np.asarray(d[key])
    if a.ndim != ndim:
        raise DataError(f"`{kind}` key {key!r}: expected {ndim} dimensions, got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------- column sheets
def _labels(labels: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    """Class ids (n,) from ids or one-hot / score rows (n, K)."""
    lab = np.asarray(labels)
    if lab.ndim == 2:
        lab = lab.argmax(1)
    if lab.ndim != 1 or len(lab) != n:
        raise DataError(f"labels: expected {n} class ids (one per inspected sample) or an "
                        f"({n}, classes) array, got shape {np.shape(labels)}")
    if lab.dtype.kind == "f" and not np.all(lab == np.round(lab)):
        raise DataError("labels: expected integer class ids, got fractions")
    ids = lab.astype(np.int64)
    if len(ids) and ids.min() < 0:
        raise DataError(f"labels: class ids must be >= 0, got {ids.min()}")
    return ids


def preferences(column: Inspected, labels: npt.ArrayLike, classes: Optional[int] = None,
                relative: bool = True) -> _Floats:
    """(C, K): how strongly each column responds to each class: the mean norm of its response
    over the samples of that class, less (`relative`, the default) that class's mean over
    all columns, so a class that drives every column (more ink, a larger input) is not what
    every column "prefers".

    `column` is a `column` node's entry of nm.inspect, `labels` the class of each inspected
    sample (ids, or one-hot rows). A class with no samples gets the column's mean over the
    other classes, so it never stands out."""
    _need(column, ("response",), "column")
    resp = _array(column, "response", 3, "column").astype(np.float64)  # (N, C, d)
    ids = _labels(labels, resp.shape[0])
    if classes is None and np.ndim(labels) == 2:
        classes = np.shape(labels)[1]  # one-hot rows say how many classes there are
    k = int(classes) if classes is not None else int(ids.max()) + 1 if len(ids) else 0
    if k < 1 or not len(ids) or ids.max() >= k:
        raise DataError(f"classes={classes} does not cover the labels (largest id "
                        f"{ids.max() if len(ids) else None})")
    norm = np.linalg.norm(resp, axis=2)  # (N, C)
    present = [c for c in range(k) if np.any(ids == c)]
    out = np.zeros((norm.shape[1], k))
    out[:, present] = np.stack([norm[ids == c].mean(0) for c in present], 1)
    if relative:
        out[:, present] -= out[:, present].mean(0, keepdims=True)
    empty = [c for c in range(k) if c not in present]
    out[:, empty] = out[:, present].mean(1, keepdims=True)
    return out


def preferred(column: Inspected, labels: npt.ArrayLike, classes: Optional[int] = None,
              relative: bool = True) -> npt.NDArray[np.int64]:
    """(C,): each column's preferred class (the arg-max of `preferences`)."""
    return np.asarray(preferences(column, labels, classes, relative).argmax(1), dtype=np.int64)


def neighbours(column: Inspected) -> list[tuple[int, int]]:
    """The pairs (i, j), i < j, of neighbouring columns: j is at the smallest nonzero distance
    from i between their positions on the sheet, or i from j (grid and stack: the 4 nearest in
    a layer; sphere: each column's nearest); `distance` when every position is the same."""
    _need(column, ("position",), "column")
    pos = _array(column, "position", 2, "column").astype(np.float64)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    if not np.any(dist > 1e-9) and "distance" in column:
        dist = np.asarray(column["distance"], dtype=np.float64)
    far = np.where(dist > 1e-9, dist, np.inf)
    nearest = far.min(1, keepdims=True)
    near = np.isfinite(far) & (far <= nearest * (1 + 1e-6))
    near = np.triu(near | near.T, 1)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(near))]


def smoothness(column: Inspected, labels: Optional[npt.ArrayLike] = None, *,
               prefs: Optional[npt.ArrayLike] = None) -> float:
    """Mean cosine similarity of neighbouring columns' class-preference vectors (each
    centred on its mean over the classes): near 1 on a smooth map, near 0 for a random one.

    Give the inspected samples' `labels`, or the (C, K) `prefs` themselves."""
    if prefs is not None:
        p = np.asarray(prefs, dtype=np.float64)
    elif labels is not None:
        p = preferences(column, labels)
    else:
        raise DataError("smoothness needs the samples' labels or the preferences (prefs=)")
    if p.ndim != 2:
        raise DataError(f"prefs: expected (columns, classes), got shape {p.shape}")
    p = p - p.mean(1, keepdims=True)
    n = np.linalg.norm(p, axis=1)
    unit = np.divide(p, n[:, None], out=np.zeros_like(p), where=n[:, None] > 1e-12)
    pairs = neighbours(column)
    if not pairs:
        return float("nan")
    i, j = np.array(pairs).T
    return float(np.mean(np.sum(unit[i] * unit[j], axis=1)))


def _sheet_panels(column: Inspected) -> tuple[str, list[npt.NDArray[np.int64]], _Floats]:
    """(geometry, per panel the column ids laid out as an image (-1: no column), positions)."""
    pos = _array(column, "position", 2, "column").astype(np.float64)
    shape = [int(s) for s in np.asarray(column["shape"]).ravel()]
    C = len(pos)
    if len(shape) == 2 and shape[0] * shape[1] == C:
        return "grid", [np.arange(C).reshape(shape[0], shape[1])], pos
    if len(shape) == 3 and shape[0] * shape[1] * shape[2] == C:
        L, per = shape[0], shape[1] * shape[2]
        return "stack", [np.arange(l * per, (l + 1) * per).reshape(shape[1], shape[2])
                         for l in range(L)], pos
    return "sphere", [], pos


def _draw_values(fig: "Figure", column: Inspected, values: _Floats, cmap: str, title: str,
                 text: Optional[Sequence[str]] = None, vmin: Optional[float] = None,
                 vmax: Optional[float] = None, mark: Optional[int] = None,
                 colorbar: bool = True) -> list["Axes"]:
    """One value per column drawn on the sheet's geometry: an image per grid (or stack
    layer), a scatter for a sphere (x, y; one panel per hemisphere of z)."""
    geometry, panels, pos = _sheet_panels(column)
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    axes: list[Axes] = []
    mappable: Any = None
    if geometry in ("grid", "stack"):
        axs = fig.subplots(1, len(panels), squeeze=False)[0]
        for l, (ax, ids) in enumerate(zip(axs, panels)):
            mappable = ax.imshow(values[ids], cmap=cmap, vmin=lo, vmax=hi)
            for (i, j), c in np.ndenumerate(ids):
                if text is not None:
                    ax.text(j, i, text[int(c)], ha="center", va="center", fontsize=11,
                            fontweight="bold", color="white", path_effects=_outline())
                if mark is not None and c == mark:
                    ax.add_patch(_square(j, i))
            ax.set_xticks([])
            ax.set_yticks([])
            if geometry == "stack":
                ax.set_title(f"layer {l}", fontsize=9)
            axes.append(ax)
    else:
        halves = [("z >= 0", pos[:, 2] >= 0), ("z < 0", pos[:, 2] < 0)]
        halves = [h for h in halves if h[1].any()]
        axs = fig.subplots(1, len(halves), squeeze=False)[0]
        for ax, (name, sel) in zip(axs, halves):
            mappable = ax.scatter(pos[sel, 0], pos[sel, 1], c=values[sel], cmap=cmap, vmin=lo,
                                  vmax=hi, s=60, edgecolors="k", linewidths=0.3)
            if mark is not None and sel[mark]:
                ax.scatter(pos[mark, 0], pos[mark, 1], s=160, facecolors="none",
                           edgecolors="red", linewidths=1.5)
            ax.set_aspect("equal")
            ax.set_title(f"hemisphere {name}" if len(halves) > 1 else "sheet", fontsize=9)
            axes.append(ax)
    fig.suptitle(title, fontsize=10)
    if mappable is not None and colorbar:
        fig.colorbar(mappable, ax=list(axes), shrink=0.8)
    return axes


def _outline() -> list[Any]:
    from matplotlib import patheffects
    return [patheffects.withStroke(linewidth=2, foreground="black")]


def _square(j: int, i: int) -> Any:
    from matplotlib.patches import Rectangle
    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)


def topographic_map(column: Inspected, labels: npt.ArrayLike, *,
                    classes: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None,
                    title: Optional[str] = None) -> "Figure":
    """Each column's preferred class (`preferred`), coloured on the sheet: an H x W image for
    a grid, one panel per layer for a stack, a scatter of x, y per hemisphere for a sphere.
    The title carries the map's `smoothness`."""
    _need(column, _COLUMN, "column")
    prefs = preferences(column, labels, classes)
    best = prefs.argmax(1)
    k = prefs.shape[1]
    names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) < k:
        raise DataError(f"class_names: expected {k} names, got {len(names)}")
    geometry, _, _ = _sheet_panels(column)
    panels = len(_sheet_panels(column)[1]) or 2
    fig = _figure(min(3.2 * panels + 1.5, 14), 3.6)
    head = title or "preferred class per column"
    head += f"  (smoothness {smoothness(column, prefs=prefs):.3f})"
    cmap = "tab10" if k <= 10 else "tab20"
    text = [names[b] for b in best] if geometry != "sphere" else None
    axes = _draw_values(fig, column, best.astype(np.float64), cmap, head, text=text,
                        vmin=-0.5, vmax=(9.5 if k <= 10 else 19.5), colorbar=False)
    if geometry == "sphere":
        from matplotlib.lines import Line2D
        from matplotlib import colormaps
        cm = colormaps[cmap]
        handles = [Line2D([], [], marker="o", ls="", color=cm(b % cm.N), label=names[b])
                   for b in sorted(set(best.tolist()))]
        axes[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def column_attention(column: Inspected, sample: int = 0, step: int = -1,
                     head: Optional[int] = None, column_id: Optional[int] = None) -> "Figure":
    """The attention between columns of one sample at one step (mean over heads when `head`
    is None): the C x C matrix (row: the attending column), or with `column_id` that
    column's row drawn on the sheet (the attending column framed in red)."""
    _need(column, _COLUMN, "column")
    att = _array(column, "attention", 5, "column")  # (N, T, h, C, C)
    n = _index(sample, att.shape[0], "sample")
    t = _index(step, att.shape[1], "step")
    a = att[n, t].astype(np.float64)
    if head is None:
        a, which = a.mean(0), "mean over heads"
    else:
        a, which = a[_index(head, att.shape[2], "head")], f"head {head}"
    if column_id is not None:
        c = _index(column_id, a.shape[0], "column")
        fig = _figure(5.0 if len(_sheet_panels(column)[1]) <= 1 else 9.0, 4.0)
        _draw_values(fig, column, a[c], "viridis",
                     f"where column {c} attends (sample {n}, step {t + 1}, {which})",
                     vmin=0.0, mark=c)
        return fig
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()
    im = ax.imshow(a, cmap="viridis", vmin=0.0)
    ax.set_xlabel("attended column")
    ax.set_ylabel("attending column")
    ax.set_title(f"column attention (sample {n}, step {t + 1}, {which})", fontsize=10)
    fig.colorbar(im, ax=ax)
    return fig


# ---------------------------------------------------------------------------- attn2d grids
def grid_attention(attn2d: Inspected, cell: Union[int, tuple[int, int]], sample: int = 0,
                   application: int = -1, head: Optional[int] = None) -> "Figure":
    """Where one cell of an attn2d grid attends: its softmax weights over its window as an
    H x W heat map (mean over heads when `head` is None), the cell framed in red; `cell` is a
    raster index or (row, column), `application` a block application (iteration-major)."""
    _need(attn2d, _ATTN2D, "attn2d")
    att = _array(attn2d, "attention", 5, "attn2d")  # (N, I*L, h, S, Wn)
    window = _array(attn2d, "window", 2, "attn2d").astype(np.int64)
    H, W = (int(v) for v in np.asarray(attn2d["grid"]).ravel()[:2])
    S = att.shape[3]
    if H * W != S or window.shape != att.shape[3:]:
        raise DataError(f"`attn2d` dict: grid {H}x{W}, window {window.shape} and attention "
                        f"{att.shape} do not agree")
    if isinstance(cell, tuple):
        if len(cell) != 2:
            raise DataError(f"cell: expected a raster index or (row, column), got {cell!r}")
        s = _index(cell[0], H, "cell row") * W + _index(cell[1], W, "cell column")
    else:
        s = _index(cell, S, "cell")
    n = _index(sample, att.shape[0], "sample")
    app = _index(application, att.shape[1], "application")
    w = att[n, app, :, s].astype(np.float64)  # (h, Wn)
    if head is None:
        w, which = w.mean(0), "mean over heads"
    else:
        w, which = w[_index(head, att.shape[2], "head")], f"head {head}"
    grid = np.zeros(S)
    ok = window[s] >= 0
    np.add.at(grid, window[s][ok], w[ok])
    fig = _figure(5.0, 4.4)
    ax = fig.add_subplot()
    im = ax.imshow(grid.reshape(H, W), cmap="magma", vmin=0.0)
    ax.add_patch(_square(s % W, s // W))
    ax.set_title(f"cell ({s // W}, {s % W}) attends (sample {n}, application {app + 1}, "
                 f"{which})", fontsize=9)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    fig.colorbar(im, ax=ax)
    return fig


# ---------------------------------------------------------------------------- energy blocks
def _energy_terms(energy: Inspected) -> list[str]:
    terms = [k for k in energy if k.startswith("energy.")]
    if "energy" not in energy or not terms:
        raise DataError(f"expected the dict nm.inspect records for an `energy` block (keys "
                        f"energy, energy.<term>, state.<layer>); got keys "
                        f"{', '.join(sorted(energy)) or '(none)'}")
    return terms


def energy_descent(energy: Inspected, sample: int = 0) -> "Figure":
    """The energy of one sample along the descent: each layer's and synapse's term and the
    total (bold) per step (step 0: the start)."""
    if not isinstance(energy, Mapping):
        raise DataError(f"expected the dict nm.inspect records for an `energy` block, got "
                        f"{type(energy).__name__}")
    terms = _energy_terms(energy)
    total = _array(energy, "energy", 2, "energy")
    n = _index(sample, total.shape[0], "sample")
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    steps = np.arange(total.shape[1])
    for k in terms:
        ax.plot(steps, np.asarray(energy[k], dtype=np.float64)[n], marker=".", lw=1.2,
                label=k.split(".", 1)[1])
    ax.plot(steps, total[n], color="k", lw=2.4, marker="o", label="total")
    ax.set_xlabel("descent step")
    ax.set_ylabel("energy")
    ax.set_title(f"energy descent (sample {n})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def state_trajectory(energy: Inspected, sample: int = 0,
                     layers: Optional[Sequence[str]] = None) -> "Figure":
    """Each layer's state x over the descent steps of one sample: a heat map per layer,
    steps down, units across."""
    if not isinstance(energy, Mapping):
        raise DataError(f"expected the dict nm.inspect records for an `energy` block, got "
                        f"{type(energy).__name__}")
    have = [k.split(".", 1)[1] for k in energy if k.startswith("state.")]
    _energy_terms(energy)
    if layers is None:
        layers = have
    unknown = [l for l in layers if l not in have]
    if unknown or not layers:
        raise DataError(f"layers: expected some of {', '.join(have) or '(none)'}, got "
                        f"{', '.join(unknown) or '(none)'}")
    states = [_array(energy, f"state.{name}", 3, "energy") for name in layers]
    n = _index(sample, states[0].shape[0], "sample")
    fig = _figure(min(3.4 * len(layers) + 0.6, 14), 3.6)
    axs = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, name, x in zip(axs, layers, states):
        im = ax.imshow(x[n].astype(np.float64), aspect="auto", cmap="coolwarm",
                       interpolation="nearest")
        ax.set_title(f"{name} ({x.shape[2]} units)", fontsize=9)
        ax.set_xlabel("unit")
        ax.set_ylabel("step")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"state along the descent (sample {n})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- neuron sections
def routing(neuron: Inspected, sample: int = 0, section: int = 0) -> "Figure":
    """One sample's route through a neuron section: the neurons on a circle (attentive ones
    ringed, entry candidates labelled with the router's score), neighbour links in grey,
    the visited chain as numbered arrows (entry first), each visited neuron coloured by the
    voltage at its input; beside it, how often each neuron is visited and entered over all
    the inspected samples of that section."""
    _need(neuron, _NEURON, "neuron")
    route = _array(neuron, "route", 3, "neuron").astype(np.int64)  # (N, P, M)
    volt = _array(neuron, "voltage", 3, "neuron").astype(np.float64)
    scores = _array(neuron, "scores", 3, "neuron").astype(np.float64)  # (N, P, E)
    nbrs = _array(neuron, "neighbors", 3, "neuron").astype(np.int64)  # (P, M, k)
    attentive = np.asarray(neuron["attentive"], dtype=bool).ravel()
    n = _index(sample, route.shape[0], "sample")
    p = _index(section, route.shape[1], "section")
    M = route.shape[2]
    entries = np.flatnonzero(attentive) if attentive.any() else np.arange(M)
    if len(entries) != scores.shape[2]:
        raise DataError(f"`neuron` dict: {scores.shape[2]} entry scores but "
                        f"{len(entries)} entry candidates")
    angle = np.pi / 2 - 2 * np.pi * np.arange(M) / M
    xy = np.stack([np.cos(angle), np.sin(angle)], 1)
    X, Y = xy[:, 0], xy[:, 1]
    fig = _figure(10.0, 5.0)
    ax, bars = fig.subplots(1, 2, width_ratios=[1.25, 1])
    for m in range(M):
        for q in nbrs[p, m]:
            if 0 <= q < M:
                ax.plot(X[[m, q]], Y[[m, q]], color="0.85", lw=0.8, zorder=1)
    chain = [int(m) for m in route[n, p] if m >= 0]
    vis = volt[n, p, :len(chain)]
    colours = np.full(M, np.nan)
    colours[chain] = vis
    finite = np.isfinite(colours)
    ax.scatter(X[~finite], Y[~finite], s=260, color="white", edgecolors="0.5", zorder=2)
    sc = ax.scatter(X[finite], Y[finite], s=260, c=colours[finite], cmap="viridis",
                    edgecolors="k", zorder=2)
    ax.scatter(X[attentive], Y[attentive], s=520, facecolors="none", edgecolors="tab:orange",
               linewidths=1.5, zorder=2)
    from matplotlib import patheffects
    outline = [patheffects.withStroke(linewidth=2, foreground="white")]
    for m in range(M):
        ax.text(X[m], Y[m], str(m), ha="center", va="center", fontsize=7, zorder=4,
                path_effects=outline)
    for e, m in enumerate(entries.tolist()):
        ax.text(X[m] * 1.28, Y[m] * 1.28, f"{scores[n, p, e]:.2g}", ha="center",
                va="center", fontsize=7, color="tab:orange")
    for t, (a, b) in enumerate(zip(chain, chain[1:])):
        ax.annotate("", xy=xy[b] * 0.93, xytext=xy[a] * 0.93, zorder=3,
                    arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1.6})
        mid = (xy[a] + xy[b]) / 2 * 0.85
        ax.text(mid[0], mid[1], str(t + 1), fontsize=7, color="tab:red", ha="center")
    if chain:
        ax.scatter(X[chain[0]], Y[chain[0]], s=420, facecolors="none", edgecolors="tab:red",
                   linewidths=2, zorder=3)
        fig.colorbar(sc, ax=ax, shrink=0.7, label="voltage at input")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"sample {n}, section {p}: {len(chain)} of {M} neurons visited\n"
                 f"entry {chain[0] if chain else '-'} (red ring); entry scores in orange",
                 fontsize=9)
    _visit_bars(bars, route[:, p], M)
    return fig


def _visit_bars(ax: "Axes", route: npt.NDArray[np.int64], M: int) -> None:
    """How often each neuron is visited, and entered, over all samples of one section."""
    N = len(route)
    visits = np.array([np.sum(np.any(route == m, axis=1)) for m in range(M)]) / N
    entered = np.array([np.sum(route[:, 0] == m) for m in range(M)]) / N
    ax.bar(np.arange(M), visits, color="tab:blue", alpha=0.45, label="visited")
    ax.bar(np.arange(M), entered, color="tab:red", width=0.5, label="entered")
    ax.set_xticks(np.arange(M))
    ax.set_xlabel("neuron")
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.05)
    length = (route >= 0).sum(1)
    ax.set_title(f"over all {N} samples: chain length {length.mean():.2g} "
                 f"({length.min()}-{length.max()})", fontsize=9)
    ax.legend(fontsize=8)


# ---------------------------------------------------------------------------- training
def history_curves(history: "History") -> "Figure":
    """A History's curves: every batch loss and the per-epoch loss and val_loss, and the
    metrics per epoch in a second panel when there are any."""
    if not hasattr(history, "epochs") or not hasattr(history, "batch_loss"):
        raise DataError(f"expected a neuromorph.History (nm.fit's result, or nm.history(h, "
                        f"epochs=True)), got {type(history).__name__}")
    keys = [k for k in history.keys() if k != "epoch"]
    batch = np.asarray(history.batch_loss, dtype=np.float64)
    if not keys and not batch.size:
        raise DataError("the History is empty: the model has not been trained")
    metrics = [k for k in keys if k not in ("loss", "val_loss")]
    fig = _figure(9.0 if metrics else 6.4, 3.8)
    axs = fig.subplots(1, 2 if metrics else 1, squeeze=False)[0]
    ax = axs[0]
    E = len(history.epochs)
    if batch.size:
        per = batch.size / E if E else 1.0
        ax.plot(np.arange(1, batch.size + 1) / per, batch, lw=0.6, alpha=0.45,
                color="tab:blue", label="batch loss")
    epochs = np.arange(1, E + 1)
    for k, style in (("loss", "o-"), ("val_loss", "s--")):
        if k in keys:
            ax.plot(epochs, history[k], style, lw=1.6, label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if batch.size and np.all(batch > 0):
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("loss", fontsize=10)
    if metrics:
        for k in metrics:
            axs[1].plot(epochs, history[k], "o-", label=k)
        axs[1].set_xlabel("epoch")
        axs[1].legend(fontsize=8)
        axs[1].grid(alpha=0.3)
        axs[1].set_title("metrics", fontsize=10)
    return fig
