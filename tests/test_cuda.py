"""The CUDA backend. Without a GPU (CI) only the build and the errors are checked; the tests
that need a device skip. On a GPU machine: every op's forward and backward against the CPU
backend, example models training to the same losses, device-independent model files."""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm

# The neuron models with causal routing compile with the compiler's "routing sees later tokens"
# warning (its own test: tests/test_neuron.py); here they are only compared CPU vs GPU. Without
# a device these tests skip, so CI never saw the warning turn into an error (pyproject's
# filterwarnings = error): 10 device tests failed on an H200 for that alone.
pytestmark = pytest.mark.filterwarnings("ignore::mdl.diagnostics.MDLWarning")

HAVE_GPU, GPU_NAME = nm.cuda_available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no CUDA device: {GPU_NAME}")
MLP = "/xavier, const_uneven 0.1 0.2/ (x, 6) (h, 16, <tanh>) (y, 3, <softmax>, <cross_entropy>)"


def test_backend_is_built_whenever_nvcc_is_present():
    """What build_info() claims, what the package holds and what cuda_available() says agree,
    with or without nvcc: the plugin library ships exactly when the backend was built, and the
    reason for no GPU names the build only when it has no backend. With nvcc on PATH the build
    must have found it (a build made with NM_WITH_CUDA=OFF on purpose, such as the mutation
    job's, says so in NEUROMORPH_BUILT_WITHOUT_CUDA)."""
    import os
    from pathlib import Path
    info = nm.build_info()
    assert isinstance(info["cuda_built"], bool) and isinstance(info["cuda_compiler_found"], bool)
    assert info["cuda_built"] == info["cuda_compiler_found"]  # CMake builds it iff it found nvcc
    lib = Path(nm._core.__file__).parent / "lib"  # next to the module (editable installs too)
    runtime = sorted(p.name for p in lib.glob("libneuromorph_runtime*"))
    assert runtime, f"no engine library in {lib}"
    plugin = (lib / "libneuromorph_cuda.so").exists()
    assert plugin == info["cuda_built"], (plugin, info)
    ok, why = nm.cuda_available()
    if info["cuda_built"]:
        assert ok or ("no CUDA backend" not in why and "cannot load" not in why), why
    else:
        assert not ok and "no CUDA backend" in why, why
    if shutil.which("nvcc") and not os.environ.get("NEUROMORPH_BUILT_WITHOUT_CUDA"):
        assert info["cuda_compiler_found"] and info["cuda_built"]


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_cuda_without_a_device_is_a_clear_device_error():
    h = nm.compile(MLP, 4, 0.1)
    with pytest.raises(nm.DeviceError) as err:
        nm.build(h, device="cuda")
    msg = str(err.value)
    assert "no CUDA device" in msg or "no CUDA backend" in msg or "cannot load" in msg
    nm.build(h)  # the model is untouched and still works on the CPU
    assert nm.info(h)["device"] == "cpu"
    nm.train(h, np.zeros((1, 4, 6)), np.eye(3)[[0, 1, 2, 0]][None], verbosity=0)
    nm.release(h)


def test_device_argument_errors():
    h = nm.compile(MLP, 4, 0.1)
    with pytest.raises(nm.DeviceError, match="'cpu' or 'cuda'"):
        nm.build(h, device="tpu")
    h64 = nm.compile(MLP, 4, 0.1, dtype="float64")
    with pytest.raises(nm.DeviceError, match="float64"):
        nm.build(h64, device="cuda")
    with pytest.raises(nm.StateError):
        nm.to_device(h, "cuda")  # not built
    nm.release(h)
    nm.release(h64)


# ----------------------------------------------------------------------------- on a GPU

