"""The shape of the package: import direction, no import cycles, small modules, stable short names.

docs/architecture.md draws the layers; the import-linter contracts in pyproject.toml write them down;
these tests make a broken layer, a cycle, an overgrown module or a lost notebook name fail the suite.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")            # import-linter's graph builder (the `dev` extra)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minigrpo"
MAX_MODULE_LINES = 400                          # STYLE.md principle 1: past ~400 lines, split it
SUBPROCESS_TIMEOUT = 600                        # seconds; generous because CI machines are shared


def run_python(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this venv's), so nothing this test process imported leaks in."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)


# --- (a) the layer contracts -------------------------------------------------------------------------------

def test_import_linter_contracts_in_pyproject_are_kept():
    """`lint-imports` on pyproject.toml, run by this venv's Python; its report is the failure message.
    --no-cache: nothing is written into the checkout (import-linter caches in the working directory)."""
    proc = run_python("from importlinter.cli import lint_imports_command; lint_imports_command()",
                      "--no-cache", "--no-logo", str(ROOT / "pyproject.toml"))
    report = proc.stdout + proc.stderr
    assert "Contracts:" in report, f"import-linter did not run its contracts (exit {proc.returncode}):\n{report}"
    assert proc.returncode == 0, f"an import-linter contract is broken:\n{report}"


# --- (b) no import cycles ----------------------------------------------------------------------------------
#
# What counts as a cycle. Nodes are the modules of minigrpo (a package is its __init__). Edges are
#   * every import statement grimp finds, at module level or inside a function (a lazy import is still
#     a dependency: it only moves the failure from import time to call time);
#   * the package __init__ files an import runs on the way: `import a.b.c` from outside `a.b` also runs
#     a/__init__ and a/b/__init__, so a re-export in an __init__ can close a cycle nobody wrote out.
# A module's own parent packages are not edges from it: Python initialises them before the module, so a
# package whose __init__ re-exports its submodules (minigrpo/__init__ → minigrpo.core.kl) is not a cycle.
# An explicit `from minigrpo.core import x` inside a submodule of minigrpo.core *is* an edge, and with
# that re-export it is a real cycle: which module finishes first then depends on who was imported first.
# Imports under `if TYPE_CHECKING:` are left out: they never run, they only name a type for the checker
# (core.protocols annotates with core.sampling.Rollout, which itself imports the protocols); the layer
# contracts above still count them.
# A cycle is a strongly connected component with more than one module, or a module importing itself.

def ancestors(module: str) -> list[str]:
    """'minigrpo.lm.tasks' → ['minigrpo', 'minigrpo.lm']."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def grimp_graph(package: str = "minigrpo"):
    return grimp.build_graph(package, cache_dir=None, exclude_type_checking_imports=True)


