"""Hardening of ingestion (issue 15), each class on inputs built from the sample or the seed study:
linear conflict reasons, no silent nulls, evidence-led decoding, header defects in one sentence,
reserved ingestion columns, and week labels checked against the majority calendar."""

from __future__ import annotations

import json
import time
import tracemalloc

import pandas as pd
import pytest

from potato_assets.lib import contracts
from potato_assets.study import calendar
from potato_assets.study.ingest import (
    CONFLICT_EXAMPLES,
    FileDefect,
    parse_landing_csv,
    quarantine_label_contradictions,
)
from potato_assets.study.schema import FIBER, LANDING_FILES, NUTRITION, RESERVED_COLUMNS, WEIGHT

NOW = pd.Timestamp("2026-01-01T00:00:00Z")


def parse(raw: bytes, spec):
    return parse_landing_csv(raw, spec, source_file=spec.file_name, ingested_at=NOW)


def lines_of(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def with_field(lines: list[str], line: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    return [*lines[: line - 1], ",".join(fields), *lines[line:]]


def encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


# --- (2) conflicting duplicates: memory and time linear in the input ---------------------------


def test_forty_thousand_conflicting_rows_cost_linear_memory(sample_dir):
    header, first = lines_of(sample_dir / FIBER.file_name)[:2]
    sid, date, week, *_ = first.split(",")
    # 40,000 daily-log rows for one subject and date, each with another calorie count.
    rows = [f"{sid},{date},{week},{1000 + i / 5:.1f},{10 + i % 50}" for i in range(40_000)]
    raw = encode([header, *rows])
    tracemalloc.start()
    started = time.perf_counter()
    result = parse(raw, FIBER)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.rows.empty and result.rows_quarantined == 40_000
    # Quadratic reasons took 5.4 GB for 20,000 rows; linear ones stay far below 300 MB.
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert elapsed < 60
    reasons = result.quarantine["reason"]
    assert reasons.str.len().max() < 200
    assert reasons.iloc[0] == (
        "conflicting rows for the same subject_id and date (conflicts with lines 3, 4, 5 and 39,996 more)"
    )
    assert reasons.iloc[1].endswith("(conflicts with lines 2, 4, 5 and 39,996 more)")


def test_two_conflicting_rows_name_each_other(sample_dir):
    lines = lines_of(sample_dir / WEIGHT.file_name)
    sid, date, week, *rest = lines[5].split(",")
    lines.append(",".join([sid, date, week, "99.9", *rest[1:]]))
    q = parse(encode(lines), WEIGHT).quarantine
    by_date = q[q["column"] == "subject_id,date"].set_index("line")["reason"]
    last = len(lines)
    assert by_date[6] == f"conflicting rows for the same subject_id and date (conflicts with line {last})"
    assert by_date[last] == "conflicting rows for the same subject_id and date (conflicts with line 6)"
    assert CONFLICT_EXAMPLES == 3


# --- (4) no silent nulls: missing only where the schema allows it ------------------------------


@pytest.mark.parametrize("spec", LANDING_FILES, ids=lambda s: s.asset_name)
@pytest.mark.parametrize("token", ["", "NA", "none", " null ", "N/A", "nan"])
def test_a_missing_value_in_any_required_column_is_quarantined(sample_dir, spec, token):
    lines = lines_of(sample_dir / spec.file_name)
    for column in spec.required:
        result = parse(encode(with_field(lines, 7, column, token)), spec)
        assert 7 not in result.rows["source_line"].tolist(), column
        mine = result.quarantine[(result.quarantine["line"] == 7) & (result.quarantine["column"] == column)]
        expected = "missing key" if column in spec.keys else "missing value in a required column"
        assert mine["reason"].tolist() == [expected], column
        assert mine["value"].tolist() == [token]


@pytest.mark.parametrize("spec", LANDING_FILES, ids=lambda s: s.asset_name)
def test_a_missing_value_in_a_nullable_column_stays_missing(sample_dir, spec):
    lines = lines_of(sample_dir / spec.file_name)
    for column in spec.nullable:
        result = parse(encode(with_field(lines, 7, column, "NA")), spec)
        row = result.rows[result.rows["source_line"] == 7]
        assert len(row) == 1 and pd.isna(row[column].iloc[0]), column
        assert result.quarantine.empty, column


def test_a_blank_food_category_is_not_no_beans(seed_dir):
    lines = lines_of(seed_dir / NUTRITION.file_name)
    beans = [i + 1 for i, ln in enumerate(lines) if ",beans," in ln][:3]
    for line, token in zip(beans, ["", "NA", "none"], strict=True):
        lines = with_field(lines, line, "category", token)
    result = parse(encode(lines), NUTRITION)
    assert sorted(result.quarantine["line"]) == beans
    assert result.rows["category"].notna().all()


def test_the_schema_marks_every_column_required_or_nullable():
    for spec in LANDING_FILES:
        assert set(spec.required) | set(spec.nullable) == set(spec.columns)
        assert set(spec.keys) <= set(spec.required)
    assert NUTRITION.required == ("subject_id", "date", "category")


def test_each_bronze_contract_requires_what_the_schema_requires():
    for spec in LANDING_FILES:
        suite = contracts.load_suite(f"bronze_{spec.asset_name}")
        not_null = {
            e["kwargs"]["column"]
            for e in suite["expectations"]
            if e["type"] == "expect_column_values_to_not_be_null" and e.get("severity", "critical") == "critical"
        }
        assert set(spec.required) <= not_null, spec.file_name


def test_the_nutrition_contract_fails_on_a_null_category(seed_dir):
    rows = parse((seed_dir / NUTRITION.file_name).read_bytes(), NUTRITION).rows
    rows.loc[rows.index[:3], "category"] = None
    result = contracts.run_contract("bronze_nutrition", rows)
    assert [o.rule for o in result.hard_failures] == ["category_present"]


def test_a_closed_vocabulary_rule_must_say_what_a_null_is(tmp_path):
    suite = {
        "name": "vocab",
        "expectations": [
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "category", "value_set": ["a"]},
                "meta": {"rule": "known"},
            }
        ],
    }
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(suite))
    with pytest.raises(contracts.ContractError, match="lets nulls pass"):
        contracts.load_suite(path)
    suite["expectations"][0]["meta"]["nullable"] = True
    path.write_text(json.dumps(suite))
    assert contracts.load_suite(path)["name"] == "vocab"


