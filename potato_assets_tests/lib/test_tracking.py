"""lib/tracking.py against a real MLflow SQLite store in a temp folder (no server, no mocks)."""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from potato_assets.lib import tracking
from potato_assets.study import fitting
from potato_assets_tests.helpers import free_port


def small_panel(seed: int = 1, n_subjects: int = 12, n_weeks: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_subjects), n_weeks)
    n = idx.size
    df = pd.DataFrame(
        {
            "subject_id": [f"s{i:02d}" for i in idx],
            "week": np.tile(np.arange(1, n_weeks + 1), n_subjects),
            "fiber_g_week": rng.uniform(100, 300, n),
            "kcal_week_thousands": rng.normal(14, 1.5, n),
            "beans_week": rng.integers(0, 2, n),
            "potato_week": rng.integers(0, 2, n),
        }
    )
    df["delta_kg_next"] = -0.004 * df["fiber_g_week"] + 0.1 * df["kcal_week_thousands"] + rng.normal(0, 0.5, n)
    return df


@pytest.fixture(scope="module")
def fit() -> fitting.ModelFit:
    return fitting.fit_ols_cluster(small_panel())


@pytest.fixture
def target(tmp_path) -> tracking.TrackingTarget:
    return tracking.TrackingTarget(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")


def record_for(fit: fitting.ModelFit, run_id: str = "run-1", root: str | None = None) -> tracking.FitRecord:
    return tracking.fit_record(
        fit,
        dagster_run_id=run_id,
        root_run_id=root,
        asset_key=f"gold/models/{fit.name}",
        code_version="7",
        data_version="abc123",
        figures={"tiny": b"\x89PNG fake bytes"},
    )


def test_metrics_are_every_coefficient_and_se_with_valid_keys(fit):
    metrics = tracking.fit_metrics(fit)
    for row in fit.coefficients.itertuples():
        assert metrics[f"coef.{row.term}.estimate"] == row.estimate
        assert metrics[f"coef.{row.term}.std_error"] == row.std_error
    assert metrics["nobs"] == fit.summary["nobs"] and metrics["r2"] == fit.summary["r2"]
    assert metrics["log_likelihood"] == fit.summary["log_likelihood"]


def test_unsafe_names_become_valid_keys_and_nonfinite_values_are_left_out(fit, target):
    coefs = fit.coefficients.copy()
    coefs.loc[0, "term"] = "log(fiber):beans*2"
    coefs.loc[1, "std_error"] = float("nan")
    odd = replace(fit, coefficients=coefs, summary={**fit.summary, "r2": float("inf"), "group_var": None})
    metrics = tracking.fit_metrics(odd)
    assert "coef.log_fiber__beans_2.estimate" in metrics
    assert f"coef.{coefs.loc[1, 'term']}.std_error" not in metrics
    assert "r2" not in metrics and "group_var" not in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    # MLflow itself validates the keys when they are logged.
    run = tracking.log_fit(target, record_for(odd))
    from mlflow import MlflowClient

    logged = MlflowClient(target.tracking_uri).get_run(run.run_id).data.metrics
    assert logged == pytest.approx(metrics)


def test_one_run_in_the_models_experiment_with_tags_params_metrics_artifacts(fit, target, tmp_path):
    from mlflow import MlflowClient

    run = tracking.log_fit(target, record_for(fit))
    client = MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name("ols_cluster")
    assert experiment is not None and run.experiment_id == experiment.experiment_id
    # Local store: artifacts beside the database, not in the working directory.
    assert experiment.artifact_location == (tmp_path / "mlflow" / "artifacts" / "ols_cluster").as_uri()
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.end_time is not None
    tags = logged.data.tags
    assert tags["dagster.run_id"] == "run-1" and tags["dagster.root_run_id"] == "run-1"
    assert tags["dagster.asset_key"] == "gold/models/ols_cluster" and tags["dagster.code_version"] == "7"
    assert tags["dagster.data_version.silver/modeling_dataset"] == "abc123"
    params = logged.data.params
    assert params["formula"].startswith("delta_kg_next ~ fiber_g_week")
    assert params["se_type"] == fit.summary["se_type"] and "optimiser" in params
    assert params["unit.fiber_g_week"].startswith("g of fiber")
    assert logged.data.metrics == pytest.approx(tracking.fit_metrics(fit))
    names = {a.path for a in client.list_artifacts(run.run_id)} | {
        a.path for a in client.list_artifacts(run.run_id, "figures")
    }
    assert {
        "coefficients.csv",
        "coefficients.parquet",
        "summary.txt",
        "summary.json",
        "figures/tiny.png",
    } <= names
    csv = Path(client.download_artifacts(run.run_id, "coefficients.csv", str(tmp_path)))
    pd.testing.assert_frame_equal(pd.read_csv(csv), fit.coefficients, check_exact=False, rtol=1e-12)
    parquet = Path(client.download_artifacts(run.run_id, "coefficients.parquet", str(tmp_path)))
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), fit.coefficients)
    assert Path(client.download_artifacts(run.run_id, "summary.txt", str(tmp_path))).read_text() == fit.text


