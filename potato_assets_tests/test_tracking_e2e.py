"""Experiment tracking end to end: real materialisations, a real MLflow store, moto over HTTP.

One full materialisation of the sample data (tracked to a temp SQLite store) feeds every test;
the other tests copy its lake and re-materialise only the models, with tracking pointed at S3 +
DynamoDB (moto's server), at a closed port, or required and unreachable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs.resources import ExperimentTracker
from potato_assets.study.models import MODEL_NAMES
from potato_assets_tests.helpers import REPO, free_port, load_defs, materialize_all, read_table, resources_for

pytestmark = pytest.mark.e2e

MODEL_KEYS = [dg.AssetKey(["gold", "models", name]) for name in MODEL_NAMES]
TERRAFORM = REPO / "terraform" / "modules" / "pipeline_runtime" / "main.tf"
JOB_ENV = "POTATO_TEST_TRACKING_JOB"


def tracker(uri: str, **kwargs) -> ExperimentTracker:
    return ExperimentTracker(tracking_uri=uri, **kwargs)


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, sample_dir):
    root = tmp_path_factory.mktemp("tracked")
    uri = sqlite_uri(root / "mlflow")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(
        sample_dir, root / "lake", instance=instance, resources={"experiment_tracker": tracker(uri)}
    )
    assert result.success
    return {"root": root, "lake": root / "lake", "uri": uri, "result": result}


def lake_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


def copy_lake(tracked, tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(tracked["lake"], lake)
    return lake


def materialize_models(sample_dir, lake: Path, experiment_tracker, **kwargs) -> dg.ExecuteInProcessResult:
    """Only the model fits and their checks, upstream read from the copied lake."""
    defs = load_defs()
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.assets(*MODEL_KEYS, ["gold", "models", "model_summary"]),
        resources=resources_for(sample_dir, lake, {"experiment_tracker": experiment_tracker}),
        **kwargs,
    )


def materialization_metadata(result, key: dg.AssetKey) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def tracking_checks(result) -> dict:
    return {e.asset_key: e for e in result.get_asset_check_evaluations() if e.check_name == "experiment_tracking"}


# ----------------------------------------------------------------------------------------------
# Local SQLite store
# ----------------------------------------------------------------------------------------------


def test_each_fit_is_a_run_whose_metrics_equal_the_gold_tables(tracked, tmp_path):
    from mlflow import MlflowClient

    result, client = tracked["result"], MlflowClient(tracked["uri"])
    modeling_event = [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(["silver", "modeling_dataset"])
    ][0]
    modeling_version = modeling_event.materialization.tags["dagster/data_version"]
    summary = read_table(tracked["lake"].as_uri(), "gold/models/model_summary").set_index("model")
    for name, key in zip(MODEL_NAMES, MODEL_KEYS, strict=True):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, f"no MLflow experiment {name}"
        [run] = client.search_runs([experiment.experiment_id])
        meta = materialization_metadata(result, key)
        assert meta["tracking_status"] == "tracked" and meta["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dagster.run_id"] == result.run_id and tags["dagster.asset_key"] == f"gold/models/{name}"
        assert tags["dagster.data_version.silver/modeling_dataset"] == modeling_version
        assert tags["dagster.code_version"] == load_defs().resolve_asset_graph().get(key).code_version
        table = read_table(tracked["lake"].as_uri(), f"gold/models/{name}")
        metrics = run.data.metrics
        for row in table.itertuples():
            assert metrics[f"coef.{row.term}.estimate"] == row.estimate
            assert metrics[f"coef.{row.term}.std_error"] == row.std_error
        assert metrics["nobs"] == summary.loc[name, "nobs"] and metrics["n_groups"] == summary.loc[name, "n_groups"]
        assert metrics["log_likelihood"] == summary.loc[name, "log_likelihood"]
        if pd.notna(summary.loc[name, "r2"]):
            assert metrics["r2"] == summary.loc[name, "r2"]
        assert run.data.params["se_type"] == summary.loc[name, "se_type"]
        csv = client.download_artifacts(run.info.run_id, "coefficients.csv", str(tmp_path))
        pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_exact=False, rtol=1e-12)
        figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
        assert figures == ["figures/fiber_vs_weight_change.png"]
    checks = tracking_checks(result)
    assert set(checks) == set(MODEL_KEYS) and all(c.passed for c in checks.values())


def test_artifacts_stay_out_of_the_lake(tracked):
    assert not any("mlflow" in p or p.endswith(".png") and "figures" not in p for p in lake_files(tracked["lake"]))
    assert (tracked["root"] / "mlflow" / "artifacts").is_dir()


# ----------------------------------------------------------------------------------------------
# S3 artifacts and the DynamoDB run index (moto's server over HTTP)
# ----------------------------------------------------------------------------------------------


def terraform_table_schema() -> dict:
    """Hash/range keys and attribute types of the run index, read from the terraform module."""
    text = TERRAFORM.read_text()
    block = text[text.index('resource "aws_dynamodb_table" "mlflow_index"') :]
    block = block[: block.index("\n}\n")]
    attributes = dict(re.findall(r'attribute\s*{\s*name\s*=\s*"(\w+)"\s*type\s*=\s*"(\w)"', block))
    return {
        "hash": re.search(r'hash_key\s*=\s*"(\w+)"', block).group(1),
        "range": re.search(r'range_key\s*=\s*"(\w+)"', block).group(1),
        "attributes": attributes,
    }


def create_index_table(name: str) -> dict:
    import boto3

    schema = terraform_table_schema()
    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": schema["hash"], "KeyType": "HASH"},
            {"AttributeName": schema["range"], "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in schema["attributes"].items()],
    )
    return schema


def scan(table: str) -> list[dict]:
    import boto3

    return boto3.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]


def tracked_models_job() -> dg.JobDefinition:
    """Reconstructable job (for a real Dagster re-execution): the models, tracked to S3/DynamoDB."""
    config = json.loads(os.environ[JOB_ENV])
    defs = load_defs()
    job = dg.define_asset_job(
        "tracked_models",
        selection=dg.AssetSelection.assets(*MODEL_KEYS, ["gold", "models", "model_summary"]),
    )
    resources = resources_for(config["landing"], config["lake"], {"experiment_tracker": tracker(**config["tracker"])})
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources=resources,
        jobs=[job],
        executor=defs.executor,
    ).resolve_job_def("tracked_models")


def test_s3_artifacts_and_one_index_item_per_run_updated_on_reexecution(
    tracked, moto_s3, sample_dir, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    bucket, table = "cdp-dev-mlflow-artifacts", "cdp-dev-mlflow-backend"
    moto_s3.create_bucket(Bucket=bucket)
    schema = create_index_table(table)
    assert schema == {
        "hash": "experiment_id",
        "range": "run_uuid",
        "attributes": {"experiment_id": "S", "run_uuid": "S"},
    }
    lake = copy_lake(tracked, tmp_path)
    uri = sqlite_uri(tmp_path / "mlflow")
    settings = {"uri": uri, "artifact_root": f"s3://{bucket}/mlflow", "index_table": table}
    monkeypatch.setenv(JOB_ENV, json.dumps({"landing": str(sample_dir), "lake": str(lake), "tracker": settings}))
    job = dg.reconstructable(tracked_models_job)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        first = dg.execute_job(job, instance=instance)
        assert first.success
        items = scan(table)
        assert len(items) == len(MODEL_NAMES)
        client = MlflowClient(uri)
        by_run = {item["run_uuid"]["S"]: item for item in items}
        for name in MODEL_NAMES:
            experiment = client.get_experiment_by_name(name)
            assert experiment.artifact_location == f"s3://{bucket}/mlflow/{name}"
            [run] = client.search_runs([experiment.experiment_id])
            run_id = run.info.run_id
            keys = {
                o["Key"] for o in moto_s3.list_objects_v2(Bucket=bucket, Prefix=f"mlflow/{name}/{run_id}/")["Contents"]
            }
            prefix = f"mlflow/{name}/{run_id}/artifacts/"
            assert {
                prefix + "coefficients.csv",
                prefix + "coefficients.parquet",
                prefix + "summary.txt",
            } <= keys
            assert prefix + "figures/fiber_vs_weight_change.png" in keys
            item = by_run[run_id]
            assert item["experiment_id"] == {"S": experiment.experiment_id}
            assert item["run_name"] == {"S": run.info.run_name} and item["status"] == {"S": "FINISHED"}
            assert Decimal(item["start_time"]["N"]) == run.info.start_time
            assert Decimal(item["end_time"]["N"]) == run.info.end_time
            metrics = item["metrics"]["M"]
            assert {k: float(v["N"]) for k, v in metrics.items()} == run.data.metrics
            assert all(set(v) == {"N"} for v in metrics.values())
            assert item["params"]["M"]["formula"] == {"S": run.data.params["formula"]}
            assert item["tags"]["M"]["dagster.run_id"] == {"S": first.run_id}

        # A rerun of the same materialisation (Dagster re-execution: new run id, same root run).
        time.sleep(0.01)
        options = dg.ReexecutionOptions(parent_run_id=first.run_id)
        second = dg.execute_job(job, instance=instance, reexecution_options=options)
        assert second.success and second.run_id != first.run_id
        after = {item["run_uuid"]["S"]: item for item in scan(table)}
        assert set(after) == set(by_run), "a rerun must update the index items, not add new ones"
        for run_id, item in after.items():
            assert item["tags"]["M"]["dagster.run_id"] == {"S": second.run_id}
            assert item["tags"]["M"]["dagster.root_run_id"] == {"S": first.run_id}
            assert int(item["end_time"]["N"]) >= int(by_run[run_id]["end_time"]["N"])
        for name in MODEL_NAMES:
            experiment = client.get_experiment_by_name(name)
            assert len(client.search_runs([experiment.experiment_id])) == 1


# ----------------------------------------------------------------------------------------------
# Tracking as a side channel
# ----------------------------------------------------------------------------------------------


def closed_port_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_unreachable_store_still_materialises_with_a_warn_check_and_a_log_line(tracked, sample_dir, tmp_path, capsys):
    lake = copy_lake(tracked, tmp_path)
    before = lake_files(lake)
    instance = dg.DagsterInstance.ephemeral()
    started = time.monotonic()
    result = materialize_models(sample_dir, lake, tracker(closed_port_uri()), instance=instance)
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\nmodels with an unreachable MLflow server: {seconds:.1f} s")
    assert result.success
    for key in MODEL_KEYS:
        meta = materialization_metadata(result, key)
        assert meta["tracking_status"] == "failed" and "127.0.0.1" in meta["tracking_error"]
    checks = tracking_checks(result)
    assert set(checks) == set(MODEL_KEYS)
    for evaluation in checks.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert "experiment tracking failed" in evaluation.description
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if not e.is_dagster_event and e.level == logging.WARNING and "experiment tracking failed" in e.user_message
    ]
    assert sorted(w.split(":")[0] for w in warnings) == sorted(MODEL_NAMES)
    # The lake is what a tracked run leaves: same files, same tables.
    after = lake_files(lake)
    assert set(after) == set(before)
    for name in [*MODEL_NAMES, "model_summary"]:
        pd.testing.assert_frame_equal(
            read_table(lake.as_uri(), f"gold/models/{name}"),
            read_table(tracked["lake"].as_uri(), f"gold/models/{name}"),
        )


def test_required_tracking_fails_the_models_with_a_clear_message(tracked, sample_dir, tmp_path):
    lake = copy_lake(tracked, tmp_path)
    before = lake_files(lake)
    result = materialize_models(sample_dir, lake, tracker(closed_port_uri(), required=True), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert "POTATO_MLFLOW_REQUIRED=true" in message and "127.0.0.1" in message and "ols_cluster" in message
    assert not result.get_asset_materialization_events()
    assert lake_files(lake) == before
