"""What runs the graph without a person: the daily refresh, the landing sensor, the automation
sensor for code-version changes and hand-started bronze refreshes, and the sensors that report stale assets
and failed runs (structured log event, metric, optional webhook).

All of them run in the Dagster daemon (`make dev` starts one next to the UI; in production
`dagster-daemon run`).
"""

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from potato_assets.defs.bronze.assets import bronze_key, ingest_landing, landing_key
from potato_assets.defs.common import DATA_VERSION_TAG, INPUT_DATA_VERSION_TAG
from potato_assets.defs.resources import AlertSink, LandingZone
from potato_assets.lib.lake import landing as landing_scan
from potato_assets.lib.observe import alerts, run_summary
from potato_assets.settings import Settings, get_settings
from potato_assets.study.schema import LANDING_FILES

if TYPE_CHECKING:
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

LANDING_FILE_NAMES = tuple(spec.file_name for spec in LANDING_FILES)
BRONZE_KEY_BY_FILE = {spec.file_name: bronze_key(spec.asset_name) for spec in LANDING_FILES}
LANDING_KEY_BY_FILE = {spec.file_name: landing_key(spec.asset_name) for spec in LANDING_FILES}
# A landing change re-ingests bronze (one step: a bad file writes nothing) and, in the same run,
# rebuilds everything downstream of the bronze tables whose content changed; what does not
# depend on them is left out of the run.
INGEST = dg.AssetSelection.assets(ingest_landing)
LANDING_TARGET = INGEST.downstream()
FRESHNESS_INTERVAL_SECONDS = 300


# --- the daily refresh ------------------------------------------------------------------------


def build_daily_refresh_schedule(settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_refresh",
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.schedule_timezone,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "Refreshes every materialisable asset (bronze -> silver -> gold) every day; "
            "POTATO_SCHEDULE_CRON / POTATO_SCHEDULE_TIMEZONE set when."
        ),
    )


# --- the landing sensor -----------------------------------------------------------------------


def _bootstrap_from_lake(
    context: dg.SensorEvaluationContext, landing: LandingZone, cursor: landing_scan.LandingCursor
) -> None:
    """Without a cursor (first start, reset), a file counts as ingested when bronze's last
    materialisation read the same sha256 AND recorded it as its landing input's data version.
    Bronze ingested before any observation of its file (`--select '*'` does not observe) recorded
    no version: one re-ingest anchors it (bronze keeps its versions, so nothing downstream reruns)
    and the UI shows bronze up to date instead of stale."""
    for file_name, key in BRONZE_KEY_BY_FILE.items():
        if file_name in cursor.ingested or file_name not in cursor.seen:
            continue
        event = context.instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        if event is None or materialization is None:
            continue
        recorded = materialization.metadata.get("source_sha256")
        if recorded is None:
            continue
        try:
            digest = landing_scan.content_sha256(landing.uri(file_name))
        except FileNotFoundError:
            continue
        # The tag Dagster writes on a materialisation for each input's data version.
        input_version = (event.tags or {}).get(
            f"{INPUT_DATA_VERSION_TAG}/{LANDING_KEY_BY_FILE[file_name].to_user_string()}"
        )
        if getattr(recorded, "value", recorded) == digest and input_version == digest[: landing_scan.VERSION_LENGTH]:
            cursor.ingested[file_name] = cursor.seen[file_name].fingerprint


def changed_bronze_tables(
    instance: dg.DagsterInstance, changed_files: Iterable[str], versions: Mapping[str, tuple[str, str]]
) -> list[dg.AssetKey]:
    """The bronze tables a re-ingest of `changed_files` changes: those whose landing file's
    content version differs from the data version bronze holds (or that bronze lacks). A file
    that only needs anchoring (the same bytes bronze already ingested) changes nothing."""
    tables = []
    for name in changed_files:
        key = BRONZE_KEY_BY_FILE[name]
        event = instance.get_latest_materialization_event(key)
        held = (event.tags or {}).get(DATA_VERSION_TAG) if event else None
        landing_version = versions.get(name, ("", None))[1]
        if held is None or landing_version is None or held != landing_version:
            tables.append(key)
    return sorted(tables, key=lambda k: k.to_user_string())


