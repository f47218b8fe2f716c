"""The package's shape: no import circle in any layer, and a core that does not import FiftyOne.
Every import counts, inside functions and under ``TYPE_CHECKING`` too (a module imported only for
its types still has to be understood first), except a package ``__init__`` importing its own
modules (a re-export)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fiftyone_clip_zeroshot"


def _modules() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (``from package import module`` names the module)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            found |= submodules if len(submodules) == len(node.names) else {node.module, *submodules}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & set(modules)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {other for other in _imports(path, modules) if other != name and not other.startswith(name + ".")}
            for name, path in modules.items()}


def test_no_module_imports_itself_back_through_others():
    assert _circles(_graph()) == []


def test_the_localizers_registered_are_the_methods_options_take():
    from fiftyone_clip_zeroshot.core.localizers import LOCALIZERS
    from fiftyone_clip_zeroshot.core.vocabulary import METHODS

    assert tuple(LOCALIZERS) == METHODS


def test_type_only_imports_count(tmp_path):
    module = tmp_path / "typed.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.other import Thing\n")
    assert _imports(module, {"pkg.other": module}) == {"pkg.other"}


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_does_not_import_fiftyone():
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        if name.startswith("fiftyone_clip_zeroshot.core") and any(i.split(".")[0] == "fiftyone" for i in imported):
            offenders.append(name)
    assert offenders == []
