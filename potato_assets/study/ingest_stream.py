"""Bronze ingestion in bounded memory: the rules of study/ingest.py, streamed.

Phase A (`stream_landing_csv`), per file: a first pass over the bytes decides the encoding from
the whole file's evidence (as `decode_with_evidence` does) and hashes it; a second pass decodes
and yields batches of typed rows and their quarantine records, cut at record boundaries. A batch
without quotes, blank lines or lone CRs goes through pyarrow; any other through the csv module,
which tracks physical lines through quoted newlines. File defects raise FileDefect with the whole-
file function's sentence, at the latest when the last batch is read: the caller keeps everything
invisible until every file is parsed.

Phase B (`finish_bucket`), per subject bucket (`subject_id % buckets`; every row phase A keeps has
a valid subject_id, since a missing or bad one quarantines the row): exact and conflicting
duplicates (every unique key holds subject_id) and week labels against the subject's calendar.

`FileTotals` adds both phases up to the numbers a bronze asset reports. The whole-file functions
of study/ingest.py stay the reference: the tests compare both on every input they have.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from potato_assets.study.ingest import (
    REPLACEMENT,
    STRING,
    FileDefect,
    LandingFile,
    _arrow_strings,
    _check_header,
    _clean_header,
    _dedupe,
    _fast_eligible,
    _quarantine_frame,
    _simple_header,
    _typed_records,
    contradiction_records,
    decoding_notes,
)
from potato_assets.study.schema import GROUP_COL, LANDING_FILES, RESERVED_COLUMNS, SOURCE_LINE_COL, WEEK_COL

# Text per batch. Measured at 100k subjects (205 MB daily log): 4 MiB peaks at 0.42 GB RSS and
# runs faster than 16 MiB (0.84 GB); the whole-file function peaks at 3 GB.
DEFAULT_BATCH_BYTES = 4 << 20
_REPLACEMENT_BYTES = REPLACEMENT.encode()
_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")
_LINE_END = re.compile(r"\r\n|\r|\n")


# --- pass 1: the encoding from the whole file's evidence ---------------------------------------


@dataclass(frozen=True)
class Encoding:
    """What the first pass found: the codec, how many invalid UTF-8 sequences are replaced, and
    the file's size and sha256."""

    encoding: str
    replaced: int
    size_bytes: int
    sha256: str

    @property
    def codec(self) -> tuple[str, str]:
        """(Python codec, errors) that decode the file as decode_with_evidence does."""
        if self.encoding == "cp1252":
            return "cp1252", "strict"
        return "utf-8-sig", ("replace" if self.replaced else "strict")


def scan_encoding(chunks: Iterable[bytes], file_name: str) -> Encoding:
    """decode_with_evidence's decision, in one pass over the chunks with bounded memory."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    replacements = literal = multibyte = 0
    tail = b""  # the body's last two bytes: a literal U+FFFD may straddle chunks
    cp1252_ok = True
    started = False

    def body(data: bytes, final: bool = False) -> None:
        nonlocal replacements, literal, multibyte, tail, cp1252_ok
        if data:
            literal += (tail + data).count(_REPLACEMENT_BYTES)
            tail = (tail + data)[-2:]
        if data.isascii() and not decoder.getstate()[0] and not final:
            return
        text = decoder.decode(data, final)
        if text and not text.isascii():
            found = text.count(REPLACEMENT)
            replacements += found
            multibyte += len(text) - len(text.encode("ascii", errors="ignore")) - found

    for chunk in chunks:
        if b"\x00" in chunk:
            raise FileDefect(f"{file_name} contains NUL bytes: it is not a text CSV (UTF-16 or binary?).")
        digest.update(chunk)
        size += len(chunk)
        if cp1252_ok and any(b in chunk for b in _CP1252_UNDEFINED):
            cp1252_ok = False
        if not started:
            head += chunk
            if len(head) < 3:
                continue
            started, chunk = True, head
        body(chunk)
    if not started:  # fewer than three bytes in all
        body(head)
    body(b"", final=True)
    bom = head.startswith(b"\xef\xbb\xbf")
    # The BOM itself counted as one valid multi-byte character: today's count excludes it.
    multibyte -= 1 if bom else 0
    invalid = replacements - literal
    utf8 = "utf-8-sig" if bom else "utf-8"
    if invalid == 0:
        return Encoding(utf8, 0, size, digest.hexdigest())
    if bom or multibyte >= invalid:
        return Encoding(utf8, invalid, size, digest.hexdigest())
    if not cp1252_ok:
        raise FileDefect(f"{file_name} is neither UTF-8 nor Windows-1252 text and cannot be decoded.")
    return Encoding("cp1252", 0, size, digest.hexdigest())


def _decoded(chunks: Iterable[bytes], encoding: Encoding, file_name: str) -> Iterator[str]:
    """The text of the second pass, which must read the bytes the first pass judged."""
    codec, errors = encoding.codec
    decoder = codecs.getincrementaldecoder(codec)(errors=errors)
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        text = decoder.decode(chunk)
        if text:
            yield text
    text = decoder.decode(b"", True)
    if digest.hexdigest() != encoding.sha256:
        raise FileDefect(
            f"{file_name} changed while it was being read; it was not ingested (try again once it is complete)."
        )
    if text:
        yield text


# --- pass 2: record-aligned batches ----------------------------------------------------------


class _Feed:
    """Decoded text arriving in pieces; `buf` always starts at a record boundary."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.buf = ""
        self.eof = False

    def more(self) -> None:
        """At least double the buffer (or reach the end): a long line costs linear time."""
        self.fill(2 * len(self.buf) + 1)

    def fill(self, size: int) -> None:
        parts, have = [self.buf], len(self.buf)
        while have < size and not self.eof:
            piece = next(self._pieces, None)
            if piece is None:
                self.eof = True
                break
            parts.append(piece)
            have += len(piece)
        self.buf = "".join(parts)


