"""A model used from Jupyter: a notebook run by nbclient shows the training progress bar (a
widget where ipywidgets is installed) and the model's HTML summary.

Needs the `notebook` extra (nbclient, nbformat, ipykernel, ipywidgets; also in `test`); it
is skipped, saying which package is missing, where they are not installed. The kernel is
the interpreter running pytest, so it imports the same neuromorph.
"""
import importlib.util
import re

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (extra: notebook)")
nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (extra: notebook)")
if importlib.util.find_spec("ipykernel") is None:
    pytest.skip("ipykernel not installed (extra: notebook)", allow_module_level=True)

WIDGET = "application/vnd.jupyter.widget-view+json"

CELLS = [
    "import numpy as np\nimport neuromorph as nm",
    "nm.seed(0)\n"
    "m = nm.Model('/xavier,zero/ (x, 2) (h, 8, <tanh>) (y, 1, <sigmoid>, <mse>)',\n"
    "             batch_size=4, learning_rate=0.5).build()\n"
    "X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)\n"
    "x, y = np.tile(X, (16, 1)), np.tile(np.array([[0], [1], [1], [0]], np.float32), (16, 1))",
    "m.fit(x, y, epochs=2, verbosity=1)",
    "m",
    "m.summary()",
]
FIT, REPR, SUMMARY = 2, 3, 4


def _run(tmp_path, monkeypatch):
    # keep the kernel's files (connection file, IPython profile) inside tmp_path
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(nb, str(tmp_path / "run.ipynb"))  # left for a look when the test fails
    return nb


def _text(out) -> str:
    if out["output_type"] == "stream":
        return out["text"]
    return out.get("data", {}).get("text/plain", "")


def test_notebook_shows_progress_and_html_summary(tmp_path, monkeypatch):
    nb = _run(tmp_path, monkeypatch)
    errors = [f"cell {i}: {o['ename']}: {o['evalue']}\n" + "\n".join(o["traceback"])
              for i, cell in enumerate(nb.cells) for o in cell.outputs
              if o["output_type"] == "error"]
    assert not errors, "\n".join(errors)

    fit = nb.cells[FIT].outputs
    if importlib.util.find_spec("ipywidgets") is not None:
        assert any(WIDGET in o.get("data", {}) for o in fit), \
            f"no progress widget in the fit cell's outputs: {fit}"
    else:  # tqdm.auto falls back to a text bar: "... 8/16 [00:00<00:00, ...]"
        assert any(re.search(r"\d+/\d+ \[", _text(o)) for o in fit), \
            f"no text progress bar in the fit cell's outputs: {fit}"

    shown = [o for o in nb.cells[REPR].outputs if o["output_type"] == "execute_result"]
    assert len(shown) == 1 and "text/html" in shown[0]["data"], nb.cells[REPR].outputs
    page = shown[0]["data"]["text/html"]
    assert "<table" in page and "<td><b>h</b></td>" in page and "sigmoid / mse" in page
    assert "33 parameters" in page

    summary = nb.cells[SUMMARY].outputs
    printed = "".join(o["text"] for o in summary if o["output_type"] == "stream")
    assert re.search(r"^h\s+layer\s+8\s+tanh\s+x\s+24$", printed, re.M), summary
    # printed once, with real line breaks: no Out[] echo of the string with \n escapes
    assert not any(o["output_type"] == "execute_result" for o in summary), summary
