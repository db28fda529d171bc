"""The layering rules of docs/architecture.md, read from the source with ``ast`` (nothing is imported):

- no import cycle among the library's modules at module level (imports inside functions are deferred on purpose
  and not counted; neither are ``if TYPE_CHECKING:`` blocks);
- no private name (``_x``) imported from another module;
- nothing outside ``advbench/cli/`` imports the command line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def library_modules() -> dict[str, Path]:
    """Dotted module name -> source file, through pyproject's package-dir map."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules: dict[str, Path] = {}
    for top, folder in mapping.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("").parts
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            modules[".".join((top, *parts))] = path
    return modules


def top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions or ``if TYPE_CHECKING``)."""
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))
        elif isinstance(node, ast.Try):
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))


def imported_modules(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    targets = set()
    for alias in node.names:
        child = f"{base}.{alias.name}"
        targets.add(child if child in modules else base)
    return {t for t in targets if t in modules}


def module_graph() -> tuple[dict[str, set[str]], list[str], list[str]]:
    modules = library_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private: list[str] = []
    cli_users: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in top_level_imports(tree):
            graph[name] |= imported_modules(node, package, modules) - {name}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("advbench"):
                private += [f"{name}: from {node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
                if node.module.startswith("advbench.cli") and not name.startswith("advbench.cli") \
                        and name != "advbench.__main__":
                    cli_users.append(f"{name}: from {node.module}")
            elif isinstance(node, ast.Import):
                cli_users += [f"{name}: import {a.name}" for a in node.names if a.name.startswith("advbench.cli")
                              and not name.startswith("advbench.cli") and name != "advbench.__main__"]
    return graph, private, cli_users


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_scan_sees_the_whole_library() -> None:
    graph, _, _ = module_graph()
    assert {"advbench.attack", "advbench.attacks.pgd", "advbench.datasets.catalog", "advbench.cli.main",
            "advbench.training.classifier", "advbench.sod.experiment"} <= set(graph)
    assert "advbench.registry" in graph["advbench.attack"]


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_at_module_level() -> None:
    graph, _, _ = module_graph()
    found = cycles(graph)
    assert not found, f"module-level import cycles: {found}"


def test_no_private_name_is_imported_across_modules() -> None:
    _, private, _ = module_graph()
    assert not private, f"private names imported across modules: {private}"


def test_nothing_outside_the_cli_imports_it() -> None:
    _, _, cli_users = module_graph()
    assert not cli_users, f"library modules import the command line: {cli_users}"