OPS = [
    "/xavier, const_uneven 0.1 0.2/ (x, 7) (a, 33, <{act}>) (y, 5, <sigmoid>, <mse>)".format(act=a)
    for a in ("sigmoid", "tanh", "relu", "linear", "relu_leaky", "relu_parametric", "elu", "selu",
              "swish", "gelu", "softmax")
] + [
    "/xavier, zero/ (x, 9) (y, 4, <softmax>, <cross_entropy>)",
    "/xavier, zero/ (x, 9) (y, 4, <tanh>, <{loss}>)".format(loss="mae"),
    "/xavier, zero/ (x, 9) (y, 4, <linear>, <huber, 0.5>)",
    "/xavier, zero/ (x, 9) (y, 4, <tanh>, <hinge>)",
    "/xavier, zero/ (x, 9) (y, 4, <tanh>, <huber_modified>)",
    "/xavier, zero/ (x, 9) (y, 4, <sigmoid>, <mape>)",
    "/xavier, zero/ (x, 6) [s, (a, 6, <tanh>) | (b, 6, <relu>)] {m, a, multiplicative} "
    "[t, [v,]] (c, 6, <elu>) {n, v, average} {o, b, additive} (y, 3, <linear>, <mse>)",
]


@needs_gpu
@pytest.mark.parametrize("text", OPS)
@pytest.mark.parametrize("batch", [1, 13, 64])
def test_every_op_matches_the_cpu(text, batch):
    rng = np.random.default_rng(batch)
    out = {}
    for device in ("cpu", "cuda"):
        h = nm.compile(text, batch, 0.05)
        nm.seed(4)
        nm.build(h, device=device)
        w, o = nm.info(h)["input_width"], nm.info(h)["output_width"]
        x = rng.normal(size=(1, batch, w)) if device == "cpu" else out["x"]
        e = rng.uniform(0.1, 0.9, (1, batch, o)) if device == "cpu" else out["e"]
        out["x"], out["e"] = x, e
        loss, g = nm.gradients(h, x, e)
        out[device] = (loss, g, nm.predict(h, x))
        nm.release(h)
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-4)
    np.testing.assert_allclose(out["cuda"][2], out["cpu"][2], rtol=1e-4, atol=1e-6)
    for k, v in out["cpu"][1].items():
        np.testing.assert_allclose(out["cuda"][1][k], v, rtol=1e-4, atol=1e-6 * (np.abs(v).max() + 1))


@needs_gpu
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_training_matches_the_cpu_over_100_steps(optimizer):
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "models" / "readme-model.mdl"
    rng = np.random.default_rng(0)
    losses = {}
    for device in ("cpu", "cuda"):
        h = nm.compile(path, 8, 0.01, optimizer=optimizer, weight_decay=0.01)
        nm.seed(1)
        nm.build(h, device=device)
        w, o = nm.info(h)["input_width"], nm.info(h)["output_width"]
        r = np.random.default_rng(0)
        x, e = r.random((100, 8, w)), r.random((100, 8, o))
        nm.train(h, x, e, verbosity=0)
        losses[device] = nm.history(h)
        nm.release(h)
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("x", [1e10, 1e20, 1e30])
def test_clipping_gradients_whose_float_squares_overflow(x):
    """grad_clip with finite gradient entries past ~1.8e19 (-5e7 * x on four weights): their
    float squares are inf, and the device, which summed them in float, scaled the step to zero
    with no error. It sums in double now, as the CPU does: each weight moves by lr * clip / 2
    = 0.05 on both, at every x. (Written in session 11 without a GPU to run it.)"""
    got = {}
    for device in ("cpu", "cuda"):
        h = nm.compile("/xavier,zero/ (x, 4) (y, 1, <linear>, <mse>)", 1, 0.1, grad_clip=1.0)
        nm.build(h, device=device)
        nm.set_params(h, {"y.weight": np.zeros((1, 4)), "y.bias": np.zeros(1)})
        nm.train(h, np.full((1, 4), x), np.array([[5e7]]), verbosity=0)
        got[device] = nm.get_params(h)["y.weight"]
        nm.release(h)
    np.testing.assert_allclose(got["cpu"], 0.05, rtol=1e-5)
    np.testing.assert_allclose(got["cuda"], got["cpu"], rtol=1e-5)


