"""Tests for the seeded synthetic cohort generator (potato_assets.study.synthetic)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from potato_assets.study import schema, synthetic
from potato_assets.study.synthetic import (
    CohortSpec,
    generate_cohort,
    subject_start_dates,
    write_cohort,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
BIG = CohortSpec(n_subjects=2000, n_weeks=12, seed=20240101)
SMALL = CohortSpec(n_subjects=40, n_weeks=6, seed=7)


@pytest.fixture(scope="module")
def big() -> dict[str, pd.DataFrame]:
    return generate_cohort(BIG)


@pytest.fixture(scope="module")
def big_starts() -> pd.Series:
    return subject_start_dates(BIG)


def _weights(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return frames[schema.WEIGHT_FILE].pivot(index="subject_id", columns="week", values="weight_kg")


def _days_since_start(frame: pd.DataFrame, starts: pd.Series) -> np.ndarray:
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d")
    return (dates - frame["subject_id"].map(starts)).dt.days.to_numpy()


# --- file format ---------------------------------------------------------------------------


@pytest.mark.parametrize("landing", schema.LANDING_FILES, ids=lambda f: f.file_name)
def test_written_files_have_exact_header_iso_dates_and_plain_format(tmp_path, landing):
    paths = write_cohort(SMALL, tmp_path)
    assert set(paths) == {f.file_name for f in schema.LANDING_FILES}
    raw = paths[landing.file_name].read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert b"\r" not in raw and b'"' not in raw
    assert raw.endswith(b"\n")
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert lines[0] == ",".join(landing.columns)
    body = [line.split(",") for line in lines[1:]]
    assert body and all(len(row) == len(landing.columns) for row in body)
    cols = list(landing.columns)
    for name, kind in landing.columns.items():
        values = [row[cols.index(name)] for row in body]
        if name in landing.keys:
            assert all(values), f"{name} is a key and must never be empty"
        present = [v for v in values if v]
        if kind == "date":
            assert all(ISO_DATE.match(v) for v in present)
            for v in present:
                datetime.date.fromisoformat(v)
        elif kind == "int":
            assert all(v.isdigit() for v in present)
        elif kind == "float":
            assert all(re.fullmatch(r"-?\d+\.\d", v) for v in present), name


def test_files_are_exactly_the_generated_frames(tmp_path):
    paths = write_cohort(SMALL, tmp_path)
    frames = generate_cohort(SMALL)
    for name, path in paths.items():
        expected = frames[name].to_csv(index=False, lineterminator="\n", float_format="%.1f")
        assert path.read_bytes() == expected.encode("utf-8"), name
        assert list(frames[name].columns) == [c for f in schema.LANDING_FILES if f.file_name == name for c in f.columns]


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    a = write_cohort(SMALL, tmp_path / "a")
    b = write_cohort(SMALL, tmp_path / "b")
    c = write_cohort(dataclasses.replace(SMALL, seed=SMALL.seed + 1), tmp_path / "c")
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
        assert a[name].read_bytes() != c[name].read_bytes(), name


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    write_cohort(SMALL, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == sorted(f.file_name for f in schema.LANDING_FILES)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic.pa_csv, "write_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write_cohort(dataclasses.replace(SMALL, seed=99), tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, "a failed write must leave old files intact and no temp files"


# --- grain and calendar ----------------------------------------------------------------------


def test_one_weighin_row_per_subject_week(big):
    tidy = big[schema.WEIGHT_FILE]
    assert len(tidy) == BIG.n_subjects * BIG.n_weeks
    assert not tidy.duplicated(["subject_id", "week"]).any()
    assert set(tidy["subject_id"]) == set(range(1, BIG.n_subjects + 1))
    assert set(tidy["week"]) == set(range(1, BIG.n_weeks + 1))


def test_one_daily_row_per_logged_subject_day(big):
    daily = big[schema.FIBER_FILE]
    assert not daily.duplicated(["subject_id", "date"]).any()
    assert daily[["subject_id", "date"]].notna().all().all()
    assert "week" not in big[schema.NUTRITION_FILE].columns


def test_dates_lie_in_the_labelled_week_of_each_subjects_calendar(big, big_starts):
    for name in (schema.FIBER_FILE, schema.WEIGHT_FILE):
        frame = big[name]
        days = _days_since_start(frame, big_starts)
        assert (days >= 0).all() and (days < 7 * BIG.n_weeks).all(), name
        np.testing.assert_array_equal(days // 7 + 1, frame["week"].to_numpy(), err_msg=name)

    # Without the helper: one start per subject must explain every labelled date.
    rows = pd.concat([big[schema.FIBER_FILE], big[schema.WEIGHT_FILE]])[["subject_id", "date", "week"]]
    day = pd.to_datetime(rows["date"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    lo = day - 7 * rows["week"].to_numpy() + 1  # latest-possible start >= lo
    hi = day - 7 * (rows["week"].to_numpy() - 1)
    bounds = pd.DataFrame({"s": rows["subject_id"], "lo": lo, "hi": hi}).groupby("s")
    assert (bounds["lo"].max() <= bounds["hi"].min()).all()


def test_food_entries_fall_in_the_study_weeks_with_a_few_late_ones(big, big_starts):
    days = _days_since_start(big[schema.NUTRITION_FILE], big_starts)
    last = 7 * BIG.n_weeks - 1
    assert (days >= 0).all()
    assert (days <= last + 5).all()
    late = days > last
    assert 0 < late.mean() < 0.01


def test_subject_start_stagger(big_starts):
    start = np.datetime64(BIG.start_date)
    offsets = (big_starts.to_numpy().astype("datetime64[D]") - start).astype(int)
    assert offsets.min() == 0 and offsets.max() == BIG.start_stagger_days
    same = subject_start_dates(dataclasses.replace(BIG, start_stagger_days=0))
    assert (same == pd.Timestamp(BIG.start_date)).all()


# --- statistical shape -------------------------------------------------------------------------


def test_four_week_loss_matches_published_mean(big):
    w = _weights(big)
    change = (w[5] - w[1]).dropna()
    assert len(change) > 0.7 * BIG.n_subjects
    assert change.mean() == pytest.approx(-4.8, abs=1.0)
    # Nearly everyone loses weight and a few lose more than 9 kg (SMTM follow-up).
    assert (change < 0).mean() > 0.9
    assert 0.005 < (change < -9.1).mean() < 0.15


def test_loss_is_largest_in_week_one_then_tapers(big):
    w = _weights(big)
    first = (w[2] - w[1]).mean()
    fourth = (w[5] - w[4]).mean()
    assert first < fourth < 0
    assert first < 2 * fourth  # week 1 is front-loaded, not just slightly larger


def test_baseline_weights_and_value_ranges(big):
    w1 = _weights(big)[1].dropna()
    assert w1.quantile(0.05) >= 60 and w1.quantile(0.95) <= 110
    assert 75 <= w1.mean() <= 90
    tidy = big[schema.WEIGHT_FILE]
    for col in ("energy_1_10", "mood_1_10"):
        assert tidy[col].dropna().between(1, 10).all()
    daily = big[schema.FIBER_FILE]
    assert daily["total_calories"].dropna().between(1200, 3500).all()
    assert daily["total_fiber_g"].dropna().between(10, 80).all()
    food = big[schema.NUTRITION_FILE]
    assert (food[["calories", "protein_g", "carbs_g", "fat_g", "fiber_g"]] >= 0).all().all()
    assert food["calories"].between(5, 2000).all()


def test_missing_rates_follow_the_spec(big):
    tidy, daily = big[schema.WEIGHT_FILE], big[schema.FIBER_FILE]
    assert tidy["weight_kg"].isna().mean() == pytest.approx(BIG.missing_weighin_rate, abs=0.02)
    assert tidy["energy_1_10"].isna().mean() == pytest.approx(BIG.missing_rating_rate, abs=0.01)
    day_rate = 1 - len(daily) / (BIG.n_subjects * 7 * BIG.n_weeks)
    assert day_rate == pytest.approx(BIG.missing_day_rate, abs=0.02)
    assert daily["total_calories"].isna().mean() == pytest.approx(BIG.missing_kcal_rate, abs=0.01)
    assert daily["total_fiber_g"].isna().mean() == pytest.approx(BIG.missing_fiber_rate, abs=0.01)


def test_missing_rate_knobs_take_effect():
    spec = CohortSpec(
        n_subjects=600,
        missing_weighin_rate=0.3,
        missing_day_rate=0.4,
        missing_kcal_rate=0.0,
        missing_fiber_rate=0.2,
    )
    frames = generate_cohort(spec)
    tidy, daily = frames[schema.WEIGHT_FILE], frames[schema.FIBER_FILE]
    assert tidy["weight_kg"].isna().mean() == pytest.approx(0.3, abs=0.04)
    assert 1 - len(daily) / (600 * 84) == pytest.approx(0.4, abs=0.04)
    assert daily["total_calories"].notna().all()
    assert daily["total_fiber_g"].isna().mean() == pytest.approx(0.2, abs=0.02)


def test_every_food_category_appears_with_its_own_items(big):
    food = big[schema.NUTRITION_FILE]
    assert set(food["category"].astype(str)) == set(schema.FOOD_CATEGORIES)
    item_to_cat = {name: cat for cat, items in synthetic.FOOD_ITEMS.items() for name, *_ in items}
    pairs = food[["food_item", "category"]].drop_duplicates().astype(str)
    assert all(item_to_cat[i] == c for i, c in pairs.itertuples(index=False))
    for item in ("baked potato", "mashed potatoes", "black beans", "lentils", "oatmeal"):
        assert item in set(pairs["food_item"])
    assert (food.groupby("category", observed=True)["food_item"].nunique() >= 3).all()
    entries_per_day = food.groupby(["subject_id", "date"]).size()
    assert entries_per_day.max() > 1 and entries_per_day.mean() > 1.5


def test_potato_days_have_lower_calories(big):
    food = big[schema.NUTRITION_FILE]
    share = (
        food.assign(p=food["category"].astype(str).eq("potato"))
        .groupby(["subject_id", "date"])["p"]
        .mean()
        .rename("potato_share")
    )
    daily = big[schema.FIBER_FILE].set_index(["subject_id", "date"]).join(share, how="inner")
    potato = daily.loc[daily["potato_share"] >= 0.5]
    other = daily.loc[daily["potato_share"] == 0]
    assert potato["total_calories"].mean() < other["total_calories"].mean() - 150
    assert potato["total_fiber_g"].mean() > other["total_fiber_g"].mean()


def _weekly_regression(frames: dict[str, pd.DataFrame], spec: CohortSpec) -> np.ndarray:
    """OLS of next-week weight change on the seed project's four weekly predictors."""
    starts = subject_start_dates(spec)
    daily = frames[schema.FIBER_FILE]
    week = daily.groupby(["subject_id", "week"]).agg(
        fiber_g_week=("total_fiber_g", "sum"), kcal=("total_calories", "sum")
    )
    week["kcal_week_thousands"] = week.pop("kcal") / 1000.0
    food = frames[schema.NUTRITION_FILE]
    food = food.assign(week=_days_since_start(food, starts) // 7 + 1)
    flags = (
        food.assign(
            beans_week=food["category"].astype(str).eq("beans"),
            potato_week=food["category"].astype(str).eq("potato"),
        )
        .groupby(["subject_id", "week"])[["beans_week", "potato_week"]]
        .any()
        .astype(float)
    )
    week = week.join(flags).fillna({"beans_week": 0.0, "potato_week": 0.0})
    w = frames[schema.WEIGHT_FILE].set_index(["subject_id", "week"])["weight_kg"]
    nxt = frames[schema.WEIGHT_FILE].assign(week=lambda f: f["week"] - 1)
    delta = nxt.set_index(["subject_id", "week"])["weight_kg"] - w
    week[schema.OUTCOME] = delta.reindex(week.index)
    week = week.dropna()
    x = np.column_stack([np.ones(len(week)), week[list(schema.PREDICTORS)].to_numpy()])
    beta, *_ = np.linalg.lstsq(x, week[schema.OUTCOME].to_numpy(), rcond=None)
    return beta  # const, fiber_g_week, kcal_week_thousands, beans_week, potato_week


def test_intake_effects_give_the_downstream_regression_something_to_find(big):
    beta = _weekly_regression(big, BIG)
    assert beta[1] < -0.0025  # more fiber -> more loss (more negative change)
    assert beta[2] > 0.05  # more kcal -> less loss
    no_effect = dataclasses.replace(
        BIG, fiber_effect_kg_per_g=0, kcal_effect_kg_per_1000=0, potato_effect_kg=0,
        beans_effect_kg=0,
    )  # fmt: skip
    flat = _weekly_regression(generate_cohort(no_effect), no_effect)
    assert flat[1] > -0.002 and flat[2] < 0.035


# --- spec and CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"n_subjects": 0},
        {"n_weeks": 0},
        {"missing_day_rate": 1.5},
        {"missing_weighin_rate": -0.1},
        {"adherence_median": 1.0},
        {"measurement_sd_kg": -1.0},
        {"start_stagger_days": -1},
    ],
)
def test_invalid_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        CohortSpec(**bad)


