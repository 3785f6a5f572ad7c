"""The rooms keep their doors: imports point down only (README, "Layout"), read from the source
(every import, also the lazy ones inside functions), so a violation fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from potato_assets_tests.helpers import REPO

PACKAGE = REPO / "potato_assets"
TESTS = REPO / "potato_assets_tests"


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every import in the file; relative imports resolved against it."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from potato_assets import defs` names the module it imports
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if name == "potato_assets"]
    return found


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offences(folder: Path, allowed: tuple[str, ...], forbidden_outside: tuple[str, ...]) -> list[str]:
    """Imports of a module under `forbidden_outside` that is not under `allowed`."""
    bad = []
    for path in modules(folder):
        for line, name in imports(path):
            if under(name, forbidden_outside) and not under(name, allowed):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return bad


def test_the_science_imports_no_dagster_and_nothing_of_the_project_outside_study():
    assert modules(PACKAGE / "study"), "no study package"
    assert offences(PACKAGE / "study", ("potato_assets.study",), ("potato_assets", "dagster")) == []


def test_the_infrastructure_never_imports_the_wiring():
    assert offences(PACKAGE / "lib", (), ("potato_assets.defs",)) == []


def test_the_report_imports_only_the_science_and_the_infrastructure():
    allowed = ("potato_assets.study", "potato_assets.lib", "potato_assets.report")
    assert offences(PACKAGE / "report", allowed, ("potato_assets", "dagster")) == []


def test_only_defs_resources_builds_resources():
    """Every resource is built from settings in defs/resources.py: no other module hands
    `resources=` to dg.Definitions."""
    bad = []
    for path in modules(PACKAGE):
        if path == PACKAGE / "defs" / "resources.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "resources" for k in node.keywords):
                func = ast.unparse(node.func)
                if func.endswith("Definitions"):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} builds resources")
    assert bad == []


def test_test_modules_import_helpers_not_each_other():
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules(TESTS)
        for line, name in imports(path)
        if name.startswith("potato_assets_tests.") and name.rsplit(".", 1)[-1].startswith(("test_", "conftest"))
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import dagster as dg\n", ["dagster"]),
        ("def f():\n    from potato_assets.lib import process\n", ["potato_assets.lib"]),
        ("from potato_assets import defs\n", ["potato_assets", "potato_assets.defs"]),
        ("from . import schema\n", ["potato_assets.study"]),
        ("from ..lib.process import preload\n", ["potato_assets.lib.process"]),
    ],
)
def test_the_reader_sees_lazy_aliased_and_relative_imports(source, expected):
    probe = PACKAGE / "study" / "probe.py"  # read from `source`, never from disk
    assert [name for _, name in imports(probe, source)] == expected
