"""What arrived in the landing zone since the last look: list, fingerprint, and decide.

Plain functions, no Dagster: the landing sensor (defs/automation.py) calls `scan` once per tick
and stores `LandingCursor.to_json()` as its cursor.

A file's fingerprint is its S3 ETag, or the sha256 of a local file's bytes (recomputed only when
its size or modification time moved). A file counts as settled once two consecutive looks saw
the same size and fingerprint: a file still being copied waits for the next tick.

A settled file's content version (sha256[:16], the data version `observe_landing` gives) is
recorded once per change: `new_content_versions` reads an object store file only when its
fingerprint moved (on disk the fingerprint already is the sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from potato_assets.lib.lake import storage
from potato_assets.settings import DEFAULT_MAX_LANDING_BYTES

# 2: local fingerprints shortened to sha256[:16] (the content version's length).
CURSOR_VERSION = 2
# How a refused study file appears among the sensor's ignored names.
REFUSED_MARK = " (refused: "
CHUNK_BYTES = 1 << 20


class LandingRefused(ValueError):
    """A landing file that is not read at all (not a regular file, outside the zone, too large);
    the message is one sentence naming it and says nothing of its content."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _too_large(name: str, size: int | str, max_bytes: int) -> LandingRefused:
    return LandingRefused(
        f"{name} is larger than the {max_bytes:,}-byte limit for a landing file ({size} bytes; "
        "POTATO_MAX_LANDING_BYTES); it was not read."
    )


def _local_target(root: str, name: str) -> str:
    """The path to open for `name`: the file itself, or the target of a link that stays inside
    the landing folder. Refuses anything else before it is opened (lstat, no read)."""
    path = os.path.join(root, name)
    mode = os.lstat(path).st_mode  # FileNotFoundError propagates: the caller says "not found"
    if stat.S_ISLNK(mode):
        real, zone = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, zone]) != zone:
            raise LandingRefused(f"{name} is a symbolic link that resolves outside the landing zone; it was not read.")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise LandingRefused(f"{name} is a symbolic link to nothing (its target does not exist).") from None
        path = real
    if not stat.S_ISREG(mode):
        raise LandingRefused(f"{name} in the landing zone is {_kind(mode)}, not a regular file; it was not read.")
    return path


