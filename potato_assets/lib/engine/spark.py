"""The Spark engine: silver's SQL (study/silver.py) transpiled by sqlglot and run on a Spark
cluster, which reads the input datasets and writes the silver dataset itself.

``build_on`` builds one table on any SparkSession: a Spark Connect session (``SparkEngine``, the
Dagster step as a thin client) or the classic session of a Spark job (``emr_job.py``, submitted
over Dagster Pipes). Either way the step receives a few rows of counts and examples and moves
the files the cluster wrote into the new dataset version (reading only their footers). The
whole table is one query: Spark spreads the buckets over its executors, so there are no batches.
Paths are the lake's own URIs, so the cluster must see the lake where the step does (a shared
disk, or S3 on a cluster with S3 support, e.g. EMR). This module imports neither pyarrow nor the
lake's storage: a Spark job ships it with sqlglot only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from potato_assets.lib.engine import EngineUnreachable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from potato_assets.lib.contracts import ContractResult
    from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
    from potato_assets.study.silver import SilverQuery

# The pandas dtype of a silver column -> the Spark type its parquet files are written with: the
# dataset's own arrow types (int64, float64, naive timestamps), so both engines' parts agree.
SPARK_TYPES = {"Int64": "bigint", "int64": "bigint", "float64": "double", "datetime64[ns]": "timestamp_ntz"}
# Arrow types of the lake's datasets (manifest spelling) -> Spark types; timestamps and
# dictionaries are matched by spark_column_type.
ARROW_TYPES = {
    "int64": "bigint",
    "int32": "int",
    "double": "double",
    "float": "float",
    "bool": "boolean",
    "string": "string",
    "large_string": "string",
    "date32[day]": "date",
}
CONNECT_TIMEOUT_S = 10.0
SESSION_CONF = {
    # Naive dates and times stay wall-clock whatever the server's zone (as in DuckDB and pandas).
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
}


@cache
def spark_sql(sql: str, *, unordered: bool = False) -> str:
    """Silver's DuckDB-dialect SQL in Spark's dialect; ``unordered`` drops the final ORDER BY
    (a global sort the writer does not need: it sorts each bucket)."""
    import sqlglot

    tree = sqlglot.parse_one(sql, read="duckdb")
    if unordered:
        tree.set("order", None)
    return tree.sql(dialect="spark")


def spark_column_type(arrow_type: str) -> str:
    """The Spark type of a dataset column, from its arrow type as the manifest writes it
    (``str(pa.DataType)``): what an input without files is typed as."""
    if arrow_type.startswith("dictionary<values=string"):
        return "string"
    if re.fullmatch(r"timestamp\[(s|ms|us|ns)\]", arrow_type):
        return "timestamp_ntz"
    if re.fullmatch(r"timestamp\[(s|ms|us|ns), tz=.+\]", arrow_type):
        return "timestamp"
    if arrow_type in ARROW_TYPES:
        return ARROW_TYPES[arrow_type]
    raise ValueError(f"a dataset column of arrow type {arrow_type} has no Spark type here")


@dataclass(frozen=True)
class SparkInput:
    """One input dataset as Spark reads it: its committed files (its manifest's, not whatever
    lies in the folder) and the columns the query reads with their Spark types."""

    uris: tuple[str, ...]
    columns: dict[str, str]

    @classmethod
    def of(
        cls, version_uri: str, paths: Sequence[str], arrow_types: Mapping[str, str], columns: Sequence[str]
    ) -> SparkInput:
        missing = [c for c in columns if c not in arrow_types]
        if missing:
            raise ValueError(f"{version_uri}: the dataset has no column {', '.join(missing)}")
        return cls(
            uris=tuple(f"{version_uri}/{path}" for path in paths),
            columns={c: spark_column_type(arrow_types[c]) for c in columns},
        )


def sort_columns(query: SilverQuery) -> list[str]:
    """Rows within a bucket in the embedded engine's order (its queries end ORDER BY these)."""
    return [c for c in ("subject_id", "week") if c in query.dtypes]


def job_tag(table: str) -> str:
    return f"potato-silver-{table}"


def contract_tag(suite: str) -> str:
    return f"potato-contract-{suite}"


def without_parameters(remote: str) -> str:
    """``sc://host:port`` of a Connect URL, for the UI and logs: its ``/;key=value`` parameters
    may hold a token."""
    return remote.split("/;", 1)[0]


