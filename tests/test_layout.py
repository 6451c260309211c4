"""The layout is the architecture: the boundaries between packages hold, and no module imports itself back.

Read from the source with `ast` (no import runs): every module's imports of
the project, at module level and inside functions alike, since a function's
import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "router", "worker", "qos", "bench")
# What each package may import from the project (the import direction of docs/architecture.md).
ALLOWED = {
    "qos": {"qos"},
    "engine": {"engine", "qos"},
    "worker": {"worker", "engine.protocol", "qos"},
    "router": {"router", "engine", "qos"},
    "bench": set(PACKAGES),
}
MAX_LINES = 400
# Libraries a package must not import: qos and the engine run, and are tested, without a model library or a web stack.
HEAVY = {"torch", "transformers", "starlette", "uvicorn"}
FORBIDDEN = {"qos": HEAVY, "engine": HEAVY}


def modules() -> dict[str, Path]:
    return {f"{package}.{path.stem}": path for package in PACKAGES for path in sorted((ROOT / package).glob("*.py"))}


def imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (``package.module``)."""
    package = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
            elif node.module and node.module.startswith("niyama."):
                base = node.module.removeprefix("niyama.")
                if "." in base:
                    found.add(base)
                    continue
            else:
                continue
            if node.level and node.module:
                found.add(f"{base}.{node.module}")
            else:
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("niyama.") for a in node.names if a.name.startswith("niyama."))
    known = modules()
    return {module for module in found if module in known and module != name}


GRAPH = {name: imports(name, path) for name, path in modules().items()}


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "bench"])
def test_each_package_imports_only_what_it_may(package):
    crossings = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.startswith(package + ".")
        for target in targets
        if not any(target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED[package])
    }
    assert not crossings


def libraries(path: Path) -> set[str]:
    """The top-level names of everything ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_qos_and_the_engine_import_no_model_library_or_web_stack(package):
    assert not {
        (name, library)
        for name, path in modules().items()
        if name.startswith(package + ".")
        for library in libraries(path) & FORBIDDEN[package]
    }


def test_no_module_imports_itself_back():
    cycles = []
    for start in GRAPH:
        stack = [(start, (start,))]
        seen = set()
        while stack:
            name, path = stack.pop()
            for target in GRAPH[name]:
                if target == start:
                    cycles.append(path)
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, (*path, target)))
    assert not cycles, cycles[:3]


def test_no_source_file_is_over_400_lines():
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in modules().values()}
    assert not {path: lines for path, lines in lengths.items() if lines > MAX_LINES}
