"""Lineage and telemetry for every run: a logging handler on the Dagster instance.

Why a handler and not a `@dg.logger`: Definitions-level loggers run only when a run's config
names them, so runs launched from the UI or the daemon would skip them. Every run the instance
executes -- UI, daemon, `dagster asset materialize`, `dg.materialize(instance=...)` -- hands each
log record to the handlers listed under `python_logs.dagster_handler_config` in dagster.yaml, and
Dagster attaches the structured event (STEP_START, ASSET_MATERIALIZATION with its metadata,
ASSET_CHECK_EVALUATION, STEP_FAILURE, RUN_SUCCESS/FAILURE...) to the record as `dagster_meta`.

The handler only dispatches: each run's state is a RunState (run_state.py), and each side channel
is a sink of its own (openlineage_sink.py, telemetry_sink.py, json_log_sink.py). Dagster builds a
new handler object each time it creates a log manager (several per run process), so the
dispatcher -- the sinks and the runs in progress -- is one per process, built on the first run
record from the run's own environment.

With OPENLINEAGE_URL, OTEL_EXPORTER_OTLP_ENDPOINT, POTATO_PUSHGATEWAY_URL unset and text logs,
`emit` returns at once: nothing is imported, built, sent or printed. Set on an instance whose
dagster.yaml does not list this handler, each run logs one warning saying so
(`missing_handler_warning`, called by the lake IO manager).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import dagster as dg

from potato_assets.lib.observe.errors import failure_of
from potato_assets.lib.observe.run_state import RunState, log_fields
from potato_assets.lib.observe.sinks import Failure, Sink
from potato_assets.lib.redact import get_logger

log = get_logger(__name__)


class Dispatcher:
    """The process's sinks and the runs in progress; Dagster events -> RunState -> each sink."""

    def __init__(self, sinks: list[Sink], graph: Any) -> None:
        self.sinks, self.graph = sinks, graph
        self.runs: dict[str, RunState] = {}
        self.wants_logs = any(sink.wants_logs for sink in sinks)

    def handle(self, record: logging.LogRecord, meta: dict[str, Any]) -> None:
        event = meta.get("dagster_event")
        run = self.runs.get(meta["run_id"])
        T = dg.DagsterEventType
        if event is not None:
            kind = event.event_type
            if kind == T.RUN_START or run is None:
                run = self._run_started(meta["run_id"], meta.get("job_name") or "job")
            if kind == T.STEP_START:
                step = run.start_step(event, self.graph)
                for sink in self.sinks:
                    sink.step_started(run, step)
            elif kind == T.ASSET_MATERIALIZATION:
                run.record_materialization(event)
            elif kind == T.ASSET_CHECK_EVALUATION:
                run.record_check(event, self.graph)
            elif kind in (T.STEP_SUCCESS, T.STEP_FAILURE):
                self._step_ended(run, event, failure_of(event) if kind == T.STEP_FAILURE else None)
        if self.wants_logs:
            fields = log_fields(record, meta, run)
            for sink in self.sinks:
                if sink.wants_logs:
                    sink.log(record, fields, run)
        if event is not None and run is not None:
            if event.event_type == T.RUN_SUCCESS:
                self._run_ended(run, None)
            elif event.event_type == T.RUN_FAILURE:
                self._run_ended(run, failure_of(event) or ("run failed", None))

    def _run_started(self, run_id: str, job_name: str) -> RunState:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunState(run_id=run_id, job_name=job_name, started=time.time())
            for sink in self.sinks:
                sink.run_started(run)
        return run

    def _step_ended(self, run: RunState, event: Any, error: Failure) -> None:
        step = run.steps.pop(event.step_key, None)
        if step is not None:
            for sink in self.sinks:
                sink.step_ended(run, step, error)

    def _run_ended(self, run: RunState, error: Failure) -> None:
        self.runs.pop(run.run_id, None)
        for sink in self.sinks:
            sink.run_ended(run, error)


