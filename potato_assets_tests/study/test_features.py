from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from potato_assets.study.calendar import CalendarError, assign_study_week, subject_calendars
from potato_assets.study.features import modeling_dataset, study_weeks, subject_trajectories, weekly_features
from potato_assets.study.schema import FOOD_CATEGORIES

D = pd.Timestamp


def weight_rows(rows):
    return pd.DataFrame(rows, columns=["subject_id", "date", "week", "weight_kg"]).assign(
        date=lambda d: pd.to_datetime(d["date"]),
        subject_id=lambda d: d["subject_id"].astype("Int64"),
        week=lambda d: d["week"].astype("Int64"),
    )


def fiber_rows(rows):
    return pd.DataFrame(rows, columns=["subject_id", "date", "week", "total_calories", "total_fiber_g"]).assign(
        date=lambda d: pd.to_datetime(d["date"]),
        subject_id=lambda d: d["subject_id"].astype("Int64"),
        week=lambda d: d["week"].astype("Int64"),
    )


def food_rows(rows):
    return pd.DataFrame(rows, columns=["subject_id", "date", "category"]).assign(
        date=lambda d: pd.to_datetime(d["date"]), subject_id=lambda d: d["subject_id"].astype("Int64")
    )


WEIGHT = weight_rows(
    [
        (1, "2024-01-03", 1, 80.0),
        (1, "2024-01-10", 2, 79.0),
        (1, "2024-01-17", 3, np.nan),
        (1, "2024-01-24", 4, 77.5),
        (2, "2024-01-05", 1, np.nan),
        (2, "2024-01-12", 2, 90.0),
        (2, "2024-01-19", 3, 89.0),
    ]
)
FIBER = fiber_rows(
    [
        (1, "2024-01-01", 1, 2000.0, 30.0),
        (1, "2024-01-02", 1, np.nan, 20.0),
        (1, "2024-01-08", 2, 1500.0, 25.0),
        (2, "2024-01-03", 1, 1800.0, 40.0),
    ]
)


@pytest.fixture
def calendars():
    return subject_calendars(WEIGHT, FIBER)


def test_calendar_week1_start_from_labels(calendars):
    assert dict(zip(calendars["subject_id"], calendars["week1_start"], strict=True)) == {
        1: D("2024-01-01"),
        2: D("2024-01-03"),
    }


def test_contradictory_week_label_is_named():
    bad = pd.concat([FIBER, fiber_rows([(1, "2024-01-20", 1, 1000.0, 10.0)])], ignore_index=True)
    with pytest.raises(CalendarError, match="subject 1 2024-01-20 labelled week 1"):
        subject_calendars(WEIGHT, bad)


def test_contradictory_week_label_names_its_file_and_line():
    extra = fiber_rows([(1, "2024-01-20", 1, 1000.0, 10.0)]).assign(source_line=[7])
    bad = pd.concat([FIBER.assign(source_line=range(2, 6)), extra], ignore_index=True)
    with pytest.raises(CalendarError, match=r"labelled week 1 \(Potato_fiber_daily.csv line 7\)"):
        subject_calendars(WEIGHT, bad, sources=("Potato_tidy.csv", "Potato_fiber_daily.csv"))
    with pytest.raises(CalendarError, match=r"labelled week 1 \(daily.csv line 7\)"):
        subject_calendars(WEIGHT, bad.assign(source_file="daily.csv"))


def test_food_entries_are_placed_in_the_calendar_week(calendars):
    food = food_rows(
        [
            (1, "2023-12-31", "oats"),
            (1, "2024-01-07", "oats"),
            (1, "2024-01-08", "oats"),
            (2, "2024-01-09", "beans"),
            (2, "2024-01-10", "beans"),
            (3, "2024-01-01", "rice"),
        ]
    )
    assert assign_study_week(food, calendars).tolist() == [0, 1, 2, 1, 2, pd.NA]


