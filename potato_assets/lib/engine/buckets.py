"""Running a silver query over bucketed datasets, a batch of whole buckets at a time.

Every silver rule is per subject and a subject's rows share one bucket, so any set of buckets is
a complete small study: the query's result on a batch is exactly that batch's share of the
table. Batches gather consecutive buckets up to a row budget, so a small study is one batch (one
query, no per-bucket overhead) and a large one is many, each bounded in memory.

Being independent, batches can also run side by side, each on an engine of its own (one thread
each, so each batch's result is what it is alone); their results still come back in batch
order, so the parts written, hence the data versions, are the same with any number of workers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from potato_assets.lib.lake.datasets import DatasetRef
    from potato_assets.study.silver import SilverQuery

# Input rows per batch: at ~60 bytes a row in pandas, a few hundred MB per batch.
DEFAULT_BATCH_ROWS = 4_000_000


class Engine(Protocol):
    def table_arrow(self, query: SilverQuery, relations: Mapping[str, Any]) -> pa.Table: ...

    def rows(self, sql: str, relations: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def worker(self) -> Engine:
        """Another engine like this one, with a connection of its own (for a batch on another
        thread)."""
        ...

    def interrupt(self) -> None:
        """Stop the query running on this engine now (from another thread); its caller raises."""
        ...

    def close(self) -> None: ...


class BatchesStopped(RuntimeError):
    """A batch was abandoned because another one failed (never reaches the caller)."""


class BucketMismatch(ValueError):
    """Inputs bucketed differently (the bucket setting changed since one was written)."""


def common_buckets(inputs: Mapping[str, DatasetRef], expected: int | None = None) -> int:
    counts = {name: ref.buckets for name, ref in inputs.items()}
    if expected is not None:
        counts = {**counts, "the lake setting (POTATO_LAKE_BUCKETS)": expected}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise BucketMismatch(
            f"the inputs are split into different numbers of subject buckets ({listed}): "
            "materialise them again so that they share the current setting"
        )
    return next(iter(counts.values()))


def bucket_batches(inputs: Mapping[str, DatasetRef], buckets: int, batch_rows: int) -> list[list[int]]:
    """Consecutive buckets grouped so that each group's input rows stay within ``batch_rows``
    (a bucket larger than that is a batch of its own); empty buckets ride along."""
    from potato_assets.lib.lake.datasets import consecutive_bucket_groups

    rows = [0] * buckets
    for ref in inputs.values():
        for f in ref.files:
            rows[f.bucket] += f.rows
    return consecutive_bucket_groups(rows, batch_rows)


def batch_relations(
    inputs: Mapping[str, DatasetRef], reads: Mapping[str, Sequence[str]], batch: Sequence[int]
) -> dict[str, pa.Table]:
    """Each relation a query reads, restricted to the batch's buckets and its columns, as Arrow
    tables (engines scan Arrow directly); one with a float column in a canonical row order:
    each subject's rows sorted by those columns.

    Sums of floats depend on the order they are added in; one-threaded, the engine adds in scan
    order. A canonical order makes that order the data's, not the file's: the same log with its
    rows shuffled gives the same bits, hence the same data versions and the same model
    estimates. Every float sum and mean in silver's SQL is within one subject, so only each
    subject's order matters: a relation already sorted bucket by bucket (a landing file in
    subject and date order, a silver table, which is written sorted) is left as read; any other
    is sorted (the sort and its copy were a fifth of a step). Nothing else in silver's SQL
    depends on the scan order (integer counts and sums are exact, every ORDER BY ends on a row's
    key, picks among ties take equal values), so a relation without floats is left as read."""
    import pyarrow as pa

    relations = {}
    for name, columns in reads.items():
        ref = inputs[name]
        table = ref.read_arrow(batch, list(columns))
        floats = any(pa.types.is_floating(field.type) for field in table.schema)
        if floats and not subjects_in_order(table, columns, ref.buckets):
            table = table.sort_by([(c, "ascending") for c in columns])
        relations[name] = table
    return relations


def subjects_in_order(table: pa.Table, columns: Sequence[str], buckets: int) -> bool:
    """Whether ``table``'s rows are sorted by (subject bucket, ``columns``), which must start with
    subject_id: each subject's rows in the order ``table.sort_by(columns)`` gives them (Arrow's
    order: values, then NaN, then null)."""
    import numpy as np
    import pyarrow as pa

    from potato_assets.lib.lake.datasets import SUBJECT_COL, bucket_of

    if table.num_rows < 2:
        return True
    if not columns or columns[0] != SUBJECT_COL:
        return False
    ids = table.column(SUBJECT_COL)
    if not pa.types.is_integer(ids.type) or ids.null_count:
        return False

    def keys() -> Iterator[Any]:
        # Column by column, as the comparison needs them: it usually ends after subject and date.
        yield bucket_of(ids.to_numpy(), buckets)
        for column in columns:
            yield from _sort_keys(table.column(column))

    # Row i and i+1 are in order when the first key where they differ grows.
    tied = np.ones(table.num_rows - 1, dtype=bool)
    for key in keys():
        before, after = key[:-1], key[1:]
        if np.any(tied & (after < before)):
            return False
        tied &= after == before
        if not tied.any():
            break
    return True


def _sort_keys(values: pa.ChunkedArray) -> list[Any]:
    """Numpy keys that compare as Arrow's sort compares ``values``: missing last, NaN before it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = []
    if values.null_count:
        keys.append(values.is_null().to_numpy(zero_copy_only=False))
        if values.null_count == len(values):
            return keys
        # Any present value will do: missing rows are told apart by the key above.
        values = pc.fill_null(values, pc.min(values))
    if pa.types.is_floating(values.type):
        nan = pc.is_nan(values).to_numpy(zero_copy_only=False)
        if nan.any():
            keys.append(nan)
            values = pc.if_else(pc.is_nan(values), 0.0, values)
    keys.append(values.to_numpy())
    return keys


