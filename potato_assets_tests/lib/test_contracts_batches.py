"""run_contract_batches (lib/contracts.py): a suite judged batch by batch gives exactly the result of
one run over all rows, on the seed study, the sample and broken tables, in 1, 3 and many batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from potato_assets.lib import contracts
from potato_assets_tests.helpers import BROKEN_TABLES, CONTRACT_SUITES, set_cells, write_dataset

BATCH_COUNTS = (1, 3, 12)


def subject_batches(df: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """Rows grouped by subject_id % n, groups in order, rows in order inside each (as the lake's
    buckets are); a row without a subject goes with subject 0. Empty groups included."""
    ids = pd.to_numeric(df["subject_id"], errors="coerce").fillna(0).astype("int64").to_numpy()
    keys = np.mod(ids, n)
    return [df[keys == k] for k in range(n)]


def assert_same(suite: str | dict, df: pd.DataFrame, n: int) -> contracts.ContractResult:
    batches = subject_batches(df, n)
    whole = contracts.run_contract(suite, pd.concat(batches))
    batched = contracts.run_contract_batches(suite, batches)
    assert batched.rows == whole.rows
    for got, want in zip(batched.outcomes, whole.outcomes, strict=True):
        assert got.as_dict() == want.as_dict(), got.rule
    assert batched == whole
    return whole


@pytest.mark.parametrize("n", BATCH_COUNTS)
@pytest.mark.parametrize("suite", CONTRACT_SUITES)
def test_batches_equal_one_run_on_the_sample(sample_tables, suite, n):
    assert assert_same(suite, sample_tables[suite], n).success


@pytest.mark.parametrize("n", (3, 12))
@pytest.mark.parametrize("suite", CONTRACT_SUITES)
def test_batches_equal_one_run_on_the_seed_study(seed_tables, suite, n):
    assert_same(suite, seed_tables[suite], n)


@pytest.mark.parametrize("n", BATCH_COUNTS)
@pytest.mark.parametrize("case", sorted(BROKEN_TABLES))
def test_batches_equal_one_run_on_broken_tables(sample_tables, case, n):
    suite, breaking, failing = BROKEN_TABLES[case]
    whole = assert_same(suite, breaking(sample_tables[suite]), n)
    failed = {o.rule for o in whole.hard_failures + whole.soft_failures}
    assert failing <= failed, (case, failed)


def test_mostly_is_judged_on_the_merged_counts(sample_tables):
    """25% missing weights in one batch and none elsewhere: the batch alone breaks `mostly` 0.7,
    the table does not; and 35% in every batch breaks it although no batch is special."""
    weight = sample_tables["bronze_weight"]
    batches = subject_batches(weight, 3)
    first = batches[0].copy()
    first.loc[first.index[: int(len(first) * 0.45)], "weight_kg"] = np.nan
    skewed = [first, *batches[1:]]
    alone = contracts.run_contract("bronze_weight", first)
    rule = next(o for o in alone.outcomes if o.rule == "weight_kg_present")
    assert not rule.success
    merged = contracts.run_contract_batches("bronze_weight", skewed)
    rule = next(o for o in merged.outcomes if o.rule == "weight_kg_present")
    assert rule.success and rule.unexpected_count > 0
    assert merged == contracts.run_contract("bronze_weight", pd.concat(skewed))


def test_examples_are_the_first_ones_in_order_or_the_smallest(sample_tables):
    fiber = sample_tables["bronze_fiber"]
    broken = set_cells(fiber, list(range(0, len(fiber), 50)), "total_fiber_g", [500.0] * len(range(0, len(fiber), 50)))
    batches = subject_batches(broken, 3)
    plain = contracts.run_contract_batches("bronze_fiber", batches)
    rule = next(o for o in plain.outcomes if o.rule == "total_fiber_g_range")
    in_batch_order = [int(x) for x in pd.concat(batches).query("total_fiber_g > 200")["source_line"].head(5)]
    assert [e["source_line"] for e in rule.unexpected_examples] == in_batch_order
    ordered = contracts.run_contract_batches("bronze_fiber", batches, order_examples_by=["source_line"])
    rule = next(o for o in ordered.outcomes if o.rule == "total_fiber_g_range")
    lowest = sorted(int(x) for x in broken.query("total_fiber_g > 200")["source_line"])[:5]
    assert [e["source_line"] for e in rule.unexpected_examples] == lowest
    # ... which is what one run over the table in file order shows
    whole = contracts.run_contract("bronze_fiber", broken)
    assert next(o for o in whole.outcomes if o.rule == "total_fiber_g_range").unexpected_examples == (
        rule.unexpected_examples
    )


def test_distinct_values_are_counted_over_all_batches():
    """Batches that share values of another column: counted once (a union, not a sum)."""
    suite = {
        "name": "tiny",
        "expectations": [
            {
                "type": "expect_column_unique_value_count_to_be_between",
                "kwargs": {"column": "week", "max_value": 3},
                "meta": {"rule": "few_weeks"},
            }
        ],
    }
    batches = [pd.DataFrame({"subject_id": [s, s], "week": [1, 2]}) for s in range(1, 6)]
    result = contracts.run_contract_batches(suite, batches)
    assert result.outcomes[0].observed_value == 2 and result.outcomes[0].success
    assert result == contracts.run_contract(suite, pd.concat(batches))


def test_batches_sharing_a_subject_are_refused_for_unique_rules(sample_tables):
    weight = sample_tables["bronze_weight"]
    halves = [weight.iloc[::2], weight.iloc[1::2]]
    shared = set(halves[0]["subject_id"]) & set(halves[1]["subject_id"])
    assert shared
    with pytest.raises(ValueError, match="must not share a subject_id"):
        contracts.run_contract_batches("bronze_weight", halves)


def test_batches_of_different_types_are_refused(sample_tables):
    weight = sample_tables["bronze_weight"]
    batches = subject_batches(weight, 2)
    batches[1] = batches[1].astype({"weight_kg": "string"})
    with pytest.raises(ValueError, match="batch 2 has column 'weight_kg' as string"):
        contracts.run_contract_batches("bronze_weight", batches)


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        (
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "date"}},
            "only when its columns include subject_id",
        ),
        (
            {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["date", "week"]}},
            "only when its columns include subject_id",
        ),
        ({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "week"}}, "cannot be judged batch by batch"),
    ],
)
def test_suites_batches_cannot_judge_are_refused(expectation, message):
    suite = {"name": "tiny", "expectations": [{**expectation, "meta": {"rule": "r"}}]}
    with pytest.raises(contracts.ContractError, match=message) as err:
        contracts.run_contract_batches(suite, [pd.DataFrame({"subject_id": [1], "date": [1], "week": [1]})])
    assert "tiny.json, expectation 1 (r)" in str(err.value)


def test_every_bundled_suite_can_be_judged_in_batches():
    for name in contracts.available_suites():
        contracts.check_batchable(contracts.load_suite(name))


def test_the_columns_set_rule_sees_the_whole_table_when_batches_hold_some_columns(sample_tables):
    fiber = sample_tables["bronze_fiber"]
    suite = contracts.load_suite("bronze_fiber")
    read = contracts.suite_columns(suite)
    assert "ingested_at" not in read and "source_line" in read
    batches = [b[read] for b in subject_batches(fiber, 3)]
    narrow = contracts.run_contract_batches(suite, batches, columns=list(fiber.columns))
    assert narrow == contracts.run_contract(suite, pd.concat(subject_batches(fiber, 3)))
    missing = contracts.run_contract_batches(suite, batches, columns=[c for c in fiber.columns if c != "source_file"])
    assert {o.rule for o in missing.hard_failures} == {"required_columns"}


# --- lake datasets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("buckets", "batch_rows"), [(1, 10**9), (4, 10**9), (8, 150), (2, 100)])
@pytest.mark.parametrize("suite", ["bronze_weight", "bronze_nutrition", "silver_weekly_features"])
def test_a_dataset_read_in_batches_gives_the_one_run_result(sample_tables, tmp_path, suite, buckets, batch_rows):
    """Buckets grouped up to a row budget, or split by subject when one is larger: the result of
    one run over the table as the asset made it (its order, all its columns)."""
    table = sample_tables[suite]
    if suite == "bronze_weight":  # broken a little: examples and percentages to compare
        table = set_cells(table, [3, 10, 200, 401], "weight_kg", [500.0, 12.0, 301.0, 29.0])
    ref = write_dataset(tmp_path / "ds", table, buckets)
    result = contracts.run_contract_dataset(suite, ref, batch_rows=batch_rows)
    whole = contracts.run_contract(suite, table)
    for got, want in zip(result.outcomes, whole.outcomes, strict=True):
        assert got.as_dict() == want.as_dict(), got.rule
    assert result == whole
    assert result.batches == len(contracts.dataset_batches(ref, ["subject_id"], batch_rows))


def test_dataset_batches_keep_to_the_budget_and_split_large_buckets(sample_tables, tmp_path):
    weight = sample_tables["bronze_weight"]
    ref = write_dataset(tmp_path / "ds", weight, 4)
    sizes = {b: sum(f.rows for f in ref.files if f.bucket == b) for b in range(4)}
    budget = max(sizes.values()) - 1  # the largest bucket is split, the others grouped
    frames = [read() for read in contracts.dataset_batches(ref, ["subject_id", "weight_kg"], budget)]
    assert all(len(f) <= budget for f in frames)
    assert sum(len(f) for f in frames) == len(weight)
    subjects = [set(f["subject_id"]) for f in frames]
    assert sum(len(s) for s in subjects) == len(set().union(*subjects))  # no subject in two batches
    assert list(frames[0].columns) == ["subject_id", "weight_kg"]
    whole = [read() for read in contracts.dataset_batches(ref, ["subject_id"], 10**9)]
    assert len(whole) == 1 and len(whole[0]) == len(weight)


def test_a_split_bucket_is_read_once_in_groups_of_whole_subjects(sample_tables, tmp_path):
    weight = sample_tables["bronze_weight"]
    ref = write_dataset(tmp_path / "ds", weight, 2)
    bucket = ref.read_bucket(1, ["subject_id", "weight_kg", "week", "source_line"])
    parts = list(ref.iter_bucket_parts(1, ["weight_kg", "source_line"], 3))
    assert len(parts) == 3 and all(list(p.columns) == ["weight_kg", "source_line"] for p in parts)
    assert sum(len(p) for p in parts) == len(bucket)
    with_ids = list(ref.iter_bucket_parts(1, ["week", "subject_id", "source_line"], 3))
    ids = [set(p["subject_id"]) for p in with_ids]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids)) == bucket["subject_id"].nunique()
    for part, frame in enumerate(with_ids):
        assert ((frame["subject_id"] // 2) % 3 == part).all()
        stored = bucket[(bucket["subject_id"] // 2) % 3 == part]  # each part keeps the stored order
        assert frame["source_line"].tolist() == stored["source_line"].tolist()
    readers = contracts._split_readers(ref, 1, ["week"], 3)
    with pytest.raises(RuntimeError, match="must be read in order"):
        readers[1]()


def test_no_batch_outlives_its_validation(sample_tables, tmp_path):
    """GX's engine caches each batch and every metric it resolved on it (column series among
    them); left there, a table's batches piled up and a contract's memory grew with the table."""
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_nutrition"], 4)
    result = contracts.run_contract_dataset("bronze_nutrition", ref, batch_rows=300)
    assert result.batches > 2
    engine = contracts._runner().datasource.get_execution_engine()
    assert engine._metric_cache == {}
    assert not engine.batch_manager.batch_data_cache


def test_an_empty_dataset_fails_the_row_count_rule_only(sample_tables, tmp_path):
    weight = sample_tables["bronze_weight"]
    ref = write_dataset(tmp_path / "ds", weight.iloc[:0], 4)
    result = contracts.run_contract_dataset("bronze_weight", ref)
    assert result.rows == 0 and result.batches == 1
    assert [o.rule for o in result.hard_failures] == ["not_empty"]
    assert result == contracts.run_contract("bronze_weight", weight.iloc[:0])


def test_a_dataset_missing_a_column_reports_it_like_a_frame(sample_tables, tmp_path):
    fiber = sample_tables["bronze_fiber"].drop(columns=["total_fiber_g"])
    ref = write_dataset(tmp_path / "ds", fiber, 4)
    result = contracts.run_contract_dataset("bronze_fiber", ref, batch_rows=200)
    assert result == contracts.run_contract("bronze_fiber", fiber)
    assert next(o for o in result.outcomes if o.rule == "total_fiber_g_range").error == (
        "column 'total_fiber_g' does not exist"
    )
