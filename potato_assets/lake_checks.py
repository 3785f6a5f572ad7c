"""Run the asset checks against the lake as it is, and say what passed (used by `make checks`).

    python -m potato_assets.lake_checks [--layer bronze|silver|gold]

runs, on the DAGSTER_HOME instance, the checks-only job of defs/checks_job.py:

    dagster job execute -m potato_assets.definitions -j lake_checks[_<layer>] --tags '{...}'

then reads the run's check evaluations back from the instance and prints one line per check
(passed, warned, FAILED, or errored when the check itself raised), with the failing contract
rules and their reasons. Exit 0 when no check failed with ERROR (warnings are listed), 1 when
one did or a check could not run, 2 when there is no run to judge.
`--run-id` summarises a run that already happened (e.g. one launched from the UI) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

LAYERS = ("bronze", "silver", "gold")
# Tags the run this command starts, so that it finds that run and no other in the instance.
REQUEST_TAG = "potato/lake_checks_request"
DEFINITIONS_MODULE = "potato_assets.definitions"


def job_name(layer: str | None) -> str:
    # The same names as defs/checks_job.py, without loading the definitions in this process.
    return "lake_checks" if layer is None else f"lake_checks_{layer}"


def dagster_command(job: str, request_id: str) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [
        str(dagster),
        "job",
        "execute",
        "-m",
        DEFINITIONS_MODULE,
        "-j",
        job,
        "--tags",
        json.dumps({REQUEST_TAG: request_id}),
    ]


@dataclass
class Verdict:
    check: str  # asset/key:check_name
    status: str  # passed | warned | failed | errored
    severity: str = ""
    blocking: bool = False
    description: str = ""
    rules: list[str] = field(default_factory=list)


@dataclass
class Summary:
    run_id: str
    job_name: str
    run_status: str
    verdicts: list[Verdict]

    @property
    def blocking_failures(self) -> list[Verdict]:
        """ERROR failures and checks that could not run: either makes the exit code non-zero."""
        return [v for v in self.verdicts if v.status == "errored" or (v.status == "failed" and v.severity == "ERROR")]

    @property
    def exit_code(self) -> int:
        if not self.verdicts:
            return 1
        return 1 if self.blocking_failures else 0


def _failing_rules(metadata: dict[str, Any]) -> list[str]:
    """Contract checks keep every rule's outcome in one `rules` entry (rule -> outcome): the
    broken ones, one line each."""
    entry = metadata.get("rules")
    rules = getattr(entry, "value", entry)
    lines = []
    for rule, outcome in (rules if isinstance(rules, dict) else {}).items():
        if not isinstance(outcome, dict) or outcome.get("success", True):
            continue
        if outcome.get("error"):
            detail = str(outcome["error"])
        elif outcome.get("unexpected_count"):
            detail = f"{outcome['unexpected_count']} unexpected, e.g. {outcome.get('unexpected_examples', [])[:3]}"
        else:
            detail = f"observed {outcome.get('observed_value')!r}"
        why = f" (rule: {outcome['why']})" if outcome.get("why") else ""
        lines.append(f"rule {rule} [{outcome.get('severity')}]: {detail}{why}")
    return lines


def summarise(instance: dg.DagsterInstance, run_id: str) -> Summary:
    import dagster as dg

    run = instance.get_run_by_id(run_id)
    if run is None:
        raise LookupError(f"run {run_id} is not in the instance at DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}")
    records = instance.all_logs(
        run_id,
        of_type={
            dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.STEP_FAILURE,
        },
    )
    planned: dict[str, str] = {}  # check -> step key
    evaluated: dict[str, Verdict] = {}
    step_errors: dict[str, str] = {}
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        data: Any = event.event_specific_data
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            planned[f"{data.asset_key.to_user_string()}:{data.check_name}"] = event.step_key or ""
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            name = f"{data.asset_key.to_user_string()}:{data.check_name}"
            severity = data.severity.value
            status = "passed" if data.passed else ("warned" if severity == "WARN" else "failed")
            evaluated[name] = Verdict(
                name,
                status,
                severity=severity,
                blocking=bool(data.blocking),
                description=data.description or "",
                rules=[] if data.passed else _failing_rules(dict(data.metadata)),
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            error: Any = getattr(data, "error", None)
            while getattr(error, "cause", None) is not None:  # the check's own exception
                error = error.cause
            step_errors[event.step_key] = (getattr(error, "message", None) or event.message or "").strip()
    verdicts = list(evaluated.values())
    for name, step in planned.items():
        if name not in evaluated:
            reason = step_errors.get(step) or "the check produced no result"
            verdicts.append(Verdict(name, "errored", description=reason.splitlines()[0][:500] if reason else ""))
    verdicts.sort(key=lambda v: v.check)
    return Summary(run_id, run.job_name, run.status.value, verdicts)


MARKS = {"passed": "passed ", "warned": "warned ", "failed": "FAILED ", "errored": "ERRORED"}


def render(summary: Summary, lake_uri: str, contracts_dir: Path) -> str:
    lines = [
        f"Asset checks against the lake {lake_uri}",
        f"  contracts from {contracts_dir}; run {summary.run_id} of {summary.job_name} ({summary.run_status})",
    ]
    for v in summary.verdicts:
        tag = f" [{v.severity}{', blocking' if v.blocking else ''}]" if v.status in ("failed", "warned") else ""
        lines.append(f"  {MARKS[v.status]} {v.check}{tag}")
        if v.status != "passed":
            lines.extend(f"            {rule}" for rule in v.rules)
            if v.description and not v.rules:
                lines.append(f"            {v.description}")
    counts = {s: sum(1 for v in summary.verdicts if v.status == s) for s in MARKS}
    lines.append(
        f"{len(summary.verdicts)} checks: {counts['passed']} passed, {counts['warned']} warned, "
        f"{counts['failed']} failed, {counts['errored']} could not run."
    )
    if not summary.verdicts:
        lines.append("FAILED: the run evaluated no check at all.")
    elif summary.blocking_failures:
        names = ", ".join(v.check for v in summary.blocking_failures)
        lines.append(f"FAILED: {len(summary.blocking_failures)} check(s) failed with ERROR or could not run: {names}.")
    else:
        lines.append("OK: no check failed with ERROR" + (" (warnings above)." if counts["warned"] else "."))
    return "\n".join(lines)


def _find_run(instance: dg.DagsterInstance, request_id: str) -> str | None:
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: request_id}), limit=1)
    return runs[0].run_id if runs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m potato_assets.lake_checks", description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=LAYERS, help="only this layer's checks (default: every layer)")
    parser.add_argument("--run-id", help="summarise this finished run instead of starting one")
    args = parser.parse_args(argv)

    from potato_assets.settings import load_settings

    settings = load_settings()  # a bad POTATO_* setting stops here with its one sentence
    if not os.environ.get("DAGSTER_HOME"):
        print(
            "DAGSTER_HOME is not set: the run would go to a temporary instance nobody can read back "
            "(`make checks` sets it to .dagster_home).",
            file=sys.stderr,
        )
        return 2
    import dagster as dg

    run_id = args.run_id
    if run_id is None:
        request_id = uuid.uuid4().hex
        command = dagster_command(job_name(args.layer), request_id)
        print("$ " + " ".join(command[:-1] + [f"'{command[-1]}'"]), flush=True)
        # Its console output is the run's, like any run; its exit code is reread from the events.
        subprocess.run(command, check=False)
        with dg.DagsterInstance.get() as instance:
            run_id = _find_run(instance, request_id)
            if run_id is None:
                print("No run was started (see the error above); no check was evaluated.", file=sys.stderr)
                return 2
            summary = summarise(instance, run_id)
    else:
        with dg.DagsterInstance.get() as instance:
            try:
                summary = summarise(instance, run_id)
            except LookupError as error:
                print(f"{error}.", file=sys.stderr)
                return 2
    print(render(summary, settings.lake_uri, settings.contracts_dir), flush=True)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
