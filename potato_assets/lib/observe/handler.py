"""Lineage and telemetry for every run: a logging handler on the Dagster instance.

Why a handler and not a `@dg.logger`: Definitions-level loggers run only when a run's config
names them, so runs launched from the UI or the daemon would skip them. Every run the instance
executes -- UI, daemon, `dagster asset materialize`, `dg.materialize(instance=...)` -- hands each
log record to the handlers listed under `python_logs.dagster_handler_config` in dagster.yaml, and
Dagster attaches the structured event (STEP_START, ASSET_MATERIALIZATION with its metadata,
ASSET_CHECK_EVALUATION, STEP_FAILURE, RUN_SUCCESS/FAILURE...) to the record as `dagster_meta`.

One OpenLineage job per asset, not per step: a multi-asset step (`ingest_landing`, `fit_models`)
writes several datasets with different upstreams, and only per-asset jobs give each dataset its
true inputs (bronze/weight reads only Potato_tidy.csv). Each asset job's parent is the Dagster run.
Each asset check is its own job whose input carries the dataQualityAssertions facet; downstream
jobs repeat the outcomes known so far on their inputs.

With OPENLINEAGE_URL, OTEL_EXPORTER_OTLP_ENDPOINT, POTATO_PUSHGATEWAY_URL unset and text logs,
`emit` returns at once: nothing is imported, built, sent or printed. Set on an instance whose
dagster.yaml does not list this handler, each run logs one warning saying so
(`missing_handler_warning`, called by the lake IO manager).
"""

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

log = logging.getLogger(__name__)

# Layers by the first part of an asset key; anything else (e.g. a test's assets) is "other".
LAYERS = ("landing", "bronze", "silver", "gold")
# Where non-parquet assets keep their objects under the lake, by the asset's kinds.
EXTENSIONS_BY_KIND = {"png": (".png",), "markdown": (".md",), "html": (".html",)}


def _enabled_sinks() -> dict[str, Any]:
    from potato_assets.lib.observe import lineage, telemetry
    from potato_assets.settings import load_settings

    # Read when the first run record arrives in this process (the run's own environment).
    SETTINGS = load_settings()

    return {
        "lineage_url": (os.environ.get("OPENLINEAGE_URL") or "").strip() or None,
        "otlp": telemetry.otlp_endpoint(),
        "pushgateway": SETTINGS.pushgateway_url,
        "json_logs": SETTINGS.log_format == "json",
        "settings": SETTINGS,
        "namespace": lineage.job_namespace(),
    }


# --- the asset graph, resolved once per process ------------------------------------------------


@dataclass
class StepPlan:
    assets: list[dg.AssetKey]
    checks: list[dg.AssetCheckKey]


class ProjectGraph:
    def __init__(self) -> None:
        from potato_assets.definitions import defs

        graph = defs().resolve_asset_graph()
        self.graph = graph
        self.steps: dict[str, StepPlan] = {}
        self.blocking: dict[dg.AssetCheckKey, bool] = {}
        self.check_descriptions: dict[dg.AssetCheckKey, str | None] = {}
        for ad in graph.assets_defs:
            if not ad.is_executable:
                continue
            plan = self.steps.setdefault(ad.node_def.name, StepPlan([], []))
            plan.assets.extend(k for k in ad.keys if graph.has(k) and graph.get(k).is_materializable)
            plan.checks.extend(ad.check_keys)
            for spec in ad.check_specs:
                self.blocking[spec.key] = bool(spec.blocking)
                self.check_descriptions[spec.key] = spec.description

    def has(self, key: dg.AssetKey) -> bool:
        return self.graph.has(key)

    def parents(self, key: dg.AssetKey) -> list[dg.AssetKey]:
        return sorted(self.graph.get(key).parent_keys, key=lambda k: k.to_user_string()) if self.has(key) else []

    def metadata(self, key: dg.AssetKey) -> dict[str, Any]:
        return dict(self.graph.get(key).metadata) if self.has(key) else {}

    def kinds(self, key: dg.AssetKey) -> set[str]:
        return set(self.graph.get(key).kinds) if self.has(key) else set()

    def description(self, key: dg.AssetKey) -> str | None:
        return self.graph.get(key).description if self.has(key) else None