# --- (11) decoding follows the evidence ---------------------------------------------------------


def accented_nutrition(seed_dir, every: int = 60) -> list[str]:
    """The seed's nutrition file with every `every`-th food named with accents, as a UTF-8 export
    from a French spreadsheet would have them."""
    lines = lines_of(seed_dir / NUTRITION.file_name)
    for line in range(2, len(lines) + 1, every):
        lines = with_field(lines, line, "food_item", "crème fraîche")
    return lines


def test_one_stray_cp1252_byte_keeps_a_utf8_file_utf8(seed_dir):
    lines = accented_nutrition(seed_dir)
    assert sum("crème fraîche" in ln for ln in lines) >= 49
    clean = parse(encode(lines), NUTRITION)
    # A name typed in a Windows tool on one line: its é is the single byte 0xE9.
    target = 5
    mixed = ("\n".join(with_field(lines, target, "food_item", "caf\udce9")) + "\n").encode(
        "utf-8", errors="surrogateescape"
    )
    result = parse(mixed, NUTRITION)
    assert result.encoding == "utf-8"
    kept = result.rows.drop(columns="ingested_at").reset_index(drop=True)
    expected = clean.rows[clean.rows["source_line"] != target].drop(columns="ingested_at").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)  # every accented name intact, not mojibake
    assert (kept["food_item"] == "crème fraîche").sum() >= 48
    q = result.quarantine
    assert q[["line", "column"]].values.tolist() == [[target, "food_item"]]
    assert q["value"].iloc[0] == "caf\ufffd"
    assert "not valid UTF-8" in q["reason"].iloc[0]
    assert any("1 byte sequence(s) are not valid UTF-8" in n and f"line(s) {target})" in n for n in result.notes)


def test_a_windows_1252_file_is_still_read_as_windows_1252(seed_dir):
    lines = accented_nutrition(seed_dir)
    result = parse(("\n".join(lines) + "\n").encode("cp1252"), NUTRITION)
    assert result.encoding == "cp1252" and "Windows-1252" in result.notes[0]
    assert (result.rows["food_item"] == "crème fraîche").sum() >= 49 and result.quarantine.empty


# --- (12) header defects: one sentence naming file, line and column ----------------------------


def test_trailing_commas_name_the_unnamed_columns(sample_dir):
    lines = [ln + ",," for ln in lines_of(sample_dir / WEIGHT.file_name)]
    with pytest.raises(FileDefect) as info:
        parse(encode(lines), WEIGHT)
    assert str(info.value) == (
        "Potato_tidy.csv line 1 has no name for column(s) 7, 8 of 8 (an empty header field: a trailing or doubled comma?)."
    )


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\u200d", "\u2060", "\u200e"])
def test_invisible_characters_in_a_header_name_are_removed_and_reported(sample_dir, invisible):
    lines = lines_of(sample_dir / WEIGHT.file_name)
    lines[0] = lines[0].replace("week", invisible + "week")
    clean = parse((sample_dir / WEIGHT.file_name).read_bytes(), WEIGHT)
    result = parse(encode(lines), WEIGHT)
    assert len(result.rows) == len(clean.rows) and result.quarantine.empty
    assert result.notes == [f"header column 3 (week) contained invisible character(s) U+{ord(invisible):04X}, removed"]


