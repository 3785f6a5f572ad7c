"""The step side of POTATO_ENGINE=emr-serverless against moto's EMR Serverless (which records
job runs but executes nothing): the StartJobRun request the silver step sends, and that a job
run that fails, is cancelled, or ends without reporting keeps the previous dataset version
current and fails the step with one plain sentence. A real job on EMR was not run here."""

from __future__ import annotations

import boto3
import dagster as dg
import pytest
from botocore.awsrequest import AWSResponse

from potato_assets.defs.resources import build_resources
from potato_assets.defs.silver.assets import study_calendar
from potato_assets.lib.engine.spark_job import JOB_ENTRY, JOB_PACKAGE, query_names
from potato_assets.settings import load_settings
from potato_assets.study import silver
from potato_assets_tests.helpers import load_defs, materialize_all, resources_for

ROLE = "arn:aws:iam::123456789012:role/potato-dev-spark-job"
CODE = "s3://potato-lake/spark-jobs/r1"
LOG_GROUP = "/potato-dev/pipeline/emr-serverless"


@pytest.fixture(scope="module")
def lake(sample_dir, tmp_path_factory):
    """A lake the embedded engine built: silver/study_calendar has a current version."""
    lake = tmp_path_factory.mktemp("lake")
    assert materialize_all(sample_dir, lake).success
    return lake


@pytest.fixture
def emr(moto_s3, monkeypatch):
    """moto's EMR Serverless application and log group, and a boto3 default session whose
    events the test hooks (clients the step creates inherit them)."""
    session = boto3.Session()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    application = session.client("emr-serverless").create_application(
        name="potato-dev-spark", releaseLabel="emr-7.9.0", type="SPARK"
    )["applicationId"]
    logs = session.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=LOG_GROUP)
    # moto has no GetDashboardForJobRun: answer it here (the Pipes client asks when a run ends).
    session.events.register(
        "before-call.emr-serverless.GetDashboardForJobRun",
        lambda **_: (AWSResponse("", 200, {}, None), {"url": "https://dashboard.invalid/"}),
    )
    return session, application


def _silver_engine(application: str):
    settings = load_settings(
        {
            "POTATO_ENGINE": "emr-serverless",
            "POTATO_EMR_APPLICATION_ID": application,
            "POTATO_EMR_EXECUTION_ROLE_ARN": ROLE,
            "POTATO_EMR_JOB_CODE_URI": CODE,
            "POTATO_EMR_LOG_GROUP": LOG_GROUP,
        }
    )
    return build_resources(settings)["silver_engine"]


def _materialize_calendar(sample_dir, lake, application):
    """silver/study_calendar alone, its inputs the lake's current bronze."""
    defs = load_defs()
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        selection=[study_calendar.key],
        resources=resources_for(sample_dir, lake, {"silver_engine": _silver_engine(application)}),
        raise_on_error=False,
    )


def _current_calendar(lake):
    from potato_assets.lib.lake import datasets, storage

    return datasets.current(storage.join(lake.as_uri(), "silver/study_calendar")).version


