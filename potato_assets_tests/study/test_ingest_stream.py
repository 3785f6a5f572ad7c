"""The streaming ingest equals the whole-file reference (parse_landing_csv +
quarantine_label_contradictions) on every input the ingest tests use: the seed study, the sample,
each row- and file-level defect, and edge cases of line ends and quoting. Phase A runs over tiny
and default batches (and tiny read chunks, so multi-byte characters and CRLF straddle them),
phase B over 1, 3 and 32 subject buckets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from potato_assets.study.ingest import FileDefect, parse_landing_csv, quarantine_label_contradictions
from potato_assets.study.ingest_stream import (
    FileTotals,
    finish_bucket,
    scan_encoding,
    stream_landing_csv,
)
from potato_assets.study.schema import FIBER, LANDING_FILES, NUTRITION, WEIGHT, LandingFile

NOW = pd.Timestamp("2026-01-01T00:00:00Z")
BUCKETS = (1, 3, 32)
Files = dict[str, bytes]  # file name -> bytes, in LANDING_FILES order


# --- the reference and the streamed pipeline -------------------------------------------------


def reference(files: Files) -> dict[str, object]:
    results = {}
    for spec in LANDING_FILES:
        if spec.file_name in files:
            results[spec.file_name] = parse_landing_csv(
                files[spec.file_name], spec, source_file=spec.file_name, ingested_at=NOW
            )
    labelled = [results[s.file_name] for s in (WEIGHT, FIBER) if s.file_name in results]
    if labelled:
        quarantine_label_contradictions(*labelled)
    return results


def chunks_of(raw: bytes, size: int) -> Callable[[], list[bytes]]:
    return lambda: [raw[i : i + size] for i in range(0, len(raw), size)]


def phase_a(files: Files, batch_bytes: int, chunk_bytes: int):
    streamed = {}
    for spec in LANDING_FILES:
        if spec.file_name in files:
            stream = stream_landing_csv(
                chunks_of(files[spec.file_name], chunk_bytes),
                spec,
                source_file=spec.file_name,
                ingested_at=NOW,
                batch_bytes=batch_bytes,
            )
            batches = list(stream)
            streamed[spec.file_name] = (stream, batches)
    return streamed


def phase_b(streamed, buckets: int):
    """Split each batch's rows by subject bucket, as the dataset writer does, then finish
    every bucket; returns per file (rows, quarantine, totals)."""
    parts: dict[int, dict[str, list[pd.DataFrame]]] = {}
    for name, (_, batches) in streamed.items():
        for batch in batches:
            bucket = batch.rows["subject_id"].astype("int64").to_numpy() % buckets
            for b in np.unique(bucket):
                parts.setdefault(int(b), {}).setdefault(name, []).append(batch.rows[bucket == b])
    totals = {name: FileTotals.of(stream) for name, (stream, _) in streamed.items()}
    rows: dict[str, list[pd.DataFrame]] = {name: [] for name in streamed}
    quarantine: dict[str, list[pd.DataFrame]] = {
        name: [b.quarantine for b in batches] for name, (_, batches) in streamed.items()
    }
    for b in sorted(parts):
        result = finish_bucket({name: pd.concat(frames) for name, frames in parts[b].items()})
        for name in streamed:
            totals[name].add(result)
            if name in result.rows:
                rows[name].append(result.rows[name])
        for name, q in result.quarantine.groupby("source_file", sort=False):
            quarantine[str(name)].append(q)
    out = {}
    for name, (_, batches) in streamed.items():
        frames = rows[name] or [batches[0].rows.iloc[:0]]
        kept = pd.concat(frames).sort_values("source_line", kind="stable").reset_index(drop=True)
        q = pd.concat(quarantine[name], ignore_index=True).sort_values(
            ["line", "column"], kind="stable", ignore_index=True
        )
        out[name] = (kept, q, totals[name])
    return out


def assert_streams_like_reference(files: Files, batch_bytes: int, chunk_bytes: int) -> None:
    try:
        expected = reference(files)
    except FileDefect as defect:
        with pytest.raises(FileDefect) as info:
            phase_a(files, batch_bytes, chunk_bytes)
        assert str(info.value) == str(defect)
        return
    streamed = phase_a(files, batch_bytes, chunk_bytes)
    for buckets in BUCKETS:
        got = phase_b(streamed, buckets)
        for name, result in expected.items():
            rows, quarantine, totals = got[name]
            where = f"{name}, batch {batch_bytes}, chunk {chunk_bytes}, {buckets} buckets"
            pd.testing.assert_frame_equal(rows, result.rows, check_exact=True, obj=f"rows of {where}")
            pd.testing.assert_frame_equal(quarantine, result.quarantine, check_exact=True, obj=f"quarantine of {where}")
            assert (
                totals.rows_read,
                totals.rows_quarantined,
                totals.quarantine_share,
                totals.exact_duplicates_dropped,
                totals.encoding,
                totals.notes,
                totals.sha256,
            ) == (
                result.rows_read,
                result.rows_quarantined,
                result.quarantine_share,
                result.exact_duplicates_dropped,
                result.encoding,
                result.notes,
                hashlib.sha256(files[name]).hexdigest(),
            ), where


# --- the inputs --------------------------------------------------------------------------------


def read(folder: Path) -> Files:
    return {spec.file_name: (folder / spec.file_name).read_bytes() for spec in LANDING_FILES}


def lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8").splitlines()


def joined(rows: list[str], end: str = "\n") -> bytes:
    return (end.join(rows) + end).encode("utf-8")


def with_field(raw: bytes, line: int, column: str, value: str, *, quote: bool = True) -> bytes:
    """helpers.set_field, on bytes."""
    rows = lines(raw)
    header = rows[0].split(",")
    fields = rows[line - 1].split(",")
    fields[header.index(column)] = f'"{value}"' if "," in value and quote else value
    rows[line - 1] = ",".join(fields)
    return joined(rows)


def appended(raw: bytes, *records: str) -> bytes:
    return joined([*lines(raw), *records])


def row_defects(sample: Files) -> Files:
    """test_bad_input_e2e's row defects, exact and conflicting duplicates."""
    w, f, n = sample[WEIGHT.file_name], sample[FIBER.file_name], sample[NUTRITION.file_name]
    for line, column, value in (
        (5, "weight_kg", "72,5"),
        (6, "weight_kg", "abc"),
        (7, "date", "2024-02-30"),
        (8, "weight_kg", "500"),
        (9, "subject_id", ""),
    ):
        w = with_field(w, line, column, value)
    original = lines(w)[11].split(",")
    w = appended(w, lines(w)[10], ",".join([*original[:3], "99.9", *original[4:]]))
    f = with_field(with_field(f, 20, "total_calories", "-5"), 21, "total_fiber_g", "12..5")
    f = appended(f, lines(f)[39])
    n = with_field(with_field(n, 30, "category", "candy"), 31, "date", "31/01/2024")
    return {NUTRITION.file_name: n, WEIGHT.file_name: w, FIBER.file_name: f}


