"""The telemetry sink: OTel spans (one trace per run, a span per step), metrics (to OTLP and,
at the run's end, to the Prometheus Pushgateway) and OTel log records."""

from __future__ import annotations

import logging
import time
from typing import Any

from potato_assets.lib.observe import telemetry
from potato_assets.lib.observe.graph import ProjectGraph, layer_of
from potato_assets.lib.observe.run_state import RunState, StepState
from potato_assets.lib.observe.sinks import Failure, Sink


class TelemetrySink(Sink):
    """`otel`: the process's Telemetry (None without an OTLP endpoint); `pushgateway`: its URL."""

    def __init__(self, otel: telemetry.Telemetry | None, pushgateway: str | None, graph: ProjectGraph) -> None:
        self.otel, self.pushgateway, self.graph = otel, pushgateway, graph
        self.wants_logs = otel is not None

    def _observe(self, run: RunState, name: str, value: float, **labels: str) -> None:
        obs = telemetry.observation(name, value, **labels)
        run.observations.append(obs)
        if self.otel is not None:
            self.otel.record(obs)

    # -- events ----------------------------------------------------------------------------------

    def run_started(self, run: RunState) -> None:
        if self.otel is not None:
            run.span = self.otel.start_run_span(
                run.run_id, f"run {run.job_name}", {"dagster.run_id": run.run_id, "dagster.job_name": run.job_name}
            )

    def step_started(self, run: RunState, step: StepState) -> None:
        if self.otel is None:
            return
        plan = step.plan
        step.span = self.otel.start_child_span(
            run.span,
            f"step {step.key}",
            {
                "dagster.run_id": run.run_id,
                "dagster.step_key": step.key,
                "dagster.asset_keys": [k.to_user_string() for k in plan.assets],
                "dagster.check_keys": [f"{c.asset_key.to_user_string()}:{c.name}" for c in plan.checks],
                "dagster.partition": step.partition or "",
                "potato.rows_in": sum(int(r or 0) for k in plan.assets for r in run.rows_in(k, self.graph)),
            },
        )

    def step_ended(self, run: RunState, step: StepState, error: Failure) -> None:
        duration = time.time() - step.started
        status = "success" if error is None else "failure"
        layers = sorted({layer_of(k) for k in step.plan.assets}) or ["other"]
        if step.plan.assets:
            self._observe(run, telemetry.ASSET_DURATION, duration, step=step.key, layer=layers[0], status=status)
        for key, facts in step.materialized.items():
            asset_key, layer = key.to_user_string(), layer_of(key)
            if facts.get("rows") is not None:
                self._observe(
                    run, telemetry.ROWS_PROCESSED, facts["rows"], asset_key=asset_key, layer=layer, direction="out"
                )
            rows_in = run.rows_in(key, self.graph)
            if any(r is not None for r in rows_in):
                self._observe(
                    run,
                    telemetry.ROWS_PROCESSED,
                    sum(r or 0 for r in rows_in),
                    asset_key=asset_key,
                    layer=layer,
                    direction="in",
                )
            self._observe(run, telemetry.LAST_MATERIALIZATION, facts["at"], asset_key=asset_key, layer=layer)
        for check, outcome in step.checks.items():
            labels = dict(
                asset_key=check.asset_key.to_user_string(),
                check_name=check.name,
                blocking=str(outcome["blocking"]).lower(),
            )
            passed = "passed" if outcome["passed"] else "failed"
            self._observe(run, telemetry.CHECK_EVALUATIONS, 1, outcome=passed, **labels)
            # 0 for a passing check, so the series exists before the first failure (alerting)
            failed = 0 if outcome["passed"] else 1
            self._observe(run, telemetry.CHECK_FAILURES, failed, severity=outcome["severity"], **labels)
        if step.span is not None:
            checks = step.checks.values()
            step.span.set_attribute("potato.rows_out", sum(int(f.get("rows") or 0) for f in step.materialized.values()))
            step.span.set_attribute("potato.checks_passed", sum(1 for c in checks if c["passed"]))
            step.span.set_attribute("potato.checks_failed", sum(1 for c in checks if not c["passed"]))
            step.span.set_attribute(
                "potato.check_outcomes", [f"{c['name']}={'passed' if c['passed'] else 'failed'}" for c in checks]
            )
            _end(step.span, error)

    def run_ended(self, run: RunState, error: Failure) -> None:
        status = "success" if error is None else "failure"
        duration = time.time() - run.started
        self._observe(run, telemetry.RUNS, 1, dagster_job=run.job_name, status=status)
        self._observe(run, telemetry.RUN_FAILURES, 0 if error is None else 1, dagster_job=run.job_name)
        self._observe(run, telemetry.RUN_DURATION, duration, dagster_job=run.job_name, status=status)
        if run.span is not None:
            run.span.set_attribute("dagster.partition", run.partition or "")
            _end(run.span, error)
        if self.pushgateway:
            telemetry.push_observations(self.pushgateway, run.observations, per_asset={telemetry.LAST_MATERIALIZATION})
        if self.otel is not None:
            self.otel.flush()

    def log(self, record: logging.LogRecord, fields: dict[str, Any], run: RunState | None) -> None:
        if self.otel is None:
            return
        record.potato_fields = fields
        body = telemetry.JsonLogFormatter().format(record)
        attributes = {
            "dagster.run_id": fields["run_id"],
            "dagster.step_key": fields["step_key"],
            "dagster.event_type": fields["event_type"],
        }
        self.otel.log(record, body, run.span_for(fields["step_key"]) if run is not None else None, attributes)


def _end(span: Any, error: Failure) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.OK) if error is None else Status(StatusCode.ERROR, error[0][:500]))
    span.end()
