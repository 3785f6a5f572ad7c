"""OpenLineage events: naming, facets, schema validity, and a sender that never holds up a run."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from potato_assets.lib.observe import lineage
from potato_assets_tests.helpers import LoopbackReceiver, validate_event

RUN_ID = "5573011a-899b-42dc-b4b5-7a53a1bfe7b7"


# --- naming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        (
            "file:///tmp/lake/silver/weekly_features.parquet",
            "file",
            "/tmp/lake/silver/weekly_features.parquet",
        ),
        ("s3://bucket/lake/bronze/weight.parquet", "s3://bucket", "lake/bronze/weight.parquet"),
        ("s3://landing/Potato_tidy.csv", "s3://landing", "Potato_tidy.csv"),
    ],
)
def test_dataset_naming_follows_the_openlineage_spec(uri, namespace, name):
    assert lineage.dataset_ref(uri) == lineage.DatasetRef(namespace, name)


def test_non_uri_is_refused_with_its_value():
    with pytest.raises(ValueError, match="relative/path"):
        lineage.dataset_ref("relative/path.parquet")


def test_step_run_ids_are_stable_and_distinct():
    a = lineage.step_run_id(RUN_ID, "bronze.weight")
    assert a == lineage.step_run_id(RUN_ID, "bronze.weight")
    assert a != lineage.step_run_id(RUN_ID, "bronze.fiber")


def _job(**overrides) -> lineage.JobRun:
    weekly = "s3://lake-bucket/p/silver/weekly_features.parquet"
    fields = dict(
        namespace="potato_assets",
        name="silver.modeling_dataset",
        run_id=lineage.step_run_id(RUN_ID, "silver.modeling_dataset"),
        job_type="ASSET",
        inputs=[
            lineage.DatasetInfo(
                weekly,
                columns=[("fiber_g_sum", "float64")],
                assertions=[lineage.Assertion("contract", False, severity="error")],
            )
        ],
        outputs=[
            lineage.DatasetInfo(
                "s3://lake-bucket/p/silver/modeling_dataset.parquet",
                columns=[("fiber_g_week", "float64"), ("subject_id", "int64")],
                rows=42,
                column_lineage={"fiber_g_week": [(weekly, "fiber_g_sum")]},
            )
        ],
        parent=lineage.ParentRun("potato_assets", "__ASSET_JOB", RUN_ID),
        description="the modelling table",
    )
    fields.update(overrides)
    return lineage.JobRun(**fields)


def _as_dict(event) -> dict:
    return json.loads(lineage.event_json(event))


def test_complete_event_carries_every_facet_and_validates():
    event = _as_dict(lineage.build_run_event(lineage.COMPLETE, _job()))
    facets = validate_event(event)
    assert {
        "parent",
        "jobType",
        "documentation",
        "schema",
        "dataSource",
        "outputStatistics",
        "columnLineage",
        "dataQualityAssertions",
    } <= set(facets)
    out = event["outputs"][0]
    assert (out["namespace"], out["name"]) == (
        "s3://lake-bucket",
        "p/silver/modeling_dataset.parquet",
    )
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 42
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == ["fiber_g_week", "subject_id"]
    assert out["facets"]["dataSource"]["uri"] == "s3://lake-bucket"
    source = out["facets"]["columnLineage"]["fields"]["fiber_g_week"]["inputFields"][0]
    # the column's source is named exactly like the job's input dataset: the edge joins
    assert (source["namespace"], source["name"], source["field"]) == (
        event["inputs"][0]["namespace"],
        event["inputs"][0]["name"],
        "fiber_g_sum",
    )
    assertion = event["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"][0]
    assert assertion["assertion"] == "contract" and assertion["success"] is False
    assert event["run"]["facets"]["parent"]["run"]["runId"] == RUN_ID
    assert event["run"]["runId"] != RUN_ID


def test_fail_event_carries_the_error_message():
    event = _as_dict(
        lineage.build_run_event(lineage.FAIL, _job(), error_message="Potato_tidy.csv: no header", error_stack="tb")
    )
    validate_event(event)
    assert event["eventType"] == "FAIL"
    assert event["run"]["facets"]["errorMessage"]["message"] == "Potato_tidy.csv: no header"


def test_start_event_without_datasets_validates():
    event = _as_dict(lineage.build_run_event(lineage.START, _job(inputs=[], outputs=[], parent=None, description=None)))
    assert validate_event(event) == ["jobType"]


def test_unknown_event_type_is_refused():
    with pytest.raises(ValueError, match="RUNNING"):
        lineage.build_run_event("RUNNING", _job())


def test_validation_rejects_a_broken_event():
    event = _as_dict(lineage.build_run_event(lineage.COMPLETE, _job()))
    event["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = "many"
    with pytest.raises(AssertionError, match="rowCount|many"):
        validate_event(event)
    del event["run"]["runId"]
    with pytest.raises(AssertionError, match="runId"):
        validate_event(event)


# --- emitters ----------------------------------------------------------------------------------


def test_no_url_gives_the_noop_emitter_and_prints_nothing(capsys):
    emitter = lineage.emitter_from_env({})
    assert isinstance(emitter, lineage.NoopLineageEmitter)
    emitter.emit(lineage.build_run_event(lineage.START, _job()))
    assert capsys.readouterr() == ("", "")


def test_http_emitter_posts_to_marquez_endpoint():
    server = LoopbackReceiver(status=201)
    try:
        emitter = lineage.emitter_from_env({"OPENLINEAGE_URL": server.url})
        emitter.emit(lineage.build_run_event(lineage.START, _job()))
        assert [p for p, _ in server.posts] == ["/api/v1/lineage"]
        validate_event(server.json()[0])
    finally:
        server.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_unreachable_marquez_costs_one_short_attempt_and_one_log_line():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    records = _Records()
    logging.getLogger(lineage.__name__).addHandler(records)
    try:
        emitter = lineage.HttpLineageEmitter(f"http://127.0.0.1:{port}")
        started = time.monotonic()
        for _ in range(20):
            emitter.emit(lineage.build_run_event(lineage.START, _job()))
        assert time.monotonic() - started < 5
    finally:
        logging.getLogger(lineage.__name__).removeHandler(records)
    assert emitter.failures == 1
    assert len([m for m in records.messages if "could not be sent" in m]) == 1


def test_a_hanging_marquez_is_cut_off_by_the_timeout():
    server = LoopbackReceiver(status=201, delay=3.0)
    try:
        emitter = lineage.HttpLineageEmitter(server.url, timeout=0.5)
        started = time.monotonic()
        emitter.emit(lineage.build_run_event(lineage.START, _job()))
        emitter.emit(lineage.build_run_event(lineage.COMPLETE, _job()))
        assert time.monotonic() - started < 2.5
        assert emitter.failures == 1
    finally:
        server.close()
