"""The GX suites on Spark (#17): run_contract_spark validates a Spark Connect DataFrame on the
local cluster with GX's Spark execution engine, and gives the pandas runner's outcomes: the same
verdict per rule, the same unexpected counts and the same example rows, on the seed study's
bronze tables and on broken copies of them."""

from __future__ import annotations

import pandas as pd
import pytest

from potato_assets.lib import contracts
from potato_assets.study.ingest import parse_landing_csv
from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import spark_cluster, spark_cluster_missing

needs_java = pytest.mark.skipif(
    spark_cluster_missing() is not None, reason=f"no local Spark cluster: {spark_cluster_missing()}"
)


def test_type_lists_become_spark_type_names():
    suite = contracts.load_suite("bronze_weight")
    spark_suite = contracts.spark_types_suite(suite)
    assert spark_suite["name"] == "bronze_weight_spark"
    types = {
        e["meta"]["rule"]: e["kwargs"]["type_list"]
        for e in spark_suite["expectations"]
        if e["type"] == "expect_column_values_to_be_in_type_list"
    }
    assert types["subject_id_integer"] == ["LongType"]
    assert types["date_is_date"] == ["TimestampNTZType", "TimestampType"]
    assert types["weight_kg_numeric"] == ["LongType", "DoubleType"]
    # Everything but the type lists is the suite as written.
    others = [e for e in spark_suite["expectations"] if e["type"] != "expect_column_values_to_be_in_type_list"]
    assert others == [e for e in suite["expectations"] if e["type"] != "expect_column_values_to_be_in_type_list"]


def test_a_dtype_without_a_spark_equivalent_is_named():
    suite = contracts.load_suite("bronze_weight")
    exp = next(e for e in suite["expectations"] if e["meta"]["rule"] == "week_integer")
    exp["kwargs"]["type_list"] = ["int64", "complex128"]
    with pytest.raises(contracts.ContractError, match=r"bronze_weight.json, rule week_integer: type 'complex128'"):
        contracts.spark_types_suite(suite)


@pytest.fixture(scope="module")
def spark(spark_state):
    cluster = spark_cluster(spark_state)
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(cluster.connect_url).getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def bronze(seed_dir) -> dict[str, pd.DataFrame]:
    now = pd.Timestamp("2024-06-01", tz="UTC")
    return {
        spec.asset_name: parse_landing_csv(
            (seed_dir / spec.file_name).read_bytes(), spec, source_file=spec.file_name, ingested_at=now
        ).rows
        for spec in LANDING_FILES
    }


def _on_spark(spark, frame: pd.DataFrame, path) -> object:
    """The frame as the cluster sees a lake table: parquet written by pyarrow, read by Spark.
    Timestamps in microseconds: Spark 4.0 refuses parquet's TIMESTAMP(NANOS) (PARQUET_TYPE_ILLEGAL),
    pyarrow's default for pandas' datetime64[ns]."""
    frame.to_parquet(path, index=False, coerce_timestamps="us")
    return spark.read.parquet(str(path))


def _comparable(result: contracts.ContractResult) -> dict[str, tuple]:
    def examples(o: contracts.ExpectationOutcome) -> object:
        if o.unexpected_examples and isinstance(o.unexpected_examples[0], dict):
            return sorted(e["source_line"] for e in o.unexpected_examples)
        return sorted(map(repr, o.unexpected_examples))

    return {o.rule: (o.success, o.unexpected_count, examples(o), o.error is None) for o in result.outcomes}


def _broken(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    broken = frame.copy()
    if name == "fiber":
        broken.loc[[3, 8], "week"] = [0, 200]
        broken.loc[11, "total_calories"] = 99_999.0
        return pd.concat([broken, broken.iloc[[20]]], ignore_index=True)  # a repeated subject-day
    if name == "weight":
        broken.loc[broken.index[: len(broken) // 2], "weight_kg"] = None  # below the 'mostly' share
        broken.loc[broken.index[-1], "weight_kg"] = 900.0
        return broken
    broken["calories"] = broken["calories"].astype("string")  # a type rule breaks
    broken.loc[broken.index[:3], "category"] = "Snacks"  # not in the vocabulary
    return broken


@pytest.mark.e2e
@needs_java
@pytest.mark.parametrize("table", ["fiber", "weight", "nutrition"])
@pytest.mark.parametrize("state", ["as ingested", "broken"])
def test_spark_outcomes_equal_the_pandas_runners(spark, bronze, table, state, tmp_path):
    frame = bronze[table] if state == "as ingested" else _broken(table, bronze[table])
    expected = contracts.run_contract(f"bronze_{table}", frame)
    got = contracts.run_contract_spark(f"bronze_{table}", _on_spark(spark, frame, tmp_path / f"{table}.parquet"))
    assert got.suite == expected.suite and got.rows == expected.rows == len(frame)
    assert _comparable(got) == _comparable(expected)
    assert [o.rule for o in got.outcomes] == [o.rule for o in expected.outcomes]
    if state == "broken":
        assert not expected.success and got.summary().split(":")[1] == expected.summary().split(":")[1]