def hardening(sample: Files) -> Files:
    """test_hardening_input's spoiled landing: blank categories, Markdown, a 120 kB name, a stray
    cp1252 byte among accented names, a weigh-in date typo."""
    w, n = sample[WEIGHT.file_name], sample[NUTRITION.file_name]
    beans = [i + 1 for i, ln in enumerate(lines(n)) if ",beans," in ln][:3]
    for line, token in zip(beans, ["", "NA", "none"], strict=True):
        n = with_field(n, line, "category", token)
    n = with_field(n, 40, "category", "[click me](https://evil.example) | **x** <b>y</b>", quote=False)
    n = with_field(with_field(n, 41, "food_item", "A" * 120_000), 41, "category", "candy")
    for line in range(60, 400, 7):
        n = with_field(n, line, "food_item", "crème fraîche")
    accented = "crème fraîche".encode()
    n = n.replace(accented, accented.replace("è".encode(), b"\xe8"), 1)
    date = lines(w)[1].split(",")[1]
    w = with_field(w, 2, "date", str(int(date[:4]) - 1) + date[4:])
    return {**sample, NUTRITION.file_name: n, WEIGHT.file_name: w}


def shuffled_crlf_bom(sample: Files) -> Files:
    rng = np.random.default_rng(5)
    out = {}
    for spec in LANDING_FILES:
        rows = lines(sample[spec.file_name])
        body = rows[1:]
        if spec.unique_keys:
            body += [body[i] for i in rng.choice(len(body), 10, replace=False)]
        body = [body[i] for i in rng.permutation(len(body))]
        out[spec.file_name] = b"\xef\xbb\xbf" + joined([rows[0], *body], "\r\n")
    return out


