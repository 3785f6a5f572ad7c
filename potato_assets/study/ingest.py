"""Bronze ingestion: decode a landing CSV, parse it to the study's types, quarantine bad rows.

File-level defects (empty file, undecodable text, missing, unnamed, duplicated or reserved
column, wrong delimiter, a row with the wrong number of fields) raise FileDefect: the whole file is
rejected and nothing is written. Row-level defects (unparseable or implausible value, a missing
value in a required column, a value outside its vocabulary, impossible date, conflicting
duplicates, bytes that are not valid UTF-8 in an otherwise UTF-8 file) send the row to quarantine,
one record per offending cell, and the rest flows on.

Messages quote column names from the header (invisible characters spelled out as U+XXXX), never
other content of the file.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from potato_assets.study.schema import (
    INGESTED_AT_COL,
    RESERVED_COLUMNS,
    SOURCE_FILE_COL,
    SOURCE_LINE_COL,
    LandingFile,
)

QUARANTINE_COLUMNS = ["source_file", "line", "column", "value", "reason"]
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
# Arrow-backed strings: the .str methods below run vectorised in pyarrow.
STRING = pd.StringDtype("pyarrow")
REPLACEMENT = "\ufffd"
# A conflicting duplicate's reason names at most this many of the other lines (memory stays
# linear when thousands of rows share one key).
CONFLICT_EXAMPLES = 3
# Header names quoted in a message are cut to this many characters, and at most this many shown.
NAME_CHARS = 40
NAMES_SHOWN = 20


class FileDefect(ValueError):
    """The file as a whole cannot be ingested; the message is one sentence naming it."""


@dataclass
class IngestResult:
    rows: pd.DataFrame
    quarantine: pd.DataFrame
    encoding: str
    rows_read: int
    exact_duplicates_dropped: int
    stats: dict[str, int] = field(default_factory=dict)
    # What decoding and header cleaning did, one sentence each (empty when nothing unusual).
    notes: list[str] = field(default_factory=list)

    @property
    def rows_quarantined(self) -> int:
        return int(self.quarantine["line"].nunique()) if len(self.quarantine) else 0

    @property
    def quarantine_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


def decode(raw: bytes, file_name: str) -> tuple[str, str]:
    """UTF-8 (with or without BOM), else Windows-1252 — the encodings spreadsheets save."""
    text, encoding, _ = decode_with_evidence(raw, file_name)
    return text, encoding


def decode_with_evidence(raw: bytes, file_name: str) -> tuple[str, str, int]:
    """(text, encoding, invalid byte sequences replaced). Strict UTF-8 first. A file that is UTF-8 except for a
    few stray bytes (more valid multi-byte UTF-8 characters than invalid bytes) stays UTF-8 with
    each invalid byte replaced by U+FFFD, so the caller can quarantine those cells; only a file
    with no such evidence of UTF-8 is read as Windows-1252."""
    if b"\x00" in raw:
        raise FileDefect(f"{file_name} contains NUL bytes: it is not a text CSV (UTF-16 or binary?).")
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8-sig"), ("utf-8-sig" if bom else "utf-8"), 0
    except UnicodeDecodeError:
        pass
    body = raw[3:] if bom else raw
    lenient = body.decode("utf-8", errors="replace")
    # Each invalid byte sequence became one U+FFFD (beyond any the file itself holds); counted
    # with C-speed string methods, since this path may see a whole large file.
    invalid = lenient.count(REPLACEMENT) - body.count(REPLACEMENT.encode())
    valid_multibyte = len(lenient) - len(lenient.encode("ascii", errors="ignore")) - lenient.count(REPLACEMENT)
    if bom or valid_multibyte >= invalid:
        return lenient, ("utf-8-sig" if bom else "utf-8"), invalid
    try:
        return raw.decode("cp1252"), "cp1252", 0
    except UnicodeDecodeError:
        raise FileDefect(f"{file_name} is neither UTF-8 nor Windows-1252 text and cannot be decoded.") from None


def shown(name: str) -> str:
    """A header name fit for a message: invisible and control characters as U+XXXX, cut short."""
    out = "".join(f"<U+{ord(ch):04X}>" if _invisible(ch) else ch for ch in name)
    return out if len(out) <= NAME_CHARS else out[: NAME_CHARS - 1] + "…"


def _invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in ("Cc", "Cf", "Zl", "Zp") or (category == "Zs" and ch != " ")


def _names(header: list[str]) -> str:
    listed = ", ".join(shown(h) for h in header[:NAMES_SHOWN])
    return listed + (f" and {len(header) - NAMES_SHOWN} more" if len(header) > NAMES_SHOWN else "")


def _clean_header(header: list[str]) -> tuple[list[str], list[str]]:
    """Header names without surrounding whitespace and without invisible format characters
    (zero-width spaces and joiners, BOMs, direction marks: Unicode category Cf), which a
    spreadsheet or a copy-paste can leave in a name. Returns (names, notes on what was removed)."""
    names, notes = [], []
    for position, raw in enumerate(header, start=1):
        invisible = sorted({ch for ch in raw if unicodedata.category(ch) == "Cf"})
        name = "".join(ch for ch in raw if unicodedata.category(ch) != "Cf").strip()
        if invisible and name:
            codes = ", ".join(f"U+{ord(ch):04X}" for ch in invisible)
            notes.append(f"header column {position} ({name}) contained invisible character(s) {codes}, removed")
        names.append(name)
    return names, notes


def _records(text: str, file_name: str) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Header, records, the physical line (header = line 1) where each record starts, and notes on
    what cleaning the header did.

    The exact path: Python's csv module, which tracks lines through quoted newlines. A record of
    blank fields only is a blank line, skipped (the fast path skips the same records)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise FileDefect(f"{file_name} is empty: it has no header line.")
        header, notes = _clean_header(header)
        records: list[list[str]] = []
        lines: list[int] = []
        start = reader.line_num + 1
        for record in reader:
            if record and any(v.strip() for v in record):
                if len(record) != len(header):
                    raise FileDefect(
                        f"{file_name} line {start} has {len(record)} fields but the header has "
                        f"{len(header)}: the row breaks the CSV structure."
                    )
                records.append(record)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileDefect(f"{file_name} line {reader.line_num} is not valid CSV ({exc}).") from None
    return header, records, lines, notes


# A line of whitespace and delimiters only: the exact path skips it as blank, pyarrow would not.
_BLANKISH_LINE = re.compile(r"\n(?:[^\S\n]|,)*\n")
# A lone carriage return ends a line for the csv module; pyarrow would skip the empty line after it.
_LONE_CR = re.compile(r"\r(?!\n)")


def _fast_eligible(text: str, *, starts_line: bool, at_end: bool) -> bool:
    """Whether each record of `text` is exactly one physical line with no quotes, no blank or
    blank-field lines, and no lone CR: then pyarrow's rows are the exact path's records.
    `starts_line`: text begins right after a line end; `at_end`: it ends the file (trailing line
    ends are then harmless)."""
    if '"' in text or _LONE_CR.search(text):
        return False
    check = text.rstrip("\r\n") + "\n" if at_end else text
    return not _BLANKISH_LINE.search("\n" + check if starts_line else check)


def _arrow_strings(text: str, header: list[str], skip_rows: int) -> pd.DataFrame | None:
    """The records of fast-eligible `text` as a frame of strings, or None where the exact path
    must decide (any structural error, or a field longer than the csv module accepts)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=skip_rows),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError):
        return None
    limit = csv.field_size_limit()
    for column in table.columns:
        # Byte lengths come from the offsets (cheap); characters are counted only past the limit.
        if (
            len(column)
            and pc.max(pc.binary_length(column)).as_py() > limit
            and pc.max(pc.utf8_length(column)).as_py() > limit
        ):
            return None
    return table.to_pandas(types_mapper={pa.string(): STRING}.get)


