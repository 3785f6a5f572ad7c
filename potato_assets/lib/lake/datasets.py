"""Subject-bucketed, versioned parquet datasets in the lake (issue #16), on local disk or S3.

One dataset, e.g. ``{lake}/silver/weekly_features``::

    {root}/v-<version>/bucket=07/part-00000.parquet   hive style; the bucket is in the path only
    {root}/v-<version>/_manifest.json                 files (bucket, rows), schema, totals
    {root}/_current.json                              the pointer: which version is committed

A writer puts parts into a fresh version directory nobody reads, then the manifest, then the
pointer, written last and atomically (storage.write_bytes_atomic: temp + fsync + os.replace
locally, one PUT on S3). Readers resolve the pointer and read only the files its manifest lists,
so a half-written or killed version is invisible. After a commit every version other than the
new one and the one it replaces is deleted: a reader that resolved the pointer just before the
commit still finds its files. One writer per dataset at a time (the lake pool sees to that):
a commit removes the version directories of writers that died, and would remove a live one's.

A row's bucket is ``subject_id % buckets``. pyarrow and pandas are imported where data is read
or written: the definitions load imports this module for its names only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from potato_assets.lib.lake import storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

BUCKET_COL = "bucket"
# Asset metadata marking a table stored as such a dataset (lineage names it by its root folder).
LAYOUT_KEY = "lake/layout"
LAYOUT = "subject-bucketed dataset"
SUBJECT_COL = "subject_id"
POINTER_NAME = "_current.json"
MANIFEST_NAME = "_manifest.json"
VERSION_PREFIX = "v-"
FORMAT = 1
COMPRESSION = "zstd"
# Content versions are as long as the other tables' (lib/lake/data_version.py VERSION_LENGTH).
DATA_VERSION_LENGTH = 16
# Parts a writer hands to its thread before a further write waits: encoding and storing a part
# (GIL-free) overlaps the caller's next one, and memory holds at most this many parts more.
# 0 writes in the caller's thread.
WRITE_AHEAD = 2
_PART_PATH = re.compile(r"^bucket=(\d+)/part-(\d+)\.parquet$")


# Rows per frame of iter_bucket_groups: a 10k-subject cohort's silver table (120k rows) is one
# read, a large one's frames stay within a bucket's size, so what a reader holds does not grow
# with the cohort (gold at 100k: 250k-row frames held 60 MB more than one bucket at a time).
GROUP_ROWS = 150_000


class DatasetError(ValueError):
    """A pointer or manifest that cannot be used; the message names the file."""


class DatasetVersionGone(FileNotFoundError):
    """The version a reader holds was removed by later commits."""

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetWriteFailed(OSError):
    """A part or manifest could not be stored (disk full, the object store unreachable)."""

    def __str__(self) -> str:
        return str(self.args[0])


class SchemaMismatch(ValueError):
    """A part whose columns or types differ from the dataset's."""


# --- where a dataset lives ------------------------------------------------------------------------


