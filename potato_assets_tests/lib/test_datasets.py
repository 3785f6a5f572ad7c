"""Bucketed, versioned lake datasets (lib/lake/datasets.py) on local disk and on S3 (moto's server
over HTTP): layout, round trips, schemas, the pointer's atomicity, garbage collection."""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potato_assets.lib.lake import datasets, storage
from potato_assets.lib.lake.datasets import (
    BUCKET_COL,
    DatasetError,
    DatasetVersionGone,
    DatasetWriter,
    SchemaMismatch,
    current,
    split_by_bucket,
)

BUCKETS = 8


def frame(subjects: list[int] | np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Two rows per subject with the column kinds the lake holds (ints, floats, text, dates, NaN)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.asarray(subjects, dtype="int64"), 2)
    return pd.DataFrame(
        {
            "subject_id": ids,
            "week": np.tile([1, 2], len(subjects)),
            "weight_kg": rng.normal(80, 5, len(ids)).round(2),
            "note": [None if i % 5 == 0 else f"row {i}" for i in range(len(ids))],
            "date": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(ids)) % 30, unit="D"),
            "fiber_g": np.where(np.arange(len(ids)) % 7 == 0, np.nan, rng.random(len(ids))),
        }
    )


def by_bucket(df: pd.DataFrame, buckets: int = BUCKETS) -> pd.DataFrame:
    """The rows in the order a dataset reads them back: by bucket, stable inside one."""
    key = df["subject_id"] % buckets
    return df.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def write(root: str, df: pd.DataFrame, buckets: int = BUCKETS, parts: int = 1, **commit) -> datasets.DatasetRef:
    """Write ``df`` in ``parts`` streaming batches per bucket, commit."""
    with DatasetWriter(root, buckets) as writer:
        for bucket, rows in split_by_bucket(df, buckets):
            for chunk in np.array_split(np.arange(len(rows)), parts):
                writer.write(bucket, rows.iloc[chunk])
        return writer.commit(**commit)


# Subjects in buckets 1, 2, 3 and 5 of 8 only: the other four buckets stay empty; bucket 2 has
# two rows, so a third batch for it is empty (and writes no file).
SUBJECTS = [1, 9, 17, 2, 3, 11, 19, 27, 5, 13]


@pytest.fixture
def root(tmp_path) -> str:
    return (tmp_path / "lake" / "silver" / "weekly_features").as_uri()


def test_local_round_trip_with_several_parts_per_bucket_and_empty_buckets(root, tmp_path):
    df = frame(SUBJECTS)
    ref = write(root, df, parts=3)

    assert ref.row_count == len(df) and ref.buckets == BUCKETS
    pd.testing.assert_frame_equal(ref.read(), by_bucket(df))
    assert current(root) == ref
    # A ref travels (pickled between processes) and still reads.
    pd.testing.assert_frame_equal(pickle.loads(pickle.dumps(ref)).read(), by_bucket(df))
    # Layout: hive bucket folders, several parts per bucket, none for an empty bucket, the bucket
    # only in the path, the manifest beside them and the pointer at the root.
    version_dir = tmp_path / "lake" / "silver" / "weekly_features" / f"v-{ref.version}"
    assert ref.version_uri == version_dir.as_uri()
    parts = sorted(str(p.relative_to(version_dir)) for p in version_dir.rglob("*.parquet"))
    assert parts == [f"bucket=0{b}/part-0000{i}.parquet" for b in (1, 2, 3, 5) for i in range(3) if b != 2 or i < 2]
    assert all(BUCKET_COL not in pq.read_schema(version_dir / p).names for p in parts)
    assert sorted(os.listdir(version_dir.parent)) == ["_current.json", f"v-{ref.version}"]
    manifest = json.loads((version_dir / "_manifest.json").read_text())
    assert manifest["row_count"] == len(df) and manifest["data_version"] == ref.data_version
    assert sum(f["rows"] for f in manifest["files"]) == len(df) and manifest["created_at"]
    assert [c["name"] for c in manifest["columns"]] == list(df.columns)

    # Buckets: every one in order, the empty ones as empty frames with the dataset's dtypes.
    seen = dict(ref.iter_buckets())
    assert list(seen) == list(range(BUCKETS))
    for bucket, rows in seen.items():
        expected = df[df["subject_id"] % BUCKETS == bucket].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, expected, check_index_type=False)
    empty = ref.read_bucket(4)
    assert empty.empty and empty.dtypes.to_dict() == df.dtypes.to_dict()
    assert ref.bucket_uris(4) == []
    assert ref.bucket_uris(2) == [f"{ref.version_uri}/bucket=02/part-0000{i}.parquet" for i in range(2)]
    # Projection, and the bucket column on request.
    some = ref.read_bucket(3, columns=["weight_kg", BUCKET_COL])
    assert list(some.columns) == ["weight_kg", BUCKET_COL] and set(some[BUCKET_COL]) == {3}
    assert list(ref.read(columns=[BUCKET_COL]).iloc[:, 0]) == sorted(df["subject_id"] % BUCKETS)


