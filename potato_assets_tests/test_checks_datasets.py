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
from potato_assets.lib import contracts
from potato_assets.lib.lake.datasets import DatasetWriter
from potato_assets_tests.helpers import study_tables

WEIGHT_KEY = dg.AssetKey(["bronze", "weight"])
FIBER_KEY = dg.AssetKey(["bronze", "fiber"])


def run_dataset_bronze(
    tmp_path, weight: pd.DataFrame, fiber: pd.DataFrame, buckets: int = 4, contract_engine: ContractEngine | None = None
):
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


def test_the_check_judges_a_dataset_in_the_processes_the_settings_say(sample_dir, tmp_path, monkeypatch):
    from potato_assets.settings import Settings

    settings = Settings(lake_uri=tmp_path.as_uri(), landing_uri=tmp_path.as_uri(), contract_processes=3)
    asked: list[int] = []
    judge = contracts.run_contract_dataset

    def recording(suite, ref, **kwargs):
        asked.append(kwargs["processes"])
        return judge(suite, ref, **kwargs)

    monkeypatch.setattr(contracts, "run_contract_dataset", recording)
    tables = study_tables(sample_dir)
    engine = build_resources(settings)["contract_engine"]
    result = run_dataset_bronze(tmp_path, tables["bronze_weight"], tables["bronze_fiber"], contract_engine=engine)
    assert evaluation(result, WEIGHT_KEY).passed and asked == [3, 3]
    assert evaluation(result, WEIGHT_KEY).metadata["contract_engine"].value == "step"


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
