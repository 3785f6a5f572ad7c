"""Silver's SQL (study/silver.py) on the embedded engine equals the pandas reference
(study/calendar.py, study/features.py), on real and deliberately messy inputs, whatever the
subject buckets it runs in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from potato_assets.lib.engine.embedded import EmbeddedEngine
from potato_assets.study import calendar, features
from potato_assets.study import silver as sql
from potato_assets.study.ingest import parse_landing_csv, quarantine_label_contradictions
from potato_assets.study.schema import FIBER, LANDING_FILES, WEIGHT
from potato_assets_tests.helpers import SAMPLE_DIR, messy_bronze

ENGINE = EmbeddedEngine()
TABLE_KEYS = {"study_calendar": ["subject_id"]}


def bronze_of(folder: Path) -> dict[str, pd.DataFrame]:
    at = pd.Timestamp("2026-01-01", tz="UTC")
    results = {
        f.asset_name: parse_landing_csv((folder / f.file_name).read_bytes(), f, source_file=f.file_name, ingested_at=at)
        for f in LANDING_FILES
    }
    quarantine_label_contradictions(results[WEIGHT.asset_name], results[FIBER.asset_name])
    return {name: r.rows for name, r in results.items()}


def reference(bronze: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    cal = calendar.subject_calendars(bronze["weight"], bronze["fiber"])
    trajectories = features.subject_trajectories(bronze["weight"], cal)
    weeks = features.study_weeks(bronze["weight"], cal)
    weekly, left_out = features.weekly_features(bronze["fiber"], bronze["nutrition"], weeks, cal)
    modeling, dropped = features.modeling_dataset(trajectories, weekly)
    tables = {
        "study_calendar": cal,
        "subject_trajectories": trajectories,
        "weekly_features": weekly,
        "modeling_dataset": modeling,
    }
    return tables, {**left_out, **dropped}


def only_read(query: sql.SilverQuery, relations: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: relations[name][list(columns)] for name, columns in query.reads.items()}


def contradictions(relations: dict[str, pd.DataFrame]) -> list[dict]:
    """CALENDAR_CONTRADICTIONS as the silver asset runs it: over the calendar just computed."""
    read = only_read(sql.STUDY_CALENDAR, relations)
    return ENGINE.rows(
        sql.CALENDAR_CONTRADICTIONS, {**read, "study_calendar": ENGINE.table_arrow(sql.STUDY_CALENDAR, read)}
    )


def by_sql(bronze: dict[str, pd.DataFrame], buckets: int) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in sql.QUERIES}
    counts: dict[str, int] = {}
    for bucket in range(buckets):
        relations = {name: t[t["subject_id"] % buckets == bucket].reset_index(drop=True) for name, t in bronze.items()}
        assert contradictions(relations) == []
        for name, query in sql.QUERIES.items():
            # Each query gets only the columns it declares: `reads` is complete.
            relations[name] = ENGINE.table(query, only_read(query, relations))
            parts[name].append(relations[name])
        for summary, of in ((sql.WEEKLY_LEFT_OUT, sql.WEEKLY_FEATURES), (sql.MODELING_DROPPED, sql.MODELING_DATASET)):
            for key, value in ENGINE.rows(summary, only_read(of, relations))[0].items():
                counts[key] = counts.get(key, 0) + int(value)
    tables = {
        name: pd.concat(p, ignore_index=True).sort_values(
            TABLE_KEYS.get(name, ["subject_id", "week"]), ignore_index=True
        )
        for name, p in parts.items()
    }
    return tables, counts


def assert_same(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for name, table in want.items():
        pd.testing.assert_frame_equal(
            got[name], table.reset_index(drop=True), check_exact=False, rtol=1e-12, atol=1e-12, obj=name
        )


@pytest.mark.parametrize("buckets", [1, 7])
def test_the_sample_gives_the_reference_tables_in_any_buckets(buckets: int) -> None:
    bronze = bronze_of(SAMPLE_DIR)
    want, want_counts = reference(bronze)
    got, counts = by_sql(bronze, buckets)
    assert_same(got, want)
    assert counts == want_counts


def test_the_seed_study_gives_the_reference_tables(seed_dir: Path) -> None:
    bronze = bronze_of(seed_dir)
    want, want_counts = reference(bronze)
    got, counts = by_sql(bronze, 4)
    assert_same(got, want)
    assert counts == want_counts


@pytest.mark.parametrize(("seed", "buckets"), [(0, 1), (1, 5), (2, 3), (3, 1), (4, 5)])
def test_messy_logs_give_the_reference_tables(seed: int, buckets: int) -> None:
    bronze = messy_bronze(seed)
    want, want_counts = reference(bronze)
    got, counts = by_sql(bronze, buckets)
    assert_same(got, want)
    assert counts == want_counts


def test_a_contradicting_label_is_found_with_its_line() -> None:
    bronze = messy_bronze(1)
    weight = bronze["weight"]
    # Move one weigh-in of a subject with several rows 3 weeks off its label.
    subject = weight["subject_id"].value_counts().index[0]
    row = weight.index[weight["subject_id"] == subject][0]
    weight.loc[row, "date"] = weight.loc[row, "date"] + pd.Timedelta(days=21)
    found = contradictions(bronze)
    assert [(r["subject_id"], r["frame"], r["source_line"]) for r in found] == [
        (subject, 0, int(weight.loc[row, "source_line"]))
    ]
    assert found[0]["contradictions"] == 1
    with pytest.raises(calendar.CalendarError):
        calendar.subject_calendars(bronze["weight"], bronze["fiber"])


def test_duplicate_weigh_ins_are_found() -> None:
    bronze = messy_bronze(2)
    weight = bronze["weight"]
    bronze["weight"] = pd.concat([weight, weight.iloc[[0]]], ignore_index=True)
    found = ENGINE.rows(sql.DUPLICATE_WEIGH_INS, bronze)
    assert [(r["subject_id"], r["week"], r["n"]) for r in found] == [
        (weight.iloc[0]["subject_id"], weight.iloc[0]["week"], 2)
    ]


def test_the_same_rows_in_another_file_order_give_the_same_bits(tmp_path) -> None:
    """Through the bucket batches (lib/engine/buckets.py), as the silver assets run: float sums
    do not depend on the order of the landing file's rows."""
    from potato_assets.lib.engine.buckets import run_batches
    from potato_assets.lib.lake.datasets import DatasetWriter

    def silver(bronze: dict[str, pd.DataFrame], where: str) -> dict[str, pd.DataFrame]:
        refs, tables = {}, {}
        for name, table in bronze.items():
            with DatasetWriter((tmp_path / where / name).as_uri(), 3) as writer:
                writer.write_table(table)
                refs[name] = writer.commit()
        for query in sql.QUERIES.values():
            # Batches of about one bucket: several batches, as a large study runs.
            parts = [b.table.to_pandas() for b in run_batches(ENGINE, query, refs, buckets=3, batch_rows=500)]
            with DatasetWriter((tmp_path / where / query.table).as_uri(), 3) as writer:
                for part in parts:
                    writer.write_table(part)
                refs[query.table] = writer.commit()
            tables[query.table] = pd.concat(parts, ignore_index=True)
        return tables

    bronze = messy_bronze(7)
    shuffled = {name: t.sample(frac=1.0, random_state=3).reset_index(drop=True) for name, t in bronze.items()}
    want, got = silver(bronze, "a"), silver(shuffled, "b")
    for name in sql.QUERIES:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)