def test_the_same_rows_give_the_same_bytes_and_data_version(root, tmp_path):
    first = write(root, frame(SUBJECTS), parts=2)
    second = write(root, frame(SUBJECTS), parts=2)
    assert first.version != second.version and first.data_version == second.data_version
    for a, b in zip(first.files, second.files, strict=True):
        assert a == b
        assert storage.to_upath(f"{first.version_uri}/{a.path}").read_bytes() == (
            storage.to_upath(f"{second.version_uri}/{b.path}").read_bytes()
        )
    assert write(root, frame(SUBJECTS, seed=1)).data_version != first.data_version
    assert write(root, frame(SUBJECTS), data_version="given").data_version == "given"


def test_duckdb_scans_the_arrow_dataset_lazily_with_projection(root):
    import duckdb

    df = frame(np.arange(1, 400))
    ref = write(root, df, parts=2)
    con = duckdb.connect()
    con.register("features", ref.arrow_dataset())
    assert BUCKET_COL in ref.arrow_dataset().schema.names
    rows = con.execute(
        "SELECT bucket, count(*), sum(weight_kg) FROM features WHERE bucket IN (1, 6) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    for bucket, count, total in rows:
        mine = df[df["subject_id"] % BUCKETS == bucket]
        assert count == len(mine) and total == pytest.approx(mine["weight_kg"].sum())
    # Only the asked-for column is decoded: the plan's projection names it alone.
    plan = con.execute("EXPLAIN SELECT sum(fiber_g) FROM features").fetchall()[0][1]
    assert "fiber_g" in plan and "weight_kg" not in plan
    assert con.execute("SELECT count(*) FROM features").fetchone() == (len(df),)


def test_s3_round_trip_and_duckdb_scan(moto_s3):
    import duckdb
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a client for the endpoint the fixture set
    moto_s3.create_bucket(Bucket="datasets")
    root = "s3://datasets/lake/silver/weekly_features"
    df = frame(SUBJECTS)
    old = write(root, df.iloc[:6])
    ref = write(root, df, parts=2)
    assert current(root) == ref
    pd.testing.assert_frame_equal(ref.read(), by_bucket(df))
    pd.testing.assert_frame_equal(old.read(), by_bucket(df.iloc[:6]))  # the previous stays
    keys = sorted(o["Key"] for o in moto_s3.list_objects_v2(Bucket="datasets")["Contents"])
    assert "lake/silver/weekly_features/_current.json" in keys
    assert f"lake/silver/weekly_features/v-{ref.version}/bucket=05/part-00001.parquet" in keys
    assert ref.read_bucket(0).empty and list(ref.read_bucket(0).columns) == list(df.columns)
    con = duckdb.connect()
    con.register("features", ref.arrow_dataset())
    got = con.execute("SELECT count(*), sum(weight_kg) FROM features WHERE bucket = 3").fetchone()
    mine = df[df["subject_id"] % BUCKETS == 3]
    assert got is not None and got[0] == len(mine) and got[1] == pytest.approx(mine["weight_kg"].sum())
    write(root, df)  # a third commit: the first version is collected
    gone = {k.split("/")[3] for k in (o["Key"] for o in moto_s3.list_objects_v2(Bucket="datasets")["Contents"])}
    assert f"v-{old.version}" not in gone and f"v-{ref.version}" in gone


def test_parts_with_another_schema_are_refused_plainly(root):
    df = frame(SUBJECTS)
    with DatasetWriter(root, BUCKETS) as writer:
        writer.write(1, df[df["subject_id"] == 1])
        bad = df[df["subject_id"] == 9].assign(week=lambda d: d["week"].astype(str)).drop(columns=["note"])
        with pytest.raises(SchemaMismatch) as caught:
            writer.write(1, bad.assign(extra=1.0))
        message = str(caught.value)
        assert "bucket 1" in message and root in message
        assert "column 'note' is missing" in message
        assert "column 'extra' is not in the dataset" in message
        assert "column 'week' is string, the dataset's is int64" in message
        # Reordered columns and an all-null text batch lose nothing: accepted.
        ok = df[df["subject_id"] == 17].assign(note=None)
        writer.write(1, ok[list(reversed(df.columns))])
        ref = writer.commit()
    back = ref.read_bucket(1)
    assert list(back.columns) == list(df.columns) and back["note"].iloc[2:].isna().all()


def test_rows_must_be_in_the_bucket_they_are_written_to(root):
    df = frame(SUBJECTS)
    with DatasetWriter(root, BUCKETS) as writer:
        with pytest.raises(ValueError, match=r"rows written to bucket 2 belong elsewhere \(subject 1 is in bucket 1"):
            writer.write(2, df[df["subject_id"].isin([1, 2])])
        with pytest.raises(ValueError, match="bucket 8 is not between 0 and 7"):
            writer.write(8, df.iloc[:0])
    assert current(root) is None


def test_missing_columns_are_named_with_the_columns_the_dataset_has(root):
    ref = write(root, frame(SUBJECTS))
    with pytest.raises(storage.MissingColumns) as caught:
        ref.read(columns=["weight_kg", "height_cm", "bmi"])
    message = str(caught.value)
    assert message.startswith(f"{root} (version {ref.version}): no column 'height_cm', 'bmi'")
    assert "(has subject_id, week, weight_kg, note, date, fiber_g)" in message
    with pytest.raises(storage.MissingColumns, match="no column 'x'"):
        ref.read_bucket(4, columns=["x"])  # an empty bucket is checked too
    with pytest.raises(storage.MissingColumns, match="no column 'x'"):
        next(ref.iter_buckets(columns=["x"]))


def test_an_empty_dataset_keeps_its_schema(root):
    df = frame(SUBJECTS).iloc[:0]
    with DatasetWriter(root, BUCKETS) as writer:
        writer.write_table(df)
        ref = writer.commit()
    assert ref.row_count == 0 and ref.files == ()
    back = ref.read()
    assert back.empty and back.dtypes.to_dict() == df.dtypes.to_dict()
    assert current(root) == ref
    assert ref.arrow_dataset().count_rows() == 0 and BUCKET_COL in ref.arrow_dataset().schema.names
    with DatasetWriter(root, BUCKETS) as writer, pytest.raises(ValueError, match="nothing was written"):
        writer.commit()


def test_a_failed_or_aborted_writer_leaves_the_previous_version(root, tmp_path):
    df = frame(SUBJECTS)
    good = write(root, df)
    folder = tmp_path / "lake" / "silver" / "weekly_features"
    with pytest.raises(RuntimeError, match="the batch failed"), DatasetWriter(root, BUCKETS) as writer:
        writer.write_table(frame([1, 2, 3], seed=5))
        writer.flush()  # the parts are stored on the writer's thread
        assert (folder / f"v-{writer.version}").is_dir()
        raise RuntimeError("the batch failed")
    assert not (folder / f"v-{writer.version}").exists()
    writer = DatasetWriter(root, BUCKETS)
    writer.write_table(frame([4], seed=6))
    writer.abort()
    with pytest.raises(RuntimeError, match="this writer was aborted"):
        writer.write_table(df)
    assert current(root) == good and sorted(os.listdir(folder)) == ["_current.json", f"v-{good.version}"]
    pd.testing.assert_frame_equal(current(root).read(), by_bucket(df))  # type: ignore[union-attr]


def test_a_reader_keeps_the_previous_version_and_is_told_when_it_is_gone(root, tmp_path):
    first = write(root, frame(SUBJECTS, seed=1))
    second = write(root, frame(SUBJECTS, seed=2))
    # A reader holding the version just replaced still reads it whole.
    pd.testing.assert_frame_equal(first.read(), by_bucket(frame(SUBJECTS, seed=1)))
    third = write(root, frame(SUBJECTS, seed=3))
    folder = tmp_path / "lake" / "silver" / "weekly_features"
    assert sorted(os.listdir(folder)) == ["_current.json", f"v-{second.version}", f"v-{third.version}"]
    with pytest.raises(DatasetVersionGone) as caught:
        first.read_bucket(1)
    assert f"v-{first.version}/bucket=01/part-00000.parquet" in str(caught.value)
    assert f"later commits removed it (the current version is {third.version}); resolve" in str(caught.value)
    pd.testing.assert_frame_equal(second.read(), by_bucket(frame(SUBJECTS, seed=2)))


POINTER_CASES = [
    ("{not json", "not valid JSON at line 1, column 2"),
    ('{"format": 1}', "field 'version' is missing"),
    ('{"format": 1, "version": "../../etc"}', "is not a version name"),
    ('{"format": 2, "version": "x"}', "format 2 is not the one this code reads (1)"),
    ('{"format": 1, "version": "nope"}', "names version nope, but"),
    ("[1, 2]", "expected a JSON object, found list"),
]


@pytest.mark.parametrize(("text", "message"), POINTER_CASES)
def test_a_hand_edited_or_corrupt_pointer_is_named(root, tmp_path, text, message):
    write(root, frame(SUBJECTS))
    pointer = tmp_path / "lake" / "silver" / "weekly_features" / "_current.json"
    pointer.write_text(text)
    with pytest.raises(DatasetError) as caught:
        current(root)
    assert str(caught.value).startswith(f"{root}/_current.json: ") and message in str(caught.value)
    # The next commit replaces the broken pointer.
    ref = write(root, frame([1]))
    assert current(root) == ref


MANIFEST_EDITS = [
    (lambda m: m.update(row_count=m["row_count"] + 1), "field 'row_count' is 21, but its files hold 20 rows"),
    (lambda m: m["files"][0].update(path="../../secrets.parquet"), "files[0] path '../../secrets.parquet' is not"),
    (lambda m: m["files"][1].update(rows="many"), "field 'files[1].rows' is 'many', not a whole number"),
    (lambda m: m["files"][1].update(rows=-1), "is -1, a negative number"),
    (lambda m: m.update(schema="AAAA"), "field 'schema' is not a serialised arrow schema"),
    (lambda m: m.update(version="other"), "describes version other, but sits in version"),
    (lambda m: m.pop("files"), "field 'files' is missing"),
]


@pytest.mark.parametrize(("edit", "message"), MANIFEST_EDITS)
def test_a_hand_edited_manifest_is_named(root, edit, message):
    ref = write(root, frame(SUBJECTS))
    path = Path(storage.to_upath(ref.version_uri).path) / "_manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as caught:
        current(root)
    assert str(caught.value).startswith(f"{ref.version_uri}/_manifest.json: ") and message in str(caught.value)


def test_a_corrupt_manifest_names_line_and_column(root):
    ref = write(root, frame(SUBJECTS))
    path = Path(storage.to_upath(ref.version_uri).path) / "_manifest.json"
    path.write_text('{\n "format": 1,\n "version": oops\n}')
    with pytest.raises(DatasetError, match=r"_manifest.json: not valid JSON at line 3, column 13"):
        current(root)


def test_a_part_missing_under_a_current_manifest_is_named(root):
    ref = write(root, frame(SUBJECTS))
    os.unlink(storage.to_upath(ref.bucket_uris(5)[0]).path)
    with pytest.raises(DatasetVersionGone, match="bucket=05/part-00000.parquet: the file is missing although"):
        ref.read()


def test_split_by_bucket():
    df = pd.DataFrame({"subject_id": [5, 3, 13, 8, -3], "x": [1, 2, 3, 4, 5], BUCKET_COL: 0})
    got = [(b, list(rows["x"])) for b, rows in split_by_bucket(df, 8)]
    assert got == [(0, [4]), (3, [2]), (5, [1, 3, 5])]  # -3 % 8 == 5; order kept inside a bucket
    assert all(BUCKET_COL not in rows.columns for _, rows in split_by_bucket(df, 8))
    nullable = pd.DataFrame({"subject_id": pd.array([1, None], dtype="Int64")})
    with pytest.raises(ValueError, match="1 rows have no subject_id"):
        list(split_by_bucket(nullable, 8))
    with pytest.raises(ValueError, match="subject_id must be whole numbers"):
        list(split_by_bucket(pd.DataFrame({"subject_id": ["7"]}), 8))
    with pytest.raises(ValueError, match="at least 1"):
        list(split_by_bucket(df, 0))


def test_a_writer_takes_arrow_tables_and_a_schema_given_up_front(root):
    schema = pa.schema([("subject_id", pa.int64()), ("x", pa.float64())])
    with DatasetWriter(root, 4, schema=schema) as writer:
        writer.write(1, pa.table({"subject_id": [1, 5], "x": [0.5, None]}))
        writer.write(2, pa.table({"subject_id": [2], "x": pa.array([None], pa.null())}))
        with pytest.raises(SchemaMismatch, match="column 'x' is string, the dataset's is double"):
            writer.write(3, pa.table({"subject_id": [3], "x": ["a"]}))
        ref = writer.commit()
    assert ref.schema.equals(schema) and ref.row_count == 3
    with pytest.raises(RuntimeError, match="this writer was committed"):
        writer.write(1, pa.table({"subject_id": [1], "x": [1.0]}))


def test_parts_store_microsecond_times_and_read_back_as_the_manifest_says(root):
    """Spark and Athena refuse parquet's nanosecond timestamps: files hold microseconds, readers
    get the dataset's own types."""
    ref = write(root, frame(SUBJECTS))
    for f in ref.files:
        stored = pq.read_schema(storage.to_upath(f"{ref.version_uri}/{f.path}").path)
        assert stored.field("date").type == pa.timestamp("us")
    assert ref.schema.field("date").type == pa.timestamp("ns")
    back = ref.read()
    assert back["date"].dtype == "datetime64[ns]"
    pd.testing.assert_frame_equal(back, by_bucket(frame(SUBJECTS)))


def _staged(writer: DatasetWriter, parts: dict[str, pa.Table]) -> str:
    """Parts written hive style into the writer's staging folder, as another engine would."""
    staging = writer.staging_uri("other")
    base = storage.to_upath(staging).path
    for relative, table in parts.items():
        os.makedirs(os.path.dirname(f"{base}/{relative}"), exist_ok=True)
        pq.write_table(table, f"{base}/{relative}", coerce_timestamps="us")
    Path(base, "_SUCCESS").write_text("")
    Path(base, "bucket=1").mkdir(exist_ok=True)
    Path(base, "bucket=1", ".part-x.parquet.crc").write_bytes(b"\0")
    return staging


def test_a_writer_adopts_parts_another_engine_wrote_hive_style(root):
    schema = pa.schema([("subject_id", pa.int64()), ("day", pa.timestamp("ns")), ("x", pa.float64())])
    when = pa.array([0, 86_400_000_000], pa.timestamp("us"))
    with DatasetWriter(root, 4, schema=schema) as writer:
        staging = _staged(
            writer,
            {
                # Spark's names: unpadded bucket, any file name; narrower ints are fine.
                "bucket=1/part-00000-1f.c000.zstd.parquet": pa.table(
                    {"subject_id": pa.array([1, 5], pa.int32()), "day": when, "x": [0.5, None]}
                ),
                "bucket=3/part-00001-2a.c000.zstd.parquet": pa.table({"subject_id": [3], "day": when[:1], "x": [2.0]}),
            },
        )
        assert writer.adopt(staging) == 3
        ref = writer.commit()
    assert [(f.bucket, f.path, f.rows) for f in ref.files] == [
        (1, "bucket=01/part-00000.parquet", 2),
        (3, "bucket=03/part-00000.parquet", 1),
    ]
    assert not storage.to_upath(staging).exists()  # the staging folder is gone, checksums and all
    back = ref.read()
    assert back["subject_id"].tolist() == [1, 5, 3] and str(back["day"].dtype) == "datetime64[ns]"
    assert back["day"].tolist() == [pd.Timestamp("1970-01-01"), pd.Timestamp("1970-01-02"), pd.Timestamp("1970-01-01")]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"bucket=1/p.parquet": pa.table({"subject_id": [1], "y": [1.0]})}, "its columns are subject_id, y"),
        (
            {"bucket=1/p.parquet": pa.table({"subject_id": [1], "x": ["a"]})},
            "column 'x' is string, the dataset's is double",
        ),
        ({"bucket=9/p.parquet": pa.table({"subject_id": [9], "x": [1.0]})}, r"not a part of one of buckets 0\.\.3"),
        ({"p.parquet": pa.table({"subject_id": [1], "x": [1.0]})}, r"p\.parquet: not a part of one of buckets"),
    ],
)
def test_adopted_parts_that_do_not_fit_are_refused_and_nothing_is_committed(root, parts, message):
    schema = pa.schema([("subject_id", pa.int64()), ("x", pa.float64())])
    before = write(root, frame(SUBJECTS)[["subject_id"]].assign(x=1.0), buckets=4)
    with DatasetWriter(root, 4, schema=schema) as writer, pytest.raises((SchemaMismatch, ValueError), match=message):
        writer.adopt(_staged(writer, parts))
    assert current(root) == before
    assert len(datasets._Location(root).versions()) == 1


