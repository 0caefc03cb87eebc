"""Mutation smoke job: plant each bug of mutants.py in a copy of the tree, run the suite, and
print which mutants survive. Run it through tests/mutation/run.sh (docs/testing.md).

Not part of CI and never touches the source tree or the installed package: the copy lives in a
temporary folder, is built into its own target folder (`pip install --target`, CUDA off), and
the suite runs from the copy with PYTHONPATH pointing at that target. A `sitecustomize.py` in
the target drops an editable install's import hook, so `mdl` and `neuromorph` come from the
target in the test process and in every subprocess the tests start.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"src/mdl/": "mdl/", "python/neuromorph/": "neuromorph/"}

SITECUSTOMIZE = '''\
# Written by tests/mutation/runner.py: import mdl/neuromorph from this folder, not from an
# editable install of the main tree (its import hook sits in front of PYTHONPATH).
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__name__.startswith("ScikitBuild")]
sys.path[:] = [p for p in sys.path if p not in {drop!r}]
'''


def log(msg: str) -> None:
    print(f"[mutation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def copy_tree(dest: Path, ref: str | None) -> None:
    """The working tree (tracked and untracked, not ignored) or, with a ref, that commit."""
    dest.mkdir(parents=True)
    if ref:
        archive = dest.parent / "src.tar"
        with open(archive, "wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", ref], stdout=f, check=True)
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
        archive.unlink()
        return
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/mutation/work"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def sync_tree(dest: Path, ref: str | None, tests_from_worktree: bool) -> None:
    """Make dest hold the tree (a fresh copy, or an update of a kept one that rewrites only the
    files whose bytes differ, so an incremental build sees exactly those as changed)."""
    stage = Path(tempfile.mkdtemp(prefix="nm-mutation-stage-")) / "tree"
    try:
        copy_tree(stage, ref)
        if tests_from_worktree:  # a commit's code with the working tree's suite (and bench)
            for part in ("tests", "bench"):
                shutil.rmtree(stage / part, ignore_errors=True)
                shutil.copytree(ROOT / part, stage / part,
                                ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        if not dest.exists():
            shutil.move(str(stage), dest)
            return
        for path in stage.rglob("*"):
            if path.is_file():
                rel = path.relative_to(stage)
                target = dest / rel
                if not target.exists() or target.read_bytes() != path.read_bytes():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
    finally:
        shutil.rmtree(stage.parent, ignore_errors=True)


def stale(src: Path, m: Mutant) -> list[str]:
    why = []
    for p in m.patches:
        path = src / p.path
        n = path.read_text(encoding="utf-8").count(p.old) if path.exists() else 0
        if n != 1:
            why.append(f"{p.path}: snippet found {n} times")
    return why


def build(src: Path, site: Path, work: Path) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--upgrade",
           "--target", str(site), "-C", "cmake.define.NM_WITH_CUDA=OFF",
           "-C", f"build-dir={work / 'build'}", "."]
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "1"))
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env=env)
    # The engine library finds OpenBLAS through an rpath into the wheel's sibling folder; a
    # --no-deps target has none, so link the installed one beside it (for tests/test_embed.py).
    import scipy_openblas32
    blas = site / "scipy_openblas32"
    if not blas.exists():
        blas.symlink_to(Path(scipy_openblas32.__file__).parent, target_is_directory=True)
    drop = [str(ROOT / "src"), str(ROOT / "python")]
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(drop=drop))
    return r.returncode == 0, r.stdout + r.stderr


def run_tests(src: Path, site: Path, work: Path, targets: list[str], deselect: list[str],
              timeout: int, extra: list[str]) -> tuple[str, list[str], str]:
    """('pass' | 'fail' | 'error' | 'timeout', failing test ids, output tail)."""
    junit = work / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
           "--continue-on-collection-errors", f"--junitxml={junit}", *targets, *extra]
    for d in deselect:  # failing at baseline: a test id, or a module that does not import
        cmd += ["--deselect", d] if "::" in d else ["--ignore", d]
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1",
               NEUROMORPH_BUILT_WITHOUT_CUDA="1")
    env.pop("NEUROMORPH_HYPOTHESIS", None)
    try:
        r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", [], ""
    failed = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                cls = case.get("classname", "").replace(".", "/")
                if cls:
                    failed.append(f"{cls}.py::{case.get('name')}")
                else:  # a module that failed to import (collection error)
                    failed.append(case.get("name", "").replace(".", "/") + ".py")
    verdict = {0: "pass", 1: "fail"}.get(r.returncode, "error")
    return verdict, failed, (r.stdout + r.stderr)[-3000:]


def apply(src: Path, site: Path, m: Mutant, originals: dict | None = None) -> dict:
    """Plant m's patches (originals None) and return the files' original texts, or put those
    originals back."""
    saved = {}
    for p in m.patches:
        path = src / p.path
        text = path.read_text(encoding="utf-8")
        if originals is None:
            saved.setdefault(p.path, text)
            path.write_text(text.replace(p.old, p.new, 1), encoding="utf-8")
        else:
            path.write_text(originals[p.path], encoding="utf-8")
        for prefix, pkg in PACKAGES.items():
            if p.path.startswith(prefix):  # Python: the build holds a copy of the file
                shutil.copy2(path, site / pkg / p.path[len(prefix):])
    return saved


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma list of mutant names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and check for stale ones")
    ap.add_argument("--ref", help="plant into this commit (git archive) instead of the working tree")
    ap.add_argument("--quick", action="store_true",
                    help="run only each mutant's hint tests, not the whole suite for survivors")
    ap.add_argument("--tests-from-worktree", action="store_true",
                    help="with --ref: take tests/ and bench/ from the working tree")
    ap.add_argument("--workdir", help="a work folder to use and keep (a later run reuses its "
                                      "build: only changed files are recompiled)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per suite run")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not a.only or m.name in a.only.split(",")]
    if a.only and len(chosen) != len(a.only.split(",")):
        ap.error(f"unknown mutant in {a.only}; known: {', '.join(m.name for m in MUTANTS)}")
    work = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="nm-mutation-"))
    if a.workdir:
        a.keep = True
        work.mkdir(parents=True, exist_ok=True)
    src, site = work / "src", work / "site"
    rows = []
    try:
        sync_tree(src, a.ref, a.tests_from_worktree)
        log(f"copied {'the working tree' if not a.ref else a.ref} to {src}")
        live = []
        for m in chosen:
            why = stale(src, m)
            if why:
                rows.append((m, "stale", "; ".join(why)))
            else:
                live.append(m)
        if a.list:
            for m in chosen:
                print(f"{m.name:22} {'STALE ' + '; '.join(stale(src, m)) if stale(src, m) else 'ok':10} {m.what}")
            return 0
        log("building the unmutated copy (CUDA off)")
        ok, out = build(src, site, work)
        if not ok:
            print(out[-6000:], file=sys.stderr)
            log("the unmutated copy does not build: nothing to compare against")
            return 2
        log("baseline: the whole suite on the unmutated copy")
        verdict, base_failed, tail = run_tests(src, site, work, ["tests"], [], a.timeout,
                                               a.pytest_args + ["--maxfail=1000"])
        if verdict not in ("pass", "fail"):
            print(tail, file=sys.stderr)
            log(f"baseline run ended with '{verdict}'")
            return 2
        broken = [f for f in base_failed if "::" not in f]
        modules = list((src / "tests").glob("test_*.py"))
        if len(broken) > len(modules) // 2:
            log(f"{len(broken)} of {len(modules)} test modules do not even import on the unmutated "
                "copy (a commit missing files? try without --ref): " + ", ".join(broken))
            return 2
        if base_failed:
            log("failing before any mutation (deselected below): " + ", ".join(base_failed))
        dirty = False  # the build holds a mutated engine
        # Python-only mutants first: they reuse the clean build without rebuilding it.
        for m in sorted(live, key=lambda m: (not m.python_only, sorted(p.path for p in m.patches))):
            t0 = time.time()
            originals = apply(src, site, m)
            try:
                if not m.python_only or dirty:
                    ok, out = build(src, site, work)
                    dirty = not m.python_only
                    if not ok:
                        errs = [ln for ln in out.splitlines() if "error:" in ln] or out.splitlines()[-1:]
                        rows.append((m, "does not build", errs[0].strip()[:160]))
                        continue
                status, by = "survived", ""
                hints = [h for h in m.hint if h not in broken] or ["tests"]
                verdict, failed, tail = run_tests(src, site, work, hints, base_failed,
                                                  a.timeout, a.pytest_args)
                if verdict == "pass" and not a.quick:
                    verdict, failed, tail = run_tests(src, site, work, ["tests"], base_failed,
                                                      a.timeout, a.pytest_args)
                if verdict == "fail":
                    status, by = "killed", failed[0] if failed else "(see output)"
                elif verdict in ("timeout", "error"):
                    status, by = verdict, tail.strip().splitlines()[-1][:120] if tail.strip() else ""
                elif a.quick:
                    status = "survived hints"
                rows.append((m, status, by))
            finally:
                apply(src, site, m, originals)
            log(f"{m.name}: {rows[-1][1]} {rows[-1][2]} ({time.time() - t0:.0f} s)")
    finally:
        if a.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    order = {m.name: i for i, m in enumerate(MUTANTS)}
    rows.sort(key=lambda r: order[r[0].name])
    print("| mutant | planted bug | result | first failing test |")
    print("|---|---|---|---|")
    for m, status, by in rows:
        print(f"| `{m.name}` | {m.what} | {status} | {by.replace('|', '/')} |")
    survivors = [m.name for m, status, _ in rows if status not in ("killed",)]
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} killed"
          + (f"; not killed: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