def import_graph(g) -> dict[str, set[str]]:
    """module → the modules importing it runs (explicit imports, lazy ones included, plus the package
    __init__ files they pass through), from grimp's graph ``g``."""
    graph = {m: set() for m in g.modules}
    for a in g.modules:
        for b in g.find_modules_directly_imported_by(a):
            graph[a].add(b)
            graph[a].update(p for p in ancestors(b) if p != a and p not in ancestors(a) and p in graph)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): the strongly connected components."""
    index, low, on_stack, stack, comps, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    comps.append(sorted(comp))
    return comps


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed import path per cycle, e.g. [a, b, a]: per strongly connected component of more than
    one module the shortest path back to its first module, and every module that imports itself."""
    out = [[m, m] for m in sorted(graph) if m in graph[m]]
    for comp in strongly_connected(graph):
        if len(comp) < 2:
            continue
        members, start = set(comp), comp[0]
        came_from, frontier = {start: None}, [start]
        while start not in [w for v in frontier for w in graph[v]]:      # breadth-first, inside the component
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in came_from:
                        came_from[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        path = [start]                                  # walked backwards: start, last, ..., start
        while last is not None:
            path.append(last)
            last = came_from[last]
        out.append(path[::-1])
    return out


def describe(path: list[str], g) -> str:
    """The cycle, with the line of each import."""
    lines = []
    for a, b in zip(path, path[1:]):
        details = g.get_import_details(importer=a, imported=b)
        where = f"l.{details[0]['line_number']}: {details[0]['line_contents']}" if details else "(implied: its __init__ runs on the way to a submodule)"
        lines.append(f"  {a} -> {b}   {where}")
    return "\n".join(lines)


def test_cycle_finder_on_a_toy_graph():
    """The finder itself: a three-module loop is found, an __init__ importing its submodules is not."""
    toy = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert cycles(toy) == [["p.a", "p.b", "p.c", "p.a"]]
    assert cycles({"p": {"p.a", "p.b"}, "p.a": {"p.b"}, "p.b": set()}) == []
    assert cycles({"p": {"p"}}) == [["p", "p"]]


def test_no_import_cycles_among_minigrpo_modules_lazy_imports_included():
    g = grimp_graph()
    found = cycles(import_graph(g))
    report = "\n\n".join(describe(path, g) for path in found)
    assert not found, f"{len(found)} import cycle(s) among minigrpo modules:\n{report}"


# --- (c) module size ---------------------------------------------------------------------------------------

def test_no_module_in_minigrpo_is_over_400_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


# --- (d) the public short names and a lean bandit layer ----------------------------------------------------

MG_IN_PROSE = re.compile(r"\bmg\.([A-Za-z_]\w*)")    # `mg.deepseek_grpo()` in a "things to try" cell


def prose_names() -> dict[str, set[str]]:
    """`mg.<name>` written in the notebooks' markdown cells, the README and docs/: what a reader types next."""
    import nbformat

    found = {}
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        found[nb_path.name] = {m for c in nb.cells if c.cell_type == "markdown" for m in MG_IN_PROSE.findall(c.source)}
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if md.exists():
            found[md.relative_to(ROOT).as_posix()] = set(MG_IN_PROSE.findall(md.read_text(encoding="utf-8")))
    return found


def code_sources() -> dict[str, str]:
    """Python source of every notebook (code cells, IPython magics turned into Python) and test file."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    to_python = TransformerManager().transform_cell
    sources = {}
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        sources[nb_path.name] = "\n".join(to_python(c.source) for c in nb.cells if c.cell_type == "code")
    for py in sorted((ROOT / "tests").glob("*.py")):
        sources[py.name] = py.read_text(encoding="utf-8")
    return sources


def short_names_used(source: str) -> set[str]:
    """Names taken from the package itself: `from minigrpo import x` and `mg.x` after `import minigrpo as mg`
    (or plain `import minigrpo`; `import minigrpo.sub` binds a submodule path, not a short name)."""
    tree = ast.parse(source)
    aliases, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name == "minigrpo")
        elif isinstance(node, ast.ImportFrom) and node.module == "minigrpo" and not node.level:
            names.update(a.name for a in node.names if a.name != "*")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add(node.attr)
    return names


def test_import_minigrpo_keeps_every_short_name_the_notebooks_and_tests_use():
    """Every `mg.<name>` / `from minigrpo import <name>` in notebooks/, tests/, README.md and docs/ exists after
    a plain `import minigrpo` in a fresh interpreter (nothing else imported that could set the attribute)."""
    used = {}
    for where, source in code_sources().items():
        for name in short_names_used(source):
            used.setdefault(name, []).append(where)
    for where, names in prose_names().items():
        for name in names:
            used.setdefault(name, []).append(where)
    assert used, "found no `mg.<name>` / `from minigrpo import <name>` in notebooks/ or tests/: the scan is broken"
    proc = run_python("import json, sys, minigrpo; "
                      "print(json.dumps([n for n in json.loads(sys.argv[1]) if not hasattr(minigrpo, n)]))",
                      json.dumps(sorted(used)))
    assert proc.returncode == 0, f"`import minigrpo` failed:\n{proc.stderr}"
    missing = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not missing, ("`import minigrpo` no longer provides names the notebooks/tests use: "
                         + ", ".join(f"{n} (in {', '.join(sorted(used[n]))})" for n in missing))


HEAVY = ("transformers", "tokenizers", "peft", "accelerate", "datasets", "matplotlib", "ipywidgets", "IPython")


def test_importing_the_bandit_layer_loads_no_language_model_or_notebook_library():
    """Checked at run time in a fresh interpreter: the contracts see import statements, this sees what a
    dependency (torch, gymnasium) pulls in behind them. Principle 12: the bandit layer starts fast."""
    proc = run_python("import json, sys, minigrpo.bandit.runner; "
                      f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    assert proc.returncode == 0, f"`import minigrpo.bandit.runner` failed:\n{proc.stderr}"
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not loaded, f"`import minigrpo.bandit.runner` loaded {sorted({m.split('.')[0] for m in loaded})}: {loaded}"
