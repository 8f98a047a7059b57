"""The package's layers, read from its imports: the plumbing never reaches up into the tree.

runtime/, rules/ and edges/ are what the tree is built on; the tree (`actors.tree`) uses them,
and the handle that assembles an agent (`actors.agent_handle`) sits above both. An import the
other way round is a cycle waiting to happen, and a layer that can no longer be read alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def modules_of(layer: str) -> list[Path]:
    return sorted((ROOT / "actors" / layer).glob("*.py"))


@pytest.mark.parametrize("layer", ["runtime", "rules", "edges"])
def test_the_plumbing_imports_neither_the_tree_nor_the_handle(layer: str) -> None:
    offending = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in modules_of(layer)
        for module in imported_modules(path)
        if module.startswith(("actors.tree", "actors.agent_handle"))
    }
    assert not offending, sorted(offending)


def test_the_tree_does_not_import_the_handle_that_assembles_it() -> None:
    offending = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in modules_of("tree")
        for module in imported_modules(path)
        if module.startswith("actors.agent_handle")
    }
    assert not offending, sorted(offending)
