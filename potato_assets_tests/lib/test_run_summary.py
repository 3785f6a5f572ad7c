"""The closing summary of a run, read back from the instance (the failing-check case is in
test_checks.py, on the real bronze checks)."""

from __future__ import annotations

import dagster as dg

from potato_assets.lib.observe import run_summary


@dg.asset(key=["bronze", "thing"])
def thing() -> None:
    return None


@dg.asset(key=["silver", "broken"], deps=[thing])
def broken() -> None:
    raise dg.Failure(description="Potato_tidy.csv line 3, column week: 'x' is not a week number.")


@dg.asset(key=["gold", "after"], deps=[broken])
def after() -> None:
    return None


@dg.asset_check(asset=thing)
def soft(_context) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="2 rows look odd.")


def test_a_failed_step_is_named_with_its_own_message_and_what_did_not_run():
    with dg.instance_for_test() as instance:
        result = dg.materialize([thing, broken, after, soft], instance=instance, raise_on_error=False)
        assert not result.success
        summary = run_summary.summarize(instance, run_summary.latest_run_id(instance) or "")
    assert summary.run_id == result.run_id and summary.status == "FAILURE"
    assert summary.materialized == [dg.AssetKey(["bronze", "thing"])]
    assert [c.status for c in summary.checks] == ["warned"]
    assert summary.step_errors == ["silver__broken: Potato_tidy.csv line 3, column week: 'x' is not a week number."]
    assert run_summary.failure_reasons(summary) == summary.step_errors
    lines = run_summary.render(summary)
    assert lines[0] == f"Run {result.run_id} failed: 1 asset materialised; checks: 0 passed, 1 warned, 0 failed."
    assert "  bronze (1): thing" in lines
    assert "WARNED check bronze/thing: soft (WARN): 2 rows look odd." in lines
    assert "FAILED step silver__broken: Potato_tidy.csv line 3, column week: 'x' is not a week number." in lines
    assert lines[-1] == "Not materialised: 2 assets (silver/broken, gold/after)."


def test_an_instance_without_runs_has_no_latest_run():
    with dg.instance_for_test() as instance:
        assert run_summary.latest_run_id(instance) is None
