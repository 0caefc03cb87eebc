"""`mdlc report` / neuromorph.report.build_report: a report builds for every shipped model
(each trained briefly on its built-in task and saved first), is self-contained (no script, no
link or image outside the page, every picture a data URI), escapes text, falls back to a table
without Graphviz and to notes without matplotlib; and it opens in a real headless browser
(Chromium, skipped when absent) with no console error and every section present."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import mdl  # noqa: E402
import neuromorph as nm  # noqa: E402
from mdl.cli import main  # noqa: E402
from neuromorph import report, viz  # noqa: E402
from neuromorph.datasets import digits  # noqa: E402
from neuromorph.tasks import make_task  # noqa: E402

MODELS = nm.models.names()
PICTURE_KINDS = ("column", "attn2d", "energy", "neuron")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _compile(name: str, batch: int) -> tuple[int, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genesis-lm's documented warning about causal routing
        ir = mdl.compile_file(nm.models.path(name))
        h = nm.compile(nm.models.path(name), batch, 0.01, optimizer="adam")
    return h, ir.doc


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[Path, str, dict]]:
    """name -> (report path, its text, the model's IR): every shipped model trained for two
    epochs on a few batches of its built-in task, saved, then reported."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name in MODELS:
        h, doc = _compile(name, 4)
        nm.seed(0)
        nm.build(h)
        x, e, _ = make_task(doc, 4, 3, seed=0)
        nm.fit(h, x, e, epochs=2, verbosity=0, validation_split=0.25)
        nm.save(h, folder / f"{name}.nm")
        nm.release(h)
        path = report.build_report(str(folder / f"{name}.nm"), out=str(folder / f"{name}.html"),
                                   samples=8)
        out[name] = (Path(path), Path(path).read_text(encoding="utf-8"), doc)
    return out


class _Page(HTMLParser):
    """Ids, tags, and the attributes that could load something (src, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.loads: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id":
                self.ids.append(value)
            if key in ("src", "href", "xlink:href", "srcset", "data", "poster", "action"):
                self.loads.append(value or "")
        if tag == "img":
            self.images += 1


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    p.close()
    return p


def _node_ids(doc: dict) -> list[str]:
    return [f"node-{n['name']}" for n in doc["nodes"] if n["kind"] in PICTURE_KINDS]


@pytest.mark.parametrize("name", MODELS)
def test_report_builds_for_every_shipped_model(reports, name):
    path, text, doc = reports[name]
    page = _parse(text)
    for section in report.SECTIONS:
        assert section in page.ids, section
    for node in _node_ids(doc):
        assert node in page.ids, node
    assert "no pictures" not in text
    if shutil.which("dot"):  # the graph, drawn by Graphviz
        assert "<svg" in text
    else:  # a machine without Graphviz: the page says so (test_report_without_graphviz too)
        assert "<svg" not in text and "Graphviz (`dot`) is not installed" in text
    # the trained model's curves, plus at least one picture per node with pictures
    assert page.images >= 1 + len(_node_ids(doc))
    # self-contained: nothing to fetch, nothing to run
    assert "script" not in page.tags and "iframe" not in page.tags and "link" in page.tags
    assert all(v.startswith(("data:", "#")) for v in page.loads), page.loads
    assert "@import" not in text and "url(" not in text


def test_seed_models_show_their_pictures(reports):
    col = reports["columnformer-classifier"][1]
    assert "smoothness" in col and "the expected class" in col
    assert "mean wiring cost per sample" in col
    assert "neurons visited per sample" in reports["genesis-lm"][1]
    assert "where cell (4, 4) attends" in reports["heptapod-lm"][1]
    assert "energy of sample 0 along the descent" in reports["hamux-completion"][1]
    assert "2 epochs" in reports["readme-model"][1]


def _browser(url: str) -> tuple[str, str]:
    quiet = ["--disable-extensions", "--no-first-run", "--no-default-browser-check",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-software-rasterizer", "--disable-dev-shm-usage", "--mute-audio"]
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no first-run work shared
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *quiet,
                               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               "--dump-dom", url],
                              capture_output=True, text=True, timeout=90, check=False)
    return done.stdout, done.stderr


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
def test_reports_open_in_a_headless_browser(reports, tmp_path):
    # a control page first: the check must see a console error when there is one
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p id='x'>x</p><script>console.error('boom');"
                   "missing();</script></body></html>", encoding="utf-8")
    urls = [bad.as_uri()] + [reports[n][0].as_uri() for n in MODELS]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_browser, urls))
    dom, err = results[0]
    assert 'id="x"' in dom and any("Uncaught" in l for l in _console_errors(err)), err
    for name, (dom, err) in zip(MODELS, results[1:]):
        assert not _console_errors(err), (name, _console_errors(err))
        ids = set(_parse(dom).ids)
        want = set(report.SECTIONS) | set(_node_ids(reports[name][2]))
        assert want <= ids, (name, want - ids, err[-2000:])


# ---------------------------------------------------------------------------- the command
def test_mdlc_report_with_data(tmp_path, capsys):
    h, doc = _compile("columnformer-classifier", 16)
    nm.seed(1)
    nm.build(h)
    x, labels = digits(64, seed=3)
    nm.fit(h, x, np.eye(10)[labels], epochs=1, verbosity=0)
    nm.save(h, tmp_path / "col.nm")
    nm.release(h)
    np.savez(tmp_path / "d.npz", inputs=x, expected=labels)
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "col.nm"), "--data", str(tmp_path / "d.npz"),
                 "--samples", "20", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "the first 20 samples of d.npz" in text and "the expected class" in text
    assert f"written to {out}" in capsys.readouterr().out


def test_mdlc_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.nm"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["report", "readme-model", "--x", "a", "-o", str(tmp_path / "r.html")]) == 2
    assert "--data" in capsys.readouterr().err
    bad = tmp_path / "bad.nm"
    bad.write_bytes(b"not a model")
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 3
    assert not (tmp_path / "r.html").exists()
    assert main(["report", "readme-model", "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert "there is no folder" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("some text, long enough " * 10, encoding="utf-8")
    assert main(["report", "readme-model", "--data", str(text), "-o",
                 str(tmp_path / "r.html")]) == 3
    assert "only for a token model saved with its tokenizer" in capsys.readouterr().err


def test_untrained_source_model_and_escaping(tmp_path):
    odd = tmp_path / "a<b>&c.mdl"
    odd.write_text("/xavier,zero/\n(input, 4)\n(h, 8, <tanh>)\n(output, 2, <softmax>, "
                   "<cross_entropy>)\n", encoding="utf-8")
    text = Path(report.build_report(str(odd), out=str(tmp_path / "r.html"))).read_text()
    assert "a&lt;b&gt;&amp;c.mdl" in text and "a<b>" not in text
    assert "Not trained" in text and "built untrained" in text
    assert "no node with pictures" in text


def test_report_without_graphviz_and_without_matplotlib(tmp_path, monkeypatch):
    import neuromorph.model as model_module

    def no_matplotlib(*args, **kwargs):
        raise ImportError("neuromorph.viz needs matplotlib, which is not installed")

    monkeypatch.setattr(model_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(viz, "_figure", no_matplotlib)
    text = Path(report.build_report("grid-model", out=str(tmp_path / "r.html"))).read_text()
    page = _parse(text)
    assert set(report.SECTIONS) <= set(page.ids) and "node-grid" in page.ids
    assert "<svg" not in text and "Graphviz (`dot`) is not installed" in text
    assert "<td>cells</td><td>grid</td>" in text  # the edges as a table
    assert page.images == 0 and "needs matplotlib" in text