def test_parts_to_adopt_must_be_staged_inside_the_version(root, tmp_path):
    schema = pa.schema([("subject_id", pa.int64())])
    with DatasetWriter(root, 4, schema=schema) as writer, pytest.raises(ValueError, match="must be staged inside"):
        writer.adopt(tmp_path.as_uri())


def test_a_bucket_buffer_holds_at_most_its_budget_and_keeps_each_buckets_rows_in_order(root, monkeypatch):
    df = frame(np.arange(400))  # 800 rows over 8 buckets
    held = []
    original = datasets.BucketBuffer.add

    def add(self, rows):
        original(self, rows)
        held.append(self._held)

    monkeypatch.setattr(datasets.BucketBuffer, "add", add)
    with DatasetWriter(root, BUCKETS, durable=False) as writer:
        buffer = datasets.BucketBuffer(writer, rows_per_part=1_000, max_rows=100)
        for start in range(0, len(df), 30):
            buffer.add(df.iloc[start : start + 30])
        buffer.close()
        ref = writer.commit()
    assert max(held) <= 100 and ref.row_count == len(df)
    assert len(ref.files) > BUCKETS  # the budget wrote buckets early, in several parts
    pd.testing.assert_frame_equal(ref.read(), by_bucket(df))


def test_a_bucket_buffer_promotes_a_column_all_missing_in_one_batch(root):
    """Each batch becomes Arrow on its own: a text column with no value in one batch (null type)
    must join the other batches' parts of the same bucket."""
    df = frame(np.arange(40))
    df["note"] = df["note"].astype(object)
    first, second = df.iloc[:40].copy(), df.iloc[40:].copy()
    first["note"] = None
    with DatasetWriter(root, BUCKETS, durable=False) as writer:
        buffer = datasets.BucketBuffer(writer, rows_per_part=1_000, max_rows=10_000)
        buffer.add(first)
        buffer.add(second)
        buffer.close()
        ref = writer.commit()
    expected = pd.concat([first, second], ignore_index=True)
    pd.testing.assert_frame_equal(ref.read(), by_bucket(expected))