def _cut(buf: str, limit: int, eof: bool) -> int:
    """End of the last physical line ending at or before `limit` (else of the first after it);
    0 when no line end is known yet. A CR at the end of the buffer may still become CRLF."""
    if eof and len(buf) <= limit:
        return len(buf)
    nl = buf.rfind("\n", 0, limit)
    cr = buf.rfind("\r", 0, limit)
    if cr > nl and (cr + 1 < len(buf) or eof):
        return cr + 2 if cr + 1 < len(buf) and buf[cr + 1] == "\n" else cr + 1
    if nl >= 0:
        return nl + 1
    match = _LINE_END.search(buf, limit)
    if match is None:
        return len(buf) if eof else 0
    if match.group() == "\r" and match.end() == len(buf) and not eof:
        return 0
    return match.end()


def _line_count(text: str) -> int:
    """Physical lines as the csv module counts them (CRLF, CR or LF; a last unended line)."""
    ends = text.count("\n") + text.count("\r") - text.count("\r\n")
    return ends + (1 if text and text[-1] not in "\r\n" else 0)


class _Continuation:
    """Physical lines after a region, for a quoted record that runs past it (pulls more text)."""

    def __init__(self, feed: _Feed, start: int):
        self.feed, self.pos = feed, start

    def __iter__(self) -> Iterator[str]:
        while True:
            buf = self.feed.buf
            match = _LINE.match(buf, self.pos)
            if match and not (match.end() == len(buf) and buf[-1] == "\r" and not self.feed.eof):
                self.pos = match.end()
                yield match.group()
                continue
            if self.feed.eof:
                if self.pos < len(buf):
                    line, self.pos = buf[self.pos :], len(buf)
                    yield line
                return
            self.feed.more()


@dataclass
class ParsedBatch:
    """Typed rows of one batch (ingestion columns included) and its quarantine records."""

    rows: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int

    @property
    def lines_quarantined(self) -> int:
        return int(self.quarantine["line"].nunique()) if len(self.quarantine) else 0