def landing_run_selection(asset_graph: "BaseAssetGraph", changed_tables: Sequence[dg.AssetKey]) -> list[dg.AssetKey]:
    """ingest_landing (one step writes all of bronze) plus everything downstream of the changed
    tables: one run takes a landing change to gold, and leaves out what does not depend on it."""
    selection = INGEST | dg.AssetSelection.assets(*changed_tables).downstream()
    return sorted(selection.resolve(asset_graph), key=lambda k: k.to_user_string())


def build_landing_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        target=LANDING_TARGET,
        minimum_interval_seconds=settings.landing_poll_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches POTATO_LANDING_URI (folder or s3:// prefix). When a study CSV is new or "
            "changed (sha256 on disk, ETag on S3) and its size held still since the last tick, "
            "records its content version (sha256) as an observation of its landing asset and "
            "requests one run: ingest_landing and everything downstream of the bronze tables "
            "whose content changed, so the change reaches gold in that run."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone):
        if context.repository_def is None:  # before the cursor moves: a change must not be lost
            raise dg.DagsterInvariantViolationError("the landing sensor needs its repository to select the run")
        repository = context.repository_def
        previous = landing_scan.LandingCursor.from_json(context.cursor)
        observed, ignored = landing_scan.observe(landing.landing_uri, LANDING_FILE_NAMES, previous)
        if not previous.ingested and not previous.seen:
            # First look: remember what is there; the lake may already hold these very files.
            first = landing_scan.LandingCursor(seen=dict(observed))
            _bootstrap_from_lake(context, landing, first)
            previous = landing_scan.LandingCursor(seen={}, ingested=first.ingested)
        decision = landing_scan.decide(previous, observed, LANDING_FILE_NAMES, ignored)
        # Only versions that changed since the last record: the event log does not grow per tick.
        decision.cursor.versions, new_versions = landing_scan.new_content_versions(
            landing.landing_uri, previous, observed
        )
        context.update_cursor(decision.cursor.to_json())
        observations = [
            dg.AssetObservation(
                asset_key=LANDING_KEY_BY_FILE[name],
                tags={DATA_VERSION_TAG: version},
                metadata={"uri": landing.uri(name), "size_bytes": observed[name].size},
            )
            for name, version in sorted(new_versions.items())
        ]
        if not decision.request:
            return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason()), asset_events=observations)
        changed_tables = changed_bronze_tables(context.instance, decision.changed, decision.cursor.versions)
        context.log.info(
            json.dumps(
                {
                    "event": "landing_changed",
                    "files": list(decision.changed),
                    "tables": [k.to_user_string() for k in changed_tables],
                    "run_key": decision.run_key,
                }
            )
        )
        request = dg.RunRequest(
            run_key=decision.run_key,
            asset_selection=landing_run_selection(repository.asset_graph, changed_tables),
            tags={
                "potato/trigger": "landing",
                "potato/changed_files": ",".join(decision.changed),
                "potato/changed_tables": ",".join(k.to_user_string() for k in changed_tables),
            },
        )
        return dg.SensorResult(run_requests=[request], asset_events=observations)

    return landing_sensor


# --- freshness reporting ----------------------------------------------------------------------


def _freshness_windows(repository_def: dg.RepositoryDefinition) -> dict[dg.AssetKey, float]:
    """Assets with a time-window freshness policy -> their fail window in seconds."""
    windows = {}
    for assets_def in repository_def.assets_defs_by_key.values():
        for spec in assets_def.specs:
            fail_window = getattr(spec.freshness_policy, "fail_window", None)
            if fail_window is not None:
                windows[spec.key] = fail_window.to_timedelta().total_seconds()
    return windows