def _failure(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def test_the_step_submits_one_job_run_naming_the_versions_and_keeps_the_last_table_without_a_report(
    sample_dir, lake, emr
):
    session, application = emr
    sent = []
    session.events.register("provide-client-params.emr-serverless.StartJobRun", lambda params, **_: sent.append(params))
    before = _current_calendar(lake)

    result = _materialize_calendar(sample_dir, lake, application)

    # moto says SUCCESS at once and no message ever arrives: nothing is adopted or committed.
    assert not result.success
    assert _failure(result) == (
        "silver/study_calendar: its Spark job ended without reporting a result over Dagster Pipes"
    )
    assert _current_calendar(lake) == before
    (params,) = sent
    assert params["applicationId"] == application and params["executionRoleArn"] == ROLE
    assert params["name"] == "potato-silver-study_calendar"
    driver = params["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"{CODE}/{JOB_ENTRY}"
    submit = driver["sparkSubmitParameters"]
    assert submit.startswith(f"--py-files {CODE}/{JOB_PACKAGE} ")
    # Dagster Pipes' context goes in as the driver's environment.
    assert " --conf spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT=" in submit
    assert params["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"] == {
        "enabled": True,
        "logGroupName": LOG_GROUP,
    }
    arguments = driver["entryPointArguments"]
    options = list(zip(arguments[::2], arguments[1::2], strict=True))
    from potato_assets.lib.lake import datasets, storage

    weight = datasets.current(storage.join(lake.as_uri(), "bronze/weight"))
    fiber = datasets.current(storage.join(lake.as_uri(), "bronze/fiber"))
    staging = dict(options)["--staging"]
    calendar_root = storage.join(lake.as_uri(), "silver/study_calendar")
    assert staging.startswith(f"{calendar_root}/v-") and staging.endswith("/_staging-emr-serverless")
    assert options == [
        ("--table", "study_calendar"),
        ("--buckets", str(weight.buckets)),
        ("--staging", staging),
        ("--input", f"weight={weight.root}@{weight.version}"),
        ("--input", f"fiber={fiber.root}@{fiber.version}"),
        ("--before", "calendar_contradictions"),
    ]
    # The aborted version left nothing behind.
    assert not storage.to_upath(staging.rsplit("/", 1)[0]).exists()


@pytest.mark.parametrize("ending", ["FAILED", "CANCELLED"])
def test_a_failed_or_cancelled_job_run_keeps_the_previous_version_and_says_so_in_one_sentence(
    sample_dir, lake, emr, ending
):
    session, application = emr
    if ending == "FAILED":
        # moto's runs all succeed: the service's answer is turned into a failed run's.
        def failed(parsed, **_):
            parsed["jobRun"].update(state="FAILED", stateDetails="Job failed, ExitCode: 1.\nmore lines")

        session.events.register("after-call.emr-serverless.GetJobRun", failed)
    else:
        # A real cancellation, through moto, right after the run started.
        def cancel(parsed, **_):
            session.client("emr-serverless").cancel_job_run(applicationId=application, jobRunId=parsed["jobRunId"])

        session.events.register("after-call.emr-serverless.StartJobRun", cancel)
    before = _current_calendar(lake)

    result = _materialize_calendar(sample_dir, lake, application)

    assert not result.success
    description = _failure(result)
    assert description.startswith("silver/study_calendar: the EMR Serverless job run ")
    assert description.endswith(
        f" ended {ending}: Job failed, ExitCode: 1." if ending == "FAILED" else " ended CANCELLED"
    )
    assert "\n" not in description
    assert _current_calendar(lake) == before


def test_an_interrupted_step_cancels_its_job_run(sample_dir, lake, emr):
    session, application = emr
    polls = []

    def running_then_interrupted(parsed, **_):
        polls.append(parsed["jobRun"]["jobRunId"])
        if len(polls) > 1:
            raise dg.DagsterExecutionInterruptedError()
        parsed["jobRun"]["state"] = "RUNNING"

    session.events.register("after-call.emr-serverless.GetJobRun", running_then_interrupted)
    before = _current_calendar(lake)

    assert not _materialize_calendar(sample_dir, lake, application).success

    runs = session.client("emr-serverless").list_job_runs(applicationId=application)["jobRuns"]
    assert [(r["id"], r["state"]) for r in runs] == [(polls[0], "CANCELLED")]
    assert _current_calendar(lake) == before


def test_only_named_queries_reach_a_job():
    assert query_names([silver.CALENDAR_CONTRADICTIONS, silver.MODELING_SUBJECTS]) == [
        "calendar_contradictions",
        "modeling_subjects",
    ]
    with pytest.raises(ValueError, match="runs named queries only"):
        query_names(["SELECT 1"])
