"""Full materialisations of the graph: in process, through the CLI, and on S3 (moto over HTTP)."""

from __future__ import annotations

import shutil
import uuid

import dagster as dg
import pandas as pd
import pytest

from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import cli_env, cli_home, materialize_all, read_table, run_cli

pytestmark = pytest.mark.e2e
COEF_COLUMNS = ["term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]


def check_lake(lake_uri: str) -> None:
    for name in ("ols_cluster", "fixed_effects", "mixed_effects"):
        table = read_table(lake_uri, f"gold/models/{name}")
        assert list(table.columns) == COEF_COLUMNS
        assert "fiber_g_week" in set(table["term"])
    summary = read_table(lake_uri, "gold/models/model_summary")
    assert summary["model"].tolist() == ["ols_cluster", "fixed_effects", "mixed_effects"]
    modeling = read_table(lake_uri, "silver/modeling_dataset")
    assert summary["nobs"].tolist() == [len(modeling)] * 3


def test_materialize_everything_on_the_seed_study(seed_dir, tmp_path):
    lake = tmp_path / "lake"
    result = materialize_all(seed_dir, lake)
    assert result.success
    check_lake(lake.as_uri())
    for rel in (
        "gold/reports/model_report.md",
        "gold/reports/model_report.html",
        "gold/figures/fiber_vs_weight_change.png",
        "gold/figures/subject_trajectories.png",
        "gold/models/mixed_effects.txt",
    ):
        assert (lake / rel).stat().st_size > 0, rel
    html = (lake / "gold/reports/model_report.html").read_text()
    assert "../figures/fiber_vs_weight_change.png" in html
    fig = result.asset_materializations_for_node("gold__figures__fiber_vs_weight_change")[0]
    assert fig.metadata["figure"].value.startswith("![")
    bronze = read_table(lake.as_uri(), "bronze/weight")
    assert {"source_file", "source_line", "ingested_at"} <= set(bronze.columns)
    assert len(bronze) == 600 and bronze["source_line"].min() == 2
    quarantine = read_table(lake.as_uri(), "bronze/quarantine")
    assert quarantine.empty


def test_cli_materialize_select_all(seed_dir, tmp_path):
    home = cli_home(tmp_path)
    proc = run_cli(cli_env(home, f"file://{seed_dir}", tmp_path / "lake"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_lake((tmp_path / "lake").as_uri())
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.get_latest_materialization_event(dg.AssetKey(["gold", "reports", "model_report"]))
    finally:
        instance.dispose()


def test_whole_graph_on_s3(moto_s3, seed_dir):
    bucket = f"potato-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    for spec in LANDING_FILES:
        moto_s3.upload_file(str(seed_dir / spec.file_name), bucket, f"landing/{spec.file_name}")
    lake = f"s3://{bucket}/lake"
    assert materialize_all(f"s3://{bucket}/landing", lake).success
    keys = {o["Key"] for o in moto_s3.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]}
    assert {
        "lake/bronze/weight/_current.json",
        "lake/silver/modeling_dataset/_current.json",
        "lake/gold/models/model_summary.parquet",
        "lake/gold/reports/model_report.html",
        "lake/gold/figures/subject_trajectories.png",
    } <= keys
    check_lake(lake)


def test_missing_landing_file_fails_with_a_plain_sentence(seed_dir, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(seed_dir / "Potato_tidy.csv", landing)
    result = materialize_all(landing, tmp_path / "lake", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "was not found in the landing zone" in failure.step_failure_data.error.message
    assert not (tmp_path / "lake").exists()


def test_same_numbers_whatever_the_row_order(seed_dir, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    for spec in LANDING_FILES:
        df = pd.read_csv(seed_dir / spec.file_name, dtype=str, keep_default_na=False)
        df.sample(frac=1.0, random_state=7).to_csv(landing / spec.file_name, index=False)
    materialize_all(landing, tmp_path / "shuffled")
    materialize_all(seed_dir, tmp_path / "clean")
    for name in ("ols_cluster", "fixed_effects", "mixed_effects", "model_summary"):
        a = read_table(str(tmp_path / "shuffled"), f"gold/models/{name}")
        b = read_table(str(tmp_path / "clean"), f"gold/models/{name}")
        pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_every_table_column_has_a_description_and_the_flags_are_integers(sample_dir, tmp_path):
    lake = tmp_path / "lake"
    result = materialize_all(sample_dir, lake)
    assert result.success
    schemas = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if "dagster/column_schema" in materialization.metadata:
            key = materialization.asset_key.to_user_string()
            schemas[key] = materialization.metadata["dagster/column_schema"].schema
    silver = {"study_calendar", "subject_trajectories", "weekly_features", "modeling_dataset"}
    gold = {"ols_cluster", "fixed_effects", "mixed_effects", "model_summary"}
    assert {f"silver/{n}" for n in silver} | {f"gold/models/{n}" for n in gold} <= set(schemas)
    for key, schema in schemas.items():
        undescribed = [c.name for c in schema.columns if not (c.description or "").strip()]
        assert not undescribed, f"{key}: no description for {undescribed}"
    modeling = {c.name: c.type for c in schemas["silver/modeling_dataset"].columns}
    assert modeling["beans_week"] == "Int64" and modeling["potato_week"] == "Int64"
    table = read_table(lake.as_uri(), "silver/modeling_dataset")
    assert set(table["beans_week"].unique()) <= {0, 1} and set(table["potato_week"].unique()) <= {0, 1}