def quoted_everywhere(raw: bytes) -> bytes:
    """Every field quoted, as some exports write them: the exact path on every batch."""
    return joined([",".join(f'"{v}"' for v in row.split(",")) for row in lines(raw)])


def seed_cases(seed: Files) -> dict[str, Files]:
    nutrition = seed[NUTRITION.file_name]
    return {
        "seed": seed,
        "seed, one quoted field": {
            **seed,
            NUTRITION.file_name: nutrition.replace(b",baked potato,", b',"baked potato",', 1),
        },
        "seed, cp1252 accents": {
            NUTRITION.file_name: joined(
                [
                    ln if i % 60 else ",".join(ln.split(",")[:2] + ["crème fraîche"] + ln.split(",")[3:])
                    for i, ln in enumerate(lines(nutrition))
                ]
            )
            .decode()
            .encode("cp1252")
        },
        "seed, mistyped week": {
            **seed,
            FIBER.file_name: with_field(
                seed[FIBER.file_name], 31, "week", str(int(lines(seed[FIBER.file_name])[30].split(",")[2]) + 3)
            ),
        },
    }


WEIGHT_CSV = (
    "subject_id,date,week,weight_kg,energy_1_10,mood_1_10\n"
    "1,2024-01-02,1,80.5,5,6\n"
    "1,2024-01-09,2,,4,5\n"
    "2,2024-01-03,1,70.25,7,7\n"
)
FOOD_HEADER = "subject_id,date,food_item,category,calories,protein_g,carbs_g,fat_g,fiber_g\n"