def test_arrow_strings_read_text_as_arrow_backed_strings_with_the_same_values(root):
    df = frame(SUBJECTS)
    df["note"] = df["note"].astype(pd.StringDtype("pyarrow"))
    ref = write(root, df, parts=2)
    for bucket in range(BUCKETS):
        stored = ref.read_bucket(bucket)
        arrow = ref.read_bucket(bucket, arrow_strings=True)
        assert arrow["note"].dtype == pd.StringDtype("pyarrow")
        pd.testing.assert_frame_equal(arrow, stored.astype({"note": pd.StringDtype("pyarrow")}))
        parts = list(ref.iter_bucket_parts(bucket, list(df.columns), 2, arrow_strings=True))
        assert all(p["note"].dtype == pd.StringDtype("pyarrow") for p in parts)


# --- parts stored on the writer's thread ------------------------------------------------------------


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dataset-writer")]


def write_parts(writer: DatasetWriter, df: pd.DataFrame, parts: int) -> None:
    """Buckets interleaved, ``parts`` batches each: the order a streaming writer sees."""
    chunks = {b: (rows, np.array_split(np.arange(len(rows)), parts)) for b, rows in split_by_bucket(df, writer.buckets)}
    for i in range(parts):
        for bucket, (rows, pieces) in chunks.items():
            writer.write(bucket, rows.iloc[pieces[i]])