def test_a_name_that_stays_wrong_is_shown_with_its_invisible_characters(sample_dir):
    lines = lines_of(sample_dir / WEIGHT.file_name)
    lines[0] = lines[0].replace("subject_id", "subject\x07id")
    with pytest.raises(FileDefect) as info:
        parse(encode(lines), WEIGHT)
    assert "missing required column(s) subject_id" in str(info.value)
    assert "subject<U+0007>id" in str(info.value) and "\x07" not in str(info.value)


def test_duplicated_names_are_named_with_their_columns(sample_dir):
    lines = lines_of(sample_dir / WEIGHT.file_name)
    lines = [ln + "," + ln.split(",")[3] for ln in lines]
    with pytest.raises(FileDefect, match=r"line 1 has duplicated column name\(s\): weight_kg in columns 4, 7\."):
        parse(encode(lines), WEIGHT)


# --- (10) a user's columns are never overwritten -----------------------------------------------


@pytest.mark.parametrize("reserved", RESERVED_COLUMNS)
def test_a_column_named_like_an_ingestion_column_refuses_the_file(sample_dir, reserved):
    lines = lines_of(sample_dir / FIBER.file_name)
    lines = [lines[0] + "," + reserved, *(ln + ",user value" for ln in lines[1:])]
    with pytest.raises(FileDefect) as info:
        parse(encode(lines), FIBER)
    assert str(info.value).startswith(f"Potato_fiber_daily.csv line 1 names column 6 ({reserved}), reserved for")


# --- (6) a row that contradicts its own label is named ----------------------------------------


def test_one_mistyped_weigh_in_date_is_the_one_row_blamed(seed_dir):
    lines = lines_of(seed_dir / WEIGHT.file_name)
    header = lines[0].split(",")
    date = lines[1].split(",")[header.index("date")]
    typo = str(int(date[:4]) - 1) + date[4:]
    weight = parse(encode(with_field(lines, 2, "date", typo)), WEIGHT)
    fiber = parse((seed_dir / FIBER.file_name).read_bytes(), FIBER)
    with pytest.raises(calendar.CalendarError) as info:
        calendar.subject_calendars(weight.rows, fiber.rows)
    assert str(info.value).startswith("1 row(s) carry a week label")
    assert "(Potato_tidy.csv line 2)" in str(info.value)

    kept_before = len(weight.rows)
    assert quarantine_label_contradictions(weight, fiber) == 1
    assert len(weight.rows) == kept_before - 1 and 2 not in weight.rows["source_line"].tolist()
    record = weight.quarantine.iloc[0]
    assert (record["line"], record["column"]) == (2, "date,week")
    assert f"so {typo} is week" in record["reason"]
    # The rest agrees with the calendar it had before the typo.
    clean = parse((seed_dir / WEIGHT.file_name).read_bytes(), WEIGHT)
    pd.testing.assert_frame_equal(
        calendar.subject_calendars(weight.rows, fiber.rows).drop(columns="n_labelled_rows"),
        calendar.subject_calendars(clean.rows, fiber.rows).drop(columns="n_labelled_rows"),
    )


def test_a_mistyped_week_label_is_blamed_not_its_neighbours(seed_dir):
    lines = lines_of(seed_dir / FIBER.file_name)
    header = lines[0].split(",")
    week = int(lines[30].split(",")[header.index("week")])
    fiber = parse(encode(with_field(lines, 31, "week", str(week + 3))), FIBER)
    weight = parse((seed_dir / WEIGHT.file_name).read_bytes(), WEIGHT)
    reasons = calendar.label_contradictions(weight.rows, fiber.rows)
    assert reasons[0].isna().all()
    assert fiber.rows.loc[reasons[1].notna(), "source_line"].tolist() == [31]


def test_when_every_label_agrees_the_calendar_is_the_old_smallest_anchor(seed_dir, sample_dir):
    for folder in (seed_dir, sample_dir):
        weight = parse((folder / WEIGHT.file_name).read_bytes(), WEIGHT).rows
        fiber = parse((folder / FIBER.file_name).read_bytes(), FIBER).rows
        rows = pd.concat([weight[["subject_id", "date", "week"]], fiber[["subject_id", "date", "week"]]])
        anchor = rows["date"] - pd.to_timedelta(7 * (rows["week"].astype("int64") - 1), unit="D")
        smallest = anchor.groupby(rows["subject_id"]).min()
        got = calendar.subject_calendars(weight, fiber).set_index("subject_id")["week1_start"]
        assert (got.to_numpy() == smallest.loc[got.index].to_numpy()).all()


def test_a_contract_summary_quotes_huge_cells_cut_short(seed_dir):
    rows = parse((seed_dir / NUTRITION.file_name).read_bytes(), NUTRITION).rows
    rows.loc[rows.index[:3], "category"] = "[x](https://evil.example)" + "y" * 120_000
    summary = contracts.run_contract("bronze_nutrition", rows).summary()
    assert "category_known" in summary and len(summary) < 1_000