@needs_gpu
def test_model_files_move_between_devices(tmp_path):
    h = nm.compile(MLP, 4, 0.1, optimizer="adam")
    nm.seed(0)
    nm.build(h, device="cuda")
    x, e = np.random.rand(3, 4, 6), np.eye(3)[np.random.randint(0, 3, (3, 4))]
    nm.train(h, x, e, verbosity=0)
    nm.save(h, tmp_path / "g.nm")
    c = nm.load(tmp_path / "g.nm")                 # GPU file on the CPU
    g = nm.load(tmp_path / "g.nm", device="cuda")  # and back on the GPU
    np.testing.assert_allclose(nm.predict(c, x), nm.predict(h, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nm.train(g, x, e, verbosity=0), nm.train(c, x, e, verbosity=0), rtol=1e-4)
    for m in (h, c, g):
        nm.release(m)


# ----------------------------------------------------------------------------- every node kind

ROOT = Path(__file__).resolve().parents[1]
KIND_MODELS = sorted((ROOT / "tests" / "gpu_models").glob("*.mdl"))
SHIPPED = sorted((ROOT / "models").glob("*.mdl"))
RECURRENT = [
    "/xavier,zero/ (x, 4) {m, p, additive} (a, 4, <tanh>) [t, [p,]] (y, 4, <linear>, <mse>)",
    "/xavier, const_flat 0.1/ (x, 5) {m, q, multiplicative} (a, 7, <sigmoid>) (h, 5, <tanh>) "
    "[t, [q,]] (y, 3, <softmax>, <cross_entropy>)",
]
CELLS = [
    "/xavier, zero/ (x, 12) (a, 20, <gelu>, cells 4) (y, 8, <softmax>, <cross_entropy>, cells 4)",
    "/he, zero/ (x, 15) (a, 9, <relu>, cells 3) (b, 7, <tanh>) (y, 3, <sigmoid>, <mse>)",
]


def _ir(h):
    import json
    return json.loads(nm._core.ir_json(h))


def _data(h, rng, n, batch, class_ids=False):
    """Inputs and targets a model takes: token ids for an embed reading the input, random
    normal numbers otherwise; targets in (0.1, 0.9), one-hot rows, or class ids per cell."""
    ir = _ir(h)
    info = nm.info(h)
    w, o = info["input_width"], info["output_width"]
    vocab = [nd["struct"]["options"]["vocab"] for nd in ir["nodes"]
             if nd["kind"] in ("embed", "attn2d") and "vocab" in nd["struct"]["options"]
             and nd["inputs"][0]["node"] == ir["input"]]
    x = (rng.integers(0, vocab[0], (n, batch, w)).astype(np.float32) if vocab
         else rng.normal(size=(n, batch, w)).astype(np.float32))
    cells, width, loss = nm._output(h)
    if class_ids and cells > 1:
        return x, rng.integers(0, width, (n, batch, cells)).astype(np.float32)
    if loss == "cross_entropy":
        e = np.eye(width, dtype=np.float32)[rng.integers(0, width, (n, batch, cells))]
        return x, e.reshape(n, batch, o)
    return x, rng.uniform(0.1, 0.9, (n, batch, o)).astype(np.float32)


def _both(text, batch, **kw):
    hs = {}
    for device in ("cpu", "cuda"):
        hs[device] = nm.compile(text, batch, 0.01, **kw)
        nm.seed(7)
        nm.build(hs[device], device=device)
    return hs


def _reference(text, batch, x, e):
    """The float64 CPU model's gradients: the arbiter when the two float32 backends differ."""
    h = nm.compile(text, batch, 0.01, dtype="float64")
    nm.seed(7)
    nm.build(h)
    try:
        return nm.gradients(h, x.astype(np.float64), e.astype(np.float64))[1]
    finally:
        nm.release(h)


def _close(a, b, what, rtol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max() if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * (scale + 1e-3), err_msg=what)


def _same_step(text, batch, seed, class_ids=False, train=True):
    """train=False: inference only (dropout draws differ between the devices)."""
    hs = _both(text, batch)
    try:
        x, e = _data(hs["cpu"], np.random.default_rng(seed), 1, batch, class_ids)
        if not train:
            _close(nm.predict(hs["cuda"], x), nm.predict(hs["cpu"], x), "outputs")
            _close(nm.evaluate(hs["cuda"], x, e), nm.evaluate(hs["cpu"], x, e), "loss")
            return
        out = {d: (nm.gradients(h, x, e), nm.predict(h, x)) for d, h in hs.items()}
        (lc, gc), pc = out["cpu"]
        (lg, gg), pg = out["cuda"]
        assert lg == pytest.approx(lc, rel=1e-4, abs=1e-6)
        _close(pg, pc, "outputs")
        ref = None
        for k, v in gc.items():
            try:
                _close(gg[k], v, f"gradient of {k}")
            except AssertionError:
                # Sums over a batch in another order differ by rounding; where they differ by
                # more than 1e-4, the GPU must be as close to the float64 model as the CPU's
                # float32 is (within 2x).
                ref = ref if ref is not None else _reference(text, batch, x, e)
                err_gpu = np.abs(gg[k] - ref[k]).max()
                err_cpu = np.abs(v - ref[k]).max()
                assert err_gpu <= 2 * err_cpu + 1e-7 * (np.abs(ref[k]).max() + 1), (k, err_gpu, err_cpu)
    finally:
        for h in hs.values():
            nm.release(h)


@needs_gpu
@pytest.mark.parametrize("path", KIND_MODELS, ids=lambda p: p.stem)
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_every_node_kind_matches_the_cpu(path, batch):
    """Forward, every parameter gradient and the loss of each kind's variants (tests/gpu_models)
    equal the CPU backend's, at batch 1, an odd batch and 64. Models with dropout compare in
    inference (the devices draw different masks)."""
    _same_step(path.read_text(), batch, batch, train="dropout" not in path.stem)


@needs_gpu
@pytest.mark.parametrize("text", RECURRENT + CELLS, ids=["rec-add", "rec-gate", "cells-ce", "cells-mse"])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_recurrent_and_position_wise_models_match_the_cpu(text, batch):
    _same_step(text, batch, 3 + batch)


@needs_gpu
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_models_train_100_steps_like_the_cpu(path):
    """Each model in models/ trains 100 steps (adam) with the CPU's losses within 1e-4; the
    recurrent ones through their stream, the language models on class-id targets."""
    batch = 8
    hs = _both(path, batch, optimizer="adam")
    try:
        x, e = _data(hs["cpu"], np.random.default_rng(1), 25, batch, class_ids=True)
        losses = {}
        for d, h in hs.items():
            for _ in range(4):
                nm.train(h, x, e, verbosity=0)
            losses[d] = nm.history(h)
        assert len(losses["cuda"]) == 100
        _close(losses["cuda"], losses["cpu"], "losses", rtol=1e-4 if "lm" not in path.stem else 2e-4)
    finally:
        for h in hs.values():
            nm.release(h)


@needs_gpu
def test_partial_batches_and_predict_rows_match_the_cpu():
    text = "/xavier, zero/ (x, 9) (a, 17, <tanh>) (y, 4, <softmax>, <cross_entropy>)"
    hs = _both(text, 8)
    try:
        x, e = _data(hs["cpu"], np.random.default_rng(2), 1, 8)
        x, e = x.reshape(8, -1)[:5], e.reshape(8, -1)[:5]
        for d in hs:
            nm.fit(hs[d], np.concatenate([x, x, x]), np.concatenate([e, e, e]), verbosity=0)
        _close(nm.history(hs["cuda"]), nm.history(hs["cpu"]), "losses")
        _close(nm.predict(hs["cuda"], x[:3]), nm.predict(hs["cpu"], x[:3]), "predict_rows")
    finally:
        for h in hs.values():
            nm.release(h)


@needs_gpu
def test_fused_and_plain_paths_agree(monkeypatch):
    """The fused narrow-MLP kernel equals the plain (cuBLAS + elementwise) path to 1e-5 on
    random models, including odd widths and batch 1."""
    rng = np.random.default_rng(5)
    acts = ["tanh", "relu", "gelu", "sigmoid", "elu", "swish", "linear"]
    for trial in range(6):
        widths = [int(w) for w in rng.integers(1, 129, int(rng.integers(2, 6)))]
        hidden = "".join(f"(l{i}, {w}, <{acts[int(rng.integers(len(acts)))]}>)"
                         for i, w in enumerate(widths[1:-1]))
        ce = trial % 2 == 0
        out = f"(y, {widths[-1]}, <softmax>, <cross_entropy>)" if ce else f"(y, {widths[-1]}, <linear>, <mse>)"
        text = f"/xavier, const_uneven 0.1 0.2/ (x, {widths[0]}) {hidden} {out}"
        batch = [1, 13, 256][trial % 3]
        res = {}
        for plain in ("0", "1"):
            monkeypatch.setenv("NEUROMORPH_CUDA_PLAIN", plain)
            h = nm.compile(text, batch, 0.05)
            nm.seed(3)
            nm.build(h, device="cuda")
            x, e = _data(h, np.random.default_rng(trial), 3, batch)
            loss, g = nm.gradients(h, x[:1], e[:1])
            nm.train(h, x, e, verbosity=0)
            res[plain] = (loss, g, nm.history(h), nm.predict(h, x))
            nm.release(h)
        assert res["0"][0] == pytest.approx(res["1"][0], rel=1e-5, abs=1e-7)
        for k, v in res["1"][1].items():
            _close(res["0"][1][k], v, k, rtol=1e-5)
        _close(res["0"][2], res["1"][2], "losses", rtol=1e-5)
        _close(res["0"][3], res["1"][3], "outputs", rtol=1e-5)


@needs_gpu
def test_moving_between_devices_is_exact():
    """to_device moves parameters, optimizer state, recurrent state and the step count exactly:
    the next step is the same on either device."""
    text = RECURRENT[1]
    h = nm.compile(text, 6, 0.01, optimizer="adam")
    nm.seed(2)
    nm.build(h)
    x, e = _data(h, np.random.default_rng(0), 4, 6)
    nm.train(h, x, e, verbosity=0)
    before = nm.get_params(h)
    nm.to_device(h, "cuda")
    assert nm.info(h)["device"] == "cuda"
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])
    nm.to_device(h, "cpu")
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])
    ref = nm.compile(text, 6, 0.01, optimizer="adam")
    nm.seed(2)
    nm.build(ref)
    nm.train(ref, x, e, verbosity=0)
    nm.to_device(h, "cuda")
    _close(nm.train(h, x, e, verbosity=0), nm.train(ref, x, e, verbosity=0), "next losses")
    nm.release(h)
    nm.release(ref)


