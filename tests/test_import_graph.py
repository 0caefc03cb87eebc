"""The packages import one way (docs/design: `mdl` never imports `neuromorph`) and no module
imports itself through others: checked on the import graph read from the source with `ast`,
every import statement counted, those inside functions too (a lazy import is still a
dependency; it only hides the circle until run time)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mdl": ROOT / "src" / "mdl", "neuromorph": ROOT / "python" / "neuromorph"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__); a stub (.pyi) stands for a binary
    module such as neuromorph._core."""
    out: dict[str, tuple[Path, bool]] = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py*")):
            if path.suffix not in (".py", ".pyi") or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(folder).with_suffix("")
            parts = [pkg, *rel.parts]
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            name = ".".join(parts)
            if path.suffix == ".pyi" and name in out:
                continue
            out[name] = (path, is_pkg)
    return out


def _target(name: str, known: dict) -> str | None:
    """The longest known module that `name` is or lies in; None for other packages."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of our packages it imports (self-imports left out)."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in known.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if not is_pkg:
                        base.pop()
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from P import M` imports the module P.M when there is one, else P
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                         for a in node.names]
            for name in names:
                target = _target(name, known)
                if target is not None and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_is_read():
    g = import_graph()
    assert "neuromorph.api" in g["neuromorph"]
    assert "mdl.cli" in g["neuromorph.cli"]            # neuromorph -> mdl is the allowed way
    assert "neuromorph._core" in g["neuromorph.training"]
    assert "mdl.ir" in g["mdl"] and "mdl.passes" in g["mdl.ir"]


def test_mdl_never_imports_neuromorph():
    g = import_graph()
    bad = sorted(f"{m} -> {t}" for m, ts in g.items() if m.split(".")[0] == "mdl"
                 for t in ts if t.split(".")[0] == "neuromorph")
    assert not bad, "the compiler imports the engine: " + ", ".join(bad)


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_a_circle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# ---------------------------------------------------------------------------- mdlc's plug-in
def _run(code: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_compiler_commands_never_load_the_engine():
    model = ROOT / "models" / "readme-model.mdl"
    r = _run(f"import sys\nfrom mdl.cli import main\ncode = main(['check', {str(model)!r}])\n"
             "print(code, 'neuromorph' in sys.modules)")
    assert r.returncode == 0 and r.stdout.split() == ["0", "False"], r.stderr


def test_engine_commands_come_from_the_plugin():
    from mdl.cli import _parser, commands
    assert {"check", "compile", "dot", "run", "generate"} <= set(commands(_parser()))
    assert set(commands(_parser(with_plugins=False))) == {"check", "compile", "dot"}


def test_an_engine_command_without_the_engine_says_why():
    r = _run("import sys; sys.modules['neuromorph'] = None\n"
             "from mdl.cli import main; sys.exit(main(['run', 'readme-model']))")
    assert r.returncode == 2
    assert "`mdlc run` is not a compiler command" in r.stderr and "did not import" in r.stderr