def test_trajectories(calendars):
    t = subject_trajectories(WEIGHT, calendars)
    s1 = t[t.subject_id == 1].set_index("week")
    assert s1["delta_kg_prev"].tolist()[1] == -1.0
    assert np.isnan(s1.loc[4, "delta_kg_prev"])  # week 3 weight missing: no previous-week change
    assert s1.loc[4, "delta_kg_from_baseline"] == -2.5
    assert s1.loc[4, "pct_change_from_baseline"] == pytest.approx(-2.5 / 80 * 100)
    # OLS slope of (1,80),(2,79),(4,77.5)
    x, y = np.array([1, 2, 4.0]), np.array([80, 79, 77.5])
    assert s1["slope_kg_per_week"].iloc[0] == pytest.approx(np.polyfit(x, y, 1)[0])
    s2 = t[t.subject_id == 2].set_index("week")
    assert s2.loc[2, "baseline_weight_kg"] == 90.0 and s2.loc[1, "baseline_week"] == 2
    assert s2.loc[3, "delta_kg_from_baseline"] == -1.0


def test_weekly_features_keep_missing_missing(calendars):
    food = food_rows(
        [
            (1, "2024-01-01", "potato"),
            (1, "2024-01-02", "potato"),
            (1, "2024-01-03", "oats"),
            (1, "2024-01-29", "beans"),  # week 5: outside the study's weeks
            (2, "2024-01-10", "beans"),  # subject 2 week 2
        ]
    )
    weeks = study_weeks(WEIGHT, calendars)
    f, left_out = weekly_features(FIBER, food, weeks, calendars)
    f = f.set_index(["subject_id", "week"])
    w1 = f.loc[(1, 1)]
    assert w1["kcal_sum"] == 2000.0 and w1["kcal_days"] == 1 and w1["kcal_mean"] == 2000.0
    assert w1["fiber_g_sum"] == 50.0 and w1["fiber_days"] == 2 and w1["fiber_g_mean"] == 25.0
    assert w1["fiber_g_per_1000kcal"] == pytest.approx(15.0)  # only the day with both logged
    assert w1["potato_entries"] == 2 and w1["potato_eaten"] == 1 and w1["beans_eaten"] == 0
    assert w1["food_entries"] == 3
    w3 = f.loc[(1, 3)]  # nothing logged
    assert pd.isna(w3["kcal_sum"]) and w3["kcal_days"] == 0 and pd.isna(w3["kcal_mean"])
    assert pd.isna(w3["beans_eaten"]) and pd.isna(w3["food_entries"])
    assert f.loc[(2, 2)]["beans_eaten"] == 1
    assert left_out == {"daily_rows_outside_study_weeks": 0, "food_entries_outside_study_weeks": 1}
    for cat in FOOD_CATEGORIES:
        assert f"{cat}_eaten" in f.columns and f"{cat}_entries" in f.columns


def test_modeling_dataset_consecutive_weeks_and_complete_cases(calendars):
    food = food_rows(
        [(1, "2024-01-01", "potato"), (1, "2024-01-08", "beans"), (2, "2024-01-10", "beans"), (2, "2024-01-04", "oats")]
    )
    t = subject_trajectories(WEIGHT, calendars)
    f, _ = weekly_features(FIBER, food, study_weeks(WEIGHT, calendars), calendars)
    m, counts = modeling_dataset(t, f)
    # subject 1: weeks 1->2 complete (week 2 -> 3 has no next weight, 3 has no weight)
    # subject 2: week 1 has no weight; week 2 -> 3 has no fiber log in week 2
    assert m[["subject_id", "week"]].values.tolist() == [[1, 1]]
    row = m.iloc[0]
    assert row["delta_kg_next"] == -1.0 and row["fiber_g_week"] == 50.0
    assert row["kcal_week_thousands"] == 2.0 and row["potato_week"] == 1.0 and row["beans_week"] == 0.0
    assert counts == {"subject_weeks": 7, "dropped_no_outcome": 5, "dropped_missing_predictor": 1}


