"""Bad landing files end to end: row defects are quarantined and the run goes on; file defects fail
ingestion before anything is written; harmless differences (row order, CRLF, BOM, exact duplicates)
change no gold number."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from potato_assets.study.models import MODEL_NAMES
from potato_assets.study.schema import FIBER, LANDING_FILES, NUTRITION, WEIGHT
from potato_assets_tests.helpers import (
    check_evaluations,
    copy_landing,
    lake_bytes,
    materialize_all,
    read_table,
    set_field,
)

pytestmark = pytest.mark.e2e
GOLD_TABLES = [f"gold/models/{name}" for name in (*MODEL_NAMES, "model_summary")]


def append_line(path: Path, text: str) -> int:
    """Append a record; returns its physical line number."""
    lines = path.read_text().splitlines()
    lines.append(text)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def line_text(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1]


def gold_tables(lake: Path) -> dict[str, pd.DataFrame]:
    return {key: read_table(str(lake), key) for key in GOLD_TABLES}


@pytest.fixture(scope="module")
def good_run(sample_dir, tmp_path_factory):
    lake = tmp_path_factory.mktemp("good") / "lake"
    result = materialize_all(sample_dir, lake)
    return lake, result


def test_every_contract_and_gold_check_passes_on_the_clean_sample(good_run):
    _, result = good_run
    evaluations = check_evaluations(result)
    expected = {f"bronze/{s.asset_name}:{c}" for s in LANDING_FILES for c in ("contract", "quarantine_share")}
    expected |= {
        f"silver/{n}:contract"
        for n in ("study_calendar", "subject_trajectories", "weekly_features", "modeling_dataset")
    }
    expected |= {
        "gold/models/model_summary:all_models_converged",
        "gold/models/model_summary:fiber_estimates_agree",
    }
    expected |= {f"gold/models/{n}:finite_estimates" for n in MODEL_NAMES}
    assert expected <= set(evaluations)
    failed = {k: e.description for k, e in evaluations.items() if k in expected and not e.passed}
    assert failed == {}


# ----------------------------------------------------------------------------------------------
# Row-level defects
# ----------------------------------------------------------------------------------------------


def test_row_defects_are_quarantined_with_file_line_column_and_reason(sample_dir, tmp_path):
    landing = copy_landing(sample_dir, tmp_path / "landing")
    weight, fiber, nutrition = (landing / s.file_name for s in (WEIGHT, FIBER, NUTRITION))
    expected: set[tuple[str, int, str, str, str]] = set()

    def bad(path: Path, line: int, column: str, value: str, reason: str) -> None:
        set_field(path, line, column, value)
        expected.add((path.name, line, column, value, reason))

    bad(weight, 5, "weight_kg", "72,5", "not a number (decimal comma?)")
    bad(weight, 6, "weight_kg", "abc", "not a number")
    bad(weight, 7, "date", "2024-02-30", "impossible date")
    bad(weight, 8, "weight_kg", "500", "outside plausible range [30, 300]")
    bad(weight, 9, "subject_id", "", "missing key")
    bad(fiber, 20, "total_calories", "-5", "outside plausible range [0, 10000]")
    bad(fiber, 21, "total_fiber_g", "12..5", "not a number")
    bad(
        nutrition,
        30,
        "category",
        "candy",
        "not one of: " + ", ".join(NUTRITION.allowed_values["category"]),
    )
    bad(nutrition, 31, "date", "31/01/2024", "not an ISO date (yyyy-mm-dd)")
    # An exact duplicate is dropped once and counted; a second weigh-in for the same subject,
    # date and week with another weight conflicts: both rows are quarantined, under both keys.
    append_line(weight, line_text(weight, 11))
    original = line_text(weight, 12).split(",")
    conflicting = append_line(weight, ",".join([*original[:3], "99.9", *original[4:]]))
    sid, date, week = original[:3]
    for key, value in (("subject_id,date", f"{sid}|{date}"), ("subject_id,week", f"{sid}|{week}")):
        label = key.replace(",", " and ")
        for line, other in ((12, conflicting), (conflicting, 12)):
            expected.add(
                (
                    WEIGHT.file_name,
                    line,
                    key,
                    value,
                    f"conflicting rows for the same {label} (conflicts with line {other})",
                )
            )
    append_line(fiber, line_text(fiber, 40))

    lake = tmp_path / "lake"
    result = materialize_all(landing, lake, raise_on_error=False)
    assert result.success  # row defects never stop the run

    quarantine = read_table(str(lake), "bronze/quarantine")
    assert list(quarantine.columns) == ["source_file", "line", "column", "value", "reason"]
    got = set(quarantine.itertuples(index=False, name=None))
    assert got == expected

    bronze_weight = read_table(str(lake), "bronze/weight")
    quarantined_lines = {line for file, line, *_ in expected if file == WEIGHT.file_name}
    assert not quarantined_lines & set(bronze_weight["source_line"])
    assert len(bronze_weight) == 600 + 2 - len(quarantined_lines) - 1
    assert 99.9 not in set(bronze_weight["weight_kg"])

    evaluations = check_evaluations(result)
    gate = {k: v.value for k, v in evaluations["bronze/weight:quarantine_share"].metadata.items()}
    assert (gate["rows_read"], gate["rows_quarantined"], gate["exact_duplicates_dropped"]) == (
        602,
        7,
        1,
    )
    assert evaluations["bronze/weight:quarantine_share"].passed
    fiber_gate = {k: v.value for k, v in evaluations["bronze/fiber:quarantine_share"].metadata.items()}
    assert (fiber_gate["rows_quarantined"], fiber_gate["exact_duplicates_dropped"]) == (2, 1)
    assert all(evaluations[f"bronze/{s.asset_name}:contract"].passed for s in LANDING_FILES)
    assert (lake / "gold" / "reports" / "model_report.html").exists()


# ----------------------------------------------------------------------------------------------
# File-level defects
# ----------------------------------------------------------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _drop_column(column: str):
    def drop(path: Path) -> None:
        pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[column]).to_csv(path, index=False)

    return drop


def _undecodable(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"1,2024-01-01,caf\x81\x8d,potato,1,1,1,1,1\n")


def _semicolons(path: Path) -> None:
    path.write_text(path.read_text().replace(",", ";"))


def _extra_field(path: Path) -> None:
    set_field(path, 50, "total_fiber_g", "20.1,7", raw=True)


def _open_quote(path: Path) -> None:
    append_line(path, '3,2024-01-03,"potato,potato,100,1,1,1,1')


FILE_DEFECTS = {
    "empty file": (WEIGHT, _empty, ["Potato_tidy.csv is empty"]),
    "header but no rows": (FIBER, _header_only, ["Potato_fiber_daily.csv", "no data rows"]),
    "missing column": (
        FIBER,
        _drop_column("total_fiber_g"),
        ["Potato_fiber_daily.csv", "missing required column", "total_fiber_g"],
    ),
    "undecodable text": (
        NUTRITION,
        _undecodable,
        ["Potato_nutrition_rows.csv", "cannot be decoded"],
    ),
    "wrong delimiter": (
        WEIGHT,
        _semicolons,
        ["Potato_tidy.csv", "weight_kg", "is the delimiter ';'"],
    ),
    "row with an extra field": (
        FIBER,
        _extra_field,
        ["Potato_fiber_daily.csv line 50", "6 fields", "header has 5"],
    ),
    "unterminated quote": (
        NUTRITION,
        _open_quote,
        ["Potato_nutrition_rows.csv line", "not valid CSV"],
    ),
}


@pytest.mark.parametrize("defect", FILE_DEFECTS)
def test_file_defect_fails_naming_the_file_and_leaves_the_lake_byte_for_byte(good_run, sample_dir, tmp_path, defect):
    spec, spoil, words = FILE_DEFECTS[defect]
    good_lake, _ = good_run
    lake = tmp_path / "lake"
    shutil.copytree(good_lake, lake)
    before = lake_bytes(lake)
    landing = copy_landing(sample_dir, tmp_path / "landing")
    spoil(landing / spec.file_name)

    result = materialize_all(landing, lake, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["ingest_landing"]
    description = failures[0].step_failure_data.user_failure_data.description
    for word in words:
        assert word in description, description
    assert "Traceback" not in description and "\n" not in description
    assert not result.get_asset_materialization_events()
    assert lake_bytes(lake) == before


def test_a_rerun_after_the_fix_picks_up_cleanly(good_run, sample_dir, tmp_path):
    good_lake, _ = good_run
    lake = tmp_path / "lake"
    shutil.copytree(good_lake, lake)
    landing = copy_landing(sample_dir, tmp_path / "landing")
    good_weight = (landing / WEIGHT.file_name).read_bytes()
    _semicolons(landing / WEIGHT.file_name)
    assert not materialize_all(landing, lake, raise_on_error=False).success
    (landing / WEIGHT.file_name).write_bytes(good_weight)
    assert materialize_all(landing, lake).success
    for key, table in gold_tables(good_lake).items():
        pd.testing.assert_frame_equal(read_table(str(lake), key), table, check_exact=True)


# ----------------------------------------------------------------------------------------------
# Differences that must not matter
# ----------------------------------------------------------------------------------------------


def test_shuffled_rows_crlf_bom_and_exact_duplicates_change_no_gold_number(good_run, sample_dir, tmp_path):
    good_lake, _ = good_run
    landing = tmp_path / "landing"
    landing.mkdir()
    rng = np.random.default_rng(5)
    for spec in LANDING_FILES:
        frame = pd.read_csv(sample_dir / spec.file_name, dtype=str, keep_default_na=False)
        if spec.unique_keys:  # weigh-ins and daily log: exact duplicates are dropped
            frame = pd.concat([frame, frame.iloc[rng.choice(len(frame), 10, replace=False)]], ignore_index=True)
        frame = frame.sample(frac=1.0, random_state=11)
        text = frame.to_csv(index=False, lineterminator="\r\n")
        (landing / spec.file_name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    lake = tmp_path / "lake"
    result = materialize_all(landing, lake)
    gates = {
        e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_share"
    }
    assert gates["weight"].metadata["exact_duplicates_dropped"].value == 10
    assert gates["fiber"].metadata["exact_duplicates_dropped"].value == 10
    assert read_table(str(lake), "bronze/quarantine").empty
    assert set(read_table(str(lake), "bronze/weight")["source_file"]) == {WEIGHT.file_name}
    for key, table in gold_tables(good_lake).items():
        # Sums over a week's days may be added in another order: equal up to float rounding.
        pd.testing.assert_frame_equal(read_table(str(lake), key), table, rtol=1e-9, atol=1e-12)