_GRAPH: ProjectGraph | None = None
_GRAPH_LOCK = threading.Lock()


def project_graph() -> ProjectGraph:
    global _GRAPH
    with _GRAPH_LOCK:
        if _GRAPH is None:
            _GRAPH = ProjectGraph()
        return _GRAPH


def layer_of(key: dg.AssetKey) -> str:
    return key.path[0] if key.path and key.path[0] in LAYERS else "other"


def asset_uris(key: dg.AssetKey, graph: ProjectGraph, settings: Any) -> list[str]:
    """The objects an asset is stored as: the naming both ends of a lineage edge agree on."""
    from potato_assets.lib.lake import storage

    file_name = graph.metadata(key).get("file_name")
    if layer_of(key) == "landing" and file_name is not None:
        return [storage.join(settings.landing_uri, str(getattr(file_name, "value", file_name)))]
    extensions: list[str] = []
    for kind in sorted(graph.kinds(key)):
        extensions.extend(EXTENSIONS_BY_KIND.get(kind, ()))
    relative = "/".join(key.path)
    return [storage.join(settings.lake_uri, relative + ext) for ext in (extensions or [".parquet"])]


def lineage_job_name(key: dg.AssetKey) -> str:
    return ".".join(key.path)


def check_job_name(check: dg.AssetCheckKey) -> str:
    return f"{lineage_job_name(check.asset_key)}.check.{check.name}"


# --- per-run state ---------------------------------------------------------------------------


@dataclass
class StepState:
    key: str
    started: float
    plan: StepPlan
    span: Any = None
    materialized: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    checks: dict[dg.AssetCheckKey, Any] = field(default_factory=dict)
    started_lineage: bool = False


@dataclass
class RunState:
    run_id: str
    job_name: str
    started: float
    span: Any = None
    steps: dict[str, StepState] = field(default_factory=dict)
    # asset -> {"rows": int|None, "columns": [(name, type)]|None} for assets written in this run
    assets: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    # asset -> check outcomes seen in this run, for dataQualityAssertions on downstream inputs
    assertions: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    observations: list[Any] = field(default_factory=list)
    partition: str | None = None