def test_seed_study_features(seed_dir):
    read = lambda n: pd.read_csv(seed_dir / n, parse_dates=["date"])  # noqa: E731
    w, fb, n = read("Potato_tidy.csv"), read("Potato_fiber_daily.csv"), read("Potato_nutrition_rows.csv")
    cal = subject_calendars(w, fb)
    assert (cal["week1_start"] == D("2023-01-01")).all()
    f, left_out = weekly_features(fb, n, study_weeks(w, cal), cal)
    assert len(f) == 600
    # Food entries start in week 2 of the study calendar and run one week past week 12.
    assert f[f.week == 1]["food_entries"].isna().all()
    assert left_out["food_entries_outside_study_weeks"] == int((n["date"] >= D("2023-03-26")).sum()) > 0
    m, _ = modeling_dataset(subject_trajectories(w, cal), f)
    assert m[["fiber_g_week", "kcal_week_thousands", "beans_week", "potato_week", "delta_kg_next"]].notna().all().all()
    assert m.duplicated(["subject_id", "week"]).sum() == 0


# --- the fast weekly features against a plain groupby/merge formulation ------------------------
KEY = ["subject_id", "week"]


def reference_weekly_features(fiber, nutrition, weeks, calendars):
    """The definition written the obvious way (joins and groupbys): the fast one must equal it."""
    daily = fiber.dropna(subset=KEY)
    in_study = daily.merge(weeks[KEY], on=KEY, how="inner")
    g = in_study.groupby(KEY)
    sums = pd.DataFrame(
        {
            "kcal_sum": g["total_calories"].sum(min_count=1),
            "kcal_days": g["total_calories"].count(),
            "fiber_g_sum": g["total_fiber_g"].sum(min_count=1),
            "fiber_days": g["total_fiber_g"].count(),
        }
    )
    paired = (
        in_study.dropna(subset=["total_calories", "total_fiber_g"])
        .groupby(KEY)[["total_calories", "total_fiber_g"]]
        .sum()
    )
    sums["fiber_g_per_1000kcal"] = (
        1000.0 * paired["total_fiber_g"] / paired["total_calories"].where(paired["total_calories"] > 0)
    )
    food = nutrition.dropna(subset=["subject_id", "date"]).copy()
    food["week"] = assign_study_week(food, calendars)
    food_in = food.merge(weeks[KEY], on=KEY, how="inner")
    counts = food_in.groupby([*KEY, "category"], observed=True).size().unstack("category", fill_value=0)
    counts = counts.reindex(columns=list(FOOD_CATEGORIES), fill_value=0)
    flags = pd.DataFrame(index=counts.index)
    flags["food_entries"] = counts.sum(axis=1)
    for cat in FOOD_CATEGORIES:
        flags[f"{cat}_eaten"] = (counts[cat] > 0).astype("int64")
        flags[f"{cat}_entries"] = counts[cat]
    out = weeks.merge(sums.reset_index(), on=KEY, how="left").merge(flags.reset_index(), on=KEY, how="left")
    out["kcal_mean"] = out["kcal_sum"] / out["kcal_days"].where(out["kcal_days"] > 0)
    out["fiber_g_mean"] = out["fiber_g_sum"] / out["fiber_days"].where(out["fiber_days"] > 0)
    for col in ("kcal_days", "fiber_days"):
        out[col] = out[col].fillna(0).astype("int64")
    left_out = {
        "daily_rows_outside_study_weeks": len(daily) - len(in_study),
        "food_entries_outside_study_weeks": len(food) - len(food_in),
    }
    return out.sort_values(KEY, ignore_index=True), left_out


