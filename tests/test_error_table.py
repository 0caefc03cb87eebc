"""One error table (csrc/core/errors.cpp, nm::describe) for the C API and Python: every engine
error class maps to a Python class that exists, and the same misuse gives the matching C status
and Python exception."""
import ctypes
import re
from pathlib import Path

import pytest

import neuromorph as nm
from neuromorph import errors

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_name_in_the_table_is_a_neuromorph_error():
    table = (ROOT / "csrc" / "core" / "errors.cpp").read_text()
    names = set(re.findall(r'NM_ERR_\w+, "(\w+)"', table))
    assert {"IRError", "HandleError", "StateError", "ShapeError", "DataError", "DeviceError",
            "ModelFileError", "OutOfMemoryError", "DivergedError", "NeuromorphError"} <= names
    for name in names:
        assert issubclass(getattr(errors, name), errors.NeuromorphError), name
    header = (ROOT / "csrc" / "include" / "neuromorph" / "neuromorph.h").read_text()
    for code in set(re.findall(r"(NM_ERR_\w+)", table)):
        assert code in header, code


@pytest.fixture(scope="module")
def capi():
    lib = ctypes.CDLL(str(next((Path(nm._core.__file__).parent / "lib").glob("libneuromorph_runtime*"))))
    lib.nm_last_error.restype = ctypes.c_char_p
    return lib


def test_c_and_python_report_the_same_misuse_alike(capi, tmp_path):
    h = nm.compile("/xavier, zero/ (x, 2) (y, 2, <linear>, <mse>)", 2, 0.1)
    nm.release(h)
    assert capi.nm_build(h) == 2  # NM_ERR_HANDLE
    with pytest.raises(nm.HandleError):
        nm.build(h)
    out = ctypes.c_int32()
    assert capi.nm_load_ir(b"{not json", 2, ctypes.c_double(0.1), ctypes.byref(out)) == 1  # NM_ERR_IR
    assert capi.nm_last_error()
    junk = tmp_path / "junk.nm"
    junk.write_bytes(b"not a model file at all")
    assert capi.nm_load(str(junk).encode(), ctypes.byref(out)) == 7  # NM_ERR_FILE
    with pytest.raises(nm.ModelFileError):
        nm.load(junk)
