"""The sandbox package's layout: doors that go one way (out of the package only to the
catalogue and wire types of ``tap_sage.sage``), no import cycle, a concern on each file's first
line, rooms of a size a maintainer can read."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tap_sage" / "sandbox"
#: What the sandbox may use of the rest of the project.
ALLOWED_OUTSIDE = {"tap_sage.sage", "tap_sage.sage.catalogue", "tap_sage.sage.wire"}
#: ``from tap_sage.sage import X``: the modules X it may name.
ALLOWED_FROM_SAGE = {"catalogue", "wire"}
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
#: (file, name) of rooms longer on purpose (none today)
LONGER: set[tuple[str, str]] = set()


def _modules() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.glob("*.py")}


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import, those inside functions included."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _internal(module: str, names: list[str]) -> set[str]:
    """The sandbox modules an import names."""
    if module == "tap_sage.sandbox":
        return {f"{name}.py" for name in names}
    if module.startswith("tap_sage.sandbox."):
        return {module.split(".")[2] + ".py"}
    return set()


def test_the_sandbox_uses_only_the_catalogue_and_the_wire_types_of_the_project() -> None:
    for name, tree in _modules().items():
        for module, names in _imports(tree):
            if module.startswith(("tap_sage", "target_sage")) and not module.startswith(
                "tap_sage.sandbox"
            ):
                assert module in ALLOWED_OUTSIDE, f"{name} imports {module}"
                if module == "tap_sage.sage":
                    assert set(names) <= ALLOWED_FROM_SAGE, f"{name} imports {names} of {module}"


def test_no_import_cycle_in_the_sandbox() -> None:
    modules = _modules()
    graph = {
        name: set().union(*(_internal(m, n) for m, n in _imports(tree))) - {name}
        for name, tree in modules.items()
    }
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            assert state.get(other) != "open", f"import cycle: {' -> '.join([*path, other])}"
            if other not in state:
                visit(other, [*path, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["app.py"] and graph["seed.py"]  # the walk saw the package's imports


def test_each_file_opens_with_its_concern() -> None:
    for name, tree in _modules().items():
        doc = ast.get_docstring(tree)
        assert doc, f"{name} has no module docstring"
        assert (PACKAGE / name).read_text(encoding="utf-8").startswith('"""'), name
        assert len(doc.splitlines()[0]) > 20, f"{name}: say the concern on the first line"


def test_no_class_over_300_lines_and_no_function_over_60() -> None:
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                size = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if (name, node.name) not in LONGER:
                    assert size <= limit, f"{name}: {node.name} has {size} lines (at most {limit})"
