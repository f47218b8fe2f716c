"""The package's shape: no import circle in any layer, a core that does not import FiftyOne, wings
that import only what their docstrings state, and no folder of more than about 12 modules.
Every import counts, inside functions and under ``TYPE_CHECKING`` too (a module imported only for
its types still has to be understood first), except a package ``__init__`` importing its own
modules (a re-export)."""

import __future__

import ast
import importlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fiftyone_clip_zeroshot"
ROOT = PACKAGE.name
MOST_MODULES = 12
WINGS = ("core", "core.models", "core.geometry", "core.localizers", "labeling", "labeling.runs",
         "labeling.fo_models", "labeling.curation", "labeling.object_search", "app")


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


def _rules() -> dict[str, tuple[str, ...]]:
    """Each package whose docstring has an ``Imports:`` line → the packages or modules it names."""
    rules = {}
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or "" if path.name == "__init__.py" else ""
        for line in doc.splitlines():
            if line.startswith("Imports:"):
                rules[name] = tuple(f"{ROOT}.{word.strip()}" for word in line.removeprefix("Imports:").split(","))
    return rules


def _rule_breaks(graph: dict[str, set[str]], rules: dict[str, tuple[str, ...]]) -> list[str]:
    """``module -> import`` for each import that the rule of the module's innermost ruled package
    does not allow (a package's own modules and the package root are always allowed)."""
    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    breaks = []
    for module, imported in graph.items():
        owners = [package for package in rules if within(module, package)]
        if not owners:
            continue
        owner = max(owners, key=len)
        allowed = (owner, *rules[owner])
        breaks += [f"{module} -> {other}" for other in sorted(imported)
                   if other != ROOT and not any(within(other, prefix) for prefix in allowed)]
    return breaks


def test_each_wing_states_its_imports_and_keeps_to_them():
    rules = _rules()
    assert sorted(rules) == sorted(f"{ROOT}.{wing}" for wing in WINGS)
    assert _rule_breaks(_graph(), rules) == []


def test_a_wing_importing_what_it_does_not_state_is_found():
    rules = {"p.a": ("p.base",), "p.a.inner": ("p.a",)}
    graph = {"p.a.x": {"p.base.y", "p.b.z"}, "p.a.inner.w": {"p.a.x", "p.base.y"}, "p.b.z": {"p.a.x"}}
    assert _rule_breaks(graph, rules) == ["p.a.x -> p.b.z", "p.a.inner.w -> p.base.y"]


def test_no_folder_holds_more_than_about_12_modules():
    crowded = {str(folder.relative_to(PACKAGE.parent)): count for folder in [PACKAGE, *PACKAGE.rglob("*")]
               if folder.is_dir() and (count := len([m for m in folder.glob("*.py") if m.name != "__init__.py"]))
               > MOST_MODULES}
    assert crowded == {}


def test_old_import_paths_re_export_the_moved_modules_and_the_docs_list_them():
    """A module kept at an old path (its docstring: "Moved to ``new``") holds every public name of
    the new one (its ``__all__``, where it has one), as the same objects; docs/development.md names
    each old path."""
    development = (PACKAGE.parent / "docs" / "development.md").read_text()
    kept = {}
    for name, path in _modules().items():
        moved = re.match(r"Moved to ``([\w.]+)``", ast.get_docstring(ast.parse(path.read_text())) or "")
        if moved:
            kept[name] = moved.group(1)
    assert f"{ROOT}.labeling.detect" in kept
    for old, new in kept.items():
        before, after = importlib.import_module(old), importlib.import_module(new)
        names = getattr(after, "__all__", None) or [
            key for key, value in vars(after).items()
            if not key.startswith("_") and not isinstance(value, __future__._Feature)]
        assert names and all(getattr(before, name) is getattr(after, name) for name in names), old
        assert f"`{old.removeprefix(ROOT + '.')}`" in development, old