@pytest.mark.parametrize("write_ahead", [1, 2, 5])
def test_background_writes_store_what_synchronous_writes_store(tmp_path, write_ahead):
    df = frame(np.arange(300), seed=3)
    refs, manifests = [], []
    for name, ahead in (("sync", 0), ("background", write_ahead)):
        root = (tmp_path / name).as_uri()
        with DatasetWriter(root, BUCKETS, write_ahead=ahead) as writer:
            write_parts(writer, df, parts=4)
            assert writer.rows_written == len(df)  # counted as handed over
            refs.append(writer.commit())
        manifest = json.loads((tmp_path / name / f"v-{refs[-1].version}" / "_manifest.json").read_text())
        manifests.append({k: v for k, v in manifest.items() if k not in ("version", "created_at")})
    sync, background = refs
    assert background.data_version == sync.data_version and background.files == sync.files
    assert manifests[1] == manifests[0]  # files, rows, sha256 and schema alike
    for f in sync.files:
        assert storage.to_upath(f"{background.version_uri}/{f.path}").read_bytes() == (
            storage.to_upath(f"{sync.version_uri}/{f.path}").read_bytes()
        )
    pd.testing.assert_frame_equal(background.read(), by_bucket(df))
    assert writer_threads() == []  # commit ended the thread


