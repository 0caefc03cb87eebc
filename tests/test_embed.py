"""Embedding without Python: the C++ example built against the installed CMake package."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neuromorph as nm
from mdl.cli import main as mdlc

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="needs cmake and a C++ compiler")


@pytest.fixture(scope="module")
def embed(tmp_path_factory):
    build = tmp_path_factory.mktemp("embed-build")
    cmakedir = subprocess.run([sys.executable, "-m", "neuromorph", "--cmakedir"],
                              capture_output=True, text=True, check=True).stdout.strip()
    cfg = subprocess.run(["cmake", "-S", str(ROOT / "examples" / "embed"), "-B", str(build),
                          f"-Dneuromorph_DIR={cmakedir}", "-DCMAKE_BUILD_TYPE=Release"],
                         capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    b = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert b.returncode == 0, b.stdout + b.stderr
    return build / "embed"


def test_embed_trains_saves_and_python_loads_the_same_model(embed, tmp_path):
    ir = tmp_path / "model.json"
    assert mdlc(["compile", str(ROOT / "models" / "readme-model.mdl"), "-o", str(ir)]) == 0
    r = subprocess.run([str(embed), str(ir), str(tmp_path / "m.nm"), str(tmp_path / "p.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "epoch 4: mean loss" in r.stdout and "saved" in r.stdout
    lines = (tmp_path / "p.txt").read_text().splitlines()
    x = np.array(lines[0].split(), np.float32).reshape(1, 8, 128)
    want = np.array(lines[1].split(), np.float32).reshape(1, 8, 4)
    h = nm.load(tmp_path / "m.nm")
    np.testing.assert_allclose(nm.predict(h, x), want, rtol=1e-6, atol=1e-7)
    nm.release(h)


def test_c_api_errors_do_not_crash(embed, tmp_path):
    ir = tmp_path / "model.json"
    assert mdlc(["compile", str(ROOT / "models" / "readme-model.mdl"), "-o", str(ir)]) == 0
    r = subprocess.run([str(embed), "--errors"], capture_output=True, text=True,
                       env={"NM_EMBED_IR": str(ir), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == 10
    assert "unknown model handle 987654" in r.stdout
    assert "was released" in r.stdout and "already released" in r.stdout
