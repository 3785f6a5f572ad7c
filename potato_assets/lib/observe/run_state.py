"""What the instance handler knows about each run in progress: its steps, what they wrote, the
check outcomes so far, its trace spans and metric observations. One RunState per run, kept by
the process's dispatcher (handler.py) from RUN_START to RUN_SUCCESS/RUN_FAILURE."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from potato_assets.lib.observe.graph import ProjectGraph, StepPlan
from potato_assets.lib.redact import redact_text


@dataclass
class StepState:
    key: str
    started: float
    plan: StepPlan
    partition: str | None = None
    span: Any = None  # the step's OTel span, when OTel is on
    materialized: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    checks: dict[dg.AssetCheckKey, Any] = field(default_factory=dict)


@dataclass
class RunState:
    run_id: str
    job_name: str
    started: float
    span: Any = None  # the run's OTel span, when OTel is on
    steps: dict[str, StepState] = field(default_factory=dict)
    # asset -> {"rows": int|None, "columns": [(name, type)]|None} for assets written in this run
    assets: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    # asset -> check outcomes seen in this run, for dataQualityAssertions on downstream inputs
    assertions: dict[dg.AssetKey, dict[str, Any]] = field(default_factory=dict)
    observations: list[Any] = field(default_factory=list)  # metrics, pushed at the run's end
    partition: str | None = None

    def start_step(self, event: Any, graph: ProjectGraph) -> StepState:
        partition = getattr(event, "partition", None)
        step = StepState(key=event.step_key, started=time.time(), plan=graph.plan(event.step_key), partition=partition)
        self.steps[event.step_key] = step
        self.partition = partition or self.partition
        return step

    def record_materialization(self, event: Any) -> None:
        materialization = event.event_specific_data.materialization
        key = materialization.asset_key
        metadata = materialization.metadata
        rows = metadata.get("dagster/row_count")
        schema = metadata.get("dagster/column_schema")
        columns = [(c.name, c.type) for c in schema.value.columns] if schema is not None else None
        facts = {"rows": int(rows.value) if rows is not None else None, "columns": columns, "at": time.time()}
        self.assets[key] = facts
        step = self.steps.get(event.step_key)
        if step is not None:
            step.materialized[key] = facts
            if key not in step.plan.assets:  # a step the project graph does not know
                step.plan.assets.append(key)

    def record_check(self, event: Any, graph: ProjectGraph) -> None:
        evaluation = event.event_specific_data
        check = evaluation.asset_check_key
        severity = getattr(evaluation.severity, "value", str(evaluation.severity)).lower()
        outcome = {
            "name": check.name,
            "passed": bool(evaluation.passed),
            "severity": severity,
            "blocking": graph.blocking.get(check, bool(getattr(evaluation, "blocking", False))),
            "description": evaluation.description or graph.check_descriptions.get(check),
        }
        self.assertions.setdefault(check.asset_key, {})[check.name] = outcome
        step = self.steps.get(event.step_key)
        if step is not None:
            step.checks[check] = outcome
            if check not in step.plan.checks:
                step.plan.checks.append(check)

    def rows_in(self, key: dg.AssetKey, graph: ProjectGraph) -> list[int | None]:
        """Rows of the asset's parents written in this run (None: not written or not a table)."""
        return [self.assets.get(p, {}).get("rows") for p in graph.parents(key)]

    def span_for(self, step_key: str | None) -> Any:
        """The span a log line belongs to: its step's, else the run's."""
        step = self.steps.get(step_key) if step_key else None
        return step.span if step is not None and step.span is not None else self.span


def log_fields(record: logging.LogRecord, meta: dict[str, Any], run: RunState | None) -> dict[str, Any]:
    """What every structured log line carries: the message, run, trace and span, job, step, event."""
    from potato_assets.lib.observe import telemetry

    event = meta.get("dagster_event")
    step_key = meta.get("step_key")
    span = run.span_for(step_key) if run is not None else None
    return {
        "message": redact_text(meta.get("orig_message") or record.getMessage()),
        "run_id": meta["run_id"],
        "trace_id": telemetry.format_trace_id(telemetry.trace_id_for_run(meta["run_id"])),
        "span_id": f"{span.get_span_context().span_id:016x}" if span is not None else None,
        "job": meta.get("job_name"),
        "step_key": step_key,
        "event_type": event.event_type_value if event is not None else None,
        "asset_key": event.asset_key.to_user_string() if event is not None and event.asset_key else None,
    }
