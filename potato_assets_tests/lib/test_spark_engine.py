"""The Spark engine's pieces that need no cluster: silver's SQL in Spark's dialect, and the
engine chosen by the settings (the cluster runs are in test_spark_engine_e2e.py)."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlglot
from sqlglot import expressions as exp

from potato_assets.defs.resources import SilverEngine, build_resources
from potato_assets.lib.engine.buckets import silver_schema
from potato_assets.lib.engine.embedded import EmbeddedEngine
from potato_assets.lib.engine.spark import SPARK_TYPES, SparkEngine, spark_sql
from potato_assets.settings import load_settings
from potato_assets.study import silver

COUNT_QUERIES = {
    "CALENDAR_CONTRADICTIONS": silver.CALENDAR_CONTRADICTIONS,
    "DUPLICATE_WEIGH_INS": silver.DUPLICATE_WEIGH_INS,
    "WEEKLY_LEFT_OUT": silver.WEEKLY_LEFT_OUT,
    "MODELING_DROPPED": silver.MODELING_DROPPED,
    "MODELING_SUBJECTS": silver.MODELING_SUBJECTS,
}


@pytest.mark.parametrize("name", sorted(silver.QUERIES))
def test_each_silver_query_reads_in_spark_dialect_without_its_final_sort(name):
    query = silver.QUERIES[name]
    tree = sqlglot.parse_one(spark_sql(query.sql, unordered=True), read="spark")
    assert tree.args.get("order") is None
    # Window orderings stay (they are rules: previous week, first weigh-in, calendar agreement).
    ordered = sqlglot.parse_one(spark_sql(query.sql), read="spark")
    assert ordered.args.get("order") is not None
    assert len(list(tree.find_all(exp.Window))) == len(list(ordered.find_all(exp.Window)))
    selected = [e.alias_or_name for e in tree.selects]
    assert selected == list(query.dtypes)
    # DuckDB's DATE_DIFF('day', a, b) is Spark's DATEDIFF(DAY, a, b); DuckDB sorts NULLs last.
    text = spark_sql(query.sql)
    assert "DATE_DIFF(" not in text.upper()
    if "ORDER BY" in query.sql.upper():
        assert "NULLS LAST" in text


@pytest.mark.parametrize("name", sorted(COUNT_QUERIES))
def test_each_check_and_count_query_reads_in_spark_dialect(name):
    sqlglot.parse_one(spark_sql(COUNT_QUERIES[name]), read="spark")


def test_every_silver_column_type_has_a_spark_type_matching_the_dataset_schema():
    for query in silver.QUERIES.values():
        schema = silver_schema(query)
        assert schema.names == list(query.dtypes)
        for column, dtype in query.dtypes.items():
            spark_type = SPARK_TYPES[dtype]
            arrow = str(schema.field(column).type)
            assert (spark_type, arrow) in {
                ("bigint", "int64"),
                ("double", "double"),
                ("timestamp_ntz", "timestamp[ns]"),
            }


def test_the_engine_follows_the_settings_and_the_remote_stays_out_of_run_config(monkeypatch):
    monkeypatch.setenv("POTATO_SPARK_REMOTE", "sc://127.0.0.1:15002/;token=secret")
    resources = build_resources(
        load_settings({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": "sc://127.0.0.1:15002/;token=secret"})
    )
    resource = resources["silver_engine"]
    assert resource.kind == "spark"
    assert isinstance(resource.spark_remote, dg.EnvVar)
    # Dagster reads the variable when it initialises the resource for a run.
    engine = resource.process_config_and_initialize().engine()
    try:
        assert isinstance(engine, SparkEngine) and engine.remote == "sc://127.0.0.1:15002/;token=secret"
    finally:
        engine.close()  # nothing to close: no session is opened before the first query
    assert isinstance(build_resources(load_settings({}))["silver_engine"].engine(), EmbeddedEngine)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (SilverEngine(kind="spark"), "the spark engine needs POTATO_SPARK_REMOTE"),
        (SilverEngine(kind="flink"), "silver engine 'flink' is none of embedded, spark, emr-serverless"),
        (SilverEngine(kind="emr-serverless"), "runs inside an asset's step only"),
    ],
)
def test_an_engine_that_cannot_run_says_why(resource, message):
    with pytest.raises(dg.Failure, match=message):
        resource.engine()


def test_an_unreachable_connect_server_fails_silver_plainly_and_keeps_the_last_good_tables(sample_dir, tmp_path):
    import socket

    from potato_assets.lib.lake import datasets, storage
    from potato_assets_tests.helpers import materialize_all

    lake = tmp_path / "lake"
    assert materialize_all(sample_dir, lake).success
    roots = {t: storage.join(lake.as_uri(), f"silver/{t}") for t in silver.QUERIES}
    before = {t: datasets.current(root) for t, root in roots.items()}
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = SilverEngine(kind="spark", spark_remote=f"sc://127.0.0.1:{port}")
    result = materialize_all(sample_dir, lake, raise_on_error=False, resources={"silver_engine": engine})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "silver__study_calendar"
    assert (
        f"silver/study_calendar: the Spark Connect server at 127.0.0.1:{port} (POTATO_SPARK_REMOTE) does not answer:"
        " Connection refused" in failure.event_specific_data.error.message
    )
    # Nothing the last good run wrote changed, and the failed attempt left no version behind.
    assert {t: datasets.current(root) for t, root in roots.items()} == before
    for table, root in roots.items():
        assert datasets._Location(root).versions() == [f"v-{before[table].version}"]
