"""Reading and writing lake objects on local disk or S3 through universal-pathlib.

Writes are atomic: a reader sees the previous complete object or the new complete object, never
half of one. Locally that is a temporary sibling file, fsync, then os.replace; on S3 a PUT (or a
completed multipart upload) is already all-or-nothing, so the object is written in one call.

pandas and pyarrow are imported where tables are read or written: the landing sensor and the
definitions load use this module for paths and bytes only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath


def to_upath(uri: str) -> UPath:
    from upath import UPath

    return UPath(uri)


def join(base: str, *parts: str) -> str:
    """Join a storage URI and relative parts with '/', whatever the backend."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def write_bytes_atomic(path: UPath, data: bytes) -> None:
    if is_local(path):
        local = path.path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        _remove_orphaned_temps(local)
        tmp = os.path.join(os.path.dirname(local), f".{os.path.basename(local)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        path.write_bytes(data)


def _remove_orphaned_temps(local: str) -> None:
    """Delete temporary siblings left by a writer that was killed (its process is gone)."""
    folder, name = os.path.dirname(local), os.path.basename(local)
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_bytes(path: UPath) -> bytes:
    return path.read_bytes()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


class MissingColumns(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def read_parquet(path: UPath, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table at ``path``; only ``columns`` when given (a missing one is named)."""
    try:
        return read_parquet_bytes(path.read_bytes(), columns)
    except MissingColumns as exc:
        raise MissingColumns(f"{path}: {exc}") from None


def read_parquet_bytes(data: bytes, columns: Sequence[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    if columns is None:
        return pd.read_parquet(io.BytesIO(data))
    import pyarrow.parquet as pq

    buffer = io.BytesIO(data)
    present = set(pq.read_schema(buffer).names)
    missing = [c for c in columns if c not in present]
    if missing:
        raise MissingColumns(f"no column {', '.join(map(repr, missing))} (has {', '.join(sorted(present))})")
    buffer.seek(0)
    return pd.read_parquet(buffer, columns=list(columns))


def parquet_row_count(path: UPath) -> int:
    """Rows of the parquet table at ``path``, from its footer: no data page is read."""
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
