"""Imports run one way: shared torch-free code below, services and model code above it, tools
and benches on top, tests over everything; no cycles; no model.py finds its code by editing
sys.path (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from genmedia_shared.paths import REPO_ROOT

FORBIDDEN: dict[str, set[str]] = {
    # layer (its folder): the top-level packages it must not import
    "genmedia_shared": {"services", "genmedia_models", "tools", "bench", "tests", "torch"},
    "services": {"genmedia_models", "tools", "bench", "tests", "torch"},
    "models/genmedia_models": {"services", "tools", "bench", "tests"},
    "models/repository": {"services", "tools", "bench", "tests"},
    "tools": {"bench", "tests"},
    "bench": {"tests"},
}


def python_files(folder: str) -> Iterator[Path]:
    yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, wherever the import statement is (TYPE_CHECKING too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def module_name(path: Path) -> str:
    relative = path.relative_to(
        REPO_ROOT / "models" if "genmedia_models" in path.parts else REPO_ROOT
    )
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    wrong = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for path in python_files(layer)
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[layer]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["genmedia_shared", "services", "models/genmedia_models"])
def test_no_import_cycle(package: str) -> None:
    files = list(python_files(package))
    names = {module_name(path) for path in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        graph[module_name(path)] = {m for m in imported_modules(path) if m in names}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in graph[module]:
            if imported in trail:
                cycles.append([*trail[trail.index(imported) :], imported])
            elif not any(imported in cycle for cycle in cycles):
                visit(imported, [*trail, imported])

    for module in sorted(graph):
        visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_model_finds_its_code_by_editing_sys_path() -> None:
    for path in (REPO_ROOT / "models" / "repository").glob("*/1/model.py"):
        source = path.read_text()
        assert "sys.path" not in source, f"{path}: the model code is installed as a package"


def test_the_triton_image_ships_no_tools() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "triton.Dockerfile").read_text()
    assert "tools/" not in dockerfile and "training" not in dockerfile
    assert not (REPO_ROOT / "models" / "genmedia_models" / "training").exists()
    assert not list((REPO_ROOT / "models" / "genmedia_models").glob("test_*.py"))
