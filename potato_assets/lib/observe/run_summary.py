"""What a run did, read back from the instance's event log: the closing summary `make run` prints
and the reasons the run-failure alert carries.

Assets materialised (by layer), checks passed / warned / failed, and for each failed check its
description (the reason) and the offending rows from its `offending_rows` metadata (file, line,
column, value; see defs/contract_checks.py and defs/bronze/checks.py). Steps that failed for any
other reason are listed with their own error's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from potato_assets.lib.observe.errors import cause_chain, root_cause

LAYERS = ("landing", "bronze", "silver", "gold")
# Raised by Dagster on the step of a blocking check that failed: the check's own event says why.
BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"
MAX_OFFENDING_ROWS = 5


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    severity: str  # "ERROR" or "WARN"
    reason: str
    offending_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.asset}: {self.name}"

    @property
    def status(self) -> str:
        if self.passed:
            return "passed"
        return "failed" if self.severity == "ERROR" else "warned"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str
    materialized: list[dg.AssetKey]
    planned: list[dg.AssetKey]
    checks: list[CheckOutcome]
    step_errors: list[str]  # "step: message" of failures that are not a failed check
    blocking_failures: list[str] = field(default_factory=list)  # labels of the checks that stopped the run

    def checks_with(self, status: str) -> list[CheckOutcome]:
        return [c for c in self.checks if c.status == status]

    @property
    def not_materialized(self) -> list[dg.AssetKey]:
        done = set(self.materialized)
        return [k for k in self.planned if k not in done]


def latest_run_id(instance: dg.DagsterInstance) -> str | None:
    runs = instance.get_runs(limit=1)
    return runs[0].run_id if runs else None


def summarize(instance: dg.DagsterInstance, run_id: str) -> RunSummary:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise LookupError(f"no run {run_id} in this instance")
    records = instance.all_logs(
        run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_CHECK_EVALUATION,
            DagsterEventType.STEP_FAILURE,
        },
    )
    materialized: list[dg.AssetKey] = []
    planned: list[dg.AssetKey] = []
    checks: list[CheckOutcome] = []
    step_errors: list[str] = []
    blocked_by: list[str] = []  # Dagster's messages naming the blocking checks that stopped the run
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED and event.asset_key is not None:
            planned.append(event.asset_key)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION and event.asset_key is not None:
            if event.asset_key not in materialized:
                materialized.append(event.asset_key)
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            checks.append(_check_outcome(evaluation))
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            if data is None or data.error is None:
                step_errors.append(f"{event.step_key}: failed")
                continue
            innermost = cause_chain(data.error)[-1]
            cls_name, message = str(getattr(innermost, "cls_name", "") or ""), root_cause(data.error)
            failure = data.user_failure_data  # a dg.Failure's own description, without the class path
            if failure is not None and failure.description:
                message = failure.description.strip()
            if cls_name == BLOCKING_CHECK_ERROR:
                blocked_by.append(message)
            else:
                step_errors.append(f"{event.step_key}: {message}")
    return RunSummary(
        run_id=run_id,
        status=run.status.value,
        materialized=materialized,
        planned=planned,
        checks=checks,
        step_errors=step_errors,
        blocking_failures=[c.label for c in checks if any(c.label in m for m in blocked_by)],
    )


def _check_outcome(evaluation: Any) -> CheckOutcome:
    metadata = evaluation.metadata or {}
    rows = metadata.get("offending_rows")
    offending = getattr(rows, "value", None) or []
    severity = evaluation.severity.value if evaluation.severity is not None else "ERROR"
    return CheckOutcome(
        asset=evaluation.asset_key.to_user_string(),
        name=evaluation.check_name,
        passed=bool(evaluation.passed),
        severity=severity,
        reason=(evaluation.description or "").strip(),
        offending_rows=list(offending)[:MAX_OFFENDING_ROWS] if isinstance(offending, list) else [],
    )


def failure_reasons(summary: RunSummary) -> list[str]:
    """One line per reason the run failed: each failed check with its reason, then other steps."""
    return [f"{c.label}: {c.reason}" for c in summary.checks_with("failed")] + summary.step_errors


def _by_layer(keys: list[dg.AssetKey]) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {}
    for key in keys:
        layer = key.path[0] if key.path[0] in LAYERS else "other"
        name = "/".join(key.path[1:]) if layer != "other" else key.to_user_string()
        layers.setdefault(layer, []).append(name)
    order = {name: i for i, name in enumerate((*LAYERS, "other"))}
    return {layer: sorted(names) for layer, names in sorted(layers.items(), key=lambda kv: order[kv[0]])}


# The order a person looks for an offending row in (stored JSON metadata comes back key-sorted).
ROW_FIELDS = ("file", "line", "column", "value")


def _row(row: dict[str, Any]) -> str:
    keys = [k for k in ROW_FIELDS if k in row] + [k for k in row if k not in ROW_FIELDS]
    return ", ".join(f"{k} {row[k]!r}" if k == "value" else f"{k} {row[k]}" for k in keys)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render(summary: RunSummary) -> list[str]:
    counts = {status: len(summary.checks_with(status)) for status in ("passed", "warned", "failed")}
    outcome = {"SUCCESS": "succeeded", "FAILURE": "failed", "CANCELED": "was canceled"}.get(
        summary.status, summary.status.lower()
    )
    lines = [
        f"Run {summary.run_id} {outcome}: {_count(len(summary.materialized), 'asset')} materialised; "
        f"checks: {counts['passed']} passed, {counts['warned']} warned, {counts['failed']} failed.",
    ]
    for layer, names in _by_layer(summary.materialized).items():
        lines.append(f"  {layer} ({len(names)}): {', '.join(names)}")
    for check in summary.checks_with("failed") + summary.checks_with("warned"):
        kind = "FAILED" if check.status == "failed" else "WARNED"
        blocking = ", blocking: downstream not run" if check.label in summary.blocking_failures else ""
        lines.append(f"{kind} check {check.label} ({check.severity}{blocking}): {check.reason}")
        lines.extend(f"    {_row(row)}" for row in check.offending_rows)
    for error in summary.step_errors:
        lines.append(f"FAILED step {error}")
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    missing = sorted(summary.not_materialized, key=lambda k: (rank.get(k.path[0], len(LAYERS)), k.path))
    if missing and summary.status != "SUCCESS":
        lines.append(
            f"Not materialised: {_count(len(missing), 'asset')} ({', '.join(k.to_user_string() for k in missing)})."
        )
    return lines