def test_tiny_cohort_and_single_week_work():
    frames = generate_cohort(CohortSpec(n_subjects=1, n_weeks=1, late_entry_subject_rate=0.0))
    assert len(frames[schema.WEIGHT_FILE]) == 1
    assert frames[schema.FIBER_FILE]["week"].eq(1).all()


def test_cli_writes_the_three_files(tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "potato_assets.study.synthetic", "--subjects", "12", "--weeks",
           "5", "--seed", "3", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f.file_name for f in schema.LANDING_FILES)
    expected = write_cohort(CohortSpec(n_subjects=12, n_weeks=5, seed=3), tmp_path / "api")
    for name, path in expected.items():
        assert (out / name).read_bytes() == path.read_bytes(), name
    tidy = pd.read_csv(out / schema.WEIGHT_FILE)
    assert len(tidy) == 12 * 5


# --- chunks and stream blocks --------------------------------------------------------------


def _joined(chunks) -> dict[str, pd.DataFrame]:
    chunks = list(chunks)
    return {name: pd.concat([c[name] for c in chunks], ignore_index=True) for name in chunks[0]}


@pytest.mark.parametrize("chunk_subjects", [1, 7, SMALL.n_subjects, SMALL.n_subjects + 5])
def test_chunks_joined_are_the_whole_cohort_and_hold_whole_subjects(chunk_subjects):
    chunks = list(synthetic.synthetic_cohort_chunks(SMALL, chunk_subjects))
    assert len(chunks) == -(-SMALL.n_subjects // chunk_subjects)
    for i, chunk in enumerate(chunks):
        first = i * chunk_subjects + 1
        expected = set(range(first, min(first + chunk_subjects, SMALL.n_subjects + 1)))
        assert set(chunk[schema.WEIGHT_FILE]["subject_id"]) == expected
        for name in (schema.FIBER_FILE, schema.NUTRITION_FILE):
            assert set(chunk[name]["subject_id"]) <= expected, name
    whole = generate_cohort(SMALL)
    for name, frame in _joined(chunks).items():
        pd.testing.assert_frame_equal(frame, whole[name], check_categorical=True)


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk_subjects must be >= 1"):
        next(synthetic.synthetic_cohort_chunks(SMALL, 0))


@pytest.fixture
def blocks_of_16(monkeypatch):
    """Stream blocks of 16 subjects, so that many-block cohorts stay small in a test."""
    monkeypatch.setattr(synthetic, "STREAM_BLOCK_SUBJECTS", 16)


def test_many_block_cohorts_do_not_depend_on_the_chunk_size(blocks_of_16):
    spec = dataclasses.replace(SMALL, n_subjects=53)  # three whole blocks and a part
    whole = generate_cohort(spec)
    for chunk_subjects in (1, 5, 16, 17, 53):
        joined = _joined(synthetic.synthetic_cohort_chunks(spec, chunk_subjects))
        for name, frame in joined.items():
            pd.testing.assert_frame_equal(frame, whole[name], obj=f"{name}, chunks of {chunk_subjects}")
    # every block draws its own streams: no block repeats another's subjects
    w = _weights(whole)
    assert not np.allclose(w.loc[1:16].to_numpy(), w.loc[17:32].to_numpy(), equal_nan=True)
    starts = subject_start_dates(spec)
    assert len(starts) == 53 and starts.loc[1:16].to_numpy().tolist() != starts.loc[17:32].to_numpy().tolist()
    other = generate_cohort(dataclasses.replace(spec, seed=spec.seed + 1))
    assert not whole[schema.FIBER_FILE].equals(other[schema.FIBER_FILE])


def test_a_cohort_within_one_block_is_what_the_generator_always_made():
    """Block 0 draws from the seed's own streams: the bundled sample (make sample-data) comes
    out byte for byte, whatever the chunk size."""
    from potato_assets_tests.helpers import SAMPLE_DIR

    frames = _joined(synthetic.synthetic_cohort_chunks(CohortSpec(), 7))
    for landing in schema.LANDING_FILES:
        text = frames[landing.file_name].to_csv(index=False, lineterminator="\n", float_format="%.1f")
        assert text.encode() == (SAMPLE_DIR / landing.file_name).read_bytes(), landing.file_name


def test_chunks_are_produced_lazily_one_block_at_a_time(blocks_of_16, monkeypatch):
    built = []
    real = synthetic._block_frames
    monkeypatch.setattr(
        synthetic, "_block_frames", lambda spec, block, *a: built.append(block) or real(spec, block, *a)
    )
    chunks = synthetic.synthetic_cohort_chunks(dataclasses.replace(SMALL, n_subjects=64), 16)
    first = next(chunks)
    assert built == [0] and first[schema.WEIGHT_FILE]["subject_id"].max() == 16
    assert sum(1 for _ in chunks) == 3 and built == [0, 1, 2, 3]


def test_many_block_cohorts_keep_the_published_calibration(monkeypatch):
    """Each exposure is centred on the whole cohort's weekly mean (a first pass over the blocks),
    so the mean loss stays on the published curve when the cohort spans many blocks."""
    monkeypatch.setattr(synthetic, "STREAM_BLOCK_SUBJECTS", 250)
    w = _weights(generate_cohort(BIG))  # 8 blocks
    change = (w[5] - w[1]).dropna()
    assert change.mean() == pytest.approx(-4.8, abs=1.0)
    assert (w[2] - w[1]).mean() < (w[5] - w[4]).mean() < 0