def small_cases() -> dict[str, Files]:
    """test_ingest's inputs and the edges of batching: line ends, quotes, blank lines."""
    w = WEIGHT.file_name
    food = NUTRITION.file_name
    return {
        "clean": {w: WEIGHT_CSV.encode()},
        "extra column": {
            w: WEIGHT_CSV.replace("mood_1_10\n", "mood_1_10,notes\n")
            .replace("5,6\n", "5,6,felt good\n")
            .replace("4,5\n", "4,5,\n")
            .replace("7,7\n", "7,7,x\n")
            .encode()
        },
        **{
            f"bad weight {v}": {w: WEIGHT_CSV.replace("70.25", f'"{v}"' if "," in v else v).encode()}
            for v in ("72,5", "abc", "12", "inf")
        },
        "impossible date, missing key": {
            FIBER.file_name: (
                b"subject_id,date,week,total_calories,total_fiber_g\n1,2024-02-30,1,2000,30\n"
                b",2024-01-02,1,2000,30\n1,2024-01-03,1,-5,30\n1,2024-01-04,1,2100,31\n"
            )
        },
        "duplicates": {w: (WEIGHT_CSV + "1,2024-01-02,1,80.5,5,6\n2,2024-01-03,1,71.0,7,7\n").encode()},
        "bom crlf": {w: b"\xef\xbb\xbf" + WEIGHT_CSV.replace("\n", "\r\n").encode()},
        "cp1252": {food: (FOOD_HEADER + "1,2024-01-02,crème brûlée oats,oats,160,4,36,0.2,3.8\n").encode("cp1252")},
        "quoted newline": {
            food: (
                FOOD_HEADER + '1,2024-01-02,"baked\npotato",potato,160,4,36,0.2,3.8\n'
                "1,2024-01-03,oatmeal,oats,150,5,27,3,4\n" + '2,2024-01-03,"a ""long""\r\n\r\nname",oats,150,5,27,3,4\n'
            ).encode()
        },
        "blank lines": {w: WEIGHT_CSV.replace("1,2024-01-09", "\n\n  \n1,2024-01-09").encode()},
        "blank-field lines": {w: (WEIGHT_CSV + ",,,,,\n , ,\u00a0,,,\n3,2024-01-05,1,60,5,5\n").encode()},
        "whitespace last line": {w: (WEIGHT_CSV + "  ").encode()},
        "no final newline": {w: WEIGHT_CSV.rstrip("\n").encode()},
        "CR line ends": {w: WEIGHT_CSV.replace("\n", "\r").encode()},
        "lone CRs": {w: WEIGHT_CSV.replace("1,2024-01-09", "\r\r1,2024-01-09").encode()},
        "quoted header": {w: WEIGHT_CSV.replace("weight_kg", '"weight_kg"').encode()},
        "quoted header, missing column and a bad line later": {
            w: (WEIGHT_CSV.replace("weight_kg", '"weight"') + "3,2024-01-05,1\n").encode()
        },
        "quoted header, missing column": {w: WEIGHT_CSV.replace("weight_kg", '"weight"').encode()},
        "stray byte": {
            food: FOOD_HEADER.encode()
            + b"1,2024-01-02,cr\xc3\xa8me,oats,1,1,1,1,1\n1,2024-01-02,caf\xe9,oats,1,1,1,1,1\n"
            + "1,2024-01-03,\ufffd literal,oats,1,1,1,1,1\n".encode()
        },
        **{
            f"whole number {v}": {w: WEIGHT_CSV.replace("2,2024-01-03,1,", f"{v},2024-01-03,1,").encode()}
            for v in ("1.5", "1e300", "x1")
        },
        "empty": {w: b""},
        "bom only": {w: b"\xef\xbb\xbf"},
        "header only": {w: b"subject_id,date,week,weight_kg,energy_1_10,mood_1_10\n"},
        "missing column": {w: b"subject_id,date,week,energy_1_10,mood_1_10\n1,2024-01-01,1,5,5\n"},
        "semicolons": {w: b"subject_id;date;week;weight_kg;energy_1_10;mood_1_10\n1;2024-01-01;1;80;5;5\n"},
        "extra field": {w: WEIGHT_CSV.encode() + b"3,2024-01-01,1,80,5,5,extra\n"},
        "utf-16": {w: "a,b\n".encode("utf-16")},
        "undecodable": {w: b"subject_id,date\n\x81\x8d\x8f,x\n"},
        "open quote": {food: (FOOD_HEADER + '3,2024-01-03,"potato,potato,100,1,1,1,1\n1,2\n').encode()},
        "char after quote": {food: (FOOD_HEADER + '3,2024-01-03,"potato"x,potato,100,1,1,1,1\n').encode()},
        "trailing commas": {w: joined([ln + ",," for ln in WEIGHT_CSV.splitlines()])},
        "duplicated name": {w: joined([ln + "," + ln.split(",")[3] for ln in WEIGHT_CSV.splitlines()])},
        "reserved name": {
            w: joined([WEIGHT_CSV.splitlines()[0] + ",source_line", *(ln + ",7" for ln in WEIGHT_CSV.splitlines()[1:])])
        },
        "invisible in a name": {w: WEIGHT_CSV.replace("week", "\u200bweek", 1).encode()},
        "invisible stays wrong": {w: WEIGHT_CSV.replace("subject_id", "subject\u200b\u00a0id", 1).encode()},
        "huge field, unquoted": {food: (FOOD_HEADER + "1,2024-01-02," + "A" * 140_000 + ",oats,1,1,1,1,1\n").encode()},
        # pandas and Arrow round this weight differently: it must parse the same in a batch
        # that holds an unparseable value as in one that does not.
        "long decimals beside a bad value": {
            w: (
                WEIGHT_CSV
                + "3,2024-01-03,1,80.27496936790603815,5,5\n4,2024-01-03,1,abc,5,5\n"
                + "".join(f"{5 + i},2024-01-03,1,80.27496936790603815,5,5\n" for i in range(8))
            ).encode()
        },
        "many conflicts": {
            FIBER.file_name: (
                "subject_id,date,week,total_calories,total_fiber_g\n"
                + "".join(f"7,2024-01-02,1,{1000 + i / 5:.1f},{10 + i % 50}\n" for i in range(60))
            ).encode()
        },
    }


