"""The CUDA backend. Without a GPU (CI) only the build and the errors are checked; the tests
that need a device skip. On a GPU machine: every op's forward and backward against the CPU
backend, example models training to the same losses, device-independent model files."""
import shutil

import numpy as np
import pytest

import neuromorph as nm

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
    "/xavier, zero/ (x, 5) [s, (a, 6, <tanh>) | (b, 6, <relu>)] {m, a, multiplicative} "
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


@needs_gpu
def test_unsupported_models_say_so():
    h = nm.compile("/xavier,zero/ (x, 4) {m, p, additive} (a, 4, <tanh>) [t, [p,]] "
                   "(y, 4, <linear>, <mse>)", 4, 0.1)
    with pytest.raises(nm.DeviceError, match="recurrent"):
        nm.build(h, device="cuda")
    nm.release(h)