def assert_same_features(fiber, nutrition, weight):
    cal = subject_calendars(weight, fiber)
    weeks = study_weeks(weight, cal)
    fast, fast_left_out = weekly_features(fiber, nutrition, weeks, cal)
    ref, ref_left_out = reference_weekly_features(fiber, nutrition, weeks, cal)
    assert fast_left_out == ref_left_out
    ref = ref[list(fast.columns)]
    count_cols = [c for c in fast.columns if c.endswith(("_eaten", "_entries"))]
    ref[count_cols] = ref[count_cols].astype("Int64")
    # Sums may differ in the last bits (bincount vs pandas' compensated sums), nothing more.
    pd.testing.assert_frame_equal(fast, ref, check_dtype=False, rtol=1e-12)
    assert all(str(fast[c].dtype) == "Int64" for c in count_cols)
    return fast


def test_fast_weekly_features_equal_the_reference_on_the_seed_study(seed_dir):
    read = lambda n: pd.read_csv(seed_dir / n, parse_dates=["date"])  # noqa: E731
    assert_same_features(read("Potato_fiber_daily.csv"), read("Potato_nutrition_rows.csv"), read("Potato_tidy.csv"))


def test_fast_weekly_features_equal_the_reference_on_awkward_rows(calendars):
    fiber = pd.concat(
        [
            FIBER,
            fiber_rows(
                [
                    (1, "2024-01-09", 2, 0.0, 10.0),  # zero kcal: no ratio from this day alone
                    (2, "2024-01-11", 2, 0.0, np.nan),  # the only day of week 2: kcal 0, no fiber
                    (1, "2024-01-30", 5, 1000.0, 10.0),  # week 5 is not a study week
                    (3, "2024-01-01", 1, 1000.0, 10.0),  # unknown subject
                ]
            ),
        ],
        ignore_index=True,
    )
    food = food_rows(
        [
            (1, "2024-01-01", "potato"),
            (1, "2024-01-08", "not-a-category"),  # a logged week with no known category
            (1, "2024-01-09", None),
            (2, "2024-01-12", None),  # only an uncategorised entry: no food logged
            (2, "2024-01-04", "beans"),
            (None, "2024-01-04", "beans"),
            (3, "2024-01-04", "beans"),
            (1, "2023-12-20", "oats"),  # before week 1
        ]
    )
    fast = assert_same_features(fiber, food, WEIGHT).set_index(KEY)
    assert fast.loc[(1, 2), "food_entries"] == 0 and pd.isna(fast.loc[(2, 2), "food_entries"])
    assert pd.isna(fast.loc[(2, 2), "fiber_g_per_1000kcal"]) and fast.loc[(2, 2), "kcal_sum"] == 0.0


def test_weekly_features_do_not_depend_on_the_order_of_the_log(seed_dir):
    read = lambda n: pd.read_csv(seed_dir / n, parse_dates=["date"])  # noqa: E731
    w, fb, n = read("Potato_tidy.csv"), read("Potato_fiber_daily.csv"), read("Potato_nutrition_rows.csv")
    # Values whose float sums depend on the order they are added in.
    fb["total_calories"] = fb["total_calories"] + np.random.default_rng(1).random(len(fb)) * 1e-3
    cal = subject_calendars(w, fb)
    weeks = study_weeks(w, cal)
    f, _ = weekly_features(fb, n, weeks, cal)
    shuffled = fb.sample(frac=1.0, random_state=3)
    g, _ = weekly_features(shuffled, n.sample(frac=1.0, random_state=4), weeks, cal)
    pd.testing.assert_frame_equal(f, g, check_exact=True)


def test_fast_weekly_features_equal_the_reference_on_a_generated_cohort(tmp_path):
    from potato_assets.study.ingest import parse_landing_csv
    from potato_assets.study.schema import LANDING_FILES
    from potato_assets.study.synthetic import CohortSpec, write_cohort

    write_cohort(CohortSpec(n_subjects=300, n_weeks=12, seed=11), tmp_path)
    at = pd.Timestamp("2026-01-01", tz="UTC")
    tables = {
        spec.asset_name: parse_landing_csv(
            (tmp_path / spec.file_name).read_bytes(), spec, source_file=spec.file_name, ingested_at=at
        ).rows
        for spec in LANDING_FILES
    }
    assert_same_features(tables["fiber"], tables["nutrition"], tables["weight"])
