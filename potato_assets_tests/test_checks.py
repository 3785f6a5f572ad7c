"""Asset checks in Dagster runs: blocking contracts and the quarantine gate stop downstream steps,
soft rules only warn, and the gold validation checks fire on models built to fail them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from potato_assets.defs.bronze import checks as bronze_checks
from potato_assets.defs.common import LakeDataset
from potato_assets.defs.gold import checks as gold_checks
from potato_assets.defs.gold.assets import fit_models
from potato_assets.defs.resources import ContractEngine, LakeDatasets, LakeIOManager, SilverEngine
from potato_assets.defs.silver.assets import study_calendar
from potato_assets.study import validation as mv
from potato_assets.study.ingest import parse_landing_csv
from potato_assets.study.schema import FIBER, WEIGHT
from potato_assets_tests.helpers import (
    cli_env,
    cli_home,
    committed,
    landing_with_bad_weights,
    load_defs,
    read_table,
    resources_for,
    rewrite_table,
    run_cli,
)

WEIGHT_KEY = dg.AssetKey(["bronze", "weight"])
FIBER_KEY = dg.AssetKey(["bronze", "fiber"])
CALENDAR_KEY = dg.AssetKey(["silver", "study_calendar"])


def evaluation(result: dg.ExecuteInProcessResult, key: dg.AssetKey, name: str):
    found = [e for e in result.get_asset_check_evaluations() if e.asset_key == key and e.check_name == name]
    assert len(found) == 1, f"{key.to_user_string()}:{name} was not evaluated exactly once"
    return found[0]


def ingested(sample_dir: Path, spec) -> pd.DataFrame:
    raw = (sample_dir / spec.file_name).read_bytes()
    return parse_landing_csv(raw, spec, source_file=spec.file_name, ingested_at=pd.Timestamp.now(tz="UTC")).rows


def run_stub_bronze(tmp_path: Path, weight: pd.DataFrame, fiber: pd.DataFrame) -> dg.ExecuteInProcessResult:
    """Given bronze tables, the real bronze contract checks and the real silver calendar asset."""

    @dg.multi_asset(
        outs={
            "weight": dg.AssetOut(key=WEIGHT_KEY, dagster_type=LakeDataset),
            "fiber": dg.AssetOut(key=FIBER_KEY, dagster_type=LakeDataset),
        }
    )
    def given_bronze(lake_datasets: LakeDatasets):
        for name, key, table in (("weight", WEIGHT_KEY, weight), ("fiber", FIBER_KEY, fiber)):
            with lake_datasets.writer(key) as writer:
                writer.write_table(table)
                ref = writer.commit()
            yield dg.Output(ref, output_name=name)

    contract_checks = [
        c for c in bronze_checks.contract_checks if {k.asset_key for k in c.check_keys} & {WEIGHT_KEY, FIBER_KEY}
    ]
    return dg.materialize(
        [given_bronze, study_calendar, *contract_checks],
        resources={
            "io_manager": LakeIOManager(lake_uri=tmp_path.as_uri()),
            "lake_datasets": LakeDatasets(lake_uri=tmp_path.as_uri(), buckets=4),
            "silver_engine": SilverEngine(),
            "contract_engine": ContractEngine(),
        },
        raise_on_error=False,
    )


def test_failing_blocking_bronze_contract_stops_silver_in_the_same_run(sample_dir, tmp_path):
    weight = ingested(sample_dir, WEIGHT)
    weight.loc[7, "weight_kg"] = 500.0
    result = run_stub_bronze(tmp_path, weight, ingested(sample_dir, FIBER))
    assert not result.success
    check = evaluation(result, WEIGHT_KEY, "contract")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    rule = check.metadata["rules"].value["weight_kg_range"]
    assert rule["unexpected_count"] == 1
    line = int(weight.loc[7, "source_line"])
    assert rule["unexpected_examples"] == [{"weight_kg": 500.0, "source_line": line}]
    assert check.metadata["offending_rows"].value == [
        {"rule": "weight_kg_range", "file": WEIGHT.file_name, "line": line, "column": "weight_kg", "value": 500.0}
    ]
    assert "| weight_kg_range | critical | **no** |" in check.metadata["results"].value
    assert "weight_kg_range" in check.description
    assert evaluation(result, FIBER_KEY, "contract").passed
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    assert CALENDAR_KEY not in keys
    assert not (tmp_path / "silver").exists()


def test_soft_rule_warns_and_lets_silver_run(sample_dir, tmp_path):
    weight = ingested(sample_dir, WEIGHT)
    weight.loc[weight.index[::2], "weight_kg"] = np.nan  # half the weigh-ins missing: a soft rule
    result = run_stub_bronze(tmp_path, weight, ingested(sample_dir, FIBER))
    check = evaluation(result, WEIGHT_KEY, "contract")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["failed_hard"].value == 0 and check.metadata["failed_soft"].value == 1
    assert result.success
    assert CALENDAR_KEY in {e.asset_key for e in result.get_asset_materialization_events()}


def run_bronze_and_calendar(landing: Path, lake: Path) -> dg.ExecuteInProcessResult:
    defs = load_defs()
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        selection=dg.AssetSelection.groups("bronze") | dg.AssetSelection.assets(CALENDAR_KEY),
        resources=resources_for(landing, lake),
        raise_on_error=False,
    )


@pytest.mark.parametrize(("n_bad", "blocked"), [(30, False), (31, True)])
def test_quarantine_share_gate_blocks_above_five_percent(sample_dir, tmp_path, n_bad, blocked):
    # The sample weigh-in file has 600 rows: 30 quarantined is exactly 5% (allowed), 31 is not.
    landing = landing_with_bad_weights(sample_dir, tmp_path / "landing", n_bad)
    result = run_bronze_and_calendar(landing, tmp_path / "lake")
    gate = evaluation(result, WEIGHT_KEY, "quarantine_share")
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert meta["rows_read"] == 600 and meta["rows_quarantined"] == n_bad and meta["rows_kept"] == 600 - n_bad
    assert meta["quarantine_share"] == pytest.approx(n_bad / 600)
    assert meta["quarantine_reasons"] == {"not a number": n_bad}
    assert [(r["file"], r["line"], r["column"], r["value"]) for r in meta["offending_rows"]] == [
        (WEIGHT.file_name, line, "weight_kg", "abc") for line in range(2, 7)
    ]
    assert gate.passed is not blocked
    assert f"{n_bad} of 600 rows quarantined" in gate.description
    assert evaluation(result, FIBER_KEY, "quarantine_share").passed
    assert evaluation(result, WEIGHT_KEY, "contract").passed  # the kept rows themselves are fine
    calendar_built = CALENDAR_KEY in {e.asset_key for e in result.get_asset_materialization_events()}
    assert calendar_built is not blocked
    assert result.success is not blocked


def disagreeing_panel(seed: int = 3, n_subjects: int = 30, n_weeks: int = 8) -> pd.DataFrame:
    """Between subjects, high-fiber eaters gain (confounded); within a subject, more fiber -> loss.

    Pooled OLS picks up the positive between-subject slope, fixed effects only the negative
    within-subject one: their fiber estimates must disagree.
    """
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subjects), n_weeks)
    usual_fiber = rng.uniform(100, 300, n_subjects)[subject]
    fiber = usual_fiber + rng.normal(0, 30, subject.size)
    y = 0.02 * (usual_fiber - 200) - 0.01 * (fiber - usual_fiber) + rng.normal(0, 0.3, subject.size)
    return pd.DataFrame(
        {
            "subject_id": pd.array(subject + 1, dtype="Int64"),
            "week": pd.array(np.tile(np.arange(1, n_weeks + 1), n_subjects), dtype="Int64"),
            "delta_kg_next": y,
            "fiber_g_week": fiber,
            "kcal_week_thousands": 14 + rng.normal(0, 1, subject.size),
            "beans_week": (rng.random(subject.size) < 0.4).astype(float),
            "potato_week": (rng.random(subject.size) < 0.6).astype(float),
        }
    )


def run_gold(tmp_path: Path, modeling: pd.DataFrame) -> dg.ExecuteInProcessResult:
    @dg.asset(key=["silver", "modeling_dataset"])
    def given_modeling() -> pd.DataFrame:
        return modeling

    defs_checks = [
        gold_checks.all_models_converged,
        gold_checks.fiber_estimates_agree,
        *gold_checks.not_singular_checks,
        *gold_checks.finite_estimates_checks,
        *gold_checks.enough_clusters_checks,
    ]
    return dg.materialize(
        [given_modeling, fit_models, *defs_checks],
        resources=resources_for(tmp_path / "landing", tmp_path / "lake"),
        raise_on_error=False,
    )


def test_fiber_disagreement_warns_without_failing_the_run(tmp_path):
    result = run_gold(tmp_path, disagreeing_panel())
    assert result.success
    summary_key = dg.AssetKey(["gold", "models", "model_summary"])
    agree = evaluation(result, summary_key, "fiber_estimates_agree")
    assert not agree.passed and agree.severity == dg.AssetCheckSeverity.WARN
    estimates = agree.metadata["fiber_estimates"].value
    assert estimates["ols_cluster"]["estimate"] > 0 > estimates["fixed_effects"]["estimate"]
    assert agree.metadata["pairs"].value["ols_cluster vs fixed_effects"]["agree"] is False
    # the other gold checks still pass on these well-behaved fits
    assert evaluation(result, summary_key, "all_models_converged").passed
    for name in ("ols_cluster", "fixed_effects", "mixed_effects"):
        assert evaluation(result, dg.AssetKey(["gold", "models", name]), "finite_estimates").passed
    for name in ("ols_cluster", "fixed_effects"):
        assert evaluation(result, dg.AssetKey(["gold", "models", name]), "enough_clusters").passed


def test_fewer_than_twenty_clusters_is_an_error(tmp_path):
    result = run_gold(tmp_path, disagreeing_panel(n_subjects=12))
    check = evaluation(result, dg.AssetKey(["gold", "models", "ols_cluster"]), "enough_clusters")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["n_clusters"].value == 12


def test_fiber_estimates_agree_on_unconfounded_data():
    from potato_assets.study.models import MODELS

    panel = disagreeing_panel()
    rng = np.random.default_rng(11)
    # Same within-subject effect, subject intercepts unrelated to fiber: the models agree.
    subject_effect = rng.normal(0, 0.5, panel["subject_id"].nunique())[panel["subject_id"].to_numpy() - 1]
    panel["delta_kg_next"] = subject_effect - 0.01 * panel["fiber_g_week"] + rng.normal(0, 0.3, len(panel))
    fits = {spec.name: spec.fit(panel).coefficients for spec in MODELS}
    verdict = mv.fiber_estimates_agree(fits)
    assert verdict.passed, verdict.description


def coefficient_table(estimates: list[float], errors: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "term": ["Intercept", "fiber_g_week"][: len(estimates)],
            "estimate": estimates,
            "std_error": errors,
        }
    )


def test_model_validation_rules_fail_on_bad_fits():
    assert not mv.finite_estimates("m", coefficient_table([1.0, np.nan], [0.1, 0.1])).passed
    assert not mv.finite_estimates("m", coefficient_table([1.0, 2.0], [0.1, 0.0])).passed
    assert not mv.finite_estimates("m", coefficient_table([1.0, 2.0], [0.1, np.inf])).passed
    assert mv.finite_estimates("m", coefficient_table([1.0, 2.0], [0.1, 0.2])).passed
    summary = pd.DataFrame(
        {
            "model": ["ols_cluster", "fixed_effects", "mixed_effects"],
            "n_groups": [19, 20, 20],
            "converged": [True, True, False],
            "singular": [None, None, True],
            "group_var": [np.nan, np.nan, 0.0],
            "residual_var": [1.0, 1.0, 1.0],
            "se_type": ["cr1", "cr1", "model"],
        }
    )
    converged = mv.all_converged(summary)
    assert not converged.passed and "mixed_effects" in converged.description
    assert not mv.enough_clusters(summary, "ols_cluster").passed
    assert mv.enough_clusters(summary, "fixed_effects").passed
    assert not mv.not_singular(summary, "mixed_effects").passed
    assert mv.not_singular(summary.assign(singular=[None, None, False]), "mixed_effects").passed


@pytest.mark.e2e
def test_cli_materialize_exits_non_zero_when_a_blocking_check_fails(sample_dir, tmp_path):
    landing = landing_with_bad_weights(sample_dir, tmp_path / "landing", 60)
    proc = run_cli(cli_env(cli_home(tmp_path), landing, tmp_path / "lake"), tmp_path)
    assert proc.returncode != 0
    assert "bronze/weight: quarantine_share" in proc.stderr + proc.stdout
    assert committed(tmp_path / "lake", "bronze/weight")
    assert not (tmp_path / "lake" / "silver").exists()
    assert not (tmp_path / "lake" / "gold").exists()


def test_quarantine_gate_fails_when_the_stored_table_is_not_the_one_the_event_log_describes(sample_dir, tmp_path):
    lake = tmp_path / "lake"
    with dg.instance_for_test() as instance:
        defs = load_defs()
        assets_and_checks = [*defs.assets, *(defs.asset_checks or [])]
        resources = resources_for(sample_dir, lake)
        first = dg.materialize(
            assets_and_checks, selection=dg.AssetSelection.groups("bronze"), resources=resources, instance=instance
        )
        assert evaluation(first, WEIGHT_KEY, "quarantine_share").passed
        # Someone rewrites the stored table behind Dagster's back: 10 rows fewer.
        rewrite_table(lake.as_uri(), "bronze/weight", read_table(lake.as_uri(), "bronze/weight").iloc[10:])
        again = dg.materialize(
            assets_and_checks,
            selection=dg.AssetSelection.checks(dg.AssetCheckKey(WEIGHT_KEY, "quarantine_share")),
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    gate = evaluation(again, WEIGHT_KEY, "quarantine_share")
    assert not gate.passed
    assert "the stored table has 590 rows but its latest materialisation reports 600 read" in gate.description


def test_summary_and_alert_of_a_failing_blocking_check_name_the_reason_and_the_offending_values(sample_dir, tmp_path):
    from potato_assets.defs import automation
    from potato_assets.lib.observe import run_summary
    from potato_assets_tests.helpers import Webhook

    landing = landing_with_bad_weights(sample_dir, tmp_path / "landing", 42)
    defs = load_defs()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*defs.assets, *(defs.asset_checks or [])],
            selection=dg.AssetSelection.groups("bronze") | dg.AssetSelection.assets(CALENDAR_KEY),
            resources=resources_for(landing, tmp_path / "lake"),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        assert run_summary.latest_run_id(instance) == result.run_id
        summary = run_summary.summarize(instance, result.run_id)
        reason = "Potato_tidy.csv: 42 of 600 rows quarantined (7.0%), more than the 5% allowed."
        [failed] = summary.checks_with("failed")
        assert (failed.label, failed.reason) == ("bronze/weight: quarantine_share", reason)
        assert summary.blocking_failures == ["bronze/weight: quarantine_share"]
        assert summary.step_errors == []  # the check explains the failure; no wrapper message
        assert CALENDAR_KEY in summary.not_materialized
        assert {k.to_user_string() for k in summary.materialized} >= {"bronze/weight", "bronze/quarantine"}

        lines = run_summary.render(summary)
        assert lines[0].startswith(f"Run {result.run_id} failed:") and "1 failed" in lines[0]
        failed_line = lines.index(
            f"FAILED check bronze/weight: quarantine_share (ERROR, blocking: downstream not run): {reason}"
        )
        # The first five offending rows (header = line 1, so lines 2-6), with the value as read.
        for offset, line in enumerate(range(2, 7), start=1):
            row = lines[failed_line + offset]
            assert f"file Potato_tidy.csv, line {line}, column weight_kg, value 'abc'" in row
        assert not lines[failed_line + 6].startswith("    file")

        hook = Webhook()
        try:
            context = dg.build_run_status_sensor_context(
                sensor_name="run_failure_alerts",
                dagster_event=result.get_run_failure_event(),
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                resources={"alerts_sink": automation.AlertSink(webhook_url=hook.url)},
            ).for_run_failure()
            automation.run_failure_alerts(context)
            [posted] = hook.json()
        finally:
            hook.close()
        assert reason in posted["text"]
        assert posted["event"]["errors"] == [f"bronze/weight: quarantine_share: {reason}"]