class ObservabilityHandler(logging.Handler):
    """Configured in dagster.yaml (python_logs.dagster_handler_config.handlers)."""

    # Dagster builds a new handler object each time it creates a log manager (several per run
    # process), so the sinks and per-run state live on the class: one per process.
    _sinks: Any = None
    _on = True
    _runs: dict[str, RunState] = {}
    _emitter: Any = None
    _telemetry: Any = None
    _json: logging.Handler | None = None
    _lock = threading.RLock()

    @classmethod
    def reset(cls) -> None:
        """Forget the configuration read from the environment (tests change it between runs)."""
        with cls._lock:
            cls._sinks, cls._on, cls._runs = None, True, {}
            cls._emitter = cls._telemetry = cls._json = None

    # Resolved on the first record, not at construction: the handler is built from dagster.yaml
    # wherever the instance loads, and only run processes need the project.
    @classmethod
    def _configure(cls) -> None:
        sinks = _enabled_sinks()
        cls._sinks = sinks
        cls._on = bool(sinks["lineage_url"] or sinks["otlp"] or sinks["pushgateway"] or sinks["json_logs"])
        if not cls._on:
            return
        if sinks["lineage_url"]:
            from potato_assets.lib.observe import lineage

            cls._emitter = lineage.emitter_from_env()
        if sinks["otlp"]:
            from potato_assets.lib.observe import telemetry

            cls._telemetry = telemetry.telemetry_from_env()
        if sinks["json_logs"]:
            from potato_assets.lib.observe.telemetry import JsonLogFormatter

            cls._json = logging.StreamHandler(sys.stderr)
            cls._json.setFormatter(JsonLogFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if not self._on:
            return
        meta = getattr(record, "dagster_meta", None)
        if not meta or not meta.get("run_id"):
            return
        try:
            with self._lock:
                if self._sinks is None:
                    self._configure()
                    if not self._on:
                        return
                self._handle(record, meta)
        except Exception:  # observability must never break a run
            log.warning("observability handler failed on a record", exc_info=True)

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self, record: logging.LogRecord, meta: dict[str, Any]) -> None:
        event = meta.get("dagster_event")
        run_id = meta["run_id"]
        run = self._runs.get(run_id)
        if event is not None:
            kind = event.event_type
            T = dg.DagsterEventType
            if kind == T.RUN_START or run is None:
                run = self._run_start(run_id, meta.get("job_name") or "job")
            if kind == T.STEP_START:
                self._step_start(run, event)
            elif kind == T.ASSET_MATERIALIZATION:
                self._materialized(run, event)
            elif kind == T.ASSET_CHECK_EVALUATION:
                self._check_evaluated(run, event)
            elif kind == T.STEP_SUCCESS:
                self._step_end(run, event, error=None)
            elif kind == T.STEP_FAILURE:
                self._step_end(run, event, error=_error_of(event))
        self._log_line(record, meta, run)
        if event is not None and run is not None:
            T = dg.DagsterEventType
            if event.event_type == T.RUN_SUCCESS:
                self._run_end(run, error=None)
            elif event.event_type == T.RUN_FAILURE:
                self._run_end(run, error=_error_of(event) or ("run failed", None))

    # -- lineage helpers -------------------------------------------------------------------------

    def _parent(self, run: RunState) -> Any:
        from potato_assets.lib.observe import lineage

        return lineage.ParentRun(self._sinks["namespace"], run.job_name, run.run_id)

    def _dataset(self, run: RunState, key: dg.AssetKey, *, output: bool) -> list[Any]:
        from potato_assets.lib.observe import lineage

        graph = project_graph()
        settings = self._sinks["settings"]
        known = run.assets.get(key, {})
        infos = []
        for uri in asset_uris(key, graph, settings):
            info = lineage.DatasetInfo(uri=uri, columns=known.get("columns"))
            if uri.endswith(".parquet"):
                info.rows = known.get("rows") if output else None
            if output:
                info.column_lineage = self._column_lineage(key, graph, settings)
            else:
                info.assertions = [
                    lineage.Assertion(
                        name=c["name"],
                        success=c["passed"],
                        severity=c["severity"],
                        description=c["description"],
                    )
                    for c in run.assertions.get(key, {}).values()
                ] or None
            infos.append(info)
        return infos

    def _column_lineage(self, key: dg.AssetKey, graph: ProjectGraph, settings: Any) -> Any:
        declared = graph.metadata(key).get("dagster/column_lineage")
        table = getattr(declared, "value", declared)
        deps_by_column = getattr(table, "deps_by_column", None)
        if not deps_by_column:
            return None
        return {
            column: [(asset_uris(dep.asset_key, graph, settings)[0], dep.column_name) for dep in deps]
            for column, deps in deps_by_column.items()
        }

    def _asset_job(self, run: RunState, key: dg.AssetKey) -> Any:
        from potato_assets.lib.observe import lineage

        graph = project_graph()
        name = lineage_job_name(key)
        inputs = [i for parent in graph.parents(key) for i in self._dataset(run, parent, output=False)]
        return lineage.JobRun(
            namespace=self._sinks["namespace"],
            name=name,
            run_id=lineage.step_run_id(run.run_id, name),
            job_type="ASSET",
            inputs=inputs,
            outputs=self._dataset(run, key, output=True),
            parent=self._parent(run),
            description=graph.description(key),
        )

    def _check_job(self, run: RunState, check: dg.AssetCheckKey) -> Any:
        from potato_assets.lib.observe import lineage

        name = check_job_name(check)
        inputs = self._dataset(run, check.asset_key, output=False)
        for info in inputs:  # this job's input carries only its own assertion
            info.assertions = [a for a in (info.assertions or []) if a.name == check.name] or None
        return lineage.JobRun(
            namespace=self._sinks["namespace"],
            name=name,
            run_id=lineage.step_run_id(run.run_id, name),
            job_type="ASSET_CHECK",
            inputs=inputs,
            outputs=[],
            parent=self._parent(run),
        )

    def _send(self, event_type: str, job: Any, error: tuple[str, str | None] | None = None) -> None:
        if self._emitter is None:
            return
        from potato_assets.lib.observe import lineage

        message, stack = error if error else (None, None)
        self._emitter.emit(lineage.build_run_event(event_type, job, error_message=message, error_stack=stack))

    def _observe(self, run: RunState, name: str, value: float, **labels: str) -> None:
        if self._telemetry is None and not self._sinks["pushgateway"]:
            return
        from potato_assets.lib.observe import telemetry

        obs = telemetry.observation(name, value, **labels)
        run.observations.append(obs)
        if self._telemetry is not None:
            self._telemetry.record(obs)

    # -- events ----------------------------------------------------------------------------------

    def _run_start(self, run_id: str, job_name: str) -> RunState:
        run = self._runs.get(run_id)
        if run is not None:
            return run
        run = RunState(run_id=run_id, job_name=job_name, started=time.time())
        self._runs[run_id] = run
        if self._telemetry is not None:
            run.span = self._telemetry.start_run_span(
                run_id, f"run {job_name}", {"dagster.run_id": run_id, "dagster.job_name": job_name}
            )
        if self._emitter is not None:
            from potato_assets.lib.observe import lineage

            self._send(
                lineage.START,
                lineage.JobRun(namespace=self._sinks["namespace"], name=job_name, run_id=run_id, job_type="JOB"),
            )
        return run

    def _step_start(self, run: RunState, event: Any) -> None:
        graph = project_graph()
        plan = graph.steps.get(event.step_key)
        plan = StepPlan(list(plan.assets), list(plan.checks)) if plan else StepPlan([], [])
        step = StepState(key=event.step_key, started=time.time(), plan=plan)
        run.steps[event.step_key] = step
        partition = getattr(event, "partition", None)
        run.partition = partition or run.partition
        if self._telemetry is not None:
            step.span = self._telemetry.start_child_span(
                run.span,
                f"step {event.step_key}",
                {
                    "dagster.run_id": run.run_id,
                    "dagster.step_key": event.step_key,
                    "dagster.asset_keys": [k.to_user_string() for k in plan.assets],
                    "dagster.check_keys": [f"{c.asset_key.to_user_string()}:{c.name}" for c in plan.checks],
                    "dagster.partition": partition or "",
                    "potato.rows_in": sum(
                        int(run.assets.get(p, {}).get("rows") or 0) for k in plan.assets for p in graph.parents(k)
                    ),
                },
            )
        if self._emitter is not None:
            from potato_assets.lib.observe import lineage

            for key in plan.assets:
                self._send(lineage.START, self._asset_job(run, key))
            for check in plan.checks:
                self._send(lineage.START, self._check_job(run, check))
        step.started_lineage = True

    def _materialized(self, run: RunState, event: Any) -> None:
        materialization = event.event_specific_data.materialization
        key = materialization.asset_key
        metadata = materialization.metadata
        rows = metadata.get("dagster/row_count")
        schema = metadata.get("dagster/column_schema")
        columns = None
        if schema is not None:
            columns = [(c.name, c.type) for c in schema.value.columns]
        facts = {
            "rows": int(rows.value) if rows is not None else None,
            "columns": columns,
            "at": time.time(),
        }
        run.assets[key] = facts
        step = run.steps.get(event.step_key)
        if step is not None:
            step.materialized[key] = facts
            if key not in step.plan.assets:  # a step the project graph does not know
                step.plan.assets.append(key)

    def _check_evaluated(self, run: RunState, event: Any) -> None:
        evaluation = event.event_specific_data
        check = evaluation.asset_check_key
        graph = project_graph()
        severity = getattr(evaluation.severity, "value", str(evaluation.severity)).lower()
        outcome = {
            "name": check.name,
            "passed": bool(evaluation.passed),
            "severity": severity,
            "blocking": graph.blocking.get(check, bool(getattr(evaluation, "blocking", False))),
            "description": evaluation.description or graph.check_descriptions.get(check),
        }
        run.assertions.setdefault(check.asset_key, {})[check.name] = outcome
        step = run.steps.get(event.step_key)
        if step is not None:
            step.checks[check] = outcome
            if check not in step.plan.checks:
                step.plan.checks.append(check)

    def _step_end(self, run: RunState, event: Any, error: tuple[str, str | None] | None) -> None:
        from potato_assets.lib.observe import lineage, telemetry

        step = run.steps.pop(event.step_key, None)
        if step is None:
            return
        duration = time.time() - step.started
        status = "success" if error is None else "failure"
        if self._emitter is not None:
            for key in step.plan.assets:
                job = self._asset_job(run, key)
                if error is None:
                    self._send(lineage.COMPLETE, job)
                else:
                    self._send(lineage.FAIL, job, error)
            for check in step.plan.checks:
                job = self._check_job(run, check)
                self._send(lineage.COMPLETE if error is None else lineage.FAIL, job, error)
        graph = project_graph()
        layers = sorted({layer_of(k) for k in step.plan.assets}) or ["other"]
        if step.plan.assets:
            self._observe(
                run,
                telemetry.ASSET_DURATION,
                duration,
                step=step.key,
                layer=layers[0],
                status=status,
            )
        for key, facts in step.materialized.items():
            layer = layer_of(key)
            if facts.get("rows") is not None:
                self._observe(
                    run,
                    telemetry.ROWS_PROCESSED,
                    facts["rows"],
                    asset_key=key.to_user_string(),
                    layer=layer,
                    direction="out",
                )
            rows_in = [run.assets.get(p, {}).get("rows") for p in graph.parents(key)]
            if any(r is not None for r in rows_in):
                self._observe(
                    run,
                    telemetry.ROWS_PROCESSED,
                    sum(r or 0 for r in rows_in),
                    asset_key=key.to_user_string(),
                    layer=layer,
                    direction="in",
                )
            self._observe(
                run,
                telemetry.LAST_MATERIALIZATION,
                facts["at"],
                asset_key=key.to_user_string(),
                layer=layer,
            )
        for check, outcome in step.checks.items():
            labels = dict(
                asset_key=check.asset_key.to_user_string(),
                check_name=check.name,
                blocking=str(outcome["blocking"]).lower(),
            )
            self._observe(
                run,
                telemetry.CHECK_EVALUATIONS,
                1,
                outcome="passed" if outcome["passed"] else "failed",
                **labels,
            )
            # 0 for a passing check, so the series exists before the first failure (alerting)
            failed = 0 if outcome["passed"] else 1
            self._observe(run, telemetry.CHECK_FAILURES, failed, severity=outcome["severity"], **labels)
        if step.span is not None:
            from opentelemetry.trace import Status, StatusCode

            rows_out = sum(int(f.get("rows") or 0) for f in step.materialized.values())
            step.span.set_attribute("potato.rows_out", rows_out)
            step.span.set_attribute("potato.checks_passed", sum(1 for c in step.checks.values() if c["passed"]))
            step.span.set_attribute("potato.checks_failed", sum(1 for c in step.checks.values() if not c["passed"]))
            step.span.set_attribute(
                "potato.check_outcomes",
                [f"{c['name']}={'passed' if c['passed'] else 'failed'}" for c in step.checks.values()],
            )
            if error is None:
                step.span.set_status(Status(StatusCode.OK))
            else:
                step.span.set_status(Status(StatusCode.ERROR, error[0][:500]))
            step.span.end()

    def _run_end(self, run: RunState, error: tuple[str, str | None] | None) -> None:
        from potato_assets.lib.observe import lineage, telemetry

        self._runs.pop(run.run_id, None)
        status = "success" if error is None else "failure"
        duration = time.time() - run.started
        self._observe(run, telemetry.RUNS, 1, dagster_job=run.job_name, status=status)
        self._observe(run, telemetry.RUN_FAILURES, 0 if error is None else 1, dagster_job=run.job_name)
        self._observe(run, telemetry.RUN_DURATION, duration, dagster_job=run.job_name, status=status)
        if self._emitter is not None:
            job = lineage.JobRun(
                namespace=self._sinks["namespace"],
                name=run.job_name,
                run_id=run.run_id,
                job_type="JOB",
            )
            self._send(lineage.COMPLETE if error is None else lineage.FAIL, job, error)
        if run.span is not None:
            from opentelemetry.trace import Status, StatusCode

            run.span.set_attribute("dagster.partition", run.partition or "")
            run.span.set_status(Status(StatusCode.OK) if error is None else Status(StatusCode.ERROR, error[0][:500]))
            run.span.end()
        if self._sinks["pushgateway"]:
            telemetry.push_observations(
                self._sinks["pushgateway"],
                run.observations,
                per_asset={telemetry.LAST_MATERIALIZATION},
            )
        if self._telemetry is not None:
            self._telemetry.flush()

    # -- logs ------------------------------------------------------------------------------------

    def _log_line(self, record: logging.LogRecord, meta: dict[str, Any], run: RunState | None) -> None:
        if self._json is None and self._telemetry is None:
            return
        from potato_assets.lib.observe import telemetry

        event = meta.get("dagster_event")
        step_key = meta.get("step_key")
        span = None
        if run is not None:
            step = run.steps.get(step_key) if step_key else None
            span = step.span if step is not None and step.span is not None else run.span
        trace_id = telemetry.format_trace_id(telemetry.trace_id_for_run(meta["run_id"]))
        span_id = f"{span.get_span_context().span_id:016x}" if span is not None else None
        fields = {
            "message": meta.get("orig_message") or record.getMessage(),
            "run_id": meta["run_id"],
            "trace_id": trace_id,
            "span_id": span_id,
            "job": meta.get("job_name"),
            "step_key": step_key,
            "event_type": event.event_type_value if event is not None else None,
            "asset_key": event.asset_key.to_user_string() if event is not None and event.asset_key else None,
        }
        if self._json is not None:
            record.potato_fields = fields
            self._json.handle(record)
        if self._telemetry is not None:
            body = telemetry.JsonLogFormatter().format(_with_fields(record, fields))
            self._telemetry.log(
                record,
                body,
                span,
                {
                    "dagster.run_id": meta["run_id"],
                    "dagster.step_key": step_key,
                    "dagster.event_type": fields["event_type"],
                },
            )


def _with_fields(record: logging.LogRecord, fields: dict[str, Any]) -> logging.LogRecord:
    record.potato_fields = fields
    return record


def _error_of(event: Any) -> tuple[str, str | None] | None:
    data = event.event_specific_data
    error = getattr(data, "error", None)
    if error is None:
        return None
    message = (getattr(error, "message", "") or "").strip()
    stack = "".join(getattr(error, "stack", []) or []) or None
    cause = getattr(error, "cause", None)
    while cause is not None:  # dg.Failure wraps the real reason as the cause
        message += f"\n{(cause.message or '').strip()}"
        cause = getattr(cause, "cause", None)
    return message or "step failed", stack


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