def failing_on_part(monkeypatch, failing: int, error: BaseException) -> list[str]:
    """write_part raises ``error`` on its ``failing``-th call; the parts stored are listed."""
    stored: list[str] = []
    calls = iter(range(1, 1_000_000))
    original = datasets._Location.write_part

    def write_part(self, data, *parts):
        if next(calls) == failing:
            raise error
        original(self, data, *parts)
        stored.append(parts[-1])

    monkeypatch.setattr(datasets._Location, "write_part", write_part)
    return stored


@pytest.mark.parametrize("write_ahead", [0, 2])
@pytest.mark.parametrize("failing", [3, 24], ids=["third-part", "last-part"])  # 24 parts in all
@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        datasets.DatasetWriteFailed("s3://lake/t/v-1/bucket=03/part-00000.parquet: the upload failed (cut)"),
    ],
    ids=["disk-full", "upload-cut"],
)
def test_a_failed_part_surfaces_as_it_was_and_the_version_is_never_committed(
    root, tmp_path, monkeypatch, write_ahead, failing, error
):
    good = write(root, frame(SUBJECTS))
    folder = tmp_path / "lake" / "silver" / "weekly_features"
    stored = failing_on_part(monkeypatch, failing, error)
    writer = DatasetWriter(root, BUCKETS, write_ahead=write_ahead)
    with pytest.raises(type(error), match=re.escape(str(error))) as raised, writer:
        write_parts(writer, frame(np.arange(100), seed=4), parts=3)
        writer.commit()  # the last part can fail after the last write: commit raises it then
    assert raised.value is error and len(stored) == failing - 1  # none tried after it
    with pytest.raises(RuntimeError, match="this writer was aborted"):
        writer.commit()
    assert current(root) == good
    assert sorted(os.listdir(folder)) == ["_current.json", f"v-{good.version}"]
    assert writer_threads() == []


