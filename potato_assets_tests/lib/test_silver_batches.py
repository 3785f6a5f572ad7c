"""Silver's batches on worker threads (lib/engine/buckets.run_batches, the embedded engine's
build): the same tables, manifests, data versions and before/after rows as one batch after
another; a failing batch fails the build at once, commits nothing and leaves no thread; and the
calendar's check, reading the calendar just computed, finds what it found recomputing it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from potato_assets.defs.resources import LakeDatasets, SilverEngine
from potato_assets.defs.silver.assets import build_table, study_calendar
from potato_assets.lib.engine.buckets import bucket_batches, silver_schema
from potato_assets.lib.engine.embedded import EmbeddedEngine
from potato_assets.lib.lake import datasets
from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
from potato_assets.study import silver as sql
from potato_assets_tests.helpers import messy_bronze

BUCKETS = 7
# A few hundred input rows a batch: every test input is several batches.
BATCH_ROWS = 400
BEFORE = {"study_calendar": [sql.CALENDAR_CONTRADICTIONS], "subject_trajectories": [sql.DUPLICATE_WEIGH_INS]}
AFTER = {"weekly_features": [sql.WEEKLY_LEFT_OUT], "modeling_dataset": [sql.MODELING_DROPPED, sql.MODELING_SUBJECTS]}
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


def silver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("silver-")]


def build_all(refs: dict[str, DatasetRef], root: Path, engine: EmbeddedEngine) -> tuple[dict[str, Any], dict]:
    """Every silver table in order, as the assets build them: manifests and before/after rows."""
    refs, manifests, found = dict(refs), {}, {}
    for name, query in sql.QUERIES.items():
        with DatasetWriter((root / name).as_uri(), BUCKETS, schema=silver_schema(query)) as writer:
            found[name] = engine.build(
                query,
                {n: refs[n] for n in query.reads},
                writer,
                buckets=BUCKETS,
                before=BEFORE.get(name, ()),
                after=AFTER.get(name, ()),
            )
            refs[name] = writer.commit()
        manifests[name] = (
            refs[name].data_version,
            refs[name].row_count,
            [(f.bucket, f.path, f.rows) for f in refs[name].files],
        )
    return manifests, found


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_the_bits_of_one_batch_after_another(tmp_path: Path, workers: int) -> None:
    refs = bronze_refs(messy_bronze(5, subjects=120), tmp_path)
    # Small enough that 1/workers of any query's input rows is more: the workers' batches are the
    # one-worker engine's, so the before/after rows compare batch by batch.
    batch_rows = BATCH_ROWS // 2
    assert len(bucket_batches({n: refs[n] for n in ("weight", "fiber", "nutrition")}, BUCKETS, batch_rows)) >= 4
    want, want_found = build_all(refs, tmp_path / "one", EmbeddedEngine(batch_rows=batch_rows, workers=1))
    got, found = build_all(refs, tmp_path / "many", EmbeddedEngine(batch_rows=batch_rows, workers=workers))
    assert got == want
    # The rows of the before/after queries, batch by batch in batch order (counts differ per batch).
    assert found == want_found
    assert len(found["weekly_features"][0]) > 2
    assert not silver_threads()
    # And the parts themselves, byte for byte.
    for name in sql.QUERIES:
        for a, b in zip(
            sorted((tmp_path / "one" / name).rglob("*.parquet")),
            sorted((tmp_path / "many" / name).rglob("*.parquet")),
            strict=True,
        ):
            assert a.read_bytes() == b.read_bytes(), a


def test_a_study_smaller_than_one_batch_gives_each_worker_a_batch(tmp_path: Path) -> None:
    from potato_assets.lib.engine.buckets import run_batches

    refs = bronze_refs(messy_bronze(5, subjects=120), tmp_path)
    inputs = {n: refs[n] for n in sql.WEEKLY_FEATURES.reads if n in refs}
    inputs["study_calendar"] = build_all(refs, tmp_path / "cal", EmbeddedEngine())[0] and datasets.current(
        (tmp_path / "cal" / "study_calendar").as_uri()
    )
    rows = sum(f.rows for ref in inputs.values() for f in ref.files)
    for workers, at_least in ((1, 1), (2, 2), (3, 3)):
        engine = EmbeddedEngine(batch_rows=10 * rows, workers=workers)
        batches = list(
            run_batches(engine, sql.WEEKLY_FEATURES, inputs, buckets=BUCKETS, workers=workers, batch_rows=10 * rows)
        )
        assert len(batches) >= at_least and (workers > 1 or len(batches) == 1)
        assert (
            sum(b.table.num_rows for b in batches)
            == datasets.current((tmp_path / "cal" / "weekly_features").as_uri()).row_count
        )


class Scripted(EmbeddedEngine):
    """An embedded engine whose workers hold up (a long DuckDB query, interruptible) or fail
    on the batch that holds a given subject; the failure waits for the slow batch to be under
    way."""

    def __init__(
        self, slow: set[int] = frozenset(), fail: set[int] = frozenset(), under_way=None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.slow, self.fail = slow, fail
        self.under_way = under_way or threading.Event()

    def worker(self) -> Scripted:
        engine = Scripted(self.slow, self.fail, self.under_way, batch_rows=self.batch_rows)
        engine._connection()
        return engine

    def table_arrow(self, query: sql.SilverQuery, relations: Any) -> Any:
        subjects = set(relations["weight"].column("subject_id").to_pylist())
        if subjects & self.fail:
            self.under_way.wait(10)
            raise RuntimeError("this batch fails")
        if subjects & self.slow:
            self.under_way.set()
            # The stop comes before the query starts (the race the build must win), then a query
            # of about a minute unless interrupted.
            time.sleep(0.5)
            self.rows("SELECT COUNT(*) AS n FROM range(20000000000) t(i) WHERE i % 7 = 3", {})
        return super().table_arrow(query, relations)


def first_batch_subject(refs: dict[str, DatasetRef], which: int = 0) -> int:
    batch = bucket_batches({n: refs[n] for n in ("weight", "fiber")}, BUCKETS, BATCH_ROWS)[which]
    return int(refs["weight"].read_arrow(batch, ["subject_id"]).column("subject_id")[0].as_py())


def test_a_failing_batch_fails_the_build_at_once_commits_nothing_and_leaves_no_thread(tmp_path: Path) -> None:
    refs = bronze_refs(messy_bronze(6, subjects=120), tmp_path)
    # The first batch would run for a minute; the second fails: the build fails now.
    engine = Scripted(
        slow={first_batch_subject(refs, 0)}, fail={first_batch_subject(refs, 1)}, batch_rows=BATCH_ROWS, workers=2
    )
    lake = LakeDatasets(lake_uri=(tmp_path / "lake").as_uri(), buckets=BUCKETS)
    resource = SilverEngine(workers=2, batch_rows=BATCH_ROWS)
    started = time.monotonic()
    # build_table as the assets call it, with the scripted engine in place of the resource's.
    with pytest.raises(RuntimeError, match="this batch fails"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(SilverEngine, "engine", lambda self, context=None: engine)
        build_table(sql.STUDY_CALENDAR, {"weight": refs["weight"], "fiber": refs["fiber"]}, lake, resource)
    assert time.monotonic() - started < 20
    assert not silver_threads()
    root = lake.root(dg.AssetKey(["silver", "study_calendar"]))
    assert datasets.current(root) is None
    assert datasets._Location(root).versions() == []


def test_batches_come_back_in_batch_order_when_a_later_one_is_done_first(tmp_path: Path) -> None:
    refs = bronze_refs(messy_bronze(7, subjects=120), tmp_path)
    query = sql.STUDY_CALENDAR
    inputs = {"weight": refs["weight"], "fiber": refs["fiber"]}
    first = "SELECT MIN(subject_id % 7) AS bucket FROM weight"
    order = []
    for engine in (EmbeddedEngine(batch_rows=BATCH_ROWS), _Slowish({first_batch_subject(refs)}, batch_rows=BATCH_ROWS)):
        engine.workers = 3
        with DatasetWriter((tmp_path / f"cal{len(order)}").as_uri(), BUCKETS, schema=silver_schema(query)) as writer:
            (buckets,) = engine.build(query, inputs, writer, buckets=BUCKETS, after=[first])
            order.append(([rows[0]["bucket"] for rows in buckets], writer.commit().data_version))
    batches = bucket_batches(inputs, BUCKETS, BATCH_ROWS)
    assert order[0] == order[1] and order[0][0] == [b[0] for b in batches]
    assert not silver_threads()


class _Slowish(EmbeddedEngine):
    """The batch holding a given subject takes a second longer: the others finish first."""

    def __init__(self, slow: set[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow = slow

    def worker(self) -> _Slowish:
        return _Slowish(self.slow, batch_rows=self.batch_rows)

    def table_arrow(self, query: sql.SilverQuery, relations: Any) -> Any:
        if set(relations["weight"].column("subject_id").to_pylist()) & self.slow:
            time.sleep(1.0)
        return super().table_arrow(query, relations)


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
    assert sum(int(rows[0]["contradictions"]) for rows in found if rows) > 5, "several contradictions"
    assert sum(1 for rows in found if rows) >= 3, "contradictions in several batches"
    return str(sql.calendar_contradictions_error(found))


@pytest.mark.parametrize(("seed", "workers"), [(11, 1), (12, 2), (13, 3)])
def test_the_calendar_check_finds_what_recomputing_the_calendar_found(tmp_path: Path, seed: int, workers: int) -> None:
    refs = bronze_refs(contradicting(seed), tmp_path)
    want = old_failure(refs)
    lake = LakeDatasets(lake_uri=(tmp_path / "lake").as_uri(), buckets=BUCKETS)
    # The asset's own function (invoking the asset would set up a Dagster instance).
    with pytest.raises(dg.Failure) as failure:
        study_calendar.op.compute_fn.decorated_fn(
            context=None,  # the embedded engine needs no step context
            weight=refs["weight"],
            fiber=refs["fiber"],
            lake_datasets=lake,
            silver_engine=SilverEngine(workers=workers, batch_rows=BATCH_ROWS),
        )
    assert failure.value.description == want
    # Nothing committed, nothing left behind, no thread.
    root = lake.root(dg.AssetKey(["silver", "study_calendar"]))
    assert datasets.current(root) is None and datasets._Location(root).versions() == []
    assert not silver_threads()


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


def _random_relation(rng, rows: int) -> pa.Table:
    """subject_id, a date with ties, a week and two floats with missing values and NaN."""
    import numpy as np

    def floats() -> pa.Array:
        values = rng.choice([1.5, 2.25, -0.5, np.nan], rows)
        return pa.array(values, mask=rng.random(rows) < 0.2, from_pandas=False)

    days = rng.integers(0, 4, rows).astype("datetime64[D]").astype("datetime64[us]")
    return pa.table(
        {
            "subject_id": pa.array(rng.integers(0, 9, rows), pa.int64()),
            "date": pa.array(days, mask=rng.random(rows) < 0.1),
            "week": pa.array(rng.integers(1, 3, rows), pa.int64()),
            "a": floats(),
            "b": floats(),
        }
    )


def test_subjects_in_order_says_whether_a_sort_by_bucket_and_columns_would_move_a_row():
    """Against Arrow's own sort: a relation is in order exactly when sorting it by (bucket,
    columns) changes nothing, whatever the missing values, NaN and ties."""
    import numpy as np

    from potato_assets.lib.engine.buckets import subjects_in_order

    columns = ["subject_id", "date", "week", "a", "b"]
    rng = np.random.default_rng(5)
    seen = {True: 0, False: 0}
    for trial in range(400):
        table = _random_relation(rng, int(rng.integers(2, 30)))
        buckets = int(rng.integers(1, 5))
        keyed = table.append_column("bucket", pa.array(table.column("subject_id").to_numpy() % buckets))
        ordered = keyed.sort_by([(c, "ascending") for c in ["bucket", *columns]]).drop_columns(["bucket"])
        if trial % 2:
            table = ordered  # sorted, or sorted with two neighbouring rows swapped
            if trial % 4 == 3:
                i = int(rng.integers(0, table.num_rows - 1))
                order = list(range(table.num_rows))
                order[i], order[i + 1] = order[i + 1], order[i]
                table = table.take(pa.array(order))
        in_order = table.to_pandas().equals(ordered.to_pandas())  # NaN equal to NaN
        assert subjects_in_order(table, columns, buckets) == in_order, (trial, table.to_pandas())
        seen[in_order] += 1
    assert min(seen.values()) > 50
    # not keyed by subject first, or a subject missing: never taken as in order
    table = _random_relation(rng, 10)
    assert not subjects_in_order(table.select(["week", "subject_id"]), ["week", "subject_id"], 3)
    assert not subjects_in_order(table.set_column(0, "subject_id", pa.nulls(10, pa.int64())), columns, 3)


def test_a_float_relation_read_in_order_is_handed_over_as_read_and_a_shuffled_one_is_sorted(tmp_path):
    from potato_assets.lib.engine.buckets import batch_relations

    fiber = messy_bronze(3)["fiber"]
    columns = sql.WEEKLY_FEATURES.reads["fiber"]
    ordered = fiber.sort_values(list(columns), na_position="last", kind="stable", ignore_index=True)
    shuffled = ordered.sample(frac=1.0, random_state=1).reset_index(drop=True)
    got = {}
    for name, frame in (("ordered", ordered), ("shuffled", shuffled)):
        with DatasetWriter((tmp_path / name).as_uri(), BUCKETS) as writer:
            writer.write_table(frame)
            ref = writer.commit()
        batch = list(range(BUCKETS))
        read = ref.read_arrow(batch, list(columns))
        got[name] = batch_relations({"fiber": ref}, {"fiber": columns}, batch)["fiber"]
        assert got[name].equals(read) == (name == "ordered")

    # each subject's rows in the same order either way (a stable sort by subject keeps it)
    def per_subject(table: pa.Table) -> pd.DataFrame:
        return table.to_pandas().sort_values("subject_id", kind="stable", ignore_index=True)

    pd.testing.assert_frame_equal(per_subject(got["shuffled"]), per_subject(got["ordered"]), check_exact=True)
