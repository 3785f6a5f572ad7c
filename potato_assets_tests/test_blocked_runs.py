"""A run blocked by a check changes nothing downstream of the block.

The graph property (fast): every gold asset waits for every bronze and silver asset that carries a
blocking check, and every published gold asset (figures, report) waits for every model asset that
carries one; the model checks of ERROR severity are blocking. The end-to-end cases start from a
good run of the sample, then land a subset of its subjects and hash every lake file before and
after: one subject stops at the silver contract (gold untouched), five subjects fit models that
fail `enough_clusters` (figures and report untouched, and the CLI exits non-zero).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import cli_env, cli_home, load_defs, materialize_all, run_cli

GOLD_PUBLISHED = ("figures", "reports")


def _graph():
    return load_defs().resolve_asset_graph()


def _upstream(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    todo = [key]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _blocking_checked(graph) -> set[dg.AssetKey]:
    return {spec.asset_key for ad in graph.assets_defs for spec in ad.check_specs if spec.blocking}


def test_every_gold_asset_waits_for_every_blocking_check_upstream_of_gold():
    graph = _graph()
    gated = _blocking_checked(graph)
    assert {k.path[0] for k in gated} == {"bronze", "silver", "gold"}
    gold = [k for k in graph.get_all_asset_keys() if k.path[0] == "gold" and graph.get(k).is_materializable]
    published = [k for k in gold if k.path[1] in GOLD_PUBLISHED]
    assert len(published) == 3
    for key in gold:
        missing = {a for a in gated if a.path[0] in ("bronze", "silver")} - _upstream(graph, key)
        assert not missing, f"{key.to_user_string()} does not wait for {sorted(m.to_user_string() for m in missing)}"
    for key in published:
        missing = {a for a in gated if a.path[0] == "gold"} - _upstream(graph, key)
        assert not missing, f"{key.to_user_string()} does not wait for {sorted(m.to_user_string() for m in missing)}"


def test_model_checks_of_error_severity_block():
    graph = _graph()
    specs = {(s.asset_key.path[-1], s.name): s for ad in graph.assets_defs for s in ad.check_specs}
    for key in [
        ("model_summary", "all_models_converged"),
        ("ols_cluster", "enough_clusters"),
        ("fixed_effects", "enough_clusters"),
    ]:
        assert specs[key].blocking, key
    for model in ("ols_cluster", "fixed_effects", "mixed_effects"):
        assert specs[(model, "finite_estimates")].blocking
    # WARN-only checks never block.
    assert not specs[("model_summary", "fiber_estimates_agree")].blocking
    assert not specs[("mixed_effects", "not_singular")].blocking


# --- end to end -------------------------------------------------------------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _landing_of_subjects(sample_dir: Path, target: Path, subjects: set[int]) -> Path:
    target.mkdir(parents=True)
    for spec in LANDING_FILES:
        lines = (sample_dir / spec.file_name).read_text().splitlines(keepends=True)
        kept = [lines[0], *(line for line in lines[1:] if int(line.split(",", 1)[0]) in subjects)]
        (target / spec.file_name).write_text("".join(kept))
    return target


@pytest.fixture(scope="module")
def good_lake(tmp_path_factory, sample_dir):
    root = tmp_path_factory.mktemp("good")
    assert materialize_all(sample_dir, root / "lake").success
    return root / "lake"


def _copy(good_lake: Path, tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(good_lake, lake)
    return lake


def _gold(hashes: dict[str, str], parts: tuple[str, ...] = ("models", *GOLD_PUBLISHED)) -> dict[str, str]:
    return {k: v for k, v in hashes.items() if k.startswith(tuple(f"gold/{p}/" for p in parts))}


@pytest.mark.e2e
def test_a_run_blocked_at_silver_leaves_gold_byte_identical(good_lake, sample_dir, tmp_path):
    lake = _copy(good_lake, tmp_path)
    before = _hashes(lake)
    assert len(_gold(before)) >= 7  # 4 model tables, 2 figures, 2 report files
    landing = _landing_of_subjects(sample_dir, tmp_path / "landing", {1})
    result = materialize_all(landing, lake, raise_on_error=False)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert any(e.asset_key.path == ["silver", "modeling_dataset"] for e in failed), failed
    materialized = {e.materialization.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert "gold" not in materialized
    after = _hashes(lake)
    assert _gold(after) == _gold(before)
    # The run did get as far as silver (so the comparison is not vacuous).
    assert after["silver/modeling_dataset/_current.json"] != before["silver/modeling_dataset/_current.json"]


@pytest.mark.e2e
def test_unreliable_models_fail_the_cli_run_and_leave_figures_and_report(good_lake, sample_dir, tmp_path):
    lake = _copy(good_lake, tmp_path)
    before = _hashes(lake)
    landing = _landing_of_subjects(sample_dir, tmp_path / "landing", {1, 2, 3, 4, 5})
    proc = run_cli(cli_env(cli_home(tmp_path), landing, lake), tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "enough_clusters" in output
    after = _hashes(lake)
    assert _gold(after, GOLD_PUBLISHED) == _gold(before, GOLD_PUBLISHED)
    # The models themselves were refitted: the block is at their checks, not before them.
    assert after["gold/models/ols_cluster.parquet"] != before["gold/models/ols_cluster.parquet"]