def freshness_state(last_materialized: float | None, window_seconds: float, now: float) -> str:
    """The time-window policy: "fresh" within the window, "stale" past it, "unknown" if never."""
    if last_materialized is None:
        return "unknown"
    return "fresh" if now - last_materialized < window_seconds else "stale"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def build_freshness_sensor(clock: Callable[[], float] = time.time) -> dg.SensorDefinition:
    """`clock` is the current time; tests pass a later one instead of waiting a day."""

    @dg.sensor(
        name="freshness_alerts",
        minimum_interval_seconds=FRESHNESS_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Applies each asset's freshness policy (last materialised within "
            "POTATO_FRESHNESS_HOURS) and reports every asset that turns stale or fresh again: "
            "structured log event, potato_asset_stale metric, and a POST to "
            "POTATO_ALERT_WEBHOOK_URL if set."
        ),
    )
    def freshness_alerts(context: dg.SensorEvaluationContext, alerts_sink: AlertSink):
        if context.repository_def is None:
            return dg.SkipReason("no repository definition to read freshness policies from")
        previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        current: dict[str, str] = {}
        changes = []
        for key, window in sorted(_freshness_windows(context.repository_def).items(), key=str):
            latest = context.instance.get_latest_materialization_event(key)
            last = latest.timestamp if latest else None
            state = freshness_state(last, window, now)
            name = key.to_user_string()
            if last is not None:
                alerts.record_metric(
                    alerts.FRESHNESS_LAG, max(now - last, 0.0), {"asset_key": name, "layer": key.path[0]}
                )
            current[name] = state
            before = previous.get(name, "unknown")
            # Report a turn to stale (also on the first look), and recovery only from stale.
            if state == "stale" and before != "stale" or state == "fresh" and before == "stale":
                changes.append((name, before, state, window, last))
        for name, before, state, window, last in changes:
            hours = window / 3600
            message = (
                f"{name} is stale: last materialised more than {hours:g} h ago"
                if state == "stale"
                else f"{name} is fresh again"
            )
            alert = alerts.structured_event(
                f"asset_{state}",
                message,
                asset_key=name,
                previous_state=before,
                state=state,
                window_hours=hours,
                last_materialized_at=_iso(last),
            )
            alerts_sink.report(
                alert,
                (alerts.ASSET_STALE, 1.0 if state == "stale" else 0.0, {"asset_key": name}),
                log=context.log,
            )
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changes:
            stale = sorted(n for n, s in current.items() if s == "stale")
            return dg.SkipReason(
                f"no freshness changes ({len(stale)} stale: {', '.join(stale)})" if stale else "no freshness changes"
            )
        return dg.SkipReason(f"reported {len(changes)} freshness change(s)")

    return freshness_alerts


# --- failed runs ------------------------------------------------------------------------------


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Reports each failed run: structured log event, potato_run_failures_total metric, webhook."),
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerts_sink: AlertSink) -> None:
    run = context.dagster_run
    # The reasons as the console summary gives them: a failed check's own description (Dagster's
    # step error only names the check), then each other failed step's own exception.
    step_errors = run_summary.failure_reasons(run_summary.summarize(context.instance, run.run_id))
    detail = step_errors[0] if step_errors else (context.failure_event.message or "run failed")
    event = alerts.structured_event(
        "run_failed",
        f"Run {run.run_id} of {run.job_name} failed: {detail[:500]}",
        run_id=run.run_id,
        job_name=run.job_name,
        failed_steps=[e.step_key for e in context.get_step_failure_events()],
        errors=[s[:1000] for s in step_errors[:5]],
        tags={k: v for k, v in run.tags.items() if not k.startswith(".dagster")},
    )
    alerts_sink.report(event, (alerts.RUN_FAILURES, 1.0, {"job_name": run.job_name}), log=context.log)


# --- propagation ------------------------------------------------------------------------------


# Silver and gold carry DOWNSTREAM_AUTOMATION (defs/common.py). A landing change needs none of
# it (the landing sensor's run reaches gold); it covers a bumped code version, a missing asset
# and a bronze refresh started by hand, each with everything downstream in one run, once the
# blocking checks upstream passed. Dagster's implicit automation sensor starts stopped; this one
# runs by default, as often as the landing sensor looks.
def build_downstream_automation(settings: Settings) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "downstream_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.landing_poll_seconds,
        description=(
            "Evaluates the silver and gold automation conditions: rebuild an asset when its code "
            "version changed, it went missing or an input's data version changed outside a landing "
            "run, together with everything downstream of it in one run, once upstream blocking "
            "checks passed; every POTATO_LANDING_POLL_SECONDS."
        ),
    )


@dg.definitions
def automation() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions(
        schedules=[build_daily_refresh_schedule(settings)],
        sensors=[
            build_landing_sensor(settings),
            build_freshness_sensor(),
            run_failure_alerts,
            build_downstream_automation(settings),
        ],
    )
