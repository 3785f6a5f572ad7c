from __future__ import annotations

import pandas as pd
import pytest

from potato_assets.study.ingest import FileDefect, decode, parse_landing_csv
from potato_assets.study.schema import FIBER, NUTRITION, WEIGHT

NOW = pd.Timestamp("2026-01-01T00:00:00Z")

WEIGHT_CSV = (
    "subject_id,date,week,weight_kg,energy_1_10,mood_1_10\n"
    "1,2024-01-02,1,80.5,5,6\n"
    "1,2024-01-09,2,,4,5\n"
    "2,2024-01-03,1,70.25,7,7\n"
)


def parse(text: str, spec=WEIGHT, encoding: str = "utf-8"):
    return parse_landing_csv(text.encode(encoding), spec, source_file=spec.file_name, ingested_at=NOW)


def test_clean_file_keeps_every_value_typed_with_ingestion_columns():
    r = parse(WEIGHT_CSV)
    assert r.rows_read == 3 and len(r.rows) == 3 and r.quarantine.empty
    assert list(r.rows.columns) == [*WEIGHT.columns, "source_file", "source_line", "ingested_at"]
    assert r.rows["source_line"].tolist() == [2, 3, 4]
    assert r.rows["subject_id"].dtype == "Int64"
    assert r.rows["date"].tolist()[0] == pd.Timestamp("2024-01-02")
    assert r.rows["weight_kg"].tolist()[:1] == [80.5] and pd.isna(r.rows["weight_kg"][1])
    assert (r.rows["source_file"] == "Potato_tidy.csv").all()


def test_extra_columns_are_kept_as_text():
    text = WEIGHT_CSV.replace("mood_1_10\n", "mood_1_10,notes\n").replace("5,6\n", "5,6,felt good\n")
    text = text.replace("4,5\n", "4,5,\n").replace("7,7\n", "7,7,x\n")
    r = parse(text)
    assert r.rows["notes"].tolist()[0] == "felt good"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("72,5", "not a number (decimal comma?)"),
        ("abc", "not a number"),
        ("12", "outside plausible range [30, 300]"),
        ("inf", "not a finite number"),
    ],
)
def test_bad_weight_goes_to_quarantine_with_line_and_reason(value, reason):
    text = WEIGHT_CSV.replace("70.25", f'"{value}"' if "," in value else value)
    r = parse(text)
    assert len(r.rows) == 2 and 4 not in r.rows["source_line"].tolist()
    q = r.quarantine.iloc[0]
    assert (q["source_file"], q["line"], q["column"], q["value"], q["reason"]) == (
        "Potato_tidy.csv",
        4,
        "weight_kg",
        value,
        reason,
    )


def test_impossible_date_missing_key_and_negative_kcal():
    text = (
        "subject_id,date,week,total_calories,total_fiber_g\n"
        "1,2024-02-30,1,2000,30\n"
        ",2024-01-02,1,2000,30\n"
        "1,2024-01-03,1,-5,30\n"
        "1,2024-01-04,1,2100,31\n"
    )
    r = parse(text, FIBER)
    got = {(row.line, row.column, row.reason) for row in r.quarantine.itertuples()}
    assert got == {
        (2, "date", "impossible date"),
        (3, "subject_id", "missing key"),
        (4, "total_calories", "outside plausible range [0, 10000]"),
    }
    assert r.rows["source_line"].tolist() == [5]
    assert r.rows_quarantined == 3 and r.quarantine_share == pytest.approx(0.75)


def test_unknown_food_category_is_quarantined():
    text = (
        "subject_id,date,food_item,category,calories,protein_g,carbs_g,fat_g,fiber_g\n"
        "1,2024-01-02,baked potato,potato,160,4,36,0.2,3.8\n"
        "1,2024-01-02,cake,dessert,400,4,50,20,1\n"
    )
    r = parse(text, NUTRITION)
    assert r.quarantine["reason"].iloc[0].startswith("not one of: potato")
    assert len(r.rows) == 1


def test_exact_duplicates_dropped_once_and_conflicts_quarantined():
    text = WEIGHT_CSV + "1,2024-01-02,1,80.5,5,6\n" + "2,2024-01-03,1,71.0,7,7\n"
    r = parse(text)
    assert r.exact_duplicates_dropped == 1
    conflict = r.quarantine[r.quarantine["reason"].str.startswith("conflicting")]
    assert sorted(conflict["line"].unique()) == [4, 6]
    assert sorted(r.rows["source_line"]) == [2, 3]


def test_food_entries_may_repeat():
    text = (
        "subject_id,date,food_item,category,calories,protein_g,carbs_g,fat_g,fiber_g\n"
        "1,2024-01-02,baked potato,potato,160,4,36,0.2,3.8\n"
        "1,2024-01-02,baked potato,potato,160,4,36,0.2,3.8\n"
    )
    r = parse(text, NUTRITION)
    assert len(r.rows) == 2 and r.quarantine.empty