def test_a_failure_surfaces_at_the_next_call_once_the_part_failed(root, monkeypatch):
    failing_on_part(monkeypatch, 1, OSError(28, "No space left on device"))
    writer = DatasetWriter(root, BUCKETS)
    writer.write(1, frame([1]))
    deadline = time.monotonic() + 30
    while not writer._in_flight[0][1].done():  # the part has failed on the writer's thread
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(OSError, match="No space left"):
        writer.write(2, frame([2]))
    assert current(root) is None and writer_threads() == []


def test_abort_waits_for_the_part_in_flight_before_removing_the_version(root, tmp_path, monkeypatch):
    folder = tmp_path / "lake" / "silver" / "weekly_features"
    events: list[str] = []
    started, release = threading.Event(), threading.Event()
    original_write, original_remove = datasets._Location.write_part, datasets._Location.remove_tree

    def slow_write(self, data, *parts):
        started.set()
        assert release.wait(30)
        original_write(self, data, *parts)
        events.append(f"stored {parts[-1]}")

    def remove_tree(self, relative):
        events.append("removed")
        original_remove(self, relative)

    monkeypatch.setattr(datasets._Location, "write_part", slow_write)
    monkeypatch.setattr(datasets._Location, "remove_tree", remove_tree)
    with pytest.raises(RuntimeError, match="the batch failed"), DatasetWriter(root, BUCKETS) as writer:
        writer.write(1, frame([1]))
        writer.write(2, frame([2]))  # queued behind the first
        assert started.wait(30)
        threading.Timer(0.3, release.set).start()
        raise RuntimeError("the batch failed")  # __exit__ aborts while part 1 is being stored
    # The part being stored finished first; the queued one never started; nothing came back.
    assert events == ["stored bucket=01/part-00000.parquet", "removed"]
    time.sleep(0.2)
    assert not (folder / f"v-{writer.version}").exists() and writer_threads() == []


