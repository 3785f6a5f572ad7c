"""Each model name is one string literal in the package: the registry's entry (study/models.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import potato_assets
from potato_assets.study.models import MODEL_NAMES, MODELS, MODELS_BY_NAME

PACKAGE = Path(potato_assets.__file__).parent


def _literal_places(root: Path, names: set[str]) -> dict[str, list[str]]:
    """Where each name occurs as a whole string constant under root (f-string parts included)."""
    places: dict[str, list[str]] = {name: [] for name in names}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                places[node.value].append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return places


def test_each_model_name_is_one_literal_in_the_package():
    places = _literal_places(PACKAGE, set(MODEL_NAMES))
    repeated = {name: where for name, where in places.items() if len(where) != 1}
    assert not repeated, f"model names spelled more than once (or not at all): {repeated}"
    assert all(where[0].startswith("potato_assets/study/models.py:") for where in places.values()), places


def test_the_scan_finds_every_spelling(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text('X = "ols_cluster"\n', encoding="utf-8")
    (package / "sub" / "b.py").write_text(
        'def f(name="ols_cluster"):\n    return {"ols_cluster": f"{name}"}, "ols_cluster_x"\n', encoding="utf-8"
    )
    places = _literal_places(package, {"ols_cluster"})
    assert places == {"ols_cluster": ["pkg/a.py:1", "pkg/sub/b.py:1", "pkg/sub/b.py:2"]}


def test_registry_is_consistent():
    assert len(set(MODEL_NAMES)) == len(MODELS) == len(MODELS_BY_NAME)
    for spec in MODELS:
        assert spec.name.isidentifier()  # it is an input name in the Dagster functions
        from potato_assets.study import fitting

        assert callable(getattr(fitting, spec.fitter)), spec.fitter
