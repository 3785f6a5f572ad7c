"""Content versions of tables (potato_assets.lib.lake.data_version.table_version)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from potato_assets.lib.lake.data_version import VERSION_LENGTH, table_version


def make_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": pd.array([1, 1, 2, 3], dtype="Int64"),
            "week": [1, 2, 1, 1],
            "weight_kg": [80.5, 79.9, np.nan, 101.0],
            "start": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-03", None]),
            "note": pd.array(["a", None, "b", "c"], dtype="string"),
        }
    )


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()


def test_the_same_content_gives_the_same_version(table):
    version = table_version(table)
    assert len(version) == VERSION_LENGTH and int(version, 16) >= 0
    # A separately built equal table (new objects, same values): same version.
    assert table_version(make_table()) == version
    assert table_version(table.copy(deep=True)) == version


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.assign(weight_kg=t["weight_kg"].where(t.index != 0, 80.6)),  # one value
        lambda t: t.assign(weight_kg=t["weight_kg"].fillna(0.0)),  # missing -> a value
        lambda t: t.iloc[[1, 0, 2, 3]].reset_index(drop=True),  # row order
        lambda t: t.iloc[:3],  # a row dropped
        lambda t: t.rename(columns={"note": "comment"}),  # a column renamed
        lambda t: t[["week", "subject_id", "weight_kg", "start", "note"]],  # column order
        lambda t: t.assign(week=t["week"].astype("float64")),  # same values, other dtype
        lambda t: t.set_axis([10, 11, 12, 13]),  # index
        lambda t: t.assign(extra=1),  # a column added
    ],
    ids=["value", "missing", "row-order", "row-dropped", "renamed", "column-order", "dtype", "index", "added"],
)
def test_any_change_gives_another_version(table, change):
    assert table_version(change(table)) != table_version(table)


def test_an_empty_table_has_a_version_that_depends_on_its_columns():
    empty = pd.DataFrame({"a": pd.Series([], dtype="int64")})
    assert table_version(empty) == table_version(empty.copy())
    assert table_version(empty) != table_version(pd.DataFrame({"b": pd.Series([], dtype="int64")}))