class _Location:
    """A dataset root as a URI, its fsspec filesystem and the path that filesystem uses."""

    def __init__(self, uri: str, durable: bool = True) -> None:
        self.durable = durable
        upath = storage.to_upath(uri)
        self.uri = uri.rstrip("/")
        self.local = storage.is_local(upath)
        self.fs = upath.fs
        self.path = upath.path.rstrip("/")

    def uri_of(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def path_of(self, *parts: str) -> str:
        return "/".join([self.path, *(p.strip("/") for p in parts)])

    def read(self, *parts: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist."""
        path = self.path_of(*parts)
        if self.local:
            with open(path, "rb") as handle:
                return handle.read()
        return bytes(self.fs.cat_file(path))

    def write_atomic(self, data: bytes, *parts: str) -> None:
        uri = self.uri_of(*parts)
        try:
            storage.write_bytes_atomic(storage.to_upath(uri), data)
        except OSError:
            raise
        except Exception as exc:  # botocore's errors are not OSErrors
            raise DatasetWriteFailed(f"{uri}: the upload failed ({type(exc).__name__}: {exc})") from exc

    def write_part(self, data: Any, *parts: str) -> None:
        """A part file inside a version nobody reads yet: no temp name needed, but fsync'd so a
        committed manifest never names data still in the page cache only."""
        path = self.path_of(*parts)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        else:
            try:
                self.fs.pipe_file(path, bytes(data))
            except Exception as exc:  # botocore's errors are not OSErrors
                raise DatasetWriteFailed(
                    f"{self.uri_of(*parts)}: the upload failed ({type(exc).__name__}: {exc})"
                ) from exc

    def sync_dirs(self, *dirs: str) -> None:
        if not self.local or not self.durable:
            return
        for relative in dirs:
            fd = os.open(self.path_of(relative) if relative else self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def versions(self) -> list[str]:
        """Version directory names under the root."""
        if self.local:
            try:
                names = os.listdir(self.path)
            except FileNotFoundError:
                return []
        else:
            self.fs.invalidate_cache(self.path)
            try:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False)]
            except FileNotFoundError:
                return []
        return sorted(n for n in names if n.startswith(VERSION_PREFIX))

    def remove_tree(self, relative: str) -> None:
        path = self.path_of(relative)
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache(path)

    def arrow_filesystem(self) -> pafs.FileSystem:
        import pyarrow.fs as pafs

        if self.local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))


def _version_dir(version: str) -> str:
    return f"{VERSION_PREFIX}{version}"


def bucket_dir(bucket: int, buckets: int) -> str:
    """``bucket=07``: zero-padded to the width of the largest bucket (at least two digits)."""
    return f"{BUCKET_COL}={bucket:0{max(2, len(str(buckets - 1)))}d}"


# --- the committed version ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFile:
    bucket: int
    path: str  # relative to the version directory
    rows: int


@dataclass(frozen=True)
class DatasetRef:
    """One committed version of a dataset: what its manifest says, no data read."""

    root: str
    version: str
    buckets: int
    row_count: int
    files: tuple[DatasetFile, ...]
    schema: pa.Schema
    data_version: str
    created_at: str = ""
    _location: _Location = field(default=None, repr=False, compare=False, hash=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self._location is None:
            object.__setattr__(self, "_location", _Location(self.root))

    @property
    def version_uri(self) -> str:
        return self._location.uri_of(_version_dir(self.version))

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def bucket_files(self, bucket: int) -> list[DatasetFile]:
        self._check_bucket(bucket)
        return [f for f in self.files if f.bucket == bucket]

    def bucket_uris(self, bucket: int) -> list[str]:
        return [storage.join(self.version_uri, f.path) for f in self.bucket_files(bucket)]

    def read_bucket(
        self, bucket: int, columns: Sequence[str] | None = None, *, arrow_strings: bool = False
    ) -> pd.DataFrame:
        """The rows of one bucket (without the bucket column, unless asked for); an empty bucket
        gives an empty frame with the dataset's columns and dtypes. ``arrow_strings``: text as
        pandas' Arrow-backed strings rather than the stored pandas type (Python-backed strings)."""
        table = self._read_files(self.bucket_files(bucket), columns)
        return self._to_pandas(table, bucket, columns, arrow_strings)

    def iter_bucket_parts(
        self, bucket: int, columns: Sequence[str], parts: int, *, arrow_strings: bool = False
    ) -> Iterator[pd.DataFrame]:
        """A bucket as ``parts`` disjoint groups of whole subjects, part 0 first: part ``p`` holds
        the subjects whose ``(subject_id // buckets) % parts`` is ``p`` (ids in one bucket differ
        by multiples of the bucket count, so the groups are even), rows in their stored order.
        The bucket is read once, as Arrow, and grouped by one stable sort; only the part being
        handed over becomes pandas objects."""
        import numpy as np
        import pyarrow as pa

        if parts < 1:
            raise ValueError(f"parts must be at least 1, not {parts}")
        wanted = list(dict.fromkeys([*columns, SUBJECT_COL]))
        table = self._read_files(self.bucket_files(bucket), [c for c in wanted if c != BUCKET_COL])
        ids = table.column(SUBJECT_COL).to_numpy().astype("int64", copy=False)
        group = np.mod(np.floor_divide(ids, self.buckets), parts)
        order = np.argsort(group, kind="stable")
        table = table.take(pa.array(order))
        if SUBJECT_COL not in columns:
            table = table.drop_columns([SUBJECT_COL])
        bounds = np.searchsorted(group[order], np.arange(parts + 1))
        for part in range(parts):
            start, stop = int(bounds[part]), int(bounds[part + 1])
            yield self._to_pandas(table.slice(start, stop - start), bucket, columns, arrow_strings)

    def read_arrow(self, buckets: Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of some buckets as one Arrow table (engines scan it without pandas)."""
        for bucket in buckets:
            self._check_bucket(bucket)
        wanted = set(buckets)
        return self._read_files([f for f in self.files if f.bucket in wanted], columns)

    def iter_buckets(self, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
        """Every bucket in order, 0 .. buckets-1, empty ones included."""
        self._check_columns(columns)
        for bucket in range(self.buckets):
            yield bucket, self.read_bucket(bucket, columns)

    def iter_bucket_groups(
        self, columns: Sequence[str] | None = None, max_rows: int = GROUP_ROWS
    ) -> Iterator[pd.DataFrame]:
        """Frames of consecutive whole buckets (so of whole subjects) in bucket order, each up to
        ``max_rows`` rows by the manifest (a larger bucket alone): one scan per frame instead of
        one per bucket, whose setup (~10 ms) made a small table's 32 reads cost more than its
        rows. At least one frame, empty for an empty dataset."""
        self._check_columns(columns)
        sizes = [sum(f.rows for f in self.bucket_files(bucket)) for bucket in range(self.buckets)]
        for group in consecutive_bucket_groups(sizes, max_rows):
            files = [f for bucket in group for f in self.bucket_files(bucket)]
            yield self._to_pandas(self._read_files(files, columns), None, columns, files=files)

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The whole table, buckets in order (for small tables and tests)."""
        return self._to_pandas(self._read_files(list(self.files), columns), None, columns)

    def arrow_dataset(self) -> pads.Dataset:
        """A lazy pyarrow dataset over exactly the manifest's files, with the bucket column from
        the hive path; DuckDB scans it with projection and filter pushdown."""
        import pyarrow as pa
        import pyarrow.dataset as pads

        base = self._location.path_of(_version_dir(self.version))
        return pads.dataset(
            [f"{base}/{f.path}" for f in self.files],
            schema=self.schema.append(pa.field(BUCKET_COL, pa.int32())),
            format="parquet",
            filesystem=self._location.arrow_filesystem(),
            partitioning=pads.partitioning(pa.schema([(BUCKET_COL, pa.int32())]), flavor="hive"),
            partition_base_dir=base,
        )

    # -- reading

    def _check_bucket(self, bucket: int) -> None:
        if not isinstance(bucket, int) or not 0 <= bucket < self.buckets:
            raise ValueError(f"{self.root}: bucket {bucket!r} is not between 0 and {self.buckets - 1}")

    def _check_columns(self, columns: Sequence[str] | None) -> None:
        if columns is None:
            return
        present = set(self.schema.names) | {BUCKET_COL}
        missing = [c for c in columns if c not in present]
        if missing:
            raise storage.MissingColumns(
                f"{self.root} (version {self.version}): no column {', '.join(map(repr, missing))}"
                f" (has {', '.join(self.schema.names)})"
            )

    def _read_files(self, files: list[DatasetFile], columns: Sequence[str] | None) -> pa.Table:
        import pyarrow as pa

        self._check_columns(columns)
        wanted = None if columns is None else [c for c in columns if c != BUCKET_COL]
        schema = self.schema if wanted is None else pa.schema([self.schema.field(c) for c in wanted])
        if not files:
            return schema.with_metadata(self.schema.metadata).empty_table()
        counted = sum(f.rows for f in files)
        if wanted == []:  # only the bucket column: no file needs reading
            return pa.table([pa.nulls(counted)], names=["_"]).select([])
        import pyarrow.dataset as pads

        base = self._location.path_of(_version_dir(self.version))
        try:
            # One scan over the listed files (read in their order, several at a time): per-file
            # reads cost ~10 ms of setup each.
            table = pads.dataset(
                [f"{base}/{f.path}" for f in files],
                schema=self.schema,
                format="parquet",
                filesystem=self._location.arrow_filesystem(),
            ).to_table(columns=wanted)
        except FileNotFoundError:
            raise self._gone(files) from None
        if table.num_rows != counted:
            raise DatasetError(f"{self.version_uri}: the parts hold {table.num_rows} rows, the manifest says {counted}")
        return table

    def _gone(self, files: list[DatasetFile]) -> DatasetVersionGone:
        fs, base = self._location.fs, self._location.path_of(_version_dir(self.version))
        missing = next((f for f in files if not fs.exists(f"{base}/{f.path}")), files[0])
        try:
            now = current(self.root)
        except DatasetError:
            now = None
        if now is not None and now.version != self.version:
            why = f"later commits removed it (the current version is {now.version}); resolve the dataset again"
        else:
            why = "the file is missing although the manifest lists it"
        return DatasetVersionGone(f"{storage.join(self.version_uri, missing.path)}: {why}")

    def _to_pandas(
        self,
        table: pa.Table,
        bucket: int | None,
        columns: Sequence[str] | None,
        arrow_strings: bool = False,
        files: Sequence[DatasetFile] | None = None,
    ) -> pd.DataFrame:
        """``table`` as pandas; ``bucket`` (one bucket's rows) or ``files`` (the files it was read
        from, in order; default every file) say each row's bucket where the bucket column is asked."""
        import numpy as np
        import pyarrow as pa

        if columns is not None and BUCKET_COL in columns:
            if bucket is not None:
                values = pa.array(np.full(table.num_rows, bucket, dtype="int32"))
            else:
                read = self.files if files is None else files
                values = pa.array(np.repeat([f.bucket for f in read], [f.rows for f in read]).astype("int32"))
            table = table.append_column(BUCKET_COL, values)
        # Arrow-backed strings come without a Python object per value (a fraction of the time).
        frame = table.to_pandas(types_mapper=_arrow_string_type if arrow_strings else None)
        return frame if columns is None else frame[list(columns)]


def _arrow_string_type(kind: pa.DataType) -> Any:
    import pandas as pd
    import pyarrow as pa

    return pd.StringDtype("pyarrow") if kind in (pa.string(), pa.large_string()) else None


def current(root: str) -> DatasetRef | None:
    """The committed version of the dataset at ``root``; None when nothing was ever committed."""
    location = _Location(root)
    try:
        raw = location.read(POINTER_NAME)
    except FileNotFoundError:
        return None
    pointer_uri = location.uri_of(POINTER_NAME)
    pointer = _parse_json(raw, pointer_uri)
    _check_fields(pointer, pointer_uri, {"format": int, "version": str})
    _check_format(pointer, pointer_uri)
    version = pointer["version"]
    if not re.fullmatch(r"[0-9A-Za-z_-]+", version):
        raise DatasetError(f"{pointer_uri}: version {version!r} is not a version name")
    manifest_uri = location.uri_of(_version_dir(version), MANIFEST_NAME)
    try:
        raw_manifest = location.read(_version_dir(version), MANIFEST_NAME)
    except FileNotFoundError:
        raise DatasetError(f"{pointer_uri}: names version {version}, but {manifest_uri} does not exist") from None
    return _ref_from_manifest(location, _parse_json(raw_manifest, manifest_uri), manifest_uri, version)


def manifest_listing(raw: bytes, uri: str, version: str) -> tuple[list[str], dict[str, str]]:
    """A version's part paths (relative to the version directory) and its columns' arrow type
    names, from its manifest ``raw`` at ``uri``, checked without pyarrow: what a Spark job needs
    to read a dataset it was given by version (lib/engine/emr_job.py)."""
    manifest = _parse_json(raw, uri)
    _check_fields(manifest, uri, {"format": int, "version": str, "files": list, "columns": list})
    _check_format(manifest, uri)
    if manifest["version"] != version:
        raise DatasetError(f"{uri}: describes version {manifest['version']}, but version {version} was asked for")
    paths = []
    for i, entry in enumerate(manifest["files"]):
        if not isinstance(entry, dict) or not _PART_PATH.match(str(entry.get("path"))):
            raise DatasetError(f"{uri}: files[{i}] is not a part (bucket=NN/part-NNNNN.parquet)")
        paths.append(entry["path"])
    columns = {}
    for i, column in enumerate(manifest["columns"]):
        if (
            not isinstance(column, dict)
            or not isinstance(column.get("name"), str)
            or not isinstance(column.get("type"), str)
        ):
            raise DatasetError(f"{uri}: columns[{i}] is not an object with a name and a type")
        columns[column["name"]] = column["type"]
    return paths, columns


def _parse_json(raw: bytes, uri: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{uri}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{uri}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{uri}: expected a JSON object, found {type(value).__name__}")
    return value


_KIND_NAMES = {int: "a whole number", str: "a string", list: "a list"}


def _check_fields(doc: dict[str, Any], uri: str, fields: dict[str, type], where: str = "") -> None:
    for name, kind in fields.items():
        if name not in doc:
            raise DatasetError(f"{uri}: field {where + name!r} is missing")
        value: Any = doc[name]
        # bool is an int to Python, never to a manifest
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DatasetError(f"{uri}: field {where + name!r} is {value!r}, not {_KIND_NAMES[kind]}")
        if isinstance(value, int) and value < 0:
            raise DatasetError(f"{uri}: field {where + name!r} is {value}, a negative number")


def _check_format(doc: dict[str, Any], uri: str) -> None:
    if doc["format"] != FORMAT:
        raise DatasetError(f"{uri}: format {doc['format']} is not the one this code reads ({FORMAT})")


def _ref_from_manifest(location: _Location, manifest: dict[str, Any], uri: str, version: str) -> DatasetRef:
    import pyarrow as pa

    _check_fields(
        manifest,
        uri,
        {
            "format": int,
            "version": str,
            "buckets": int,
            "row_count": int,
            "data_version": str,
            "created_at": str,
            "schema": str,
            "files": list,
        },
    )
    _check_format(manifest, uri)
    if manifest["version"] != version:
        raise DatasetError(f"{uri}: describes version {manifest['version']}, but sits in version {version}")
    buckets = manifest["buckets"]
    if buckets < 1:
        raise DatasetError(f"{uri}: field 'buckets' is {buckets}, at least 1 is needed")
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"], validate=True)))
    except (ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{uri}: field 'schema' is not a serialised arrow schema ({exc})") from None
    files = []
    for i, entry in enumerate(manifest["files"]):
        # Fast path first (thousands of entries): the checks below only run to word a message.
        try:
            bucket, path, rows = entry["bucket"], entry["path"], entry["rows"]
            match = _PART_PATH.match(path)
            well_formed = type(bucket) is int and type(rows) is int and rows >= 0 and match is not None
        except (TypeError, KeyError):
            well_formed = False
        if not well_formed:
            if not isinstance(entry, dict):
                raise DatasetError(f"{uri}: files[{i}] is {entry!r}, not an object")
            _check_fields(entry, uri, {"bucket": int, "path": str, "rows": int}, f"files[{i}].")
        if not well_formed or match is None or int(match.group(1)) != bucket or bucket >= buckets:
            raise DatasetError(
                f"{uri}: files[{i}] path {entry['path']!r} is not a part of bucket {entry['bucket']}"
                f" (bucket=NN/part-NNNNN.parquet, NN below {buckets})"
            )
        files.append(DatasetFile(bucket, path, rows))
    total = sum(f.rows for f in files)
    if total != manifest["row_count"]:
        raise DatasetError(f"{uri}: field 'row_count' is {manifest['row_count']}, but its files hold {total} rows")
    return DatasetRef(
        root=location.uri,
        version=version,
        buckets=buckets,
        row_count=total,
        files=tuple(files),
        schema=schema,
        data_version=manifest["data_version"],
        created_at=manifest["created_at"],
        _location=location,
    )


# --- buckets -----------------------------------------------------------------------------------------


def consecutive_bucket_groups(sizes: Sequence[int], max_rows: int) -> list[list[int]]:
    """Buckets 0, 1, ... (``sizes[b]`` rows each) grouped in order so that each group's rows stay
    within ``max_rows`` (a larger bucket is a group of its own). Empty buckets ride along with
    their neighbours: every group has rows, unless all buckets are empty (then one group)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for bucket, n in enumerate(sizes):
        if total and total + n > max_rows:
            groups.append(current)
            current, total = [], 0
        current.append(bucket)
        total += n
    if groups and not total:
        groups[-1] += current  # trailing empty buckets
    else:
        groups.append(current)
    return groups


def bucket_of(subject_ids: Any, buckets: int) -> Any:
    """Each subject's bucket, ``subject_id % buckets`` (non-negative), as a numpy int array."""
    import numpy as np

    ids = np.asarray(subject_ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{SUBJECT_COL} must be whole numbers to choose a bucket, not {ids.dtype}")
    return np.mod(ids.astype("int64", copy=False), buckets)


def split_by_bucket(df: pd.DataFrame | pa.Table, buckets: int) -> Iterator[tuple[int, Any]]:
    """(bucket, rows) for each non-empty bucket in order, rows in their original order, without a
    bucket column; a pandas frame gives frames, an Arrow table tables."""
    _check_bucket_count(buckets)
    import pyarrow as pa

    if isinstance(df, pa.Table):
        yield from _split_arrow(df, buckets)
        return
    if SUBJECT_COL not in df.columns:
        raise ValueError(f"a bucketed table needs a {SUBJECT_COL!r} column (has {', '.join(map(str, df.columns))})")
    ids = df[SUBJECT_COL]
    if ids.isna().any():
        raise ValueError(f"{int(ids.isna().sum())} rows have no {SUBJECT_COL}; every bucketed row needs one")
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_integer_dtype(ids):
        raise ValueError(f"{SUBJECT_COL} must be whole numbers to choose a bucket, not {ids.dtype}")
    frame = df.drop(columns=[BUCKET_COL]) if BUCKET_COL in df.columns else df
    keys = bucket_of(ids.to_numpy(dtype="int64"), buckets)
    order = np.argsort(keys, kind="stable")  # stable: rows keep their order inside a bucket
    found, starts = np.unique(keys[order], return_index=True)
    if not len(order):
        return
    ends = [*starts[1:], len(order)]
    for bucket, start, end in zip(found, starts, ends, strict=True):
        yield int(bucket), frame.iloc[order[start:end]]


def _bucket_ranges(table: pa.Table, buckets: int) -> tuple[Any, list[tuple[int, int, int]]]:
    """The row order that groups an Arrow table by bucket (rows keep their order inside one),
    and (bucket, start, end) of each non-empty bucket in it; every row needs a whole-number
    subject_id."""
    import numpy as np
    import pyarrow as pa

    if SUBJECT_COL not in table.column_names:
        raise ValueError(f"a bucketed table needs a {SUBJECT_COL!r} column (has {', '.join(table.column_names)})")
    ids = table.column(SUBJECT_COL)
    if ids.null_count:
        raise ValueError(f"{ids.null_count} rows have no {SUBJECT_COL}; every bucketed row needs one")
    if not pa.types.is_integer(ids.type):
        raise ValueError(f"{SUBJECT_COL} must be whole numbers to choose a bucket, not {ids.type}")
    keys = bucket_of(ids.to_numpy(), buckets)
    order = np.argsort(keys, kind="stable")
    found, starts = np.unique(keys[order], return_index=True)
    ends = [*starts[1:], len(order)]
    return order, [(int(b), int(s), int(e)) for b, s, e in zip(found, starts, ends, strict=True)]


def _bucket_indices(table: pa.Table, buckets: int) -> Iterator[tuple[int, pa.Array]]:
    """(bucket, the row numbers of its rows in order) for each non-empty bucket."""
    import pyarrow as pa

    order, ranges = _bucket_ranges(table, buckets)
    for bucket, start, end in ranges:
        yield bucket, pa.array(order[start:end])


def _split_arrow(table: pa.Table, buckets: int) -> Iterator[tuple[int, pa.Table]]:
    import pyarrow as pa

    if BUCKET_COL in table.column_names:
        table = table.drop_columns([BUCKET_COL])
    order, ranges = _bucket_ranges(table, buckets)
    if not ranges:
        return
    ordered = table.take(pa.array(order))
    for bucket, start, end in ranges:
        yield bucket, ordered.slice(start, end - start)


def _check_bucket_count(buckets: Any) -> None:
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise ValueError(f"the bucket count must be a whole number of at least 1, not {buckets!r}")


# --- writing -----------------------------------------------------------------------------------------


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Text-like columns, whose values repeat (categories, codes). Numbers are left plain: trying
    a dictionary on measurements tripled the write time and made the files larger."""
    import pyarrow as pa

    def wanted(kind: pa.DataType) -> bool:
        return (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_dictionary(kind)
            or pa.types.is_boolean(kind)
        )

    return [f.name for f in schema if wanted(f.type)]


def _schema_problems(expected: pa.Schema, got: pa.Schema) -> str:
    """What keeps a part written elsewhere from reading as the dataset's schema ('' if nothing):
    the same columns in the same order; integers may be narrower and times of another unit
    (the scan casts them), any other type must match."""
    import pyarrow as pa

    if got.names != expected.names:
        return f"its columns are {', '.join(got.names)}; the dataset's are {', '.join(expected.names)}"
    problems = []
    for want, have in zip(expected, got, strict=True):
        same = have.type == want.type
        widened = pa.types.is_integer(want.type) and pa.types.is_integer(have.type)
        retimed = pa.types.is_timestamp(want.type) and pa.types.is_timestamp(have.type) and have.type.tz == want.type.tz
        if not (same or widened or retimed):
            problems.append(f"column {want.name!r} is {have.type}, the dataset's is {want.type}")
    return "; ".join(problems)


def _file_sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _encode_part(arrow: pa.Table) -> pa.Buffer:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    # Same rows, same bytes (no timestamps in the file): content hashes are stable. Times are
    # stored in microseconds: Spark and Athena refuse parquet's nanosecond timestamps, and
    # readers get the manifest's types back (the scan casts to its schema).
    pq.write_table(
        arrow,
        sink,
        compression=COMPRESSION,
        use_dictionary=_dictionary_columns(arrow.schema),
        coerce_timestamps="us",
    )
    return sink.getvalue()


def _store_part(location: _Location, version_dir: str, relative: str, arrow: pa.Table) -> str:
    """Encode, store and hash one part (on a writer's thread, or the caller's); its sha256."""
    data = _encode_part(arrow)
    location.write_part(data, version_dir, relative)
    return hashlib.sha256(data).hexdigest()


def _store_part_in_turn(failed: threading.Event, *args: Any) -> str:
    """_store_part on a writer's thread; once a part failed the later ones are not tried: the
    version is aborted when the failure surfaces, and each try may wait out the store's retries."""
    if failed.is_set():
        raise DatasetWriteFailed("an earlier part of this version failed")  # never surfaces: FIFO
    try:
        return _store_part(*args)
    except BaseException:
        failed.set()
        raise


def new_version_id() -> str:
    """Sorts by creation time (UTC, microseconds), unique across processes."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


class DatasetWriter:
    """Writes one new version of the dataset at ``root``, bucket by bucket.

    ``schema`` fixes the columns up front; otherwise the first part written (even an empty one)
    does. Parts are cast to it when that loses nothing (e.g. a column that is all null in one
    batch); any other difference is refused with a plain message.

    ``write`` checks a part and names it in the caller's thread, then hands it to the writer's
    own thread, which encodes, stores and hashes the parts in order, at most ``write_ahead`` at
    a time. A part that could not be stored is raised by the next ``write``, ``adopt`` or
    ``commit`` that finds it failed (at the latest ``commit``), and the version is aborted.
    The tables handed over are encoded later: do not change a frame in place after writing it
    (numeric columns may share its memory).
    """

    def __init__(
        self,
        root: str,
        buckets: int,
        *,
        schema: pa.Schema | None = None,
        durable: bool = True,
        write_ahead: int | None = None,
    ) -> None:
        """``durable=False`` skips fsync: for scratch datasets a crash throws away anyway.
        ``write_ahead`` parts in flight (default WRITE_AHEAD); 0 writes in the caller's thread."""
        _check_bucket_count(buckets)
        self.write_ahead = WRITE_AHEAD if write_ahead is None else write_ahead
        if self.write_ahead < 0:
            raise ValueError(f"write_ahead must be 0 or more, not {write_ahead!r}")
        self.root = root.rstrip("/")
        self.buckets = buckets
        self.version = new_version_id()
        self._location = _Location(self.root, durable)
        self._schema = schema
        self._files: list[DatasetFile] = []
        self._hashes: list[str] = []  # one per file, in the same order; "" while in flight
        self._parts_per_bucket = [0] * buckets
        self._state = "open"
        # Started at the first part, shut down by commit or abort.
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: deque[tuple[int, Future[str]]] = deque()  # (index in _files, its hash)
        self._part_failed = threading.Event()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._state == "open":
            self.abort()

    @property
    def version_uri(self) -> str:
        return self._location.uri_of(_version_dir(self.version))

    @property
    def rows_written(self) -> int:
        return sum(f.rows for f in self._files)

    def write(self, bucket: int, table: pd.DataFrame | pa.Table) -> None:
        """Append one part to ``bucket``; an empty table only fixes the schema (no file)."""
        self._check_open()
        if not isinstance(bucket, int) or isinstance(bucket, bool) or not 0 <= bucket < self.buckets:
            raise ValueError(f"{self.root}: bucket {bucket!r} is not between 0 and {self.buckets - 1}")
        self._collect(wait_for=len(self._in_flight))  # an earlier part's failure surfaces here
        arrow = self._conform(self._to_arrow(table, bucket), bucket)
        self._check_subjects(arrow, bucket)
        if arrow.num_rows == 0:
            return
        relative = f"{bucket_dir(bucket, self.buckets)}/part-{self._parts_per_bucket[bucket]:05d}.parquet"
        version_dir = _version_dir(self.version)
        if self.write_ahead == 0:
            try:
                digest = _store_part(self._location, version_dir, relative, arrow)
            except BaseException:
                self.abort()
                raise
        else:
            self._collect(wait_for=self.write_ahead - 1)  # the bound: a slow store makes us wait
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-writer")
            # The thread gets the arguments, not the writer: an unclosed writer can be collected.
            args = (self._location, version_dir, relative, arrow)
            future = self._pool.submit(_store_part_in_turn, self._part_failed, *args)
            self._in_flight.append((len(self._files), future))
            digest = ""  # filled in by _collect
        self._parts_per_bucket[bucket] += 1
        self._files.append(DatasetFile(bucket, relative, arrow.num_rows))
        self._hashes.append(digest)

    def flush(self) -> None:
        """Wait until every part handed over is stored; raises one that failed, as it was."""
        self._check_open()
        self._collect(wait_for=0)

    def staging_uri(self, name: str) -> str:
        """A folder inside this version for another engine to write parts into (see adopt):
        invisible to readers, and removed with the version if it is aborted."""
        return self._location.uri_of(_version_dir(self.version), f"_staging-{name}")

    def adopt(self, staging_uri: str) -> int:
        """Take the parquet files an engine wrote hive-style under ``staging_uri``
        (``bucket=N/<any name>.parquet``, e.g. Spark's ``partitionBy("bucket")``) as this
        version's parts, without reading their rows: each is checked against the dataset's
        schema from its footer, moved into place and hashed as it is. Returns the rows taken."""
        self.flush()  # a failed part surfaces before any is moved
        if self._schema is None:
            raise ValueError(f"{self.root}: a writer adopting parts needs the dataset's schema up front")
        import pyarrow.parquet as pq

        fs, staging = self._location.fs, storage.to_upath(staging_uri).path.rstrip("/")
        prefix = self._location.path_of(_version_dir(self.version))
        if not staging.startswith(prefix + "/"):
            raise ValueError(f"{staging_uri}: parts to adopt must be staged inside the version ({self.version_uri})")
        found = []
        for path in sorted(fs.find(staging)) if fs.exists(staging) else []:
            relative = path[len(staging) + 1 :]
            name = relative.rsplit("/", 1)[-1]
            if name.startswith(("_", ".")) or not name.endswith(".parquet"):
                continue  # _SUCCESS, checksums, commit markers
            match = re.fullmatch(rf"{BUCKET_COL}=(\d+)/[^/]+", relative)
            if match is None or not 0 <= int(match[1]) < self.buckets:
                raise ValueError(f"{staging_uri}/{relative}: not a part of one of buckets 0..{self.buckets - 1}")
            found.append((int(match[1]), path))
        taken = 0
        for bucket, path in found:
            with fs.open(path, "rb") as handle:
                metadata = pq.ParquetFile(handle).metadata
                problems = _schema_problems(self._schema, metadata.schema.to_arrow_schema())
            if problems:
                raise SchemaMismatch(f"{self.root}: the part {path} does not match the dataset's schema: {problems}")
            relative = f"{bucket_dir(bucket, self.buckets)}/part-{self._parts_per_bucket[bucket]:05d}.parquet"
            target = self._location.path_of(_version_dir(self.version), relative)
            if self._location.local:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.mv(path, target)
            self._parts_per_bucket[bucket] += 1
            self._files.append(DatasetFile(bucket, relative, metadata.num_rows))
            self._hashes.append(_file_sha256(fs, target))
            taken += metadata.num_rows
        self._location.remove_tree(staging[len(self._location.path) + 1 :])
        return taken

    def write_table(self, df: pd.DataFrame) -> None:
        """Rows of any buckets: split by subject_id and written one part per bucket present."""
        wrote = False
        for bucket, rows in split_by_bucket(df, self.buckets):
            self.write(bucket, rows)
            wrote = True
        if not wrote:
            self.write(0, df.drop(columns=[BUCKET_COL]) if BUCKET_COL in df.columns else df)

    def commit(self, data_version: str | None = None) -> DatasetRef:
        """Manifest, then the pointer (atomic); then older versions go, the previous one stays."""
        self.flush()
        self._stop_thread()
        if self._schema is None:
            raise ValueError(f"{self.root}: nothing was written and no schema was given, so there is nothing to commit")
        files = sorted(self._files, key=lambda f: (f.bucket, f.path))
        hashes = dict(zip((f.path for f in self._files), self._hashes, strict=True))
        version_dir = _version_dir(self.version)
        if data_version is None:
            data_version = self._content_version(files, hashes)
        manifest = {
            "format": FORMAT,
            "version": self.version,
            "buckets": self.buckets,
            "row_count": sum(f.rows for f in files),
            "data_version": data_version,
            "created_at": datetime.now(UTC).isoformat(),
            "columns": [{"name": f.name, "type": str(f.type)} for f in self._schema],
            "schema": base64.b64encode(self._schema.serialize().to_pybytes()).decode("ascii"),
            "files": [{"bucket": f.bucket, "path": f.path, "rows": f.rows, "sha256": hashes[f.path]} for f in files],
        }
        previous = self._previous_version()
        try:
            self._location.sync_dirs(*sorted({f"{version_dir}/{f.path.split('/')[0]}" for f in files}))
            self._location.write_atomic(json.dumps(manifest, indent=1).encode(), version_dir, MANIFEST_NAME)
            self._location.sync_dirs(version_dir, "")
        except BaseException:
            self.abort()
            raise
        pointer = {"format": FORMAT, "version": self.version, "committed_at": manifest["created_at"]}
        try:
            self._location.write_atomic(json.dumps(pointer, indent=1).encode(), POINTER_NAME)
        except BaseException:
            # An S3 PUT may have landed although its answer was lost: keep the files (the next
            # commit removes them if the pointer does not name them).
            self._state = "failed"
            raise
        self._state = "committed"
        self._collect_garbage(keep={version_dir, *([_version_dir(previous)] if previous else [])})
        ref = current(self.root)
        if ref is None or ref.version != self.version:
            raise DatasetError(f"{self._location.uri_of(POINTER_NAME)}: does not name the version just committed")
        return ref

    def abort(self) -> None:
        """Forget this version: its files are deleted best-effort, the pointer is never touched."""
        if self._state != "open":
            return
        self._state = "aborted"
        # The part being stored finishes (or fails) first: a late one would recreate files after
        # the removal. Later ones are not tried.
        self._part_failed.set()
        self._stop_thread()
        with contextlib.suppress(Exception):  # best-effort: the next commit removes what is left
            self._location.remove_tree(_version_dir(self.version))

    # -- internals

    def _collect(self, wait_for: int) -> None:
        """Take the hashes of the parts stored so far, waiting until at most ``wait_for`` are in
        flight; a part that failed aborts the version and is raised as it was."""
        while self._in_flight:
            index, future = self._in_flight[0]
            if len(self._in_flight) <= wait_for and not future.done():
                return
            try:
                self._hashes[index] = future.result()
            except BaseException:
                self.abort()
                raise
            self._in_flight.popleft()

    def _stop_thread(self) -> None:
        """End the writer's thread once the part it is storing is done; parts not yet started are
        dropped (commit has none left; abort wants none)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight.clear()

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.root}: this writer was {self._state}; start a new one")

    def _to_arrow(self, table: pd.DataFrame | pa.Table, bucket: int) -> pa.Table:
        import pandas as pd
        import pyarrow as pa

        if isinstance(table, pd.DataFrame):
            # Threads cost more than they save on a part of a batch (thousands of rows).
            arrow = pa.Table.from_pandas(table, preserve_index=False, nthreads=1 if len(table) < 200_000 else None)
        elif isinstance(table, pa.Table):
            arrow = table
        else:
            raise TypeError(f"{self.root}: a part is a pandas DataFrame or a pyarrow Table, not {type(table).__name__}")
        if BUCKET_COL in arrow.column_names:
            import pyarrow.compute as pc

            values = arrow.column(BUCKET_COL)
            if values.null_count or (len(values) and not pc.all(pc.equal(values, bucket)).as_py()):
                raise ValueError(
                    f"{self.root}: a part written to bucket {bucket} has other values in its bucket column"
                )
            arrow = arrow.drop_columns([BUCKET_COL])
        return arrow

    def _conform(self, arrow: pa.Table, bucket: int) -> pa.Table:
        import pyarrow as pa

        if self._schema is None:
            self._schema = arrow.schema
            return arrow
        schema = self._schema
        if arrow.schema.equals(schema, check_metadata=False):
            return arrow
        theirs = {f.name: f.type for f in arrow.schema}
        problems = [f"column {f.name!r} is missing" for f in schema if f.name not in theirs]
        problems += [f"column {name!r} is not in the dataset" for name in theirs if name not in schema.names]
        for f in schema:
            got = theirs.get(f.name)
            if got is not None and got != f.type and not pa.types.is_null(got):
                problems.append(f"column {f.name!r} is {got}, the dataset's is {f.type}")
        if problems:
            raise SchemaMismatch(
                f"{self.root}: the part written to bucket {bucket} does not match the dataset's schema: "
                + "; ".join(problems)
            )
        # Same columns, perhaps reordered, perhaps an all-null batch: nothing is lost.
        return arrow.select(schema.names).cast(schema)

    def _check_subjects(self, arrow: pa.Table, bucket: int) -> None:
        if SUBJECT_COL not in arrow.column_names or arrow.num_rows == 0:
            return
        import pyarrow as pa

        ids = arrow.column(SUBJECT_COL)
        if not pa.types.is_integer(ids.type):
            return  # not a subject number (e.g. raw text): the caller chose the bucket
        if ids.null_count:
            raise ValueError(f"{self.root}: {ids.null_count} rows written to bucket {bucket} have no {SUBJECT_COL}")
        keys = bucket_of(ids.to_numpy(), self.buckets)
        wrong = keys != bucket
        if wrong.any():
            subject = int(ids.to_numpy()[wrong.argmax()])
            raise ValueError(
                f"{self.root}: {int(wrong.sum())} rows written to bucket {bucket} belong elsewhere"
                f" (subject {subject} is in bucket {subject % self.buckets} of {self.buckets})"
            )

    def _content_version(self, files: list[DatasetFile], hashes: dict[str, str]) -> str:
        assert self._schema is not None
        digest = hashlib.sha256(f"buckets={self.buckets}\x1e".encode())
        for f in self._schema:
            digest.update(f"{f.name}\x1f{f.type}\x1e".encode())
        for f in files:
            digest.update(f"{f.bucket}\x1f{f.rows}\x1f{hashes[f.path]}\x1e".encode())
        return digest.hexdigest()[:DATA_VERSION_LENGTH]

    def _previous_version(self) -> str | None:
        try:
            ref = current(self.root)
        except DatasetError:
            return None  # a broken pointer is replaced; nothing it named is readable anyway
        return ref.version if ref else None

    def _collect_garbage(self, keep: set[str]) -> None:
        with contextlib.suppress(Exception):  # the commit stands; the next one retries
            for name in self._location.versions():
                if name not in keep:
                    self._location.remove_tree(name)


class BucketBuffer:
    """Rows of any buckets gathered per bucket and written as parts of ``rows_per_part`` rows or
    more: a stream of small batches becomes a few large parts instead of one tiny part per batch
    and bucket (each part costs a file, a footer and a manifest entry). At most ``max_rows`` are
    held in all: beyond that the largest buckets are written early, so memory does not grow with
    the bucket count or the cohort."""

    def __init__(self, writer: DatasetWriter, rows_per_part: int = 200_000, max_rows: int = 500_000) -> None:
        self.writer = writer
        self.rows_per_part = rows_per_part
        self.max_rows = max_rows
        self._pending: dict[int, list[pa.Table]] = {}
        self._rows: dict[int, int] = {}
        self._held = 0
        self._empty: pd.DataFrame | None = None

    def add(self, df: pd.DataFrame) -> None:
        if not len(df):
            self._empty = df
            return
        import pyarrow as pa

        # One conversion per batch, then Arrow takes per bucket: pandas' per-bucket iloc, concat
        # and per-part conversion cost several times as much. A take copies its rows, so a held
        # bucket pins only its own rows, not the whole batch.
        table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
        for bucket, indices in _bucket_indices(table, self.writer.buckets):
            rows = table.take(indices)
            self._pending.setdefault(bucket, []).append(rows)
            self._rows[bucket] = self._rows.get(bucket, 0) + rows.num_rows
            self._held += rows.num_rows
            if self._rows[bucket] >= self.rows_per_part:
                self._flush(bucket)
        if self._held > self.max_rows:
            # Largest first, down to half the budget: a few larger parts rather than many tiny.
            for bucket in sorted(self._rows, key=self._rows.__getitem__, reverse=True):
                if self._held <= self.max_rows // 2:
                    break
                self._flush(bucket)

    def close(self) -> None:
        """Write what is left; a stream with no rows at all still fixes the schema."""
        for bucket in sorted(self._pending):
            self._flush(bucket)
        if self.writer.rows_written == 0 and self._empty is not None:
            self.writer.write(0, self._empty)

    def _flush(self, bucket: int) -> None:
        import pyarrow as pa

        parts = self._pending.pop(bucket, [])
        self._held -= self._rows.pop(bucket, 0)
        if parts:
            # "default" promotes a column that was all null in one batch to the others' type.
            self.writer.write(
                bucket, parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
            )