def test_at_most_write_ahead_parts_are_in_flight(root, monkeypatch):
    release = threading.Event()
    original = datasets._Location.write_part

    def gated_write(self, data, *parts):
        assert release.wait(30)
        original(self, data, *parts)

    monkeypatch.setattr(datasets._Location, "write_part", gated_write)
    handed: list[int] = []
    writer = DatasetWriter(root, BUCKETS, write_ahead=2)

    def produce() -> None:
        for i in range(6):
            writer.write(1, frame([1 + BUCKETS * i]))
            handed.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.5)
    assert handed == [0, 1]  # the third write waits while two parts are in flight
    release.set()
    producer.join(30)
    assert handed == list(range(6))
    assert writer.commit().row_count == 12


def test_an_unclosed_writer_leaves_no_thread_behind(root):
    writer = DatasetWriter(root, BUCKETS)
    writer.write(1, frame([1]))
    writer.flush()
    assert len(writer_threads()) == 1
    del writer
    gc.collect()
    deadline = time.monotonic() + 30
    while writer_threads():
        assert time.monotonic() < deadline, "the writer's thread outlived it"
        time.sleep(0.01)


@pytest.mark.parametrize("max_rows", [1, 3, 7, 1_000])
def test_bucket_groups_are_whole_buckets_in_order_read_once_per_group(root, max_rows):
    df = frame(SUBJECTS)
    ref = write(root, df, parts=2)
    groups = list(ref.iter_bucket_groups(["subject_id", "week", "note", BUCKET_COL], max_rows=max_rows))
    together = pd.concat(groups, ignore_index=True)
    expected = ref.read(["subject_id", "week", "note", BUCKET_COL])
    pd.testing.assert_frame_equal(together, expected)
    # No bucket is split between two groups, and a group stays within the budget unless it is one bucket.
    buckets = [set(g[BUCKET_COL]) for g in groups]
    assert all(not (a & b) for i, a in enumerate(buckets) for b in buckets[i + 1 :])
    assert all(len(g) <= max_rows or len(b) == 1 for g, b in zip(groups, buckets, strict=True))
    assert len(groups) == (1 if max_rows >= len(df) else len(groups)) and all(len(g) for g in groups)


def test_an_empty_dataset_gives_one_empty_bucket_group(root):
    with DatasetWriter(root, BUCKETS) as writer:
        writer.write(0, frame(SUBJECTS).iloc[:0])
        ref = writer.commit()
    groups = list(ref.iter_bucket_groups(["subject_id", "week"]))
    assert len(groups) == 1 and groups[0].empty and list(groups[0].columns) == ["subject_id", "week"]


@pytest.mark.parametrize(
    ("sizes", "max_rows", "groups"),
    [
        ([0, 0, 0], 5, [[0, 1, 2]]),  # all empty: one group
        ([3, 0, 2, 4, 0], 5, [[0, 1, 2], [3, 4]]),  # empty buckets ride along, trailing ones too
        ([0, 9, 1, 1, 0], 5, [[0, 1], [2, 3, 4]]),  # a leading empty bucket joins the next, a big one stands alone
        ([2, 2, 2], 1, [[0], [1], [2]]),
    ],
)
def test_consecutive_bucket_groups(sizes, max_rows, groups):
    assert datasets.consecutive_bucket_groups(sizes, max_rows) == groups