def _local_chunks(root: str, name: str, max_bytes: int) -> Iterator[bytes]:
    path = _local_target(root, name)
    # O_NONBLOCK: a FIFO swapped in after the check cannot block the open; O_NOFOLLOW: nor a link.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LandingRefused(
                f"{name} in the landing zone is {_kind(info.st_mode)}, not a regular file; it was not read."
            )
        if info.st_size > max_bytes:
            raise _too_large(name, f"{info.st_size:,}", max_bytes)
        total = 0
        while chunk := os.read(fd, CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise _too_large(name, f"more than {max_bytes:,}", max_bytes)
            yield chunk
    finally:
        os.close(fd)


def _remote_chunks(landing_uri: str, name: str, max_bytes: int) -> Iterator[bytes]:
    path = storage.to_upath(storage.join(landing_uri, name))
    info = path.fs.info(path.path)  # FileNotFoundError propagates
    if info.get("type") != "file":
        raise LandingRefused(
            f"{name} in the landing zone is a {info.get('type', 'non-file')} object, not a file; it was not read."
        )
    if int(info.get("size") or 0) > max_bytes:
        raise _too_large(name, f"{int(info['size']):,}", max_bytes)
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(name, f"more than {max_bytes:,}", max_bytes)
            yield chunk


def landing_chunks(landing_uri: str, name: str, max_bytes: int = DEFAULT_MAX_LANDING_BYTES) -> Iterator[bytes]:
    """The bytes of landing file `name`, in chunks, read only if it is a regular file inside the
    landing zone (a link may point within it) and at most `max_bytes` long. Raises
    LandingRefused otherwise, FileNotFoundError when there is no such file."""
    if "/" in name or name in ("", ".", ".."):
        raise LandingRefused(f"{name!r} is not a file name inside the landing zone.")
    root = storage.to_upath(landing_uri)
    if storage.is_local(root):
        return _local_chunks(root.path, name, max_bytes)
    return _remote_chunks(landing_uri, name, max_bytes)


def read_landing_bytes(landing_uri: str, name: str, max_bytes: int = DEFAULT_MAX_LANDING_BYTES) -> bytes:
    return b"".join(landing_chunks(landing_uri, name, max_bytes))


def check_landing_file(landing_uri: str, name: str) -> None:
    """Refuse (LandingRefused) a local landing entry that is not a regular file inside the zone,
    from its metadata alone; object stores hold only objects."""
    root = storage.to_upath(landing_uri)
    if storage.is_local(root):
        _local_target(root.path, name)


@dataclass(frozen=True)
class LandingObject:
    """One file as listed: name inside the landing zone, size in bytes, and what identifies it."""

    name: str
    uri: str
    size: int
    modified: float | None
    etag: str | None = None


@dataclass(frozen=True)
class Seen:
    size: int
    modified: float | None
    fingerprint: str

    def same_content_as(self, other: Seen | None) -> bool:
        return other is not None and (self.size, self.fingerprint) == (
            other.size,
            other.fingerprint,
        )


@dataclass
class LandingCursor:
    # What the previous tick saw, per file name.
    seen: dict[str, Seen] = field(default_factory=dict)
    # The fingerprints the last requested run ingested, per file name.
    ingested: dict[str, str] = field(default_factory=dict)
    # The last content version recorded per file name, with the fingerprint it was taken at.
    versions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "seen": {n: [s.size, s.modified, s.fingerprint] for n, s in sorted(self.seen.items())},
                "ingested": dict(sorted(self.ingested.items())),
                "versions": {n: list(v) for n, v in sorted(self.versions.items())},
            },
            # Spaces after separators: the sensor page wraps the cursor there instead of overflowing.
        )

    @classmethod
    def from_json(cls, raw: str | None) -> LandingCursor:
        """An empty or unreadable cursor (first tick, reset, older format) starts from nothing."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            if data.get("v") != CURSOR_VERSION:
                return cls()
            seen = {n: Seen(int(v[0]), v[1], str(v[2])) for n, v in data["seen"].items()}
            # "versions" came later: a cursor without it records each file's version once more.
            versions = {n: (str(v[0]), str(v[1])) for n, v in data.get("versions", {}).items()}
            return cls(seen=seen, ingested={n: str(f) for n, f in data["ingested"].items()}, versions=versions)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return cls()


@dataclass(frozen=True)
class ScanDecision:
    request: bool
    # Required files whose settled fingerprint differs from what was last ingested.
    changed: tuple[str, ...]
    # Required files still changing between two looks (or seen for the first time).
    waiting: tuple[str, ...]
    missing: tuple[str, ...]
    # CSVs in the landing zone that are not study files.
    ignored: tuple[str, ...]
    cursor: LandingCursor
    run_key: str | None = None

    def reason(self) -> str:
        """Why this tick requests nothing, in one sentence."""
        parts = []
        refused = [i for i in self.ignored if REFUSED_MARK in i]
        others = [i for i in self.ignored if REFUSED_MARK not in i]
        refused_names = {i.split(REFUSED_MARK, 1)[0] for i in refused}
        absent = [n for n in self.missing if n not in refused_names]
        if absent:
            parts.append("waiting for " + ", ".join(absent) + " (not in the landing zone yet)")
        if self.waiting:
            parts.append(", ".join(self.waiting) + " changed since the last look; waiting until it settles")
        if not parts:
            parts.append("no new or changed landing files")
        if refused:
            parts.append("; ".join(i.split(REFUSED_MARK, 1)[1].rstrip(").") for i in refused))
        if others:
            parts.append("ignored (not study files): " + ", ".join(others))
        return "; ".join(parts)


def list_landing_files(landing_uri: str, suffix: str = ".csv") -> list[LandingObject]:
    """Files directly under the landing folder or S3 prefix whose name ends with `suffix`."""
    root = storage.to_upath(landing_uri)
    fs = root.fs
    base = root.path
    # s3fs caches listings per prefix; a sensor must see new objects.
    fs.invalidate_cache(base)
    try:
        entries = fs.ls(base, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if not name.lower().endswith(suffix) or name.startswith("."):
            continue
        if entry.get("type") != "file" and entry.get("islink") and storage.is_local(root):
            # fsspec lists a local link as "other": one to a regular file inside the zone counts
            # as that file; any other is refused by observe.
            try:
                target = os.stat(_local_target(base, name))
            except (LandingRefused, OSError):
                continue
            entry = {**entry, "type": "file", "size": target.st_size, "mtime": target.st_mtime}
        if entry.get("type") != "file":
            continue
        etag = entry.get("ETag") or entry.get("etag")
        modified = entry.get("mtime")
        if modified is None and entry.get("LastModified") is not None:
            modified = entry["LastModified"].timestamp()
        found.append(
            LandingObject(
                name=name,
                uri=storage.join(landing_uri, name),
                size=int(entry["size"]),
                modified=float(modified) if modified is not None else None,
                etag=str(etag).strip('"') if etag else None,
            )
        )
    return sorted(found, key=lambda o: o.name)


def content_sha256(uri: str, max_bytes: int = DEFAULT_MAX_LANDING_BYTES) -> str:
    """sha256 of a landing file, streamed (bounded memory), with the same refusals as ingestion."""
    landing_uri, name = uri.rstrip("/").rsplit("/", 1)
    digest = hashlib.sha256()
    for chunk in landing_chunks(landing_uri, name, max_bytes):
        digest.update(chunk)
    return digest.hexdigest()


# As many hex digits as observe_landing's and the bronze tables' data versions.
VERSION_LENGTH = 16
SHA256_PREFIX = "sha256:"


def new_content_versions(
    landing_uri: str, previous: LandingCursor, observed: Mapping[str, Seen]
) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """The content version of each settled file whose fingerprint moved since its version was
    last recorded. Returns (the cursor's next `versions`, {file name: version} to record now,
    only where the version itself changed: same bytes under a new ETag record nothing)."""
    versions = dict(previous.versions)
    changed: dict[str, str] = {}
    for name, seen in observed.items():
        if not seen.same_content_as(previous.seen.get(name)):
            continue  # still changing (or seen for the first time): wait until it settles
        recorded = versions.get(name)
        if recorded is not None and recorded[0] == seen.fingerprint:
            continue
        if seen.fingerprint.startswith(SHA256_PREFIX):
            version = seen.fingerprint[len(SHA256_PREFIX) :][:VERSION_LENGTH]
        else:
            try:
                version = content_sha256(storage.join(landing_uri, name))[:VERSION_LENGTH]
            except (FileNotFoundError, LandingRefused):
                continue
        versions[name] = (seen.fingerprint, version)
        if recorded is None or recorded[1] != version:
            changed[name] = version
    return versions, changed


def fingerprint(obj: LandingObject, previous: Seen | None) -> str:
    """ETag on object stores; on disk the sha256, reused while size and mtime are unchanged."""
    if obj.etag:
        return "etag:" + obj.etag
    if previous is not None and (previous.size, previous.modified) == (obj.size, obj.modified):
        return previous.fingerprint
    # As long as the content version: enough to tell two files apart, short in the cursor.
    return SHA256_PREFIX + content_sha256(obj.uri)[:VERSION_LENGTH]


def observe(landing_uri: str, names: Sequence[str], previous: LandingCursor) -> tuple[dict[str, Seen], tuple[str, ...]]:
    """Fingerprint the study files present; also return the other CSVs' names (ignored)."""
    wanted = set(names)
    observed: dict[str, Seen] = {}
    ignored = []
    for obj in list_landing_files(landing_uri):
        if obj.name not in wanted:
            ignored.append(obj.name)
            continue
        try:
            check_landing_file(landing_uri, obj.name)
            fp = fingerprint(obj, previous.seen.get(obj.name))
        except FileNotFoundError:
            continue  # removed between listing and reading: treat as missing this tick
        except LandingRefused as exc:
            ignored.append(f"{obj.name}{REFUSED_MARK}{exc})")
            continue
        observed[obj.name] = Seen(obj.size, obj.modified, fp)
    # A study file the listing skipped (a FIFO, a device, a link to one) is named, not waited for.
    for name in names:
        if name not in observed and not any(i.startswith(name + REFUSED_MARK) for i in ignored):
            try:
                check_landing_file(landing_uri, name)
            except FileNotFoundError:
                pass
            except LandingRefused as exc:
                ignored.append(f"{name}{REFUSED_MARK}{exc})")
    return observed, tuple(ignored)


