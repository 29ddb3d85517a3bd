"""Import cycles among kdframe's own modules (issue 21: "no import loop").

Reads every module of the core (``kdframe``) and of the built-in plugins (``kdframe_*`` under plugins/)
with Python's ``ast``, nothing imported, and prints the import cycles among them:

- module-level imports (those run when the module is imported: top level, class bodies, ``try``/``if``
  blocks; not ``if TYPE_CHECKING:``) make the graph whose cycles are loops; any such cycle fails (exit 1);
- function-local imports of the project's own modules are listed with ``--local``: each should break a
  cycle that a module-level import would close; one that closes none could move to the top.

``from pkg import name`` is an edge to ``pkg.name`` where that is a module, else to ``pkg``. Importing
``a.b.c`` runs the packages ``a`` and ``a.b`` first, so it is also an edge to each ``__init__`` above the
target that is not above the importer too (Python's semantics; grimp and import-linter leave these out,
which hides loops between subpackages, such as ``knowledge`` and ``training`` once were).

    python scripts/import_cycles.py [--local]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "kdframe", *sorted(p for p in (ROOT / "plugins").glob("*/kdframe_*") if p.is_dir())]


def modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the packages (``pkg.__init__`` is ``pkg``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.Module):
    """(node, module_level) for every import statement; module_level is False inside functions and TYPE_CHECKING."""
    def walk(node, module_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, module_level
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                yield from walk(child, False)
            else:
                yield from walk(child, module_level)
    yield from walk(tree, True)


def targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The project modules one import statement in module ``name`` loads."""
    out = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                out.add(alias.name)
        return out
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        parent = ".".join(base + ([node.module] if node.module else []))
    else:
        parent = node.module or ""
    for alias in node.names:
        sub = f"{parent}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif parent in known:
            out.add(parent)
    return out


def graph(known: dict[str, Path]):
    """module -> {imported module: [(line, module_level)]}."""
    edges: dict[str, dict[str, list[tuple[int, bool]]]] = {m: {} for m in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, module_level in imports(tree):
            own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
            for target in targets(node, name, path.name == "__init__.py", known):
                parts = target.split(".")
                for t in {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own:
                    if t in known:
                        edges[name].setdefault(t, []).append((node.lineno, module_level))
    return edges


def cycles(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in adjacency:
        if v not in index:
            visit(v)
    return found


def _subpackage(name: str, known: dict[str, Path]) -> str:
    """``kdframe.data.packed`` -> ``kdframe.data``; a module directly in a top package stays itself."""
    parts = name.split(".")
    if len(parts) >= 2 and known[".".join(parts[:2])].name == "__init__.py":
        return ".".join(parts[:2])
    return name


def reaches(adjacency: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        for w in adjacency[v] - seen:
            seen.add(w)
            todo.append(w)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="also list function-local imports of project modules")
    args = parser.parse_args(argv)
    known = modules()
    edges = graph(known)
    top = {m: {t for t, sites in ts.items() if any(level for _, level in sites)} for m, ts in edges.items()}
    loops = cycles(top)
    print(f"{len(known)} modules, {sum(map(len, top.values()))} module-level import edges, {len(loops)} cycle(s)")
    for loop in loops:
        print("cycle:", " <-> ".join(loop))
        for m in loop:
            for t in sorted(top[m] & set(loop)):
                print(f"    {known[m].relative_to(ROOT)}:{min(l for l, lv in edges[m][t] if lv)} imports {t}")
    # the same between subpackages (kdframe.data, kdframe.training, ...): modules of one subpackage as one node
    packages = {m: _subpackage(m, known) for m in known}
    collapsed: dict[str, set[str]] = {p: set() for p in packages.values()}
    for m, ts in top.items():
        collapsed[packages[m]] |= {packages[t] for t in ts} - {packages[m]}
    package_loops = cycles(collapsed)
    print(f"{len(collapsed)} subpackages and top-level modules, {len(package_loops)} cycle(s) among them")
    for loop in package_loops:
        print("subpackage cycle:", " <-> ".join(loop))
        for m in sorted(known):
            for t in sorted(top[m]):
                if packages[m] in loop and packages[t] in loop and packages[t] != packages[m]:
                    print(f"    {known[m].relative_to(ROOT)}:{min(l for l, lv in edges[m][t] if lv)} imports {t}")
    loops += package_loops
    if args.local:
        for m, ts in sorted(edges.items()):
            for t, sites in sorted(ts.items()):
                lines = [line for line, level in sites if not level]
                if lines and t not in top[m]:
                    why = "breaks a cycle" if reaches(top, t, m) else "closes no cycle"
                    print(f"local: {known[m].relative_to(ROOT)}:{lines[0]} imports {t} ({why})")
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
