"""Silver in batches (lib/engine/buckets.run_batches, the embedded engine's build): the
calendar's check, reading the calendar just computed, finds what it found recomputing it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs.resources import LakeDatasets, SilverEngine
from potato_assets.defs.silver.assets import study_calendar
from potato_assets.lib.engine.buckets import bucket_batches
from potato_assets.lib.engine.embedded import EmbeddedEngine
from potato_assets.lib.lake import datasets
from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
from potato_assets.study import calendar
from potato_assets.study import silver as sql
from potato_assets.study.schema import FIBER, WEIGHT
from potato_assets_tests.lib.test_silver_sql import messy_bronze

BUCKETS = 7
# A few hundred input rows a batch: every test input is several batches.
BATCH_ROWS = 400
# The calendar's check as it was, computing the calendar's window functions again.
OLD_CALENDAR_CONTRADICTIONS = f"""
WITH {sql._LABELLED}
SELECT a.subject_id, a.day, a.week, a.frame, a.source_line, COUNT(*) OVER () AS contradictions
FROM agreement a JOIN starts s ON a.subject_id = s.subject_id
WHERE a.anchor_day < s.week1_start OR a.anchor_day > s.week1_start + 6
ORDER BY a.frame, a.source_line
LIMIT 5
"""


def bronze_refs(bronze: dict[str, pd.DataFrame], root: Path) -> dict[str, DatasetRef]:
    refs = {}
    for name, table in bronze.items():
        with DatasetWriter((root / "bronze" / name).as_uri(), BUCKETS) as writer:
            writer.write_table(table)
            refs[name] = writer.commit()
    return refs


def contradicting(seed: int, every: int = 9) -> dict[str, pd.DataFrame]:
    """Messy logs where every ``every``-th subject has a weigh-in moved off its label (by a day
    to three weeks, either way: some just past the 7-day window) and one subject a daily row
    moved: contradictions in every batch, in both files."""
    bronze = messy_bronze(seed, subjects=120)
    weight, fiber = bronze["weight"], bronze["fiber"]
    counts = weight["subject_id"].value_counts()
    shifts = [21, 7, -7, 10, -1, 6, -6]
    for i, subject in enumerate(sorted(counts.index[counts >= 3])[::every]):
        row = weight.index[weight["subject_id"] == subject][0]
        weight.loc[row, "date"] = weight.loc[row, "date"] + pd.Timedelta(days=shifts[i % len(shifts)])
    fiber.loc[fiber.index[0], "date"] = fiber.loc[fiber.index[0], "date"] - pd.Timedelta(days=35)
    return bronze


def old_failure(refs: dict[str, DatasetRef]) -> str:
    """The failure message the asset gave with the old check (its code, over the old rows)."""
    engine = EmbeddedEngine()
    inputs = {"weight": refs["weight"], "fiber": refs["fiber"]}
    from potato_assets.lib.engine.buckets import batch_relations

    found = [
        engine.rows(OLD_CALENDAR_CONTRADICTIONS, batch_relations(inputs, sql.STUDY_CALENDAR.reads, batch))
        for batch in bucket_batches(inputs, BUCKETS, BATCH_ROWS)
    ]
    count = sum(int(rows[0]["contradictions"]) for rows in found if rows)
    first = sorted((r for rows in found for r in rows), key=lambda r: (r["frame"], r["source_line"]))[:5]
    files = (WEIGHT.file_name, FIBER.file_name)
    examples = [
        calendar.Contradiction(
            r["subject_id"],
            dt.date(1970, 1, 1) + dt.timedelta(days=int(r["day"])),
            r["week"],
            f"{files[int(r['frame'])]} line {int(r['source_line'])}",
        )
        for r in first
    ]
    assert count > 5 and sum(1 for rows in found if rows) >= 3, "contradictions in several batches"
    return str(calendar.contradiction_error(count, examples))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_the_calendar_check_finds_what_recomputing_the_calendar_found(tmp_path: Path, seed: int) -> None:
    refs = bronze_refs(contradicting(seed), tmp_path)
    want = old_failure(refs)
    lake = LakeDatasets(lake_uri=(tmp_path / "lake").as_uri(), buckets=BUCKETS)
    # The asset's own function (invoking the asset would set up a Dagster instance).
    with pytest.raises(dg.Failure) as failure:
        study_calendar.op.compute_fn.decorated_fn(
            weight=refs["weight"],
            fiber=refs["fiber"],
            lake_datasets=lake,
            silver_engine=SilverEngine(batch_rows=BATCH_ROWS),
        )
    assert failure.value.description == want
    # Nothing committed, nothing left behind, no thread.
    root = lake.root(dg.AssetKey(["silver", "study_calendar"]))
    assert datasets.current(root) is None and datasets._Location(root).versions() == []


def test_the_calendar_check_per_batch_rows_are_the_old_ones(tmp_path: Path) -> None:
    """Row for row (count, the first five in file order) in each batch, also in one batch."""
    from potato_assets.lib.engine.buckets import batch_relations, run_batches

    refs = bronze_refs(contradicting(21, every=4), tmp_path)
    inputs = {"weight": refs["weight"], "fiber": refs["fiber"]}
    engine = EmbeddedEngine()
    keys = ("subject_id", "day", "week", "frame", "source_line", "contradictions")
    for batch_rows in (BATCH_ROWS, 10**9):
        news = run_batches(
            engine,
            sql.STUDY_CALENDAR,
            inputs,
            buckets=BUCKETS,
            batch_rows=batch_rows,
            before=[sql.CALENDAR_CONTRADICTIONS],
        )
        for batch, new in zip(bucket_batches(inputs, BUCKETS, batch_rows), news, strict=True):
            old = engine.rows(OLD_CALENDAR_CONTRADICTIONS, batch_relations(inputs, sql.STUDY_CALENDAR.reads, batch))
            assert [tuple(r[k] for k in keys) for r in new.summaries[0]] == [tuple(r[k] for k in keys) for r in old]
            assert old
