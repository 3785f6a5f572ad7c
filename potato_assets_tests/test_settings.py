import os
from pathlib import Path

import pytest

from potato_assets.defs.resources import build_resources
from potato_assets.settings import DEFAULT_DATA_DIR, SAMPLE_DATA_DIR, load_settings, normalize_uri


def test_defaults_are_local_lake_and_bundled_sample():
    s = load_settings({})
    assert s.lake_uri == (DEFAULT_DATA_DIR / "lake").as_uri()
    assert s.landing_uri == SAMPLE_DATA_DIR.as_uri()
    assert s.max_quarantine_share == 0.05
    assert s.freshness_hours == 26.0 and s.schedule_cron == "0 6 * * *" and s.schedule_timezone == "UTC"
    assert s.landing_poll_seconds == 30
    assert s.lake_buckets == 32 and load_settings({"POTATO_LAKE_BUCKETS": " 7 "}).lake_buckets == 7
    assert load_settings({"POTATO_LANDING_POLL_SECONDS": "5"}).landing_poll_seconds == 5
    assert s.alert_webhook_url is None and s.pushgateway_url is None and s.mlflow_index_table is None
    assert s.mlflow_required is False and s.mlflow_artifact_root is None
    assert s.log_format == "text" and load_settings({"POTATO_LOG_FORMAT": "JSON"}).log_format == "json"
    assert s.mlflow_tracking_uri == f"sqlite:///{DEFAULT_DATA_DIR / 'mlflow' / 'mlflow.db'}"


def test_values_from_environment():
    s = load_settings(
        {
            "POTATO_FRESHNESS_HOURS": "2.5",
            "POTATO_MLFLOW_REQUIRED": "true",
            "POTATO_ALERT_WEBHOOK_URL": " http://x/hook ",
        }
    )
    assert s.freshness_hours == 2.5 and s.mlflow_required is True and s.alert_webhook_url == "http://x/hook"
    assert load_settings({"POTATO_MLFLOW_ARTIFACT_ROOT": "s3://mlflow/a "}).mlflow_artifact_root == "s3://mlflow/a"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://bucket/prefix/", "s3://bucket/prefix"),
        ("s3://bucket", "s3://bucket"),
        ("file:///tmp/lake/", "file:///tmp/lake"),
        ("/tmp/lake", "file:///tmp/lake"),
    ],
)
def test_uri_forms(value, expected):
    assert normalize_uri(value) == expected


def test_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_uri("lake") == (Path(tmp_path) / "lake").as_uri()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POTATO_LAKE_URI": "gs://x"}, "only plain paths, file:// and s3://"),
        ({"POTATO_LANDING_URI": "s3://"}, "names no bucket"),
        ({"POTATO_MAX_QUARANTINE_SHARE": "lots"}, "is not a number"),
        ({"POTATO_MAX_QUARANTINE_SHARE": "1.5"}, "between 0 and 1"),
        ({"POTATO_MLFLOW_REQUIRED": "maybe"}, "is not a boolean"),
        ({"POTATO_FRESHNESS_HOURS": "0"}, "must lie between"),
        ({"POTATO_LANDING_POLL_SECONDS": "0"}, "must lie between"),
        ({"POTATO_LOG_FORMAT": "xml"}, "must be one of text, json"),
        ({"POTATO_LAKE_BUCKETS": "0"}, r"POTATO_LAKE_BUCKETS='0' must lie between 1 and 4096"),
        ({"POTATO_LAKE_BUCKETS": "8.5"}, r"POTATO_LAKE_BUCKETS='8.5' is not a whole number"),
        ({"POTATO_LAKE_BUCKETS": "5000"}, "must lie between 1 and 4096"),
        ({"POTATO_SILVER_WORKERS": "0"}, r"POTATO_SILVER_WORKERS='0' must lie between 1 and 64"),
        ({"POTATO_SILVER_WORKERS": "two"}, r"POTATO_SILVER_WORKERS='two' is not a whole number"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env)


