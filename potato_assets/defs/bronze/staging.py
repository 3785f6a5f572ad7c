"""Where bronze ingest keeps phase A's rows until phase B reads them by subject bucket.

While the landing files add up to at most `IN_MEMORY_BYTES` and their rows to at most
`IN_MEMORY_ROWS`, the rows stay in memory: a small cohort skips the round trip through scratch
parquet (write, read back, string types restored). The first file that takes the bytes past the
budget spills everything before any of its own rows is held, so a large cohort streams to
scratch from its first file with no held rows on top of phase A's peak; a batch that takes the
rows past theirs spills likewise. From the spill on, every row goes to scratch datasets in
subject buckets: memory stays bounded whatever the cohort.
Both ways phase B sees the same rows in the same order (the tests compare them).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    # A bucket's first group (by file name), and the readers of its other groups.
    _Read = tuple[dict[str, pd.DataFrame], dict[str, Iterator[pd.DataFrame]]]

    from potato_assets.lib.lake.datasets import BucketBuffer, DatasetRef, DatasetWriter

# Measured at 10k subjects (62 MB of CSV, 1.45M phase-A rows), the ingest step alone, three
# alternating runs: held 4.6 s and 715 MB peak, spilled 5.5 s and 511 MB (the whole run's peak is
# a later step's, 874 vs 895 MB). Much beyond 10k the held rows would set the run's peak.
IN_MEMORY_BYTES = 96 << 20
IN_MEMORY_ROWS = 2_000_000

# Phase B's rows per group (all files) on the spilled path: a bucket larger than this is finished
# in groups of whole subjects, so phase B's memory is a group's whatever the cohort.
FINISH_GROUP_ROWS = 100_000

# Phase B's next scratch bucket is read on a thread while the current one is finished (parquet
# decoding releases the GIL): memory holds two buckets' rows instead of one.
PREFETCH = True


class Staging:
    """Phase A's rows per landing file (`add`, then `close` once the file is read), and after
    every file is closed, phase B's input per bucket (`groups`). `discard` on failure."""

    def __init__(self, scratch: str, buckets: int) -> None:
        self.scratch = scratch
        self.buckets = buckets
        self._held: dict[str, list[pd.DataFrame]] = {}  # file name -> frames, until a spill
        self._rows = 0
        self._bytes: dict[str, int] = {}
        self._spilled = False
        self._closed: list[str] = []
        self._writers: dict[str, DatasetWriter] = {}
        self._buffers: dict[str, BucketBuffer] = {}
        self._refs: dict[str, DatasetRef] = {}
        self._prefetch: ThreadPoolExecutor | None = None  # while the spilled groups are read

    def add(self, file_name: str, rows: pd.DataFrame, file_bytes: int) -> None:
        """One batch of a file's rows; `file_bytes` is the whole file's size."""
        self._bytes.setdefault(file_name, file_bytes)
        if not self._spilled and sum(self._bytes.values()) > IN_MEMORY_BYTES:
            self._spill()
        if self._spilled:
            self._buffer(file_name).add(rows)
            return
        self._held.setdefault(file_name, []).append(rows)
        self._rows += len(rows)
        if self._rows > IN_MEMORY_ROWS:
            self._spill()

    def close(self, file_name: str) -> None:
        """Every row of this file is added."""
        self._closed.append(file_name)
        if self._spilled:
            self._commit(file_name)

    def discard(self) -> None:
        if self._prefetch is not None:  # a read in progress ends before scratch is removed
            self._prefetch.shutdown(wait=True, cancel_futures=True)
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
        self._buffers.clear()
        self._held.clear()

    def groups(self) -> Iterator[tuple[int, dict[str, pd.DataFrame]]]:
        """(bucket, rows keyed by file name) for every bucket in order, each file's rows in line
        order. In memory: whole buckets. Spilled: a bucket up to FINISH_GROUP_ROWS rows whole, a
        larger one as disjoint groups of whole subjects (each scratch bucket is read once)."""
        if self._spilled:
            yield from self._spilled_groups()
            return
        from potato_assets.lib.lake.datasets import split_by_bucket

        by_bucket: dict[str, dict[int, pd.DataFrame]] = {}
        empty: dict[str, pd.DataFrame] = {}
        for name in self._closed:
            rows = _concat(self._held.pop(name))
            empty[name] = rows.iloc[:0]
            by_bucket[name] = dict(split_by_bucket(rows, self.buckets))
            del rows  # the buckets' frames are the only copy from here on
        for bucket in range(self.buckets):
            yield bucket, {name: by_bucket[name].pop(bucket, empty[name]) for name in self._closed}

    # -- the spilled path ------------------------------------------------------------------------

    def _spill(self) -> None:
        held, self._held = self._held, {}
        self._spilled = True
        for name, frames in held.items():
            for rows in frames:
                self._buffer(name).add(rows)
            if name in self._closed:
                self._commit(name)

    def _buffer(self, file_name: str) -> BucketBuffer:
        from potato_assets.lib.lake.datasets import BucketBuffer, DatasetWriter

        if file_name not in self._buffers:
            # Scratch: a crash discards it, so no fsync per part.
            root = f"{self.scratch}/{len(self._writers) + len(self._refs)}"
            self._writers[file_name] = DatasetWriter(root, self.buckets, durable=False)
            self._buffers[file_name] = BucketBuffer(self._writers[file_name])
        return self._buffers[file_name]

    def _commit(self, file_name: str) -> None:
        self._buffer(file_name).close()
        del self._buffers[file_name]
        self._refs[file_name] = self._writers.pop(file_name).commit()

    def _spilled_groups(self) -> Iterator[tuple[int, dict[str, pd.DataFrame]]]:
        refs = {name: self._refs[name] for name in self._closed}
        parts = [
            -(-sum(f.rows for ref in refs.values() for f in ref.bucket_files(bucket)) // FINISH_GROUP_ROWS)
            for bucket in range(self.buckets)
        ]

        def read(bucket: int) -> _Read:
            """The bucket's first group, and the readers of its other groups (none if it is whole).
            Text comes back Arrow-backed, as phase A typed it: no conversion in phase B."""
            if parts[bucket] <= 1:
                return {name: ref.read_bucket(bucket, arrow_strings=True) for name, ref in refs.items()}, {}
            readers = {
                name: ref.iter_bucket_parts(bucket, ref.columns, parts[bucket], arrow_strings=True)
                for name, ref in refs.items()
            }
            # The first next() reads the whole bucket, as Arrow: that is what is worth doing early.
            return {name: next(frames) for name, frames in readers.items()}, readers

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-prefetch") as pool:
            self._prefetch = pool
            ahead: Future[_Read] | None = pool.submit(read, 0)
            for bucket in range(self.buckets):
                assert ahead is not None
                first, readers = ahead.result()
                ahead = None  # the future would hold the first group
                following = bucket + 1 < self.buckets
                if following and PREFETCH:  # one bucket ahead: read while this one is finished
                    ahead = pool.submit(read, bucket + 1)
                yield bucket, first
                del first
                for _ in range(1, parts[bucket]):
                    yield bucket, {name: next(frames) for name, frames in readers.items()}
                del readers  # this bucket's Arrow tables go
                if following and not PREFETCH:
                    ahead = pool.submit(read, bucket + 1)
        self._prefetch = None


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    kept = [f for f in frames if len(f)] or frames[:1]  # empty frames would loosen the dtypes
    return kept[0].reset_index(drop=True) if len(kept) == 1 else pd.concat(kept, ignore_index=True)