@needs_gpu
def test_energy_trajectory_and_neuron_stats_match_the_cpu():
    for path, what in ((ROOT / "models" / "energy-model.mdl", "energy"),
                       (ROOT / "models" / "neuron-model.mdl", "stats")):
        hs = _both(path, 4)
        try:
            x, _ = _data(hs["cpu"], np.random.default_rng(0), 2, 4)
            if what == "energy":
                _close(nm.energy(hs["cuda"], x), nm.energy(hs["cpu"], x), "energies")
            else:
                for d in hs:
                    nm.predict(hs[d], x)
                sc, sg = nm.stats(hs["cpu"]), nm.stats(hs["cuda"])
                assert sc.keys() == sg.keys()
                for k in sc:
                    _close(sg[k], sc[k], k)
        finally:
            for h in hs.values():
                nm.release(h)


@needs_gpu
def test_drawn_start_states_move_with_the_model():
    """`init normal` start states come from the build's seed: a model moved to the GPU and
    back, and its CPU copy for inspect, start the descent from the same states."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = nm.compile(ROOT / "tests" / "gpu_models" / "energy_init_normal.mdl", 4, 0.01)
    nm.seed(9)
    nm.build(h)
    x = np.random.default_rng(0).normal(size=(8, nm.info(h)["input_width"]))
    want = nm.predict(h, x)
    try:
        nm.to_device(h, "cuda")
        _close(nm.predict(h, x), want, "on the GPU")
        _close(nm.inspect(h, x)["done"]["output"], want, "inspect of the GPU model")
        nm.to_device(h, "cpu")
        np.testing.assert_allclose(nm.predict(h, x), want, rtol=1e-5, atol=1e-6)
    finally:
        nm.release(h)


@needs_gpu
def test_inspect_on_the_gpu_matches_the_cpu():
    """A GPU model is inspected on a CPU copy: the same arrays, and the GPU model unchanged."""
    for path in (ROOT / "models" / "columnformer-classifier.mdl",
                 ROOT / "models" / "hamux-completion.mdl"):
        hs = _both(path, 4)
        try:
            x, _ = _data(hs["cpu"], np.random.default_rng(0), 2, 4)
            before = nm.get_params(hs["cuda"])
            rc, rg = (nm.inspect(hs[d], x.reshape(-1, x.shape[-1])) for d in ("cpu", "cuda"))
            for node in rc:
                for k in rc[node]:
                    _close(rg[node][k], rc[node][k], f"{node}.{k}")
            assert nm.info(hs["cuda"])["device"] == "cuda"
            for k, v in nm.get_params(hs["cuda"]).items():
                np.testing.assert_array_equal(v, before[k])
        finally:
            for h in hs.values():
                nm.release(h)


@needs_gpu
@pytest.mark.parametrize("lib", ["torch", "cupy"])
def test_data_already_on_the_device_trains_in_place(lib):
    """Inputs held by CuPy or PyTorch on the GPU are read in place and train exactly as the same
    numbers from host memory."""
    mod = pytest.importorskip(lib)
    to_dev = (lambda a: mod.asarray(a)) if lib == "cupy" else (lambda a: mod.from_numpy(a).cuda())
    text = "/xavier, zero/ (x, 10) (a, 32, <relu>) (y, 4, <softmax>, <cross_entropy>)"
    hs = {}
    for where in ("host", "device"):
        hs[where] = nm.compile(text, 16, 0.05)
        nm.seed(9)
        nm.build(hs[where], device="cuda")
    x, e = _data(hs["host"], np.random.default_rng(4), 6, 16)
    nm.train(hs["host"], x, e, verbosity=0)
    nm.train(hs["device"], to_dev(x), to_dev(e), verbosity=0)
    _close(nm.history(hs["device"]), nm.history(hs["host"]), "losses", rtol=1e-6)
    _close(nm.predict(hs["device"], to_dev(x[0])), nm.predict(hs["host"], x[0]), "predict", rtol=1e-6)
    with pytest.raises(nm.DeviceError):
        nm.train(hs["host"], to_dev(x), e, verbosity=0)  # mixed places
    for h in hs.values():
        nm.release(h)
    cpu = nm.compile(text, 16, 0.05)
    nm.build(cpu)
    with pytest.raises(nm.DeviceError, match="cuda"):
        nm.train(cpu, to_dev(x), to_dev(e), verbosity=0)
    nm.release(cpu)


@needs_gpu
def test_divergence_and_bad_class_ids_are_typed_errors_on_the_gpu():
    h = nm.compile("/xavier, zero/ (x, 3) (a, 8, <relu>) (y, 2, <linear>, <mse>)", 4, 1e30)
    nm.build(h, device="cuda")
    before = nm.get_params(h)
    x = np.full((2, 4, 3), 1e30, np.float32)
    with pytest.raises(nm.DivergedError, match="batch 0"):
        nm.train(h, x, np.zeros((2, 4, 2)), verbosity=0)
    for k, v in nm.get_params(h).items():
        np.testing.assert_array_equal(v, before[k])  # as before the diverged batch
    nm.release(h)
    h = nm.compile(CELLS[0], 4, 0.1)
    nm.build(h, device="cuda")
    with pytest.raises(nm.DataError, match="class id"):
        nm.train(h, np.zeros((1, 4, 12)), np.full((1, 4, 4), 8.0), verbosity=0)  # ids are 0..7
    nm.release(h)


@needs_gpu
def test_c_api_moves_a_model_to_the_gpu(tmp_path):
    """nm_to_device through the C API (ctypes on the engine library)."""
    import ctypes
    lib = ctypes.CDLL(str(next((Path(nm._core.__file__).parent / "lib").glob("libneuromorph_runtime*"))))
    lib.nm_last_error.restype = ctypes.c_char_p
    ir = nm._core.ir_json(nm.compile(MLP, 4, 0.1)).encode()
    h = ctypes.c_int32()
    assert lib.nm_load_ir(ir, 4, ctypes.c_double(0.1), ctypes.byref(h)) == 0
    assert lib.nm_build(h) == 0
    assert lib.nm_to_device(h, b"cuda") == 0, lib.nm_last_error()
    x = np.random.rand(2, 4, 6).astype(np.float32)
    e = np.eye(3, dtype=np.float32)[np.random.randint(0, 3, (2, 4))]
    loss = ctypes.c_double()
    f = ctypes.POINTER(ctypes.c_float)
    assert lib.nm_train(h, x.ctypes.data_as(f), e.ctypes.data_as(f), 2, ctypes.byref(loss)) == 0
    assert np.isfinite(loss.value)
    assert lib.nm_to_device(h, b"tpu") == 6  # NM_ERR_DEVICE
    assert lib.nm_save(h, str(tmp_path / "c.nm").encode()) == 0
    assert lib.nm_release(h) == 0