def test_settings_are_read_when_the_definitions_are_built_not_at_import():
    import subprocess
    import sys

    code = (
        "import potato_assets.defs.common, potato_assets.defs.resources, potato_assets.settings as s\n"
        "assert s.get_settings.cache_info().currsize == 0, 'read at import'\n"
        "from potato_assets.definitions import defs\n"
        "try:\n"
        "    defs()\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    env = {**os.environ, "POTATO_FRESHNESS_HOURS": "soon"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "POTATO_FRESHNESS_HOURS='soon' is not a number" in out


def test_get_settings_reads_the_environment_once_per_process():
    from potato_assets.settings import get_settings

    assert get_settings() is get_settings()


def test_engine_defaults_to_embedded_and_spark_takes_a_connect_url():
    s = load_settings({})
    assert s.engine == "embedded" and s.spark_remote is None
    s = load_settings({"POTATO_ENGINE": "Spark", "POTATO_SPARK_REMOTE": " sc://127.0.0.1:15002 "})
    assert s.engine == "spark" and s.spark_remote == "sc://127.0.0.1:15002"
    with_params = "sc://spark.internal:443/;use_ssl=true;user_id=dagster"
    assert load_settings({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": with_params}).spark_remote == with_params
    # A URL set for later is kept (and still checked) while the engine stays embedded.
    assert load_settings({"POTATO_SPARK_REMOTE": "sc://[::1]:15002"}).spark_remote == "sc://[::1]:15002"


EMR = {
    "POTATO_ENGINE": "emr-serverless",
    "POTATO_EMR_APPLICATION_ID": "00fm4oe0607u5a1d",
    "POTATO_EMR_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/potato-dev-spark-job",
    "POTATO_EMR_JOB_CODE_URI": "s3://potato-lake/spark-jobs/r1/",
    "POTATO_EMR_LOG_GROUP": "/potato-dev/pipeline/emr-serverless",
}


def test_emr_serverless_takes_its_four_settings_and_they_reach_the_engine():
    s = load_settings(EMR)
    assert (s.engine, s.emr_application_id, s.emr_job_code_uri) == (
        "emr-serverless",
        "00fm4oe0607u5a1d",
        "s3://potato-lake/spark-jobs/r1/",
    )
    engine = build_resources(s)["silver_engine"]
    assert engine.label() == "emr-serverless (00fm4oe0607u5a1d)"
    assert (engine.emr_execution_role_arn, engine.emr_log_group) == (
        EMR["POTATO_EMR_EXECUTION_ROLE_ARN"],
        EMR["POTATO_EMR_LOG_GROUP"],
    )


def test_contracts_run_in_the_step_unless_asked_to_run_on_silvers_spark_cluster():
    assert load_settings({}).contract_engine == "step"
    spark = {"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "sc://127.0.0.1:15002"}
    assert load_settings(spark).contract_engine == "step"
    assert load_settings({**spark, "POTATO_CONTRACT_ENGINE": " Spark "}).contract_engine == "spark"
    assert load_settings({**spark, "POTATO_CONTRACT_ENGINE": "step"}).contract_engine == "step"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POTATO_ENGINE": "flink"}, "POTATO_ENGINE='flink' must be one of embedded, spark, emr-serverless"),
        ({"POTATO_ENGINE": "spark"}, "POTATO_SPARK_REMOTE must be set .* when POTATO_ENGINE=spark"),
        ({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "  "}, "POTATO_SPARK_REMOTE must be set"),
        ({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "http://127.0.0.1:15002"}, "is not a Spark Connect URL"),
        ({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "sc://127.0.0.1"}, "of the form sc://host:port"),
        ({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "sc://127.0.0.1:99999"}, "is not a Spark Connect URL"),
        ({"POTATO_SPARK_REMOTE": "sc://host:0"}, "is not a Spark Connect URL"),
        ({**EMR, "POTATO_EMR_LOG_GROUP": ""}, "POTATO_EMR_LOG_GROUP must be set to a CloudWatch log group name when"),
        ({**EMR, "POTATO_EMR_APPLICATION_ID": "app-1"}, "POTATO_EMR_APPLICATION_ID='app-1' is not an EMR Serverless"),
        ({**EMR, "POTATO_EMR_EXECUTION_ROLE_ARN": "potato-dev-spark-job"}, "is not an IAM role ARN"),
        ({**EMR, "POTATO_EMR_JOB_CODE_URI": "/tmp/spark-jobs"}, "is not an s3://bucket/prefix location"),
        ({"POTATO_CONTRACT_ENGINE": "cluster"}, "POTATO_CONTRACT_ENGINE='cluster' must be one of step, spark"),
        (
            {"POTATO_CONTRACT_ENGINE": "spark", "POTATO_SPARK_REMOTE": "sc://127.0.0.1:15002"},
            r"^POTATO_CONTRACT_ENGINE=spark runs the contract checks on silver's Spark cluster and needs "
            r"POTATO_ENGINE=spark \(it is embedded\)$",
        ),
    ],
)
def test_bad_engine_settings_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        load_settings(env)


def test_contract_processes_default_to_two_cpus_at_most_and_bad_values_are_named():
    assert load_settings({}).contract_processes == min(2, len(os.sched_getaffinity(0)))
    assert load_settings({"POTATO_CONTRACT_PROCESSES": " 1 "}).contract_processes == 1
    for raw, message in (
        ("0", "POTATO_CONTRACT_PROCESSES='0' must lie between 1 and 8"),
        ("9", "POTATO_CONTRACT_PROCESSES='9' must lie between 1 and 8"),
        ("two", "POTATO_CONTRACT_PROCESSES='two' is not a whole number"),
    ):
        with pytest.raises(ValueError) as bad:
            load_settings({"POTATO_CONTRACT_PROCESSES": raw})
        assert str(bad.value) == message


def test_silver_workers_default_to_two_cpus_at_most_and_reach_the_engine():
    from potato_assets.defs.resources import build_resources
    from potato_assets.settings import DEFAULT_SILVER_WORKERS

    assert load_settings({}).silver_workers == DEFAULT_SILVER_WORKERS == min(2, len(os.sched_getaffinity(0)))
    settings = load_settings({"POTATO_SILVER_WORKERS": " 3 "})
    assert settings.silver_workers == 3
    engine = build_resources(settings)["silver_engine"].engine()
    # Three batches at once, a third of the default batch each: the same rows in flight.
    assert engine.workers == 3 and engine.batch_rows == 4_000_000 // 3