def test_bom_crlf_and_cp1252_decode_to_the_same_rows():
    clean = parse(WEIGHT_CSV).rows.drop(columns=["ingested_at"])
    bom_crlf = parse_landing_csv(
        b"\xef\xbb\xbf" + WEIGHT_CSV.replace("\n", "\r\n").encode(),
        WEIGHT,
        source_file=WEIGHT.file_name,
        ingested_at=NOW,
    )
    assert bom_crlf.encoding == "utf-8-sig"
    pd.testing.assert_frame_equal(bom_crlf.rows.drop(columns=["ingested_at"]), clean)
    food = "subject_id,date,food_item,category,calories,protein_g,carbs_g,fat_g,fiber_g\n1,2024-01-02,crème brûlée oats,oats,160,4,36,0.2,3.8\n"
    cp = parse_landing_csv(food.encode("cp1252"), NUTRITION, source_file="f.csv", ingested_at=NOW)
    assert cp.encoding == "cp1252" and cp.rows["food_item"][0] == "crème brûlée oats"


def test_quoted_newline_keeps_physical_line_numbers():
    food = (
        "subject_id,date,food_item,category,calories,protein_g,carbs_g,fat_g,fiber_g\n"
        '1,2024-01-02,"baked\npotato",potato,160,4,36,0.2,3.8\n'
        "1,2024-01-03,oatmeal,oats,150,5,27,3,4\n"
    )
    r = parse(food, NUTRITION)
    assert r.rows["source_line"].tolist() == [2, 4]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "Potato_tidy.csv is empty: it has no header line."),
        (
            b"subject_id,date,week,weight_kg,energy_1_10,mood_1_10\n",
            "Potato_tidy.csv is empty: it has a header but no data rows.",
        ),
        (
            b"subject_id,date,week,energy_1_10,mood_1_10\n1,2024-01-01,1,5,5\n",
            "Potato_tidy.csv is missing required column(s) weight_kg",
        ),
        (b"subject_id;date;week;weight_kg;energy_1_10;mood_1_10\n1;2024-01-01;1;80;5;5\n", "is the delimiter ';'?"),
        (
            WEIGHT_CSV.encode() + b"3,2024-01-01,1,80,5,5,extra\n",
            "Potato_tidy.csv line 5 has 7 fields but the header has 6",
        ),
        ("a,b\n".encode("utf-16"), "Potato_tidy.csv contains NUL bytes"),
        (b"subject_id,date\n\x81\x8d\x8f,x\n", "neither UTF-8 nor Windows-1252"),
    ],
)
def test_file_level_defects_name_the_file_and_problem(raw, message):
    with pytest.raises(FileDefect) as info:
        parse_landing_csv(raw, WEIGHT, source_file=WEIGHT.file_name, ingested_at=NOW)
    assert message in str(info.value)


def test_decode_reports_plain_utf8():
    assert decode(b"a,b\n", "x.csv") == ("a,b\n", "utf-8")


def test_seed_files_ingest_without_defects(seed_dir):
    for spec in (WEIGHT, FIBER, NUTRITION):
        r = parse_landing_csv(
            (seed_dir / spec.file_name).read_bytes(), spec, source_file=spec.file_name, ingested_at=NOW
        )
        assert r.quarantine.empty, r.quarantine.head()
        assert len(r.rows) == r.rows_read > 0


def test_fast_and_exact_readers_agree(seed_dir):
    """Quoting one field forces the csv-module path; the result must equal the pyarrow path."""
    raw = (seed_dir / NUTRITION.file_name).read_bytes()
    fast = parse_landing_csv(raw, NUTRITION, source_file="n.csv", ingested_at=NOW)
    quoted = raw.replace(b",baked potato,", b',"baked potato",', 1)
    assert quoted != raw
    exact = parse_landing_csv(quoted, NUTRITION, source_file="n.csv", ingested_at=NOW)
    pd.testing.assert_frame_equal(fast.rows, exact.rows)
    pd.testing.assert_frame_equal(fast.quarantine, exact.quarantine)


def test_blank_lines_keep_physical_line_numbers():
    text = WEIGHT_CSV.replace("1,2024-01-09", "\n1,2024-01-09")
    assert parse(text).rows["source_line"].tolist() == [2, 4, 5]


def test_whitespace_only_last_line_is_not_a_record():
    assert parse(WEIGHT_CSV + "  ").rows["source_line"].tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    ("value", "reason"),
    [("1.5", "not a whole number"), ("1e300", "whole number too large"), ("x1", "not a number")],
)
def test_bad_whole_number_goes_to_quarantine_with_its_reason(value, reason):
    r = parse(WEIGHT_CSV.replace("2,2024-01-03,1,", f"{value},2024-01-03,1,"))
    assert r.rows["source_line"].tolist() == [2, 3] and r.rows["subject_id"].dtype == "Int64"
    q = r.quarantine.iloc[0]
    assert (q["line"], q["column"], q["value"], q["reason"]) == (4, "subject_id", value, reason)


def test_dates_parse_each_distinct_text_as_pandas_parses_every_row():
    """_to_dates parses distinct texts once; every row must get what parsing it alone gives."""
    from potato_assets.study.ingest import STRING, _to_dates

    texts = ["2024-01-05", "2024-1-5", "2024-02-30", "99999-01-01", "5.1.2024", "", None, "2024-01-05", "0001-01-01"]
    present = pd.Series(texts * 3, dtype=STRING, index=range(100, 100 + 3 * len(texts)))
    expected = pd.to_datetime(present, format="%Y-%m-%d", errors="coerce").astype("datetime64[ns]")
    got = _to_dates(present)
    pd.testing.assert_series_equal(got, expected, check_names=False)
    assert _to_dates(present.iloc[:0]).dtype == "datetime64[ns]"