def test_same_root_run_and_asset_reuse_the_run_a_new_root_run_does_not(fit, target):
    from mlflow import MlflowClient

    first = tracking.log_fit(target, record_for(fit, run_id="run-1"))
    # A re-execution: new Dagster run id, same root run id.
    again = tracking.log_fit(target, record_for(fit, run_id="run-2", root="run-1"))
    assert again.run_id == first.run_id and again.reused and not first.reused
    client = MlflowClient(target.tracking_uri)
    runs = client.search_runs([first.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["dagster.run_id"] == "run-2"
    fresh = tracking.log_fit(target, record_for(fit, run_id="run-3"))
    assert fresh.run_id != first.run_id
    assert len(client.search_runs([first.experiment_id])) == 2


def test_a_changed_fit_under_the_same_identity_gets_a_new_run(fit, target):
    first = tracking.log_fit(target, record_for(fit))
    changed = replace(record_for(fit), params={**record_for(fit).params, "se_type": "something else"})
    assert tracking.log_fit(target, changed).run_id != first.run_id


def test_index_item_has_the_terraform_types_and_no_nan(fit, target):
    from boto3.dynamodb.types import TypeSerializer
    from mlflow import MlflowClient

    run = tracking.log_fit(target, record_for(fit))
    client = MlflowClient(target.tracking_uri)
    client.log_metric(run.run_id, "not_a_number", float("nan"))
    client.log_metric(run.run_id, "infinite", float("inf"))
    item = tracking.index_item(client.get_run(run.run_id), "ols_cluster")
    assert item["experiment_id"] == run.experiment_id and item["run_uuid"] == run.run_id
    assert item["run_name"] == run.run_name and item["status"] == "FINISHED"
    assert isinstance(item["start_time"], Decimal) and item["end_time"] >= item["start_time"]
    assert "not_a_number" not in item["metrics"] and "infinite" not in item["metrics"]
    assert all(isinstance(v, Decimal) for v in item["metrics"].values())
    assert item["metrics"]["coef.fiber_g_week.estimate"] == Decimal(repr(float(fit.coefficients.loc[1, "estimate"])))
    assert item["params"]["formula"].startswith("delta_kg_next") and item["tags"]["dagster.run_id"] == "run-1"
    wire = TypeSerializer().serialize(item)["M"]  # boto3 refuses floats and NaN: this must not raise
    assert wire["experiment_id"] == {"S": run.experiment_id} and "S" in wire["run_uuid"]
    assert "N" in wire["start_time"] and "M" in wire["metrics"] and "M" in wire["params"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, Decimal("0.1")),
        (3, Decimal(3)),
        (1795633887599, Decimal("1795633887599")),
        (0.0, Decimal(0)),
        (float("nan"), None),
        (float("-inf"), None),
        (None, None),
        (1e-300, None),
        ("text", None),
    ],
)
def test_dynamo_number(value, expected):
    assert tracking.dynamo_number(value) == expected


def test_http_bounds_apply_only_where_unset():
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "99"}
    tracking.bound_http_retries(env)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == tracking.MLFLOW_HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    opted_in = {"MLFLOW_DISABLE_TELEMETRY": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}
    tracking.bound_http_retries(opted_in)
    assert opted_in["MLFLOW_DISABLE_TELEMETRY"] == "false"
    # Never printed: MLflow's "View run" line quotes the tracking URI with its credentials.
    assert opted_in["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"


def test_mlflow_telemetry_is_off_in_a_process_that_logged_a_fit(tmp_path):
    import subprocess
    import sys

    code = (
        "from potato_assets.lib import tracking\n"
        f"tracking.client_for(tracking.TrackingTarget('sqlite:///{tmp_path}/m.db', None, None))\n"
        "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
        "print(MLFLOW_DISABLE_TELEMETRY.get())\n"
    )
    # MLflow also stays quiet under CI/pytest variables; this checks the project's own switch.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_the_run_link_carries_no_credentials():
    url = tracking.run_url("https://alice:s3cr3t-tok@mlflow.example:5000/base/?token=q-s3cr3t", "7", "abc")
    assert url == "https://mlflow.example:5000/base/#/experiments/7/runs/abc"
    assert tracking.run_url("sqlite:////tmp/m.db", "7", "abc") is None


def test_default_artifact_root():
    assert tracking.default_artifact_root("sqlite:////tmp/x/mlflow.db") == "file:///tmp/x/artifacts"
    assert tracking.default_artifact_root("http://mlflow.internal:5000") is None


def test_an_unreachable_server_raises(fit, capsys):
    from mlflow.exceptions import MlflowException

    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(MlflowException, match="127.0.0.1"):
        tracking.log_fit(tracking.TrackingTarget(uri), record_for(fit))
    with capsys.disabled():
        print(f"\nunreachable MLflow server: failed after {time.monotonic() - started:.1f} s")


def test_coefficients_parquet_roundtrip(fit):
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(tracking.coefficients_parquet(fit))), fit.coefficients)