def run_key_for(previous: LandingCursor, fingerprints: Mapping[str, str]) -> str:
    """Same tick evaluated twice -> same key (Dagster drops the duplicate); a later return to
    older contents -> a new key, since the previous cursor (sizes, times) differs."""
    joined = previous.to_json() + "\n" + "\n".join(f"{n}={f}" for n, f in sorted(fingerprints.items()))
    return "landing-" + hashlib.sha256(joined.encode()).hexdigest()[:24]


def decide(
    previous: LandingCursor,
    observed: Mapping[str, Seen],
    required: Sequence[str],
    ignored: Sequence[str] = (),
) -> ScanDecision:
    """One run when every required file is present and settled and at least one is new."""
    missing = tuple(n for n in required if n not in observed)
    waiting = tuple(n for n in required if n in observed and not observed[n].same_content_as(previous.seen.get(n)))
    next_cursor = LandingCursor(seen=dict(observed), ingested=dict(previous.ingested), versions=dict(previous.versions))
    changed = tuple(n for n in required if n in observed and previous.ingested.get(n) != observed[n].fingerprint)
    # The run reads all files together, so it waits until all are present and settled.
    if missing or waiting or not changed:
        return ScanDecision(False, changed, waiting, missing, tuple(ignored), next_cursor)
    next_cursor.ingested = {n: observed[n].fingerprint for n in required}
    return ScanDecision(
        True,
        changed,
        (),
        (),
        tuple(ignored),
        next_cursor,
        run_key=run_key_for(previous, next_cursor.ingested),
    )


def scan(landing_uri: str, required: Sequence[str], previous: LandingCursor) -> ScanDecision:
    observed, ignored = observe(landing_uri, required, previous)
    return decide(previous, observed, required, ignored)
