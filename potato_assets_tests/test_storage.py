"""The lake IO manager on local disk and on S3 (moto's server over HTTP)."""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs.resources import LakeFiles, LakeIOManager, LandingZone
from potato_assets.lib.lake import storage

FRAME = pd.DataFrame({"subject_id": pd.array([1, 2], dtype="Int64"), "x": [1.5, float("nan")], "s": ["a", None]})


@dg.asset(key=["bronze", "thing"])
def thing() -> pd.DataFrame:
    return FRAME


@dg.asset(key=["silver", "copy"], ins={"upstream": dg.AssetIn(["bronze", "thing"])})
def copy(upstream: pd.DataFrame) -> pd.DataFrame:
    return upstream.assign(y=upstream["x"] * 2)


def roundtrip(lake_uri: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize([thing, copy], resources={"io_manager": LakeIOManager(lake_uri=lake_uri)})
    assert result.success
    return result


def test_local_lake_layout_roundtrip_and_metadata(tmp_path):
    lake = tmp_path / "lake"
    result = roundtrip(lake.as_uri())
    # LakeFiles finds the tables where the IO manager wrote them, and counts rows from the footer.
    files = LakeFiles(lake_uri=lake.as_uri())
    assert files.table_rows(dg.AssetKey(["bronze", "thing"])) == 2
    assert files.table_uri(dg.AssetKey(["silver", "copy"])) == (lake / "silver" / "copy.parquet").as_uri()
    written = pd.read_parquet(lake / "bronze" / "thing.parquet")
    pd.testing.assert_frame_equal(written, FRAME, check_dtype=False)
    assert (lake / "silver" / "copy.parquet").exists()
    mat = result.asset_materializations_for_node("silver__copy")[0]
    assert mat.metadata["dagster/row_count"].value == 2
    assert [c.name for c in mat.metadata["dagster/column_schema"].schema.columns] == ["subject_id", "x", "s", "y"]
    # Atomic write leaves no temporary files behind.
    assert sorted(p.name for p in lake.rglob("*") if p.is_file()) == ["copy.parquet", "thing.parquet"]


def test_failed_write_keeps_previous_object(tmp_path):
    target = storage.to_upath((tmp_path / "a.parquet").as_uri())
    storage.write_bytes_atomic(target, b"good")

    with pytest.raises(TypeError):
        storage.write_bytes_atomic(target, object())  # type: ignore[arg-type]
    assert (tmp_path / "a.parquet").read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["a.parquet"]


def test_s3_lake_roundtrip(moto_s3):
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    roundtrip(f"s3://{bucket}/prefix")
    assert LakeFiles(lake_uri=f"s3://{bucket}/prefix").table_rows(dg.AssetKey(["silver", "copy"])) == 2
    keys = sorted(o["Key"] for o in moto_s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["prefix/bronze/thing.parquet", "prefix/silver/copy.parquet"]
    body = moto_s3.get_object(Bucket=bucket, Key="prefix/silver/copy.parquet")["Body"].read()
    assert storage.read_parquet_bytes(body)["y"].tolist()[0] == 3.0


def test_lake_files_and_landing_on_s3(moto_s3):
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    moto_s3.put_object(Bucket=bucket, Key="in/Potato_tidy.csv", Body=b"a,b\n")
    landing = LandingZone(landing_uri=f"s3://{bucket}/in")
    assert landing.read_bytes("Potato_tidy.csv") == b"a,b\n"
    with pytest.raises(dg.Failure, match="Potato_fiber_daily.csv was not found in the landing zone"):
        landing.read_bytes("Potato_fiber_daily.csv")
    files = LakeFiles(lake_uri=f"s3://{bucket}/lake")
    assert files.write_bytes("gold/reports/r.md", b"# hi") == f"s3://{bucket}/lake/gold/reports/r.md"
    assert moto_s3.get_object(Bucket=bucket, Key="lake/gold/reports/r.md")["Body"].read() == b"# hi"


def test_temporary_file_of_a_dead_writer_is_removed(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".a.parquet.{dead.pid}.0123abcd.tmp"
    orphan.write_bytes(b"half")
    live = tmp_path / f".a.parquet.{os.getpid()}.4567ef.tmp"
    live.write_bytes(b"in progress")
    storage.write_bytes_atomic(storage.to_upath((tmp_path / "a.parquet").as_uri()), b"new")
    assert not orphan.exists() and live.exists()
    assert (tmp_path / "a.parquet").read_bytes() == b"new"


@dg.asset(
    key=["silver", "ids"], ins={"upstream": dg.AssetIn(["bronze", "thing"], metadata={"columns": ["subject_id"]})}
)
def ids(upstream: pd.DataFrame) -> pd.DataFrame:
    return upstream


@dg.asset(key=["silver", "wrong"], ins={"upstream": dg.AssetIn(["bronze", "thing"], metadata={"columns": ["weight"]})})
def wrong(upstream: pd.DataFrame) -> pd.DataFrame:
    return upstream


def test_an_input_can_ask_for_some_columns_and_a_missing_one_is_named(tmp_path):
    io_manager = LakeIOManager(lake_uri=(tmp_path / "lake").as_uri())
    result = dg.materialize([thing, ids], resources={"io_manager": io_manager})
    assert result.success
    assert list(pd.read_parquet(tmp_path / "lake" / "silver" / "ids.parquet").columns) == ["subject_id"]

    failed = dg.materialize([thing, wrong], resources={"io_manager": io_manager}, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].step_failure_data.error)
    assert "bronze/thing cannot be read as asked" in message
    assert "thing.parquet: no column 'weight'" in message