def check_reachable(remote: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    import socket

    from potato_assets.settings import SPARK_REMOTE_URL

    match = SPARK_REMOTE_URL.fullmatch(remote)
    if match is None:
        raise EngineUnreachable(f"{remote!r} is not a Spark Connect URL of the form sc://host:port")
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise EngineUnreachable(
            f"the Spark Connect server at {host}:{port} (POTATO_SPARK_REMOTE) does not answer: {reason}"
        ) from None


class SparkEngine:
    """Runs silver queries on the Spark Connect server at ``remote`` (sc://host:port)."""

    name = "spark"

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self._session: SparkSession | None = None

    def session(self) -> SparkSession:
        if self._session is None:
            from pyspark.sql import SparkSession

            # Connect's client retries an unreachable server for many minutes: say so at once.
            check_reachable(self.remote)
            # A session of its own (not the process's default): views of one step never meet
            # another's, and stop() frees them on the server.
            self._session = SparkSession.builder.remote(self.remote).create()
            for key, value in SESSION_CONF.items():
                self._session.conf.set(key, value)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.stop()

    def build(
        self,
        query: SilverQuery,
        inputs: Mapping[str, DatasetRef],
        writer: DatasetWriter,
        *,
        buckets: int,
        before: Sequence[str] = (),
        after: Sequence[str] = (),
    ) -> list[list[list[dict[str, Any]]]]:
        """The query's table written into ``writer`` by the cluster (build_on), and per
        ``before``/``after`` query its rows (one list: the whole table is one batch)."""
        staging = writer.staging_uri(self.name)
        found, wrote = build_on(
            self.session(),
            query,
            {name: dataset_input(ref, query.reads[name]) for name, ref in inputs.items() if name in query.reads},
            staging,
            buckets=buckets,
            before=before,
            after=after,
        )
        if wrote:
            writer.adopt(staging)
        return found

    def contract(self, suite: dict[str, Any], ref: DatasetRef) -> ContractResult:
        """The suite judged by GX's Spark engine on the cluster (contracts.run_contract_spark),
        over the dataset's committed files and only the columns the suite reads; examples are the
        smallest rows by the suite's example columns, as the in-step runner's are."""
        from potato_assets.lib import contracts

        spark = self.session()
        tag = contract_tag(suite["name"])
        spark.addTag(tag)
        try:
            wanted = [c for c in contracts.suite_columns(suite) if c in ref.columns]
            examples = [c for c in (suite.get("meta") or {}).get("example_columns", []) if c in ref.columns]
            return contracts.run_contract_spark(
                suite, input_frame(spark, dataset_input(ref, wanted)), columns=ref.columns, order_examples_by=examples
            )
        except Exception:
            # GX and pyspark raise their own errors for a server gone mid-suite: say that plainly.
            check_reachable(self.remote)
            raise
        finally:
            spark.removeTag(tag)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """A small result (counts, a few examples) as plain dicts."""
        return rows(self.session(), sql)


def dataset_input(ref: DatasetRef, columns: Sequence[str]) -> SparkInput:
    """A committed dataset (its manifest read by the step) as a SparkInput."""
    return SparkInput.of(
        ref.version_uri, [f.path for f in ref.files], {f.name: str(f.type) for f in ref.schema}, columns
    )


def build_on(
    spark: SparkSession,
    query: SilverQuery,
    inputs: Mapping[str, SparkInput],
    staging_uri: str,
    *,
    buckets: int,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
) -> tuple[list[list[list[dict[str, Any]]]], bool]:
    """The query's table, typed and bucketed as the dataset's, written by ``spark``'s cluster
    hive-style into ``staging_uri`` (for DatasetWriter.adopt); returns per ``before``/``after``
    query its rows (one batch) and whether the table was written. As in the embedded engine,
    the ``before``/``after`` queries may read the table under its own name (a view: Spark
    computes it for them). A ``before`` query that finds anything stops it before the table is
    written."""
    # The cluster's jobs say which table they built (the driver's REST API lists job tags).
    spark.addTag(job_tag(query.table))
    for name in query.reads:
        _view(spark, name, inputs[name])
    table = _typed(query, spark.sql(spark_sql(query.sql, unordered=True)), buckets)
    table.createOrReplaceTempView(query.table)
    checks = [[rows(spark, sql)] for sql in before]
    if any(found for (found,) in checks):
        return checks + [[] for _ in after], False
    (
        table.repartition(min(buckets, 200), "bucket")
        .sortWithinPartitions("bucket", *sort_columns(query))
        .write.partitionBy("bucket")
        .mode("overwrite")
        .parquet(staging_uri)
    )
    return checks + [[rows(spark, sql)] for sql in after], True


def rows(spark: SparkSession, sql: str) -> list[dict[str, Any]]:
    """A small result (counts, a few examples) as plain dicts."""
    return [row.asDict() for row in spark.sql(spark_sql(sql)).collect()]


def _view(spark: SparkSession, name: str, source: SparkInput) -> None:
    """The input's files as the temporary view ``name`` with the columns the query reads."""
    input_frame(spark, source).createOrReplaceTempView(name)


def input_frame(spark: SparkSession, source: SparkInput) -> DataFrame:
    """The input's files with only its columns, as the cluster reads them."""
    if source.uris:
        return spark.read.parquet(*source.uris).select(*source.columns)
    # No rows: an empty frame of the dataset's types (Spark cannot infer them from no file).
    return spark.createDataFrame([], ", ".join(f"`{c}` {t}" for c, t in source.columns.items()))


def _typed(query: SilverQuery, frame: DataFrame, buckets: int) -> DataFrame:
    """The query's columns in its order and the dataset's types, days as dates, and each row's
    bucket (subject_id mod buckets, as lib/lake/datasets.bucket_of)."""
    from pyspark.sql import functions as F

    missing = [c for c in query.dtypes if c not in frame.columns]
    if missing:
        raise ValueError(f"silver {query.table}: the query returned no column {', '.join(missing)}")
    epoch = F.lit("1970-01-01").cast("date")
    columns = []
    for column, dtype in query.dtypes.items():
        value = F.col(column)
        if column in query.day_columns:
            value = F.date_add(epoch, value.cast("int"))
        columns.append(value.cast(SPARK_TYPES[dtype]).alias(column))
    columns.append(F.pmod(F.col("subject_id"), F.lit(buckets)).cast("int").alias("bucket"))
    return frame.select(*columns)