def sample_cases(sample: Files) -> dict[str, Files]:
    return {
        "sample": sample,
        "sample, row defects": row_defects(sample),
        "sample, hardening": hardening(sample),
        "sample, shuffled crlf bom duplicates": shuffled_crlf_bom(sample),
        "sample, every field quoted": {name: quoted_everywhere(raw) for name, raw in sample.items()},
        "sample, header only": {**sample, FIBER.file_name: joined(lines(sample[FIBER.file_name])[:1])},
        "sample, semicolons": {**sample, WEIGHT.file_name: sample[WEIGHT.file_name].replace(b",", b";")},
        "sample, extra field on line 50": {
            **sample,
            FIBER.file_name: with_field(sample[FIBER.file_name], 50, "total_fiber_g", "20.1,7", quote=False),
        },
        "sample, undecodable": {
            **sample,
            NUTRITION.file_name: sample[NUTRITION.file_name] + b"1,2024-01-01,caf\x81\x8d,potato,1,1,1,1,1\n",
        },
        "sample, defect on the last line": {
            **sample,
            NUTRITION.file_name: appended(sample[NUTRITION.file_name], '3,2024-01-03,"potato,potato,100,1,1,1,1'),
        },
    }


def head(files: Files, n: int) -> Files:
    """The first n physical lines of each file, as bytes (a stray byte may follow)."""
    return {name: b"".join(raw.splitlines(keepends=True)[:n]) for name, raw in files.items()}


SMALL = small_cases()


@pytest.mark.parametrize("case", SMALL)
@pytest.mark.parametrize(("batch_bytes", "chunk_bytes"), [(64, 5), (1024, 7), (4 << 20, 1 << 20)])
def test_small_inputs_stream_like_the_reference(case, batch_bytes, chunk_bytes):
    assert_streams_like_reference(SMALL[case], batch_bytes, chunk_bytes)


@pytest.mark.parametrize(
    "case",
    [
        "sample",
        "sample, row defects",
        "sample, hardening",
        "sample, shuffled crlf bom duplicates",
        "sample, every field quoted",
        "sample, header only",
        "sample, semicolons",
        "sample, extra field on line 50",
        "sample, undecodable",
        "sample, defect on the last line",
    ],
)
@pytest.mark.parametrize(("batch_bytes", "chunk_bytes"), [(16 << 10, 4099), (4 << 20, 1 << 20)])
def test_sample_inputs_stream_like_the_reference(sample_dir, case, batch_bytes, chunk_bytes):
    assert_streams_like_reference(sample_cases(read(sample_dir))[case], batch_bytes, chunk_bytes)


@pytest.mark.parametrize("case", ["sample", "sample, row defects", "sample, hardening", "sample, every field quoted"])
@pytest.mark.parametrize(("batch_bytes", "chunk_bytes"), [(64, 5), (1024, 333)])
def test_the_head_of_the_sample_streams_like_the_reference_in_tiny_batches(sample_dir, case, batch_bytes, chunk_bytes):
    """Tiny batches cost a typing pass each: the first lines of each file (a batch of 64 bytes
    holds one record, so 40 lines make about 40 batches per file)."""
    files = sample_cases(read(sample_dir))[case]
    assert_streams_like_reference(head(files, 40 if batch_bytes < 1024 else 150), batch_bytes, chunk_bytes)


@pytest.mark.parametrize("case", ["seed", "seed, one quoted field", "seed, cp1252 accents", "seed, mistyped week"])
@pytest.mark.parametrize(("batch_bytes", "chunk_bytes"), [(8 << 10, 1000), (4 << 20, 1 << 20)])
def test_seed_inputs_stream_like_the_reference(seed_dir, case, batch_bytes, chunk_bytes):
    assert_streams_like_reference(seed_cases(read(seed_dir))[case], batch_bytes, chunk_bytes)


