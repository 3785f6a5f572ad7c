"""The embedded engine: silver's SQL (study/silver.py) run by an in-process DuckDB, one subject
bucket at a time.

A subject's rows all live in one bucket, and every silver rule is per subject, so a bucket is a
complete small study: memory is bounded by the largest bucket, whatever the cohort, and no
server is involved. DuckDB itself is capped (``memory_limit``) and spills to a temporary folder
beyond it.

Batches run on up to ``workers`` threads at once, each with a DuckDB database of its own, also
one-threaded (lib/engine/buckets.run_batches): the parallelism is between batches, never inside
a query, so every batch's result has the bits it has alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
    from potato_assets.study.silver import SilverQuery

# Per database (one per worker): DuckDB's own cap, beyond which it spills; a batch needs less.
DEFAULT_MEMORY_LIMIT = "1GB"
# One thread per query: threads add partial float sums in whatever order they finish, so the same
# inputs would give different last bits, hence different data versions and needless downstream
# reruns. Batches on several threads are fine: each runs whole on one connection.


class EmbeddedEngine:
    """Runs a silver query over in-memory relations (pandas frames or Arrow tables of one bucket)."""

    name = "embedded"

    def __init__(
        self,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = 1,
        batch_rows: int | None = None,
        workers: int = 1,
    ) -> None:
        from potato_assets.lib.engine.buckets import DEFAULT_BATCH_ROWS

        self.memory_limit = memory_limit
        self.threads = threads
        # Unless told, the rows in flight at once stay those of one default batch: N workers hold
        # N batches of 1/N the size (the same peak memory; a subject's result does not depend on
        # the other subjects of its batch).
        self.batch_rows = batch_rows or max(1, DEFAULT_BATCH_ROWS // max(1, workers))
        self.workers = workers
        self._con: duckdb.DuckDBPyConnection | None = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        # One database per engine: opening one costs ~0.1-0.4 s, more than a bucket's query.
        if self._con is None:
            import duckdb

            config: dict[str, Any] = {"memory_limit": self.memory_limit}
            if self.threads:
                config["threads"] = self.threads
            self._con = duckdb.connect(config=config)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def worker(self) -> EmbeddedEngine:
        """An engine with the same settings and a database of its own, opened now (a batch runs
        on it on another thread; ``interrupt`` must reach it from this one)."""
        engine = EmbeddedEngine(memory_limit=self.memory_limit, threads=self.threads, batch_rows=self.batch_rows)
        engine._connection()
        return engine

    def interrupt(self) -> None:
        """Stops the query running on this engine's connection (from any thread; the query's
        caller raises duckdb.InterruptException); nothing happens when none runs."""
        if self._con is not None:
            self._con.interrupt()

    def arrow(self, sql: str, relations: Mapping[str, Any]) -> pa.Table:
        con = self._connection()
        for name, relation in relations.items():
            con.register(name, relation)
        try:
            return con.sql(sql).to_arrow_table()
        finally:
            for name in relations:
                con.unregister(name)

    def rows(self, sql: str, relations: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A small result (counts, examples) as plain dicts."""
        table = self.arrow(sql, relations)
        return table.to_pylist()

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
        """The query's table written into ``writer`` batch by batch, in batch order whatever the
        workers (the writer is used from this thread only), and per ``before``/``after`` query
        its rows of each batch. Once a ``before`` query found rows the caller commits nothing:
        later batches are still checked (the findings are counted over all) but not written."""
        from contextlib import closing

        from potato_assets.lib.engine.buckets import run_batches, write_by_bucket

        found: list[list[list[dict[str, Any]]]] = [[] for _ in (*before, *after)]
        findings = False
        batches = run_batches(
            self,
            query,
            inputs,
            buckets=buckets,
            batch_rows=self.batch_rows,
            before=before,
            after=after,
            workers=self.workers,
        )
        # Closing stops and joins the worker threads also when a write fails.
        with closing(batches):
            for batch in batches:
                for per_batch, rows in zip(found, batch.summaries, strict=True):
                    per_batch.append(rows)
                findings = findings or any(batch.summaries[: len(before)])
                if not findings:
                    write_by_bucket(writer.write, batch.table, buckets)
        return found

    def table_arrow(self, query: SilverQuery, relations: Mapping[str, Any]) -> pa.Table:
        """The silver table of ``query`` over ``relations`` as the dataset stores it (Arrow, the
        dataset's schema): no pandas on the way from the engine to the lake."""
        return typed_arrow(query, self.arrow(query.sql, relations))

    def table(self, query: SilverQuery, relations: Mapping[str, Any]) -> pd.DataFrame:
        """The same table as pandas, with the study's types (the tests compare it with the pandas
        reference); the dataset schema's pandas metadata restores nullable integers."""
        return self.table_arrow(query, relations).to_pandas()


def typed_arrow(query: SilverQuery, table: pa.Table) -> pa.Table:
    """An engine's Arrow result in the silver dataset's schema (lib/engine/buckets.silver_schema):
    the query's columns in its order, day numbers as timestamps; Arrow casts only."""
    import pyarrow as pa

    from potato_assets.lib.engine.buckets import silver_schema

    missing = [c for c in query.dtypes if c not in table.column_names]
    if missing:
        raise ValueError(f"silver {query.table}: the engine returned no column {', '.join(missing)}")
    schema = silver_schema(query)
    columns = []
    for field in schema:
        column = table.column(field.name)
        if field.name in query.day_columns:
            column = column.cast(pa.int32()).cast(pa.date32())
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)
