"""Bucketed datasets through Dagster: assets write them with the LakeDatasets resource and return
the committed ref; the lake IO manager checks it and records its metadata; inputs get the
current ref (or the whole table when typed DataFrame)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from potato_assets.defs.common import DataFrame, LakeDataset
from potato_assets.defs.resources import LakeDatasets, LakeFiles, LakeIOManager, build_resources
from potato_assets.lib.lake.datasets import DatasetRef
from potato_assets.settings import Settings
from potato_assets.study.schema import column_description

KEY = dg.AssetKey(["silver", "weekly_features"])
ROWS = pd.DataFrame(
    {
        "subject_id": np.repeat(np.arange(1, 11), 2),
        "week": np.tile([1, 2], 10),
        "weight_change_kg": np.linspace(-1, 1, 20),
    }
)
SEEN: dict[str, object] = {}


@dg.asset(key=KEY)
def weekly_features(lake_datasets: LakeDatasets) -> LakeDataset:
    with lake_datasets.writer(KEY) as writer:
        writer.write_table(ROWS)
        return writer.commit()


@dg.asset(key=["silver", "summary"], ins={"weekly": dg.AssetIn(KEY)})
def summary(weekly: LakeDataset) -> DataFrame:
    SEEN["ref"] = weekly
    total = sum(len(rows) for _, rows in weekly.iter_buckets(columns=["week"]))
    return pd.DataFrame({"rows": [total]})


@dg.asset(key=["gold", "whole"], ins={"weekly": dg.AssetIn(KEY, metadata={"columns": ["subject_id", "week"]})})
def whole(weekly: DataFrame) -> DataFrame:
    return weekly


def resources(lake_uri: str) -> dict:
    return {"io_manager": LakeIOManager(lake_uri=lake_uri), "lake_datasets": LakeDatasets(lake_uri=lake_uri, buckets=4)}


def test_an_asset_returns_its_dataset_and_downstream_gets_the_ref_or_the_table(tmp_path):
    lake = tmp_path / "lake"
    result = dg.materialize([weekly_features, summary, whole], resources=resources(lake.as_uri()))
    assert result.success
    ref = LakeDatasets(lake_uri=lake.as_uri(), buckets=4).current(KEY)
    assert ref is not None and ref.buckets == 4 and ref.root == (lake / "silver" / "weekly_features").as_uri()

    mat = result.asset_materializations_for_node("silver__weekly_features")[0]
    meta = mat.metadata
    assert meta["dagster/row_count"].value == len(ROWS)
    columns = meta["dagster/column_schema"].schema.columns
    assert [(c.name, c.type) for c in columns] == [
        ("subject_id", "int64"),
        ("week", "int64"),
        ("weight_change_kg", "float64"),
    ]
    assert columns[0].description == column_description("subject_id") and columns[0].description
    assert meta["dagster/uri"].value == ref.version_uri
    assert meta["lake/version"].value == ref.version and meta["lake/buckets"].value == 4
    assert meta["lake/data_version"].value == ref.data_version and "path" not in meta

    assert isinstance(SEEN["ref"], DatasetRef) and SEEN["ref"] == ref  # a reference, not rows
    assert result.output_for_node("silver__summary")["rows"].tolist() == [len(ROWS)]
    whole_table = result.output_for_node("gold__whole")
    pd.testing.assert_frame_equal(whole_table, ref.read(columns=["subject_id", "week"]))
    assert len(whole_table) == len(ROWS)
    # Row counts come from the manifest, as from a parquet footer for a plain table.
    assert LakeFiles(lake_uri=lake.as_uri()).table_rows(KEY) == len(ROWS)
    assert LakeFiles(lake_uri=lake.as_uri()).table_rows(dg.AssetKey(["gold", "whole"])) == len(ROWS)


def test_a_ref_that_is_not_the_committed_version_or_not_its_own_fails_plainly(tmp_path):
    lake_uri = (tmp_path / "lake").as_uri()

    @dg.asset(key=KEY)
    def stale(lake_datasets: LakeDatasets) -> LakeDataset:
        with lake_datasets.writer(KEY) as first:
            first.write_table(ROWS)
            old = first.commit()
        with lake_datasets.writer(KEY) as second:
            second.write_table(ROWS.iloc[:4])
            second.commit()
        return old

    result = dg.materialize([stale], resources=resources(lake_uri), raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    assert "silver/weekly_features returned version" in error.message
    assert "but the committed one is" in error.message and "return what DatasetWriter.commit() gave" in error.message

    @dg.asset(key=["silver", "other"])
    def borrowed(lake_datasets: LakeDatasets) -> LakeDataset:
        with lake_datasets.writer(KEY) as writer:
            writer.write_table(ROWS)
            return writer.commit()

    result = dg.materialize([borrowed], resources=resources(lake_uri), raise_on_error=False)
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    assert f"silver/other returned the dataset at {lake_uri}/silver/weekly_features, but its own is" in error.message


def test_a_corrupt_pointer_fails_the_reading_step_with_its_name(tmp_path):
    lake = tmp_path / "lake"
    assert dg.materialize([weekly_features], resources=resources(lake.as_uri())).success
    (lake / "silver" / "weekly_features" / "_current.json").write_text('{"format": 1, "version": }')
    result = dg.materialize(
        [weekly_features, summary],
        selection=[dg.AssetKey(["silver", "summary"])],
        resources=resources(lake.as_uri()),
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    assert "silver/weekly_features cannot be read:" in error.message
    assert "_current.json: not valid JSON at line 1, column 26" in error.message


def test_an_input_asking_for_a_missing_column_is_named(tmp_path):
    lake_uri = (tmp_path / "lake").as_uri()

    @dg.asset(key=["gold", "picky"], ins={"weekly": dg.AssetIn(KEY, metadata={"columns": ["fiber_g"]})})
    def picky(weekly: DataFrame) -> DataFrame:
        return weekly

    result = dg.materialize([weekly_features, picky], resources=resources(lake_uri), raise_on_error=False)
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    assert "silver/weekly_features cannot be read as asked:" in error.message and "no column 'fiber_g'" in error.message


@pytest.mark.parametrize("buckets", [1, 32])
def test_the_resource_takes_the_bucket_count_from_settings(tmp_path, buckets):
    settings = Settings(lake_uri=(tmp_path / "lake").as_uri(), landing_uri=tmp_path.as_uri(), lake_buckets=buckets)
    built = build_resources(settings)["lake_datasets"]
    assert isinstance(built, LakeDatasets) and built.buckets == buckets
    assert built.writer(KEY).buckets == buckets
    assert built.root(KEY) == f"{settings.lake_uri}/silver/weekly_features" and built.current(KEY) is None
