"""nerfzip's modules import each other without cycles: the graph of module-level imports (from the
source, with ``ast``) is acyclic, the codec layer does not reach the training code, and every
module imports on its own, as the first nerfzip module of an interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nerfzip"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_statements(body: list[ast.stmt], lazy: bool = False
                           ) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: its top level, including ``if`` / ``try``
    / ``with`` / class bodies, but not function bodies (lazy imports, which run later: included
    when ``lazy``) nor ``if TYPE_CHECKING:`` blocks (never run)."""
    out: list[ast.Import | ast.ImportFrom] = []
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            out.append(stmt)
        elif isinstance(stmt, ast.If):
            out += import_time_statements(stmt.orelse if is_type_checking(stmt.test)
                                          else stmt.body + stmt.orelse, lazy)
        elif isinstance(stmt, ast.Try):
            out += import_time_statements(stmt.body + stmt.orelse + stmt.finalbody
                                          + [s for h in stmt.handlers for s in h.body], lazy)
        elif isinstance(stmt, ast.With | ast.ClassDef) or (
                lazy and isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)):
            out += import_time_statements(stmt.body, lazy)
    return out


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(stmt: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
             known: set[str]) -> set[str]:
    """The nerfzip modules an import statement loads, parent packages included (except the
    importer's own, which are already loading when it runs)."""
    if isinstance(stmt, ast.Import):
        targets = {alias.name for alias in stmt.names}
    else:
        base = stmt.module or ""
        if stmt.level:
            anchor = importer.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[:len(anchor) - (stmt.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                   for a in stmt.names}
    own = set(ancestors(importer)) | {importer}
    out = set()
    for target in targets:
        for name in ancestors(target) + [target]:
            if name in known and name not in own:
                out.add(name)
    return out


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the nerfzip modules it imports when imported (``lazy``: ever)."""
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set().union(*[imported(s, name, path.name == "__init__.py", known)
                                    for s in import_time_statements(tree.body, lazy)])
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as
    the path of imports that closes it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                components.append(comp)

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_in(graph, set(comp)) for comp in components]


def cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A closed path through a strongly connected component (breadth-first back to the start)."""
    start = min(comp)
    paths = {w: [start, w] for w in sorted(graph[start] & comp)}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo += graph[v]
    return seen


# --- the checker itself, on hand-made graphs ---
def test_cycle_finder_on_known_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]


def test_graph_reads_relative_lazy_and_type_checking_imports():
    src = ast.parse("from . import b\nfrom .c import x\nimport nerfzip.d.e\n"
                    "if TYPE_CHECKING:\n    import nerfzip.f\n"
                    "def g():\n    import nerfzip.h\n")
    known = {"nerfzip", "nerfzip.a", "nerfzip.b", "nerfzip.c", "nerfzip.d", "nerfzip.d.e",
             "nerfzip.f", "nerfzip.h"}
    got = set().union(*[imported(s, "nerfzip.a", False, known)
                        for s in import_time_statements(src.body)])
    assert got == {"nerfzip.b", "nerfzip.c", "nerfzip.d", "nerfzip.d.e"}
    got = set().union(*[imported(s, "nerfzip.a", False, known)
                        for s in import_time_statements(src.body, lazy=True)])
    assert got == {"nerfzip.b", "nerfzip.c", "nerfzip.d", "nerfzip.d.e", "nerfzip.h"}


# --- nerfzip ---
def test_graph_sees_the_package():
    graph = import_graph()
    assert "nerfzip.codec.codecs.quant" in graph["nerfzip.codec.codecs"]
    assert "nerfzip.data.scene" in graph["nerfzip.data.blender"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_codec_layer_imports_nothing_from_training():
    """Not even inside a function: files are read without the training code."""
    graph = import_graph(lazy=True)
    codec = [m for m in graph if m == "nerfzip.codec" or m.startswith("nerfzip.codec.")]
    bad = sorted(m for m in reachable(graph, codec) if m.startswith("nerfzip.training"))
    assert not bad, f"the codec layer reaches {bad}"


def test_every_module_imports_first():
    """Each module imported as the first nerfzip module of the process (an order that hits a
    cycle at run time fails here even where the graph misses it, e.g. a dynamic import)."""
    script = (
        "import importlib, sys, traceback\n"
        "import torch  # noqa (loaded once: the slow part, and not nerfzip's)\n"
        f"names = {sorted(modules())!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m == 'nerfzip' or m.startswith('nerfzip.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=PACKAGE.parent, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "", "modules that fail to import first:\n" + run.stdout
