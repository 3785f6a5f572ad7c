"""The contract check on a bucketed lake dataset: the IO manager hands it a DatasetRef, the check
reads it in bucket batches and reports what one run over the table would (defs/contract_checks.py)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from potato_assets.defs.bronze import checks as bronze_checks
from potato_assets.defs.common import LakeDataset
from potato_assets.defs.resources import (
    ContractEngine,
    LakeDatasets,
    LakeIOManager,
    SilverEngine,
    build_resources,
    dataset_root,
)
from potato_assets.defs.silver.assets import study_calendar
from potato_assets.lib import contract_workers, contracts
from potato_assets.lib.lake.datasets import DatasetWriter
from potato_assets_tests.helpers import study_tables

WEIGHT_KEY = dg.AssetKey(["bronze", "weight"])
FIBER_KEY = dg.AssetKey(["bronze", "fiber"])


def run_dataset_bronze(
    tmp_path,
    weight: pd.DataFrame,
    fiber: pd.DataFrame,
    buckets: int = 4,
    contract_engine: ContractEngine | None = None,
    workers_seen: list[int] | None = None,
):
    """``workers_seen``: gets the number of live contract workers when the first step starts."""
    lake = tmp_path.as_uri()

    def commit(key: dg.AssetKey, df: pd.DataFrame):
        with DatasetWriter(dataset_root(lake, key), buckets) as writer:
            writer.write_table(df)
            return writer.commit()

    @dg.multi_asset(
        outs={
            "weight": dg.AssetOut(key=WEIGHT_KEY, dagster_type=LakeDataset),
            "fiber": dg.AssetOut(key=FIBER_KEY, dagster_type=LakeDataset),
        }
    )
    def given_bronze():
        if workers_seen is not None:
            workers_seen.append(sum(w.alive() for w in contract_workers._WORKERS))
        yield dg.Output(commit(WEIGHT_KEY, weight), output_name="weight")
        yield dg.Output(commit(FIBER_KEY, fiber), output_name="fiber")

    checks = [c for c in bronze_checks.contract_checks if {k.asset_key for k in c.check_keys} & {WEIGHT_KEY, FIBER_KEY}]
    return dg.materialize(
        [given_bronze, study_calendar, *checks],
        resources={
            "io_manager": LakeIOManager(lake_uri=lake),
            "lake_datasets": LakeDatasets(lake_uri=lake, buckets=buckets),
            "silver_engine": SilverEngine(),
            "contract_engine": contract_engine or ContractEngine(),
        },
        raise_on_error=False,
    )


def evaluation(result, key):
    (found,) = [e for e in result.get_asset_check_evaluations() if e.asset_key == key and e.check_name == "contract"]
    return found


def test_a_broken_bronze_dataset_fails_its_blocking_contract_naming_the_lines(sample_dir, tmp_path):
    tables = study_tables(sample_dir)
    weight = tables["bronze_weight"].copy()
    weight.loc[[7, 300], "weight_kg"] = [500.0, 12.0]
    result = run_dataset_bronze(tmp_path, weight, tables["bronze_fiber"])
    check = evaluation(result, WEIGHT_KEY)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    meta = check.metadata
    assert meta["rows_checked"].value == len(weight)
    assert meta["batches"].value == 1  # the sample fits one batch
    offending = meta["offending_rows"].value
    assert [(r["line"], r["value"]) for r in offending] == sorted(
        zip(weight.loc[[7, 300], "source_line"], [500.0, 12.0], strict=True)
    )
    assert check.description == contracts.run_contract("bronze_weight", weight).summary()
    # blocking: silver does not run on it; the fiber dataset passes its own
    assert evaluation(result, FIBER_KEY).passed
    assert not any(
        e.asset_key == dg.AssetKey(["silver", "study_calendar"]) for e in result.get_asset_materialization_events()
    )


def test_a_good_bronze_dataset_passes_and_silver_reads_it(sample_dir, tmp_path):
    tables = study_tables(sample_dir)
    result = run_dataset_bronze(tmp_path, tables["bronze_weight"], tables["bronze_fiber"])
    assert evaluation(result, WEIGHT_KEY).passed and evaluation(result, FIBER_KEY).passed
    assert result.success


def test_the_checks_judge_in_the_resources_processes_started_with_the_run_and_ended_after_its_last_check(
    sample_dir, tmp_path
):
    from potato_assets.settings import Settings

    settings = Settings(lake_uri=tmp_path.as_uri(), landing_uri=tmp_path.as_uri(), contract_processes=3)
    assert build_resources(settings)["contract_engine"].processes == 3
    contract_workers.close_all()
    tables = study_tables(sample_dir)
    weight = tables["bronze_weight"].copy()
    weight.loc[[7, 300], "weight_kg"] = [500.0, 12.0]
    alone = run_dataset_bronze(tmp_path / "one", weight, tables["bronze_fiber"])
    assert contract_workers._WORKERS == []
    seen: list[int] = []
    two = run_dataset_bronze(
        tmp_path / "two", weight, tables["bronze_fiber"], contract_engine=ContractEngine(processes=2), workers_seen=seen
    )
    # one worker, up before the first step; gone after the run's last contract check
    assert seen == [1]
    assert contract_workers._WORKERS == []
    for key in (WEIGHT_KEY, FIBER_KEY):
        one_check, two_check = evaluation(alone, key), evaluation(two, key)
        assert (two_check.passed, two_check.description) == (one_check.passed, one_check.description)
        assert two_check.metadata["rules"] == one_check.metadata["rules"]
        assert two_check.metadata["contract_engine"].value == "step"


def test_a_spark_contract_engine_that_does_not_answer_fails_the_check_in_one_sentence(sample_dir, tmp_path):
    from potato_assets_tests.helpers import free_port

    tables = study_tables(sample_dir)
    # Nothing listens on a port just freed: the check fails at once, naming the server and setting.
    remote = f"sc://127.0.0.1:{free_port()}"
    result = run_dataset_bronze(
        tmp_path,
        tables["bronze_weight"],
        tables["bronze_fiber"],
        contract_engine=ContractEngine(kind="spark", spark_remote=remote),
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure and "contract" in (e.step_key or "")]
    assert failures
    for event in failures:
        message = event.step_failure_data.user_failure_data.description
        assert (
            message.startswith("contract bronze_") and "could not run on Spark: the Spark Connect server at " in message
        )
        assert "(POTATO_SPARK_REMOTE) does not answer" in message and message.count(". ") == 0, message
