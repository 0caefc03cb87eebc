"""Random structured nodes and energy blocks: the compiler either compiles them or raises
MDLError with located diagnostics (never another exception), and what compiles builds, runs a
forward and backward pass, and gives finite numbers or a typed engine error."""
import re
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import mdl
import neuromorph as nm

VALUES = st.sampled_from(["0", "1", "2", "3", "4", "0.5", "-1", "8", "raster", "none", "proj",
                          "input", "grid", "stack", "sphere", "gate", "batch", "sample", "x", "2x2"])
KEYS = {
    "attn2d": ["dim", "heads", "window", "depth", "iterations", "mlp", "rope", "proj", "mask",
               "vocab", "bogus"],
    "column": ["dim", "depth", "qk", "mlp", "heads", "value", "skip", "sigma", "wiring", "power",
               "geometry", "offset", "in", "out", "pos", "inject", "bogus"],
    "neuron": ["dim", "neurons", "attentive", "heads", "dendrites", "synapses", "neighbors",
               "threshold", "seed", "sections", "causal", "route", "dropout", "bogus"],
}
SHAPES = st.sampled_from(["2x2", "2x3", "3", "1x2x2", "4", "2x2x2x2", "0x2"])


NAMES = {"mask": ["none", "raster"], "value": ["input", "proj"], "route": ["sample", "batch", "gate"],
         "geometry": ["grid", "stack", "sphere", "none"]}
SMALL = st.sampled_from(["0", "1", "2", "3", "4"])


@st.composite
def struct_model(draw):
    kind = draw(st.sampled_from(sorted(KEYS)))
    keys = draw(st.lists(st.sampled_from(KEYS[kind]), max_size=4, unique=True))
    opts = []
    for k in keys:
        if draw(st.integers(0, 9)) == 0:
            opts.append(f"{k} {draw(VALUES)}")  # anything, usually wrong
        elif k in NAMES:
            opts.append(f"{k} {draw(st.sampled_from(NAMES[k]))}")
        elif k in ("threshold", "mlp", "sigma", "wiring", "power", "offset", "dropout"):
            opts.append(f"{k} {draw(st.sampled_from(['0.2', '0.5', '1', '2']))}")
        elif k != "dim":
            opts.append(f"{k} {draw(SMALL)}")
    opts.insert(0, f"dim {draw(st.sampled_from(['4', '8']))}")
    shape = {"attn2d": ["2x2", "2x3", "1x3"], "column": ["2x2", "3", "1x2x2", "2x1x2"],
             "neuron": ["2", "3"]}[kind]
    fn = draw(st.sampled_from(["", ", <gelu>", ", <tanh>", ", <swish>"]))
    node = f"(n, {kind}, {draw(st.sampled_from(shape))}{''.join(', ' + o for o in opts)}{fn})"
    return f"/xavier, zero/ (x, 4) {node} (y, 2, <sigmoid>, <mse>)"


def _compile(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mdl.compile_text(text)


def _exercise(text):
    try:
        try:
            ir = _compile(text)
        except mdl.MDLError as e:
            # when the input width is all that is wrong, retry with the width the node asks for
            m = re.search(r"takes width (\d+)", str(e))
            if len(e.diagnostics) != 1 or not m:
                raise
            ir = _compile(re.sub(r"\(x, \d+\)", f"(x, {m.group(1)})", text, count=1))
    except mdl.MDLError as e:
        assert e.diagnostics and all(d.line >= 1 for d in e.diagnostics)
        return
    h = nm.compile_ir(ir.to_json(), 2, 0.05, dtype="float64")
    try:
        nm.seed(0)
        nm.build(h)
        w = nm.info(h)["input_width"]
        x = np.random.default_rng(0).integers(0, 2, (1, 2, w)).astype(float)
        loss, grads = nm.gradients(h, x, np.full((1, 2, 2), 0.5))
        assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    except nm.NeuromorphError:
        pass  # typed (e.g. a token id outside a vocabulary)
    finally:
        nm.release(h)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(struct_model())
def test_random_structured_nodes(text):
    _exercise(text)


LAGS = st.sampled_from(["<tanh>", "<softmax>", "<relu>", "<gelu>", "<repu, 1>", "<repu, 3>",
                        "<layernorm>", "<exp, -1>", "", "<linear, 2>"])
SYN = st.sampled_from(["dense", "bias", "hidden", "tensor", "attention", "mixer", "conv", "nope"])


@st.composite
def energy_model(draw):
    n = draw(st.integers(1, 3))
    layers = [f"(l{i}, {draw(st.sampled_from(['2', '3', '2x2', '2x2x1', '1x1x1']))}"
              f"{', bias 1' if draw(st.booleans()) else ''}, {draw(LAGS)})" for i in range(n)]
    syns = []
    for k in range(draw(st.integers(0, 3))):
        refs = " ".join(f"l{draw(st.integers(0, n))}" for _ in range(draw(st.integers(1, 3))))
        extra = draw(st.sampled_from(["", ", units 2", ", heads 2, qk 2", ", kernel 1",
                                      ", kernel 2, pool max, window 1", ", <relu>"]))
        syns.append(f"(s{k}, synapse {draw(SYN)}, {refs}{extra})")
    opts = draw(st.sampled_from(["", "steps 2, dt 0.3, ", "steps 0, ", "dt 2, clamp 0, ",
                                 "out l1, init normal, "]))
    return (f"/xavier, zero/ (x, {draw(st.sampled_from([2, 3, 4]))}) "
            f"[e, energy, {opts}{' '.join(layers + syns)}] (y, 2, <sigmoid>, <mse>)")


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(energy_model())
def test_random_energy_blocks(text):
    _exercise(text)