def _table_fast(text: str, header: list[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
    """pyarrow's CSV reader, used when a record is exactly one physical line (see
    _fast_eligible) so that line = row + 2. Returns None whenever the exact path is needed,
    including any structural error, which the exact path then reports with its line."""
    if not _fast_eligible(text, starts_line=False, at_end=True):
        return None
    frame = _arrow_strings(text, header, skip_rows=1)
    if frame is None:
        return None
    return frame, np.arange(2, len(frame) + 2, dtype="int64")


def _simple_header(first: str) -> tuple[list[str], list[str]] | None:
    """(names, cleaning notes) when the first physical line (up to LF) is the whole header:
    unquoted, no line end but a final CR, some name. None: the exact path reads the header."""
    if '"' in first or "\r" in first.removesuffix("\r") or not first.strip():
        return None
    header, notes = _clean_header(next(csv.reader([first]), []))
    return (header, notes) if any(header) else None


def _read_table(text: str, spec: LandingFile, file_name: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The records as a frame of strings (columns = header), each record's physical line, and
    notes on what cleaning the header did."""
    simple = _simple_header(text.split("\n", 1)[0])
    if simple is not None:
        header, notes = simple
        _check_header(header, spec, file_name)
        fast = _table_fast(text, header)
        if fast is not None:
            return fast[0], fast[1], notes
    header, records, lines, notes = _records(text, file_name)
    _check_header(header, spec, file_name)
    frame = pd.DataFrame(records, columns=header, dtype=object).astype(STRING)
    return frame, np.asarray(lines, dtype="int64"), notes


def _check_header(header: list[str], spec: LandingFile, file_name: str) -> None:
    unnamed = [i for i, h in enumerate(header, start=1) if not h]
    if unnamed:
        raise FileDefect(
            f"{file_name} line 1 has no name for column(s) {', '.join(map(str, unnamed))} of {len(header)} "
            "(an empty header field: a trailing or doubled comma?)."
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        where = "; ".join(
            f"{shown(h)} in columns {', '.join(str(i) for i, x in enumerate(header, start=1) if x == h)}"
            for h in duplicated
        )
        raise FileDefect(f"{file_name} line 1 has duplicated column name(s): {where}.")
    reserved = [(i, h) for i, h in enumerate(header, start=1) if h in RESERVED_COLUMNS]
    if reserved:
        where = ", ".join(f"column {i} ({h})" for i, h in reserved)
        raise FileDefect(
            f"{file_name} line 1 names {where}, reserved for the columns ingestion adds "
            f"({', '.join(RESERVED_COLUMNS)}); rename it in the export so its values are not overwritten."
        )
    missing = [c for c in spec.columns if c not in header]
    if not missing:
        return
    hint = ""
    if len(header) == 1:
        for sep in (";", "\t", "|"):
            if sep in header[0]:
                hint = f" (the header is one field {shown(header[0])!r}: is the delimiter {sep!r}?)"
                break
    raise FileDefect(
        f"{file_name} is missing required column(s) {', '.join(missing)} in its header (line 1){hint}; "
        f"found: {_names(header)}."
    )


def _parse_column(raw: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Typed values, a mask of the values that do not parse, and why (read only where masked)."""
    stripped = raw.str.strip()
    is_missing = stripped.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    reason = np.empty(len(raw), dtype=object)
    if kind == "str":
        return raw.where(~is_missing, None).astype(STRING), np.zeros(len(raw), dtype=bool), reason
    present = stripped.where(~is_missing)
    if kind == "date":
        parsed = _to_dates(present)
        bad = parsed.isna().to_numpy() & ~is_missing
        if bad.any():
            iso = stripped[bad].str.fullmatch(r"\d{4}-\d{2}-\d{2}").to_numpy(dtype=bool)
            reason[bad] = np.where(iso, "impossible date", "not an ISO date (yyyy-mm-dd)")
        return parsed, bad, reason
    numbers = _to_float(present)
    bad = np.isnan(numbers) & ~is_missing
    if bad.any():
        comma = stripped[bad].str.fullmatch(r"[+-]?\d+,\d+").to_numpy(dtype=bool)
        reason[bad] = np.where(comma, "not a number (decimal comma?)", "not a number")
    if kind == "int":
        fractional = ~np.isnan(numbers) & (np.floor(numbers) != numbers)
        reason[fractional] = "not a whole number"
        # Beyond 2**53 a float no longer holds every whole number: refuse rather than round.
        huge = ~np.isnan(numbers) & ~fractional & (np.abs(numbers) > 2.0**53)
        reason[huge] = "whole number too large"
        bad |= fractional | huge
        numbers[fractional | huge] = np.nan
        missing = np.isnan(numbers)
        whole = pd.arrays.IntegerArray(np.where(missing, 0.0, numbers).astype("int64"), missing)
        return pd.Series(whole, index=raw.index), bad, reason
    inf = np.isinf(numbers)
    reason[inf] = "not a finite number"
    bad |= inf
    numbers[inf] = np.nan
    return pd.Series(numbers, index=raw.index), bad, reason


def _to_dates(present: pd.Series) -> pd.Series:
    """Dates (datetime64[ns], NaT where missing or not a date) as pandas parses them with the
    ISO format, each distinct text once: a batch repeats a few hundred dates over millions of
    rows, and parsing every row cost 4-10 times as much."""
    codes, distinct = pd.factorize(present)
    parsed = pd.to_datetime(pd.Series(distinct, dtype=present.dtype), format="%Y-%m-%d", errors="coerce")
    values = parsed.astype("datetime64[ns]").to_numpy()
    out = np.full(len(present), np.datetime64("NaT"), dtype="datetime64[ns]")
    known = codes >= 0
    out[known] = values[codes[known]]
    return pd.Series(out, index=present.index)


def _to_float(values: pd.Series) -> np.ndarray:
    """float64 array, NaN where a value is missing or not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:  # the common case, every present value numeric: one vectorised cast
        arr = pa.array(values.astype(STRING), type=pa.string())
        floats = pc.cast(arr, pa.float64())
        out = floats.to_numpy(zero_copy_only=False).astype("float64", copy=True)
        # Arrow accepts 'nan'; a literal NaN in the file is a missing value, handled by the caller.
        return out
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Some value is not a plain number. Plain ones still go through Arrow's correctly rounded
    # parser (pandas' may differ in the last digit), so a value parses the same whatever else
    # shares its column or batch; the rest as pandas reads them (inf, Infinity, ...).
    strings = values.astype(STRING)
    plain = strings.str.fullmatch(_PLAIN_NUMBER).fillna(False).to_numpy(dtype=bool)
    out = np.full(len(values), np.nan)
    if plain.any():
        arr = pa.array(strings[plain], type=pa.string())
        out[plain] = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    rest = ~plain & strings.notna().to_numpy(dtype=bool)
    if rest.any():
        out[rest] = pd.to_numeric(strings[rest].astype(object), errors="coerce").to_numpy(dtype="float64")
    return out


_PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


EMPTY_QUARANTINE_DTYPES = {
    "source_file": "string",
    "line": "int64",
    "column": "string",
    "value": "string",
    "reason": "string",
}


def _quarantine_frame(problems: list[pd.DataFrame]) -> pd.DataFrame:
    """Quarantine records in their one order: by line, then column (stable)."""
    if all(not len(p) and list(p.columns) == QUARANTINE_COLUMNS for p in problems):
        # Most batches and buckets have none: typed empty columns, no concat, cast or sort.
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in EMPTY_QUARANTINE_DTYPES.items()})
    frame = (
        pd.concat(problems, ignore_index=True)
        if problems
        else pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    )
    return frame.astype(EMPTY_QUARANTINE_DTYPES).sort_values(["line", "column"], kind="stable", ignore_index=True)


def _typed_records(
    table: pd.DataFrame,
    lines: np.ndarray,
    spec: LandingFile,
    *,
    source_file: str,
    ingested_at: pd.Timestamp,
    replaced: bool,
) -> tuple[pd.DataFrame, list[pd.DataFrame], list[int]]:
    """The cell rules on records (a frame of strings, columns = header; `lines` their physical
    lines): typed rows without the quarantined lines, the quarantine records (one per offending
    cell), and the lines holding undecodable bytes. Row by row, so a file may be typed whole or
    in batches with the same result."""
    header = list(table.columns)
    problems: list[pd.DataFrame] = []

    def flag(mask: pd.Series | np.ndarray, column: str, reason: np.ndarray | str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            problems.append(
                pd.DataFrame(
                    {
                        "source_file": source_file,
                        "line": lines[mask],
                        "column": column,
                        "value": table[column][mask].fillna("").astype(str).to_numpy(),
                        "reason": (reason[mask] if isinstance(reason, np.ndarray) else reason),
                    }
                )
            )

    undecodable: list[int] = []
    typed: dict[str, pd.Series] = {}
    for column in header:
        if replaced:
            broken = table[column].str.contains(REPLACEMENT, regex=False).fillna(False).to_numpy(dtype=bool)
            flag(broken, column, "not valid UTF-8: undecodable byte(s) replaced by U+FFFD")
            undecodable.extend(int(x) for x in lines[broken])
        kind = spec.columns.get(column, "str")
        values, bad, reason = _parse_column(table[column], kind)
        flag(bad, column, reason)
        absent = values.isna().to_numpy() & ~bad
        if column in spec.keys:
            flag(absent, column, "missing key")
        elif not spec.is_nullable(column):
            flag(absent, column, "missing value in a required column")
        if column in spec.ranges:
            lo, hi = spec.ranges[column]
            outside = values.notna() & ((values < lo) | (values > hi))
            flag(outside.fillna(False).astype(bool), column, f"outside plausible range [{lo:g}, {hi:g}]")
        if column in spec.allowed_values:
            unknown = values.notna() & ~values.isin(spec.allowed_values[column])
            flag(unknown.fillna(False).astype(bool), column, "not one of: " + ", ".join(spec.allowed_values[column]))
        typed[column] = values

    rows = pd.DataFrame(typed)
    rows[SOURCE_FILE_COL] = pd.Series(source_file, index=rows.index, dtype=STRING)
    rows[SOURCE_LINE_COL] = pd.Series(lines, index=rows.index, dtype="int64")
    rows[INGESTED_AT_COL] = ingested_at
    bad_lines = set().union(*(set(p["line"]) for p in problems)) if problems else set()
    rows = rows[~rows[SOURCE_LINE_COL].isin(bad_lines)]
    return rows, problems, undecodable


def decoding_notes(encoding: str, replaced: int, undecodable_lines: list[int]) -> list[str]:
    """What decoding did, one sentence (none for plain UTF-8)."""
    if replaced:
        first_lines = ", ".join(map(str, sorted(set(undecodable_lines))[:5]))
        return [
            f"decoded as UTF-8: {replaced} byte sequence(s) are not valid UTF-8 and were replaced by U+FFFD; "
            f"their rows were quarantined (line(s) {first_lines or 'none'})"
        ]
    if encoding == "cp1252":
        return ["decoded as Windows-1252: the file is not valid UTF-8 and has no UTF-8 multi-byte characters"]
    return []


def parse_landing_csv(raw: bytes, spec: LandingFile, *, source_file: str, ingested_at: pd.Timestamp) -> IngestResult:
    """Parse one landing file, held whole in memory, into typed rows plus quarantine records.

    The reference for the streaming ingest (study/ingest_stream.py), which must give the same
    result in bounded memory; the tests compare the two on every input they have."""
    text, encoding, replaced = decode_with_evidence(raw, source_file)
    table, lines, notes = _read_table(text, spec, source_file)
    if table.empty:
        raise FileDefect(f"{source_file} is empty: it has a header but no data rows.")
    rows, problems, undecodable = _typed_records(
        table, lines, spec, source_file=source_file, ingested_at=ingested_at, replaced=bool(replaced)
    )
    notes = decoding_notes(encoding, replaced, undecodable) + notes
    rows, dropped, conflicts = _dedupe(rows, list(table.columns), spec, source_file)
    problems.extend(conflicts)
    return IngestResult(
        rows=rows.reset_index(drop=True),
        quarantine=_quarantine_frame(problems),
        encoding=encoding,
        rows_read=len(table),
        exact_duplicates_dropped=dropped,
        notes=notes,
    )


def _dedupe(
    rows: pd.DataFrame,
    data_columns: list[str],
    spec: LandingFile,
    source_file: str,
) -> tuple[pd.DataFrame, int, list[pd.DataFrame]]:
    """Drop exact duplicates once (the first line kept); quarantine rows sharing a key but
    differing elsewhere. `rows` in line order; every key holds subject_id, so the rows of one
    subject suffice (the streaming ingest runs this per subject bucket)."""
    if not spec.unique_keys or rows.empty:
        return rows, 0, []
    exact = rows.duplicated(subset=data_columns, keep="first")
    dropped = int(exact.sum())
    rows = rows[~exact]
    conflicts: list[pd.DataFrame] = []
    conflicting = pd.Series(False, index=rows.index)
    for key in spec.unique_keys:
        clash = rows.duplicated(subset=list(key), keep=False)
        if not clash.any():
            continue
        conflicting |= clash
        clashing = rows[clash]
        label = " and ".join(key)
        own = clashing[SOURCE_LINE_COL].to_numpy()
        group = clashing.groupby(list(key), sort=False).ngroup().to_numpy()
        # Per key value: its size and its first few lines; each row then names up to
        # CONFLICT_EXAMPLES others and counts the rest (linear, however many rows share a key).
        order = np.lexsort((own, group))
        sizes = np.bincount(group)
        first: dict[int, list[int]] = {}
        for g, ln in zip(group[order], own[order], strict=True):
            kept = first.setdefault(int(g), [])
            if len(kept) <= CONFLICT_EXAMPLES:
                kept.append(int(ln))
        reasons = []
        for g, ln in zip(group, own, strict=True):
            others = [x for x in first[int(g)] if x != ln][:CONFLICT_EXAMPLES]
            more = int(sizes[g]) - 1 - len(others)
            listed = ", ".join(map(str, others)) + (f" and {more:,} more" if more else "")
            reasons.append(
                f"conflicting rows for the same {label} (conflicts with line{'s' if len(others) + more > 1 else ''} {listed})"
            )
        conflicts.append(
            pd.DataFrame(
                {
                    "source_file": source_file,
                    "line": own,
                    "column": ",".join(key),
                    "value": _joined(clashing, key),
                    "reason": np.asarray(reasons, dtype=object),
                }
            )
        )
    return rows[~conflicting], dropped, conflicts


def _joined(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """'a|b' per row of the given columns, vectorised (a row-wise apply took ~1 s per 20k rows)."""
    out = frame[columns[0]].astype(str)
    for column in columns[1:]:
        out = out + "|" + frame[column].astype(str)
    return out.to_numpy(dtype=object)


def contradiction_records(rows: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    """Quarantine records for the rows whose reason (label_contradictions) is set."""
    bad = reason.notna().to_numpy(dtype=bool)
    moved = rows[bad]
    return pd.DataFrame(
        {
            "source_file": moved[SOURCE_FILE_COL].astype(str).to_numpy(),
            "line": moved[SOURCE_LINE_COL].to_numpy(dtype="int64"),
            "column": "date,week",
            "value": (moved["date"].dt.strftime("%Y-%m-%d") + "|" + moved["week"].astype(str)).to_numpy(),
            "reason": reason[bad].to_numpy(dtype=object),
        }
    ).astype(EMPTY_QUARANTINE_DTYPES)


def quarantine_label_contradictions(*results: IngestResult) -> int:
    """Move rows whose date and week label contradict their subject's calendar (the majority of
    its rows across these files, study/calendar.py) from each result's rows to its quarantine,
    naming the line. Returns how many rows moved. The whole-file reference of the per-bucket
    rule in ingest_stream.finish_bucket."""
    from potato_assets.study.calendar import label_contradictions

    moved_total = 0
    for result, reason in zip(results, label_contradictions(*(r.rows for r in results)), strict=True):
        bad = reason.notna().to_numpy(dtype=bool)
        if not bad.any():
            continue
        records = contradiction_records(result.rows, reason)
        result.quarantine = _quarantine_frame([result.quarantine, records])
        result.rows = result.rows[~bad].reset_index(drop=True)
        moved_total += int(bad.sum())
    return moved_total