@dataclass
class BatchResult:
    table: pa.Table
    summaries: list[list[dict[str, Any]]]


def run_batch(
    engine: Engine,
    query: SilverQuery,
    inputs: Mapping[str, DatasetRef],
    batch: Sequence[int],
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    stop: threading.Event | None = None,
) -> BatchResult:
    """One batch: its table, then its ``before`` and ``after`` rows, computed over the batch's
    relations and its table, under the table's own name (the calendar's check compares each
    labelled row with the calendar just computed instead of computing it again). ``stop`` set
    (another batch failed) abandons the batch between its queries."""

    def check() -> None:
        if stop is not None and stop.is_set():
            raise BatchesStopped("another batch failed")

    relations: dict[str, Any] = dict(batch_relations(inputs, query.reads, batch))
    check()
    table = engine.table_arrow(query, relations)
    relations[query.table] = table
    summaries = []
    for sql in (*before, *after):
        check()
        summaries.append(engine.rows(sql, relations))
    return BatchResult(table=table, summaries=summaries)


def run_batches(
    engine: Engine,
    query: SilverQuery,
    inputs: Mapping[str, DatasetRef],
    *,
    buckets: int,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    workers: int = 1,
) -> Generator[BatchResult, None, None]:
    """The query's table batch by batch, in batch order, with the rows of the ``before`` queries
    (checks whose findings stop the caller) and ``after`` queries (counts for metadata), which
    read the batch's relations and its table (see ``run_batch``). Relations are the inputs plus
    the table: tables a query reads must be in ``inputs``.

    With ``workers`` > 1, batches hold at most 1/``workers`` of the input rows, and up to that
    many batches are computed at once on threads, each on an engine of its own
    (``engine.worker()``); at most ``workers`` batches are in flight, counting the one the
    caller holds. Close the iterator (``contextlib.closing``) when not exhausting it: that stops
    and joins the threads."""
    missing = [name for name in query.reads if name not in inputs]
    if missing:
        raise ValueError(f"silver {query.table} reads {', '.join(missing)}, which the asset was not given")
    if query.table in query.reads:
        raise ValueError(f"silver {query.table} reads itself")
    if workers > 1:
        # A study smaller than the workers' batches still gives each worker one (a second core
        # otherwise idles through a small study's every silver step).
        rows = sum(f.rows for ref in inputs.values() for f in ref.files)
        batch_rows = min(batch_rows, max(1, -(-rows // workers)))
    batches = bucket_batches(inputs, buckets, batch_rows)
    if workers <= 1 or len(batches) <= 1:
        # No thread at all: a small study is one batch.
        for batch in batches:
            yield run_batch(engine, query, inputs, batch, before=before, after=after)
        return
    yield from _in_threads(engine, query, inputs, batches, before, after, min(workers, len(batches)))


def _in_threads(
    engine: Engine,
    query: SilverQuery,
    inputs: Mapping[str, DatasetRef],
    batches: list[list[int]],
    before: Sequence[str],
    after: Sequence[str],
    workers: int,
) -> Generator[BatchResult, None, None]:
    """``run_batch`` of each batch on ``workers`` threads, results in batch order. The first
    failure (in batch order among those seen) is raised at once: the other batches are
    interrupted mid-query and every thread is joined before it propagates."""
    import queue
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    stop = threading.Event()
    engines: list[Engine] = []
    idle: queue.SimpleQueue[Engine] = queue.SimpleQueue()

    def task(batch: list[int]) -> BatchResult:
        if stop.is_set():
            raise BatchesStopped("another batch failed")
        # Never waits: there are as many engines as tasks at once.
        own = idle.get()
        try:
            return run_batch(own, query, inputs, batch, before=before, after=after, stop=stop)
        finally:
            idle.put(own)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"silver-{query.table}")
    pending: deque[Future[BatchResult]] = deque()
    todo = iter(batches)
    try:
        for _ in range(workers):
            # Opened here, on the calling thread, so that a stop reaches every connection.
            worker = engine.worker()
            engines.append(worker)
            idle.put(worker)
        for batch in todo:
            pending.append(pool.submit(task, batch))
            if len(pending) == workers:
                break
        while pending:
            head = pending[0]
            while not head.done():
                wait([f for f in pending if not f.done()], return_when=FIRST_COMPLETED)
                for future in pending:
                    if future.done() and future.exception() is not None:
                        future.result()  # raises: the finally below stops the others
            result = pending.popleft().result()
            yield result
            # The caller has written it: only now may the next batch start (memory stays bounded).
            del result
            for batch in todo:
                pending.append(pool.submit(task, batch))
                break
    finally:
        stop.set()
        for future in pending:
            future.cancel()
        # Again and again until they end: a query that was about to start when the stop came
        # starts after the first interrupt (DuckDB's interrupt reaches only a running query).
        running = [f for f in pending if not f.done()]
        while running:
            for each in engines:
                each.interrupt()
            running = list(wait(running, timeout=0.05).not_done)
        pool.shutdown(wait=True)
        for worker in engines:
            worker.close()


def silver_schema(query: SilverQuery) -> pa.Schema:
    """The arrow schema of a silver table as the embedded engine writes it (from its pandas
    types), which the Spark engine's parts are held to."""
    import pandas as pd
    import pyarrow as pa

    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in query.dtypes.items()})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def write_by_bucket(
    write: Callable[[int, pd.DataFrame | pa.Table], None], table: pd.DataFrame | pa.Table, buckets: int
) -> None:
    """One part per bucket the table has rows of; an empty table still fixes the schema."""
    from potato_assets.lib.lake.datasets import split_by_bucket

    wrote = False
    for bucket, rows in split_by_bucket(table, buckets):
        write(bucket, rows)
        wrote = True
    if not wrote:
        write(0, table)
