"""The instance handler dispatches a run's events to its sinks through one RunState per run; the
cause chain of a failure is read in one place (lib/observe/errors.py)."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import pytest

from potato_assets.lib.observe import handler
from potato_assets.lib.observe.errors import failure_of, root_cause
from potato_assets.lib.observe.graph import project_graph
from potato_assets.lib.observe.sinks import Sink


class RecordingSink(Sink):
    wants_logs = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.log_fields: list[dict] = []

    def run_started(self, run):
        self.calls.append(("run_started", run.job_name))

    def step_started(self, run, step):
        self.calls.append(("step_started", step.key))

    def step_ended(self, run, step, error):
        materialized = sorted(k.to_user_string() for k in step.materialized)
        checks = {c.name: o["passed"] for c, o in step.checks.items()}
        self.calls.append(("step_ended", step.key, materialized, checks, error and error[0]))

    def run_ended(self, run, error):
        self.calls.append(("run_ended", error and error[0]))

    def log(self, record, fields, run):
        self.log_fields.append(fields)


@pytest.fixture
def recording(monkeypatch):
    sink = RecordingSink()
    dispatcher = handler.Dispatcher([sink], project_graph())
    monkeypatch.setattr(handler, "build_dispatcher", lambda: dispatcher)
    handler.reset()
    config = {
        "python_logs": {
            "dagster_handler_config": {"handlers": {"observe": {"()": handler.__name__ + ".ObservabilityHandler"}}}
        }
    }
    with dg.DagsterInstance.ephemeral(settings=config) as instance:
        yield sink, dispatcher, instance
    handler.reset()


@dg.asset(key=["scratch", "numbers"])
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": 3})


@dg.asset_check(asset=numbers)
def has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(key=["scratch", "broken"], deps=[numbers])
def broken() -> None:
    raise dg.Failure(description="the scratch asset is broken")


def test_a_run_reaches_every_sink_in_order_and_leaves_no_state(recording):
    sink, dispatcher, instance = recording
    result = dg.materialize([numbers, has_rows], instance=instance)
    assert result.success
    names = [c[0] for c in sink.calls]
    assert names[0] == "run_started" and names[-1] == "run_ended"
    ended = [c for c in sink.calls if c[0] == "step_ended"]
    assert [(c[2], c[4]) for c in ended if c[2]] == [(["scratch/numbers"], None)]
    assert any(c[3] == {"has_rows": True} for c in ended)
    assert sink.calls[-1] == ("run_ended", None)
    assert dispatcher.runs == {}, "a finished run's state is dropped"
    assert {f["run_id"] for f in sink.log_fields} == {result.run_id}


def test_a_failed_step_reports_its_root_cause(recording):
    sink, dispatcher, instance = recording
    result = dg.materialize([numbers, broken], instance=instance, raise_on_error=False)
    assert not result.success
    [failed] = [c for c in sink.calls if c[0] == "step_ended" and c[4]]
    assert failed[1] == "scratch__broken" and "the scratch asset is broken" in failed[4]
    assert sink.calls[-1][0] == "run_ended" and sink.calls[-1][1]
    assert dispatcher.runs == {}


def _error(message, cause=None):
    return SimpleNamespace(message=message, stack=["at line 1\n"], cause=cause)


def test_root_cause_is_the_innermost_error_and_failure_keeps_the_whole_chain():
    error = _error("step wrapper", _error("dg.Failure", _error(" the user's error ")))
    assert root_cause(error) == "the user's error"
    event = SimpleNamespace(event_specific_data=SimpleNamespace(error=error))
    assert failure_of(event) == ("step wrapper\ndg.Failure\nthe user's error", "at line 1\n")
    assert failure_of(SimpleNamespace(event_specific_data=SimpleNamespace(error=None))) is None