def test_the_encoding_pass_decides_like_decode_with_evidence():
    from potato_assets.study.ingest import decode_with_evidence

    rng = np.random.default_rng(3)
    alphabet = [b"a", b",", b"\n", b"\r", "é".encode(), "€".encode(), b"\xe9", b"\x80", b"\xef\xbf\xbd", b"\xf0\x9f"]
    for trial in range(400):
        raw = (b"\xef\xbb\xbf" if trial % 5 == 0 else b"") + b"".join(
            alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(0, 40)))
        )
        for size in (1, 2, 3, 7):
            chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
            try:
                _, encoding, replaced = decode_with_evidence(raw, "x.csv")
            except FileDefect as defect:
                with pytest.raises(FileDefect, match=str(defect)[:20]):
                    scan_encoding(chunks, "x.csv")
                continue
            found = scan_encoding(chunks, "x.csv")
            assert (found.encoding, found.replaced) == (encoding, replaced), (raw, size)


def test_a_defect_on_the_last_line_comes_after_every_batch_and_is_the_reference_sentence(sample_dir):
    raw = appended(read(sample_dir)[NUTRITION.file_name], "1,2")
    stream = stream_landing_csv(
        chunks_of(raw, 4096), NUTRITION, source_file=NUTRITION.file_name, ingested_at=NOW, batch_bytes=8192
    )
    seen = 0
    with pytest.raises(FileDefect) as info:
        for _ in stream:
            seen += 1
    assert seen > 10  # batches came first: the caller must keep them invisible until the end
    last = len(lines(raw))
    assert str(info.value) == (
        f"{NUTRITION.file_name} line {last} has 2 fields but the header has 9: the row breaks the CSV structure."
    )
    with pytest.raises(ValueError, match="not read to its end"):
        FileTotals.of(stream)


def test_a_file_rows_per_bucket_never_split_a_subject(sample_dir):
    """Phase B sees all of a subject's rows: one subject's conflicting weigh-ins across batches
    are named with each other in any bucket count."""
    spec: LandingFile = WEIGHT
    raw = read(sample_dir)[spec.file_name]
    rows = lines(raw)
    first = rows[1].split(",")
    raw = appended(raw, ",".join([*first[:3], "99.9", *first[4:]]))
    assert_streams_like_reference({spec.file_name: raw}, 256, 100)


def test_a_file_rewritten_between_the_two_passes_is_refused(sample_dir):
    raw = read(sample_dir)[WEIGHT.file_name]
    versions = iter([raw, raw.replace(b"\n", b"\n", 1) + b"1,2024-01-01,1,80,5,5\n"])

    def read_chunks():
        return chunks_of(next(versions), 1000)()

    stream = stream_landing_csv(read_chunks, WEIGHT, source_file=WEIGHT.file_name, ingested_at=NOW)
    with pytest.raises(FileDefect, match=r"^Potato_tidy.csv changed while it was being read; it was not ingested"):
        list(stream)


def test_rows_read_back_from_parquet_finish_like_the_reference(sample_dir):
    """Phase A's rows go through bucket files between the phases: a parquet round trip (text
    back as Python-backed strings) changes no row of phase B's result."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    files = row_defects(read(sample_dir))
    expected = reference(files)
    streamed = phase_a(files, 16 << 10, 4099)
    for name, (_, batches) in streamed.items():
        for batch in batches:
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(batch.rows, preserve_index=False), buffer)
            batch.rows = pq.read_table(io.BytesIO(buffer.getvalue())).to_pandas()
            batch.rows["ingested_at"] = batch.rows["ingested_at"].astype(expected[name].rows["ingested_at"].dtype)
    for name, (rows, quarantine, totals) in phase_b(streamed, 3).items():
        pd.testing.assert_frame_equal(rows, expected[name].rows, check_exact=True)
        pd.testing.assert_frame_equal(quarantine, expected[name].quarantine, check_exact=True)
        assert totals.rows_quarantined == expected[name].rows_quarantined