class LandingStream:
    """Iterate for the ParsedBatch-es of one file. After the last batch, `encoding`, `sha256`,
    `size_bytes`, `rows_read`, `lines_quarantined` and `notes` describe the whole file."""

    def __init__(
        self,
        read_chunks: Callable[[], Iterable[bytes]],
        spec: LandingFile,
        *,
        source_file: str,
        ingested_at: pd.Timestamp,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
    ):
        self._read_chunks = read_chunks
        self.spec = spec
        self.source_file = source_file
        self.ingested_at = ingested_at
        self.batch_bytes = max(1, int(batch_bytes))
        self.encoding: str | None = None
        self.sha256: str | None = None
        self.size_bytes = 0
        self.rows_read = 0
        self.lines_quarantined = 0
        self.notes: list[str] = []
        self.done = False

    def __iter__(self) -> Iterator[ParsedBatch]:
        found = scan_encoding(self._read_chunks(), self.source_file)
        self.encoding, self.sha256, self.size_bytes = found.encoding, found.sha256, found.size_bytes
        replaced = bool(found.replaced)
        feed = _Feed(_decoded(self._read_chunks(), found, self.source_file))
        header, line = self._header(feed)
        undecodable: list[int] = []
        for strings, lines in self._records(feed, header, line):
            if not len(strings):
                continue
            rows, problems, broken = _typed_records(
                strings,
                lines,
                self.spec,
                source_file=self.source_file,
                ingested_at=self.ingested_at,
                replaced=replaced,
            )
            if broken:  # the note names the first five
                undecodable = sorted(set(undecodable).union(broken))[:5]
            batch = ParsedBatch(rows.reset_index(drop=True), _quarantine_frame(problems), len(strings))
            self.rows_read += batch.rows_read
            self.lines_quarantined += batch.lines_quarantined
            yield batch
        if self.rows_read == 0:
            raise FileDefect(f"{self.source_file} is empty: it has a header but no data rows.")
        self.notes = decoding_notes(found.encoding, found.replaced, undecodable) + self._header_notes
        self.done = True

    def _header(self, feed: _Feed) -> tuple[list[str] | None, int]:
        """(the header, or None when the exact path must read it; line of the text left in the
        feed). A simple header line is checked at once, as the whole-file function does."""
        self._header_notes: list[str] = []
        while True:
            newline = feed.buf.find("\n")
            head = feed.buf if newline < 0 else feed.buf[:newline]
            if newline >= 0 or feed.eof or '"' in head or "\r" in head[:-1]:
                break
            feed.more()
        simple = _simple_header(head) if newline >= 0 or feed.eof else None
        if simple is not None:
            header, self._header_notes = simple
            _check_header(header, self.spec, self.source_file)
            feed.buf = feed.buf[newline + 1 :] if newline >= 0 else ""
            return header, 2
        return None, 1

    def _records(self, feed: _Feed, header: list[str] | None, line: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Frames of strings (columns = header) with each record's physical line. A header the
        exact path reads is checked after the whole file's structure (as the whole-file function
        does): its defect is raised at the end."""
        limit = self.batch_bytes
        pending: FileDefect | None = None
        while True:
            feed.fill(limit)
            if not feed.buf and feed.eof:
                break
            cut = _cut(feed.buf, limit, feed.eof)
            if cut == 0:
                feed.more()
                continue
            region = feed.buf[:cut]
            at_end = feed.eof and cut == len(feed.buf)
            if header is not None and pending is None and _fast_eligible(region, starts_line=True, at_end=at_end):
                strings = _arrow_strings(region, header, skip_rows=0)
                if strings is not None:
                    feed.buf = feed.buf[cut:]
                    lines = np.arange(line, line + len(strings), dtype="int64")
                    line += _line_count(region)
                    yield strings, lines
                    continue
            exact = self._exact(feed, cut, header, line)
            if header is None:
                header, self._header_notes = exact.header, exact.notes
                try:
                    _check_header(header, self.spec, self.source_file)
                except FileDefect as defect:
                    pending = defect
            line += exact.lines
            feed.buf = feed.buf[exact.consumed :]
            if pending is None:
                frame = pd.DataFrame(exact.records, columns=header, dtype=object).astype(STRING)
                yield frame, np.asarray(exact.starts, dtype="int64")
        if header is None:
            raise FileDefect(f"{self.source_file} is empty: it has no header line.")
        if pending is not None:
            raise pending

    def _exact(self, feed: _Feed, cut: int, header: list[str] | None, base: int) -> _Exact:
        """The csv module over the region buf[:cut] (and on, while a quoted record runs past it);
        reads the header first when `header` is None. Stops at the first record boundary at or
        after the cut."""
        region = feed.buf[:cut]
        region_lines = _line_count(region)
        more = _Continuation(feed, cut)
        reader = csv.reader(itertools.chain(io.StringIO(region, newline=""), more), strict=True)
        out = _Exact(header=header or [])
        name = self.source_file
        try:
            if header is None:
                first = next(reader, None)
                if first is None or not any(h.strip() for h in first):
                    raise FileDefect(f"{name} is empty: it has no header line.")
                out.header, out.notes = _clean_header(first)
            width = len(out.header)
            start = base + reader.line_num
            while reader.line_num < region_lines:
                record = next(reader, None)
                if record is None:
                    break
                if record and any(v.strip() for v in record):
                    if len(record) != width:
                        raise FileDefect(
                            f"{name} line {start} has {len(record)} fields but the header has "
                            f"{width}: the row breaks the CSV structure."
                        )
                    out.records.append(record)
                    out.starts.append(start)
                start = base + reader.line_num
        except csv.Error as exc:
            raise FileDefect(f"{name} line {base - 1 + reader.line_num} is not valid CSV ({exc}).") from None
        out.lines = reader.line_num
        out.consumed = more.pos
        return out


@dataclass
class _Exact:
    header: list[str]
    notes: list[str] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    lines: int = 0
    consumed: int = 0


def stream_landing_csv(
    read_chunks: Callable[[], Iterable[bytes]],
    spec: LandingFile,
    *,
    source_file: str,
    ingested_at: pd.Timestamp,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> LandingStream:
    """Phase A of one landing file: iterate the result for ParsedBatch-es in line order.
    `read_chunks` is called twice (encoding pass, then parsing); bytes that differ between the
    two (a file rewritten meanwhile) raise FileDefect."""
    return LandingStream(read_chunks, spec, source_file=source_file, ingested_at=ingested_at, batch_bytes=batch_bytes)


# --- phase B: the rules that need all of a subject's rows --------------------------------------


FILES_BY_NAME: dict[str, LandingFile] = {spec.file_name: spec for spec in LANDING_FILES}


@dataclass
class BucketResult:
    """One bucket's kept rows per file (in line order), its quarantine records (all files, by
    file then line) and counts per file."""

    rows: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    exact_duplicates_dropped: dict[str, int]
    lines_quarantined: dict[str, int]
    label_contradictions: int


def _labels_weeks(spec: LandingFile) -> bool:
    return all(c in spec.columns for c in (GROUP_COL, "date", WEEK_COL))


def finish_bucket(
    rows_by_file: Mapping[str, pd.DataFrame], specs: Mapping[str, LandingFile] | None = None
) -> BucketResult:
    """Phase B on the phase-A rows of one subject bucket, keyed by file name (`specs` maps file
    names to their contract; the study's three files by default): exact duplicates dropped,
    conflicting duplicates quarantined, then rows whose week label contradicts their subject's
    calendar (set by the weigh-in and daily-log rows together) quarantined."""
    from potato_assets.study.calendar import label_contradictions

    specs = FILES_BY_NAME if specs is None else specs
    kept: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    problems: dict[str, list[pd.DataFrame]] = {}
    for name, rows in rows_by_file.items():
        spec = specs[name]
        rows = _arrow_strings_back(rows.sort_values(SOURCE_LINE_COL, kind="stable").reset_index(drop=True))
        data_columns = [c for c in rows.columns if c not in RESERVED_COLUMNS]
        rows, dropped[name], conflicts = _dedupe(rows, data_columns, spec, name)
        kept[name], problems[name] = rows, conflicts
    labelled = [name for name in kept if _labels_weeks(specs[name])]
    moved = 0
    if labelled:
        for name, reason in zip(labelled, label_contradictions(*(kept[n] for n in labelled)), strict=True):
            bad = reason.notna().to_numpy(dtype=bool)
            if bad.any():
                problems[name].append(contradiction_records(kept[name], reason))
                kept[name] = kept[name][~bad]
                moved += int(bad.sum())
    quarantines = {name: _quarantine_frame(found) for name, found in problems.items()}
    return BucketResult(
        rows={name: rows.reset_index(drop=True) for name, rows in kept.items()},
        quarantine=_quarantine_frame(list(quarantines.values())).sort_values(
            ["source_file", "line", "column"], kind="stable", ignore_index=True
        ),
        exact_duplicates_dropped=dropped,
        lines_quarantined={name: int(q["line"].nunique()) for name, q in quarantines.items()},
        label_contradictions=moved,
    )


def _arrow_strings_back(rows: pd.DataFrame) -> pd.DataFrame:
    """Text columns as phase A typed them: a parquet round trip reads them back as Python-backed
    strings (values equal, dtype not)."""
    other = [c for c, t in rows.dtypes.items() if isinstance(t, pd.StringDtype) and t != STRING]
    return rows.astype(dict.fromkeys(other, STRING)) if other else rows


@dataclass
class FileTotals:
    """What a bronze asset reports of one file, added up over phase A and every bucket."""

    source_file: str
    encoding: str
    sha256: str
    rows_read: int
    notes: list[str]
    rows_quarantined: int = 0
    exact_duplicates_dropped: int = 0

    @classmethod
    def of(cls, stream: LandingStream) -> FileTotals:
        if not stream.done or stream.encoding is None or stream.sha256 is None:
            raise ValueError(f"{stream.source_file}: the stream was not read to its end")
        return cls(
            source_file=stream.source_file,
            encoding=stream.encoding,
            sha256=stream.sha256,
            rows_read=stream.rows_read,
            notes=list(stream.notes),
            rows_quarantined=stream.lines_quarantined,
        )

    def add(self, bucket: BucketResult) -> None:
        # Phase B judges only rows phase A kept, and a line lives in one bucket: lines add up.
        self.rows_quarantined += bucket.lines_quarantined.get(self.source_file, 0)
        self.exact_duplicates_dropped += bucket.exact_duplicates_dropped.get(self.source_file, 0)

    @property
    def quarantine_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0
