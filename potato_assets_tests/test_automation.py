"""The schedule and the sensors, evaluated against ephemeral instances; alerts against a real
loopback webhook; the lake pool against two real concurrent CLI runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.defs import automation
from potato_assets.defs.bronze.assets import ingest_landing
from potato_assets.defs.resources import AlertSink, build_resources
from potato_assets.lib.lake import landing as landing_scan
from potato_assets.lib.observe import alerts
from potato_assets.settings import Settings
from potato_assets.study.schema import FIBER_FILE, NUTRITION_FILE, WEIGHT_FILE
from potato_assets_tests.helpers import (
    DAGSTER,
    REPO,
    Webhook,
    cli_env,
    cli_home,
    copy_landing,
    free_port,
    load_defs,
    sensor_tick,
    settings_for,
)

ALL_FILES = (NUTRITION_FILE, WEIGHT_FILE, FIBER_FILE)


# --- a real webhook on loopback ---------------------------------------------------------------


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


# --- the schedule -----------------------------------------------------------------------------


def test_daily_schedule_refreshes_every_asset_at_the_configured_time(instance):
    repo = load_defs().get_repository_def()
    schedule = repo.get_schedule_def("daily_refresh")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job_keys = set(repo.get_job(schedule.job_name).asset_layer.selected_asset_keys)
    materializable = {k for k, a in repo.assets_defs_by_key.items() if a.is_materializable}
    assert job_keys == materializable
    assert dg.AssetKey(["gold", "reports", "model_report"]) in job_keys

    custom = automation.build_daily_refresh_schedule(
        Settings(
            lake_uri="file:///l",
            landing_uri="file:///x",
            schedule_cron="30 4 * * 1",
            schedule_timezone="Europe/Berlin",
        )
    )
    assert (custom.cron_schedule, custom.execution_timezone) == ("30 4 * * 1", "Europe/Berlin")
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 3, 2, 3, 30, tzinfo=UTC)
    )
    requests = custom.evaluate_tick(context).run_requests
    assert requests is not None and len(requests) == 1


# --- the landing sensor -----------------------------------------------------------------------


@pytest.fixture
def landing_sensor():
    return automation.build_landing_sensor(Settings(lake_uri="file:///unused", landing_uri="file:///unused"))


def test_landing_sensor_waits_for_all_files_then_requests_one_run(landing_sensor, instance, sample_dir, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    uri = landing.as_uri()
    result, cursor = sensor_tick(landing_sensor, instance, None, uri)
    assert not result.run_requests and "not in the landing zone yet" in result.skip_message
    assert all(name in result.skip_message for name in ALL_FILES)

    copy_landing(sample_dir, landing, ALL_FILES[:2])
    (landing / "notes.csv").write_text("a,b\n1,2\n")
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and f"waiting for {FIBER_FILE}" in result.skip_message
    assert "ignored (not study files): notes.csv" in result.skip_message

    copy_landing(sample_dir, landing, ALL_FILES[2:])
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and f"{FIBER_FILE} changed since the last look" in result.skip_message

    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.run_key and set(request.tags["potato/changed_files"].split(",")) == set(ALL_FILES)
    assert json.loads(cursor)["ingested"].keys() == set(ALL_FILES)
    # An empty lake: the one run builds every asset, bronze to the report.
    repo = load_defs().get_repository_def()
    materializable = {k for k, a in repo.assets_defs_by_key.items() if a.is_materializable}
    assert set(request.asset_selection or []) == materializable
    assert request.tags["potato/changed_tables"] == "bronze/fiber,bronze/nutrition,bronze/weight"

    # The same files dropped again (fresh mtimes, same bytes): nothing, tick after tick.
    copy_landing(sample_dir, landing)
    for _ in range(2):
        result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
        assert not result.run_requests and result.skip_message.startswith("no new or changed landing files")


def test_a_growing_file_waits_until_its_size_holds(landing_sensor, instance, sample_dir, tmp_path):
    landing = tmp_path / "landing"
    copy_landing(sample_dir, landing)
    uri = landing.as_uri()
    _, cursor = sensor_tick(landing_sensor, instance, None, uri)
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert len(result.run_requests) == 1
    first_key = result.run_requests[0].run_key

    # A new weigh-in export arrives in two writes, one tick apart.
    rows = (sample_dir / WEIGHT_FILE).read_text().splitlines(keepends=True)
    changed = rows[:-1]
    with open(landing / WEIGHT_FILE, "w") as fh:
        fh.writelines(changed[: len(changed) // 2])
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and f"{WEIGHT_FILE} changed since the last look" in result.skip_message
    with open(landing / WEIGHT_FILE, "a") as fh:
        fh.writelines(changed[len(changed) // 2 :])
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and "waiting until it settles" in result.skip_message

    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["potato/changed_files"] == WEIGHT_FILE

    # Back to the original bytes: a change again, under a run key not used before.
    shutil.copy(sample_dir / WEIGHT_FILE, landing / WEIGHT_FILE)
    _, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert len(result.run_requests) == 1 and result.run_requests[0].run_key != first_key


def test_landing_sensor_trusts_what_bronze_already_ingested(landing_sensor, instance, sample_dir, tmp_path):
    landing = tmp_path / "landing"
    copy_landing(sample_dir, landing)
    resources = build_resources(settings_for(landing, tmp_path / "lake"))
    assert dg.materialize([ingest_landing], resources=resources, instance=instance).success

    # Bronze ingested these very files, but before any observation of them (as after
    # `--select '*'`): it recorded no landing version, so one re-ingest anchors it.
    _, cursor = sensor_tick(landing_sensor, instance, None, landing.as_uri())
    result, cursor = sensor_tick(landing_sensor, instance, cursor, landing.as_uri())
    assert len(result.run_requests) == 1 and len(result.asset_events) == len(ALL_FILES)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)  # as the daemon does
    assert dg.materialize([ingest_landing], resources=resources, instance=instance).success

    # The sensor starts over (cursor reset, new deployment): bronze holds the observed files.
    _, cursor = sensor_tick(landing_sensor, instance, None, landing.as_uri())
    result, cursor = sensor_tick(landing_sensor, instance, cursor, landing.as_uri())
    assert not result.run_requests, "files bronze already holds must not trigger a refresh"

    with open(landing / FIBER_FILE, "a") as fh:
        fh.write((sample_dir / FIBER_FILE).read_text().splitlines()[1] + "\n")
    _, cursor = sensor_tick(landing_sensor, instance, cursor, landing.as_uri())
    result, _ = sensor_tick(landing_sensor, instance, cursor, landing.as_uri())
    assert [r.tags["potato/changed_files"] for r in result.run_requests] == [FIBER_FILE]


def test_landing_sensor_on_an_s3_prefix(landing_sensor, instance, moto_s3, sample_dir):
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/incoming"

    def upload(name, body=None):
        data = body if body is not None else (sample_dir / name).read_bytes()
        moto_s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=data)

    for name in ALL_FILES:
        upload(name)
    moto_s3.put_object(Bucket=bucket, Key="elsewhere/Potato_tidy.csv", Body=b"not under the prefix")
    result, cursor = sensor_tick(landing_sensor, instance, None, uri)
    assert not result.run_requests
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert len(result.run_requests) == 1
    assert all(fp.startswith("etag:") for fp in json.loads(cursor)["ingested"].values())

    upload(WEIGHT_FILE)  # same bytes, same ETag
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and result.skip_message.startswith("no new or changed")

    upload(NUTRITION_FILE, (sample_dir / NUTRITION_FILE).read_bytes().replace(b"\n", b"\r\n"))
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert not result.run_requests and NUTRITION_FILE in result.skip_message
    result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
    assert [r.tags["potato/changed_files"] for r in result.run_requests] == [NUTRITION_FILE]


def test_cursor_survives_garbage():
    assert landing_scan.LandingCursor.from_json("{not json") == landing_scan.LandingCursor()
    assert landing_scan.LandingCursor.from_json('{"v": 99}') == landing_scan.LandingCursor()
    c = landing_scan.LandingCursor(
        seen={"a.csv": landing_scan.Seen(3, 1.5, "sha256:x")}, ingested={"a.csv": "sha256:x"}
    )
    assert landing_scan.LandingCursor.from_json(c.to_json()) == c


# --- automation conditions --------------------------------------------------------------------


def test_a_bronze_refresh_propagates_to_silver_only(instance, sample_dir, tmp_path):
    defs = load_defs()
    bronze_checks = [c for c in defs.asset_checks or [] if all(k.asset_key.path[0] == "bronze" for k in c.check_keys)]
    # The first evaluation only sets the baseline (as the daemon's first tick does).
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.total_requested == 0
    resources = build_resources(settings_for(sample_dir, tmp_path / "lake"))
    assert dg.materialize([ingest_landing, *bronze_checks], resources=resources, instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    repo = defs.get_repository_def()
    requested = {
        k.to_user_string()
        for k, a in repo.assets_defs_by_key.items()
        if a.is_executable and result.get_num_requested(k) > 0
    }
    assert "silver/study_calendar" in requested
    assert not any(k.startswith(("gold/", "bronze/")) for k in requested), requested


# --- freshness and run-failure reporting -------------------------------------------------------


def test_freshness_sensor_reports_stale_and_fresh_again(instance, webhook):
    repo = load_defs().get_repository_def()
    offset = [0.0]
    sensor = automation.build_freshness_sensor(clock=lambda: time.time() + offset[0])
    sink = AlertSink(webhook_url=webhook.url)
    watched = [dg.AssetKey(["bronze", "weight"]), dg.AssetKey(["gold", "models", "model_summary"])]
    for key in watched:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))

    def run(cursor):
        ctx = dg.build_sensor_context(
            instance=instance, cursor=cursor, repository_def=repo, resources={"alerts_sink": sink}
        )
        result = sensor.evaluate_tick(ctx)
        return result.skip_message, result.cursor

    message, cursor = run(None)
    assert message == "no freshness changes" and not webhook.json()
    assert json.loads(cursor)["bronze/weight"] == "fresh"
    assert json.loads(cursor)["bronze/fiber"] == "unknown"

    offset[0] = 27 * 3600.0  # a day and three hours later, nothing refreshed
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    alerts.LOGGER.addHandler(handler)
    level = alerts.LOGGER.level
    alerts.LOGGER.setLevel(logging.INFO)
    try:
        message, cursor = run(cursor)
    finally:
        alerts.LOGGER.removeHandler(handler)
        alerts.LOGGER.setLevel(level)
    assert message == "reported 2 freshness change(s)"
    lags = [json.loads(r.getMessage()) for r in records if "potato_freshness_lag_seconds" in r.getMessage()]
    assert {r["attributes"]["asset_key"] for r in lags} == {"bronze/weight", "gold/models/model_summary"}
    assert all(27 * 3600 - 60 < r["value"] < 27 * 3600 + 60 for r in lags)
    assert sorted(p["event"]["asset_key"] for p in webhook.json()) == [
        "bronze/weight",
        "gold/models/model_summary",
    ]
    assert {p["event"]["event"] for p in webhook.json()} == {"asset_stale"}
    assert "stale" in webhook.json()[0]["text"] and webhook.json()[0]["event"]["window_hours"] == 26

    message, cursor = run(cursor)
    assert message.startswith("no freshness changes (2 stale") and len(webhook.json()) == 2

    for key in watched:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    offset[0] = 0.0
    message, cursor = run(cursor)
    assert message == "reported 2 freshness change(s)"
    assert [p["event"]["event"] for p in webhook.json()[2:]] == ["asset_fresh", "asset_fresh"]


def test_every_bronze_and_gold_asset_has_a_freshness_window():
    repo = load_defs().get_repository_def()
    windows = automation._freshness_windows(repo)
    materializable = {k.to_user_string() for k, a in repo.assets_defs_by_key.items() if a.is_materializable}
    expected = {k for k in materializable if k.startswith(("bronze/", "gold/"))}
    assert {k.to_user_string() for k in windows} == expected
    assert set(windows.values()) == {26 * 3600.0}


@dg.op
def explode():
    raise ValueError("kaboom: the lake is on fire")


@dg.job
def doomed():
    explode()


def test_run_failure_sensor_reports_the_failed_step(instance, webhook):
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alerts_sink": AlertSink(webhook_url=webhook.url)},
    ).for_run_failure()
    automation.run_failure_alerts(context)
    assert len(webhook.json()) == 1
    event = webhook.json()[0]["event"]
    assert event["event"] == "run_failed" and event["job_name"] == "doomed"
    assert event["run_id"] == result.run_id and event["failed_steps"] == ["explode"]
    assert "kaboom: the lake is on fire" in webhook.json()[0]["text"]


# --- alerts: structured event, metric, webhook with a bounded timeout ---------------------------


def test_report_logs_event_and_metric_and_survives_a_broken_webhook():
    logger = logging.getLogger(f"test.alerts.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    handler = ListHandler()
    logger.addHandler(handler)
    event = alerts.structured_event("asset_stale", "bronze/weight is stale", asset_key="bronze/weight")

    outcome = alerts.report(
        event,
        metric=(alerts.ASSET_STALE, 1, {"asset_key": "bronze/weight"}),
        webhook_url=None,
        log=logger,
    )
    assert outcome.delivered is None
    logged = [json.loads(m) for m in handler.messages]
    assert logged[0]["event"] == "asset_stale" and logged[0]["asset_key"] == "bronze/weight"
    assert logged[1] == {
        "metric": "potato_asset_stale",
        "value": 1.0,
        "attributes": {"asset_key": "bronze/weight"},
    }

    failing = Webhook(status=500)
    slow = Webhook(delay=3.0)
    try:
        outcome = alerts.report(event, metric=None, webhook_url=failing.url, log=logger)
        assert outcome.delivered is False and "HTTP 500" in outcome.error and len(failing.json()) == 1
        started = time.monotonic()
        outcome = alerts.report(event, metric=None, webhook_url=slow.url, timeout=0.5, log=logger)
        assert time.monotonic() - started < 2.5 and outcome.delivered is False
    finally:
        failing.close()
        slow.close()
    dead = f"http://127.0.0.1:{_closed_port()}/hook"
    outcome = alerts.report(event, metric=None, webhook_url=dead, log=logger)
    assert outcome.delivered is False and "unreachable" in outcome.error
    failures = [json.loads(m) for m in handler.messages if "alert_delivery_failed" in m]
    assert len(failures) == 3
    counted = [json.loads(m) for m in handler.messages if alerts.ALERT_DELIVERY_FAILURES in m]
    assert len(counted) == 3


def _closed_port() -> int:
    return free_port()


# --- the lake is held by one run at a time ------------------------------------------------------


def step_windows(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float, str]]:
    starts, windows = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            windows.append((starts[event.step_key], entry.timestamp, event.step_key))
    return windows


def engine_messages(instance: dg.DagsterInstance, run_id: str, text: str) -> list[str]:
    return [
        e.dagster_event.message or ""
        for e in instance.all_logs(run_id)
        if e.dagster_event
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and text in (e.dagster_event.message or "")
    ]


def fewer_subjects(src: Path, dst: Path, keep: int) -> None:
    """The same study with only its first `keep` subjects: other silver, other models."""
    import pandas as pd

    dst.mkdir(parents=True)
    for name in ALL_FILES:
        table = pd.read_csv(src / name, dtype=str, keep_default_na=False)
        subjects = list(dict.fromkeys(table["subject_id"]))[:keep]
        table[table["subject_id"].isin(subjects)].to_csv(dst / name, index=False)


def latest_in_run(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> dg.EventLogRecord:
    records = instance.fetch_materializations(key, limit=10).records
    mine = [r for r in records if r.run_id == run_id]
    assert len(mine) == 1, (key, run_id, [r.run_id for r in records])
    return mine[0]


@pytest.mark.e2e
def test_two_concurrent_cli_runs_each_fit_gold_on_their_own_silver(sample_dir, tmp_path):
    """Two `dagster asset materialize --select '*'` on different landing folders, one lake: the
    runs do not interleave, and each run's models were fitted on the modelling table that same
    run wrote (its data version is the models' input version; nobs is its row count)."""
    from potato_assets.defs.common import DATA_VERSION_TAG, INPUT_DATA_VERSION_TAG, LAKE_POOL
    from potato_assets.defs.executor import HOLDING, WAITING, WHOLE_RUN
    from potato_assets.study.validation import MIN_CLUSTERS

    home = cli_home(tmp_path)
    landings = [tmp_path / "landing_all", tmp_path / "landing_few"]
    copy_landing(sample_dir, landings[0])
    # Fewer subjects, still enough clusters for the (blocking) enough_clusters checks.
    fewer_subjects(sample_dir, landings[1], keep=MIN_CLUSTERS + 5)
    cmd = [str(DAGSTER), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"]
    inst = dg.DagsterInstance.from_config(str(home))
    # A run that holds the lake until both CLI runs wait for it, so they must compete.
    holder = dg.DagsterRun(job_name="lake_holder", run_id=uuid.uuid4().hex, status=dg.DagsterRunStatus.STARTED)
    inst.add_run(holder)
    inst.event_log_storage.initialize_concurrency_limit_to_default(LAKE_POOL)
    assert inst.event_log_storage.claim_concurrency_slot(LAKE_POOL, holder.run_id, WHOLE_RUN).is_claimed
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    # Output to files, not pipes: a run stuck on a full pipe would keep the lake.
    procs = [
        subprocess.Popen(
            cmd,
            env=cli_env(home, landing, tmp_path / "lake"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            start_new_session=True,
        )
        for landing, log in zip(landings, logs, strict=True)
    ]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            cli_runs = [r for r in inst.get_runs() if r.run_id != holder.run_id]
            if len(cli_runs) == 2 and all(engine_messages(inst, r.run_id, WAITING) for r in cli_runs):
                break
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.5)
        else:
            pytest.fail("the two CLI runs did not both wait for the lake")
        inst.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
        inst.report_run_canceled(holder)
        for p in procs:
            p.wait(timeout=420)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait(timeout=10)
    try:
        assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
        cli_runs = [r for r in inst.get_runs() if r.run_id != holder.run_id]
        assert len(cli_runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in cli_runs)
        run_ids = [r.run_id for r in cli_runs]
        # One run at a time: every step of one run ended before the other's first step started.
        first, second = sorted(run_ids, key=lambda rid: min(w[0] for w in step_windows(inst, rid)))
        assert max(w[1] for w in step_windows(inst, first)) <= min(w[0] for w in step_windows(inst, second))
        assert all(engine_messages(inst, rid, HOLDING) for rid in run_ids)
        # The second waited for the first, by name.
        assert any(first in m for m in engine_messages(inst, second, WAITING))
        assert inst.event_log_storage.get_concurrency_info(LAKE_POOL).claimed_slots == []

        modeling_key = dg.AssetKey(["silver", "modeling_dataset"])
        nobs = {}
        for rid in run_ids:
            modeling = latest_in_run(inst, modeling_key, rid)
            fit = latest_in_run(inst, dg.AssetKey(["gold", "models", "ols_cluster"]), rid)
            assert modeling.asset_materialization is not None and fit.asset_materialization is not None
            # The version of the modelling table the fit read is the one this run wrote...
            read = (fit.event_log_entry.tags or {})[f"{INPUT_DATA_VERSION_TAG}/{modeling_key.to_user_string()}"]
            assert read == (modeling.event_log_entry.tags or {})[DATA_VERSION_TAG]
            # ...and the model saw as many rows as that table has.
            rows = modeling.asset_materialization.metadata["dagster/row_count"].value
            assert fit.asset_materialization.metadata["summary"].value["nobs"] == rows, rid
            nobs[rid] = rows
        assert len(set(nobs.values())) == 2, f"the two landing folders must give different models: {nobs}"
    finally:
        inst.dispose()


def test_production_instance_matches_the_default_but_for_storage():
    import yaml

    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    production = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    pg_db = production["storage"]["custom"]["config"]["postgres_db"]
    assert pg_db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert {k: v for k, v in production.items() if k not in ("storage", "compute_logs")} == default
    assert default["concurrency"]["pools"] == {"default_limit": 1, "granularity": "run"}