def build_dispatcher() -> Dispatcher | None:
    """The sinks the run's environment turns on, or None when none is (then nothing is imported)."""
    from potato_assets.lib.observe import telemetry
    from potato_assets.settings import load_settings

    settings = load_settings()  # the run's own environment, read on its first record
    lineage_url = (os.environ.get("OPENLINEAGE_URL") or "").strip() or None
    otlp = telemetry.otlp_endpoint()
    json_logs = settings.log_format == "json"
    if not (lineage_url or otlp or settings.pushgateway_url or json_logs):
        return None
    from potato_assets.lib.observe.graph import project_graph

    graph = project_graph()
    sinks: list[Sink] = []
    if lineage_url:
        from potato_assets.lib.observe import lineage
        from potato_assets.lib.observe.openlineage_sink import OpenLineageSink

        sinks.append(OpenLineageSink(lineage.emitter_from_env(), lineage.job_namespace(), graph, settings))
    if otlp or settings.pushgateway_url:
        from potato_assets.lib.observe.telemetry_sink import TelemetrySink

        otel = telemetry.telemetry_from_env() if otlp else None
        sinks.append(TelemetrySink(otel, settings.pushgateway_url, graph))
    if json_logs:
        from potato_assets.lib.observe.json_log_sink import JsonLogSink

        sinks.append(JsonLogSink())
    return Dispatcher(sinks, graph)


_LOCK = threading.RLock()
_configured = False
_dispatcher: Dispatcher | None = None


def reset() -> None:
    """Forget the configuration read from the environment (tests change it between runs)."""
    global _configured, _dispatcher
    with _LOCK:
        _configured, _dispatcher = False, None


class ObservabilityHandler(logging.Handler):
    """Configured in dagster.yaml (python_logs.dagster_handler_config.handlers)."""

    reset = staticmethod(reset)

    def emit(self, record: logging.LogRecord) -> None:
        global _configured, _dispatcher
        if _configured and _dispatcher is None:
            return
        meta = getattr(record, "dagster_meta", None)
        if not meta or not meta.get("run_id"):
            return
        try:
            with _LOCK:
                # Resolved on the first run record, not at construction: the handler is built from
                # dagster.yaml wherever the instance loads, and only run processes need the project.
                if not _configured:
                    _dispatcher, _configured = build_dispatcher(), True
                if _dispatcher is not None:
                    _dispatcher.handle(record, meta)
        except Exception:  # observability must never break a run
            log.warning("observability handler failed on a record", exc_info=True)


# --- a run on an instance without this handler ---------------------------------------------------

HANDLER_PATH = f"{__name__}.ObservabilityHandler"
# What only this handler acts on: set without it, they would be ignored without a word.
HANDLER_SETTINGS = ("OPENLINEAGE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "POTATO_PUSHGATEWAY_URL")


def installed_on(instance: dg.DagsterInstance) -> bool:
    """Whether the instance's dagster.yaml lists ObservabilityHandler under python_logs."""
    handlers = (instance.get_python_log_dagster_handler_config() or {}).get("handlers") or {}
    return any(
        isinstance(spec, dict) and spec.get("()") in (HANDLER_PATH, ObservabilityHandler) for spec in handlers.values()
    )


def missing_handler_warning(instance: dg.DagsterInstance, environ: Any = None) -> str | None:
    """The sentence a run logs when lineage or telemetry is asked for but cannot happen, else None."""
    env = os.environ if environ is None else environ
    asked = [name for name in HANDLER_SETTINGS if (env.get(name) or "").strip()]
    if (env.get("POTATO_LOG_FORMAT") or "").strip().lower() == "json":
        asked.append("POTATO_LOG_FORMAT=json")
    if not asked or installed_on(instance):
        return None
    return (
        f"{', '.join(asked)} set, but this Dagster instance does not install {HANDLER_PATH} "
        "(python_logs.dagster_handler_config in $DAGSTER_HOME/dagster.yaml), so this run sends no "
        "lineage or telemetry. Use the repository's dagster.yaml as the instance configuration."
    )
