"""neuromorph.viz: every picture from dicts shaped as docs/inspect.md says (built here in numpy),
the numbers behind the topographic map (preferences, neighbours, smoothness) against hand
cases, typed errors for the wrong kind's dict and out-of-range indices, and, when the engine
has `nm.inspect`, every picture from real inspected models."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import neuromorph as nm  # noqa: E402
from neuromorph import viz  # noqa: E402
from neuromorph.errors import DataError  # noqa: E402
from neuromorph.training import History  # noqa: E402

RNG = np.random.default_rng(0)


def _softmax(z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def column_dict(geometry: str = "grid", N: int = 30, T: int = 2, h: int = 2, d: int = 6,
                classes: int = 3) -> tuple[dict, np.ndarray]:
    """A `column` node's inspect dict and the samples' labels: response norms that favour
    class (column index mod classes)."""
    if geometry == "grid":
        shape = np.array([4, 5])
        pos = np.array([(0, i, j) for i in range(4) for j in range(5)], float)
    elif geometry == "stack":
        shape = np.array([2, 3, 3])
        pos = np.array([(2.0 * l, i, j) for l in range(2) for i in range(3) for j in range(3)])
    else:
        shape = np.array([24])
        k = np.arange(24) + 0.5
        phi, theta = np.arccos(1 - 2 * k / 24), np.pi * (1 + 5 ** 0.5) * k
        r = math.sqrt(24 / (4 * math.pi))
        pos = r * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi),
                            np.cos(phi)], 1)
    C = len(pos)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    labels = np.arange(N) % classes
    resp = RNG.normal(0, 0.1, (N, C, d))
    favour = np.arange(C) % classes
    resp[:, :, 0] += 1 + 2 * (labels[:, None] == favour[None, :])
    return {"output": resp.reshape(N, -1),
            "attention": _softmax(RNG.normal(size=(N, T, h, C, C))),
            "response": resp, "position": pos, "shape": shape, "distance": dist,
            "wiring": np.zeros((N, T, h))}, labels


def attn2d_dict(H: int = 4, W: int = 5, r: int = 1, N: int = 3, apps: int = 2, h: int = 2,
                raster: bool = True) -> dict:
    S, side = H * W, 2 * r + 1
    window = np.full((S, side * side), -1)
    for s in range(S):
        i, j = divmod(s, W)
        for di in range(-r, r + 1):
            for dj in range(-r, r + 1):
                ii, jj = i + di, j + dj
                t = ii * W + jj
                if 0 <= ii < H and 0 <= jj < W and (not raster or t <= s):
                    window[s, (di + r) * side + (dj + r)] = t
    mask = window >= 0
    att = _softmax(RNG.normal(size=(N, apps, h, S, side * side)), mask)
    att = np.where(mask, att, 0.0)
    return {"output": RNG.normal(size=(N, S * 4)), "attention": att, "window": window,
            "mask": mask, "grid": np.array([H, W])}


def energy_dict(N: int = 3, K: int = 5) -> dict:
    d: dict = {"output": RNG.normal(size=(N, 8))}
    total = np.zeros((N, K + 1))
    for name, size in (("pattern", 8), ("label", 3)):
        d[f"state.{name}"] = np.cumsum(RNG.normal(size=(N, K + 1, size)), 1)
        d[f"activation.{name}"] = np.tanh(d[f"state.{name}"])
    for name in ("pattern", "label", "mem"):
        d[f"energy.{name}"] = -np.cumsum(RNG.random((N, K + 1)), 1)
        total += d[f"energy.{name}"]
    d["energy"] = total
    return d


def neuron_dict(N: int = 2, P: int = 2, M: int = 8, A: int = 3, k: int = 3) -> dict:
    route = np.full((N, P, M), -1)
    volt = np.full((N, P, M), np.nan)
    for n in range(N):
        for p in range(P):
            length = 3 + n + p
            route[n, p, :length] = RNG.permutation(M)[:length]
            volt[n, p, :length] = RNG.random(length)
    attentive = np.zeros(M, bool)
    attentive[:A] = True
    return {"output": RNG.normal(size=(N, 16)), "route": route, "voltage": volt,
            "scores": RNG.random((N, P, A if A else M)), "count": (route >= 0).sum((1, 2)),
            "neighbors": np.stack([np.stack([(np.arange(1, k + 1) + m) % M for m in range(M)])
                                   for _ in range(P)]),
            "attentive": attentive}


def _png(fig) -> bytes:
    from matplotlib.figure import Figure
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    data = buf.getvalue()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    return data


# ---------------------------------------------------------------------------- synthetic dicts
@pytest.mark.parametrize("geometry", ["grid", "stack", "sphere"])
def test_topographic_map_and_column_attention_each_geometry(geometry):
    col, labels = column_dict(geometry)
    _png(viz.topographic_map(col, labels, class_names=["a", "b", "c"]))
    _png(viz.column_attention(col))
    _png(viz.column_attention(col, sample=-1, step=0, head=1, column_id=3))
    assert viz.preferred(col, labels).tolist() == (np.arange(len(col["position"])) % 3).tolist()


def test_preferences_are_mean_norms_per_class():
    col, labels = column_dict("grid", classes=2)
    norm = np.linalg.norm(col["response"], axis=2)
    raw = viz.preferences(col, labels, relative=False)
    assert raw.shape == (20, 2)
    np.testing.assert_allclose(raw[:, 1], norm[labels == 1].mean(0))
    # relative: less the class's mean over the columns
    prefs = viz.preferences(col, labels)
    np.testing.assert_allclose(prefs, raw - raw.mean(0))
    # one-hot labels, and a class with no samples: the column's mean over the others
    p3 = viz.preferences(col, np.eye(3)[labels])
    np.testing.assert_allclose(p3[:, :2], prefs)
    np.testing.assert_allclose(p3[:, 2], prefs.mean(1))
    assert (viz.preferred(col, labels) != 2).all()


def test_neighbours_by_geometry():
    grid, _ = column_dict("grid")
    pairs = viz.neighbours(grid)
    assert len(pairs) == 4 * 4 + 3 * 5  # horizontal + vertical links of a 4x5 grid
    assert (0, 1) in pairs and (0, 5) in pairs and (0, 6) not in pairs
    stack, _ = column_dict("stack")
    assert len(viz.neighbours(stack)) == 2 * 12  # within each 3x3 layer (layers 2 apart)
    sphere, _ = column_dict("sphere")
    assert viz.neighbours(sphere)  # the closest pair(s) of the lattice


def test_smoothness_smooth_random_and_checkerboard():
    col, _ = column_dict("grid")
    H, W = 4, 5
    i, j = np.divmod(np.arange(H * W), W)
    smooth = np.stack([i, H - i, np.zeros(H * W)], 1).astype(float)  # changes slowly by row
    checker = np.stack([(i + j) % 2, (i + j + 1) % 2], 1).astype(float)
    assert viz.smoothness(col, prefs=checker) == pytest.approx(-1.0)
    assert viz.smoothness(col, prefs=np.tile([1.0, 0.0], (H * W, 1))) == pytest.approx(1.0)
    rnd = np.random.default_rng(1).random((H * W, 5))
    assert abs(viz.smoothness(col, prefs=rnd)) < 0.4
    # by hand: neighbours along a row agree exactly, across rows less
    c = smooth - smooth.mean(1, keepdims=True)
    u = c / np.linalg.norm(c, axis=1, keepdims=True)
    want = np.mean([u[a] @ u[b] for a, b in viz.neighbours(col)])
    assert viz.smoothness(col, prefs=smooth) == pytest.approx(want)


def test_grid_attention_places_the_window_on_the_grid():
    d = attn2d_dict()
    _png(viz.grid_attention(d, cell=(2, 3)))
    _png(viz.grid_attention(d, cell=0, sample=2, application=0, head=1))
    fig = viz.grid_attention(d, cell=13, head=0)
    im = fig.axes[0].images[0].get_array()
    s = 13
    want = np.zeros(20)
    ok = d["window"][s] >= 0
    want[d["window"][s][ok]] = d["attention"][0, -1, 0, s][ok]
    np.testing.assert_allclose(np.asarray(im).ravel(), want)
    assert np.asarray(im).sum() == pytest.approx(1.0)
    assert np.asarray(im).ravel()[s + 1:].sum() == 0  # raster mask: nothing after the cell


def test_energy_pictures():
    d = energy_dict()
    fig = viz.energy_descent(d, sample=1)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["pattern", "label", "mem", "total"]
    np.testing.assert_allclose(fig.axes[0].lines[-1].get_ydata(), d["energy"][1])
    _png(fig)
    _png(viz.state_trajectory(d))
    _png(viz.state_trajectory(d, sample=-1, layers=["label"]))


def test_routing_picture():
    d = neuron_dict()
    _png(viz.routing(d))
    _png(viz.routing(d, sample=1, section=1))
    no_attentive = neuron_dict(A=0)
    _png(viz.routing(no_attentive))


def test_history_curves():
    h = History([{"epoch": 1, "loss": 1.0, "val_loss": 1.2, "val_accuracy": 0.5},
                 {"epoch": 2, "loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.8}],
                np.linspace(1.5, 0.4, 20))
    fig = viz.history_curves(h)
    assert len(fig.axes) == 2
    _png(fig)
    _png(viz.history_curves(History([{"epoch": 1, "loss": 0.3}], [0.4, 0.2])))
    with pytest.raises(DataError, match="empty"):
        viz.history_curves(History())
    with pytest.raises(DataError, match="History"):
        viz.history_curves({"loss": [1.0]})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- errors
def test_wrong_kind_names_what_was_expected_and_given():
    col, labels = column_dict()
    with pytest.raises(DataError, match=r"`attn2d` node.*got keys .*response.*without window"):
        viz.grid_attention(col, 0)
    with pytest.raises(DataError, match=r"`column` node.*without response"):
        viz.topographic_map(attn2d_dict(), [0, 1, 2])
    with pytest.raises(DataError, match=r"`neuron` node"):
        viz.routing(energy_dict())
    with pytest.raises(DataError, match=r"`energy` block"):
        viz.energy_descent(neuron_dict())
    with pytest.raises(DataError, match=r"`energy` block"):
        viz.state_trajectory(col)
    with pytest.raises(DataError, match="got list"):
        viz.column_attention([1, 2])  # type: ignore[arg-type]


def test_out_of_range_indices_name_the_range():
    d = attn2d_dict()
    with pytest.raises(DataError, match=r"cell 20 is out of range: there are 20 \(0..19\)"):
        viz.grid_attention(d, 20)
    with pytest.raises(DataError, match=r"cell row 4 is out of range"):
        viz.grid_attention(d, (4, 0))
    with pytest.raises(DataError, match=r"sample 3 is out of range: there are 3"):
        viz.grid_attention(d, 0, sample=3)
    with pytest.raises(DataError, match=r"head 2 is out of range"):
        viz.grid_attention(d, 0, head=2)
    with pytest.raises(DataError, match="must be an integer"):
        viz.grid_attention(d, 1.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"sample 9"):
        viz.energy_descent(energy_dict(), sample=9)
    with pytest.raises(DataError, match=r"layers: expected some of pattern, label, got nope"):
        viz.state_trajectory(energy_dict(), layers=["nope"])
    with pytest.raises(DataError, match=r"section 2 is out of range"):
        viz.routing(neuron_dict(), section=2)
    col, labels = column_dict()
    with pytest.raises(DataError, match=r"column 20 is out of range"):
        viz.column_attention(col, column_id=20)
    with pytest.raises(DataError, match=r"step 2 is out of range"):
        viz.column_attention(col, step=2)
    with pytest.raises(DataError, match=r"labels: expected 30 class ids"):
        viz.topographic_map(col, labels[:5])
    with pytest.raises(DataError, match=r"class_names: expected 3 names, got 1"):
        viz.topographic_map(col, labels, class_names=["x"])


# ---------------------------------------------------------------------------- real models
needs_inspect = pytest.mark.skipif(not hasattr(nm, "inspect") and not hasattr(nm.api, "inspect"),
                                   reason="this engine has no nm.inspect yet")


def _inspect(h, x, nodes=None):
    return (getattr(nm, "inspect", None) or nm.api.inspect)(h, x, nodes=nodes)


def _built(name: str, batch: int = 4) -> int:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genesis-lm's documented causal-routing warning
        h = nm.compile(nm.models.path(name), batch, 0.01)
    nm.seed(0)
    return nm.build(h)


@needs_inspect
def test_pictures_of_real_inspected_models():
    from neuromorph.datasets import completion, digits
    h = _built("columnformer-classifier")
    x, labels = digits(12, seed=1)
    col = _inspect(h, x, "cortex")["cortex"]
    _png(viz.topographic_map(col, labels))
    _png(viz.column_attention(col, column_id=5))
    assert -1 <= viz.smoothness(col, labels) <= 1
    assert len(viz.neighbours(col)) == 2 * 4 * 3  # the 4x4 sheet's grid links
    nm.release(h)

    h = _built("heptapod-lm")
    ids = RNG.integers(0, 96, (3, 64)).astype(float)
    grid = _inspect(h, ids, "grid")["grid"]
    fig = viz.grid_attention(grid, (4, 4))
    assert np.asarray(fig.axes[0].images[0].get_array()).sum() == pytest.approx(1.0, abs=1e-5)
    _png(fig)
    nm.release(h)

    h = _built("hamux-completion")
    xs, _, _ = completion(4, seed=2)
    mem = _inspect(h, xs, "memory")["memory"]
    fig = viz.energy_descent(mem, sample=2)
    np.testing.assert_allclose(fig.axes[0].lines[-1].get_ydata(), nm.energy(h, xs)[2],
                               rtol=1e-4, atol=1e-4)
    _png(fig)
    _png(viz.state_trajectory(mem))
    nm.release(h)

    h = _built("genesis-lm")
    brain = _inspect(h, ids, "brain")["brain"]
    for n in range(3):
        _png(viz.routing(brain, sample=n))
    nm.release(h)
