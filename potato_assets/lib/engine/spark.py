"""The Spark engine: silver's SQL (study/silver.py) transpiled by sqlglot and run on a Spark
Connect server, whose cluster reads the input datasets and writes the silver dataset itself.

The Dagster step is a thin client: it sends SQL, receives a few rows of counts and examples, and
moves the files the cluster wrote into the new dataset version (reading only their footers). The
whole table is one query: Spark spreads the buckets over its executors, so there are no batches.
Paths are the lake's own URIs, so the cluster must see the lake where the step does (a shared
disk, or S3 on a cluster with S3 support, e.g. EMR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from potato_assets.lib.engine import EngineUnreachable

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from potato_assets.lib.contracts import ContractResult
    from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
    from potato_assets.study.silver import SilverQuery

# The pandas dtype of a silver column -> the Spark type its parquet files are written with: the
# dataset's own arrow types (int64, float64, naive timestamps), so both engines' parts agree.
SPARK_TYPES = {"Int64": "bigint", "int64": "bigint", "float64": "double", "datetime64[ns]": "timestamp_ntz"}
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
        """The query's table written into ``writer`` by the cluster, and per ``before``/``after``
        query its rows (one list: the whole table is one batch). As in the embedded engine, the
        ``before``/``after`` queries may read the table under its own name (a view: Spark
        computes it for them). A ``before`` query that finds anything stops it before the table
        is written."""
        spark = self.session()
        # The cluster's jobs say which table they built (the driver's REST API lists job tags).
        spark.addTag(job_tag(query.table))
        for name, columns in query.reads.items():
            self._view(spark, name, inputs[name], columns)
        table = self._typed(query, spark.sql(spark_sql(query.sql, unordered=True)), buckets)
        table.createOrReplaceTempView(query.table)
        checks = [[self.rows(sql)] for sql in before]
        if any(rows for (rows,) in checks):
            return checks + [[] for _ in after]
        staging = writer.staging_uri(self.name)
        (
            table.repartition(min(buckets, 200), "bucket")
            .sortWithinPartitions("bucket", *sort_columns(query))
            .write.partitionBy("bucket")
            .mode("overwrite")
            .parquet(staging)
        )
        writer.adopt(staging)
        return checks + [[self.rows(sql)] for sql in after]

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
                suite, dataset_frame(spark, ref, wanted), columns=ref.columns, order_examples_by=examples
            )
        except Exception:
            # GX and pyspark raise their own errors for a server gone mid-suite: say that plainly.
            check_reachable(self.remote)
            raise
        finally:
            spark.removeTag(tag)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """A small result (counts, a few examples) as plain dicts."""
        return [row.asDict() for row in self.session().sql(spark_sql(sql)).collect()]

    @staticmethod
    def _view(spark: SparkSession, name: str, ref: DatasetRef, columns: Sequence[str]) -> None:
        """The dataset's committed files as the temporary view ``name`` with the columns the
        query reads."""
        dataset_frame(spark, ref, columns).createOrReplaceTempView(name)

    @staticmethod
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


def dataset_frame(spark: SparkSession, ref: DatasetRef, columns: Sequence[str]) -> DataFrame:
    """The dataset's committed files (its manifest's, not whatever lies in the folder) with only
    ``columns``, as the cluster reads them."""
    uris = [f"{ref.version_uri}/{f.path}" for f in ref.files]
    if uris:
        return spark.read.parquet(*uris).select(*columns)
    # No rows: an empty frame of the dataset's types (Spark cannot infer them from no file).
    return spark.createDataFrame(_spark_ready(ref.schema.empty_table().select(list(columns))))


def _spark_ready(table: pa.Table) -> pa.Table:
    """Arrow types Spark accepts: timestamps in microseconds."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", f.type.tz)) if pa.types.is_timestamp(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))
