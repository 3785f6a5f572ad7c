"""Silver science: subject trajectories, weekly features and the modelling table.

Plain pandas, no Dagster. Missing stays missing: a week with no logged calories has missing
calories (not 0), and a week with no food entry at all has missing category flags.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from potato_assets.study.calendar import assign_study_week, week_start
from potato_assets.study.schema import FOOD_CATEGORIES, GROUP_COL, OUTCOME, PREDICTORS, WEEK_COL

KEY = [GROUP_COL, WEEK_COL]


def study_weeks(weight: pd.DataFrame, calendars: pd.DataFrame) -> pd.DataFrame:
    """The study's subject-weeks: those with a weigh-in row, with the week's first day."""
    weeks = weight[KEY].dropna().drop_duplicates().sort_values(KEY, ignore_index=True)
    weeks["week_start"] = week_start(calendars, weeks)
    return weeks


def _ols_slopes(observed: pd.DataFrame) -> pd.Series:
    """Per subject, the least-squares slope of weight on week (NaN with fewer than 2 weeks)."""
    x = observed[WEEK_COL].astype("float64")
    y = observed["weight_kg"].astype("float64")
    g = observed[GROUP_COL]
    n = x.groupby(g).count()
    # Centre within subject first: the textbook sums formula loses digits on kg-scale weights.
    xc = x - x.groupby(g).transform("mean")
    yc = y - y.groupby(g).transform("mean")
    sxx = (xc * xc).groupby(g).sum()
    sxy = (xc * yc).groupby(g).sum()
    return (sxy / sxx.where((n >= 2) & (sxx > 0))).astype("float64")


def subject_trajectories(weight: pd.DataFrame, calendars: pd.DataFrame) -> pd.DataFrame:
    """Per subject and study week: weight and its changes, plus the subject's OLS slope."""
    if weight.duplicated(KEY).any():
        dup = weight[weight.duplicated(KEY, keep=False)].head(3)
        raise ValueError(f"more than one weigh-in for a subject-week, e.g. {dup[KEY].to_dict('records')}")
    t = weight[[*KEY, "date", "weight_kg"]].rename(columns={"date": "weigh_in_date"})
    t = t.sort_values(KEY, ignore_index=True)
    t["week_start"] = week_start(calendars, t)
    g = t.groupby(GROUP_COL, sort=False)
    prev_week = g[WEEK_COL].shift(1)
    prev_weight = g["weight_kg"].shift(1)
    # Change from the previous study week only: a gap in the weigh-in rows gives no change.
    t["delta_kg_prev"] = (t["weight_kg"] - prev_weight).where(prev_week == t[WEEK_COL] - 1)
    observed = t.dropna(subset=["weight_kg"])
    baseline = observed.groupby(GROUP_COL).agg(
        baseline_week=(WEEK_COL, "first"), baseline_weight_kg=("weight_kg", "first")
    )
    slopes = _ols_slopes(observed)
    t = t.merge(baseline, on=GROUP_COL, how="left")
    t["delta_kg_from_baseline"] = t["weight_kg"] - t["baseline_weight_kg"]
    t["pct_change_from_baseline"] = 100.0 * t["delta_kg_from_baseline"] / t["baseline_weight_kg"]
    t["slope_kg_per_week"] = t[GROUP_COL].map(slopes).astype("float64")
    t["n_weigh_ins"] = t[GROUP_COL].map(observed.groupby(GROUP_COL).size()).fillna(0).astype("int64")
    return t[
        [
            GROUP_COL,
            WEEK_COL,
            "week_start",
            "weigh_in_date",
            "weight_kg",
            "delta_kg_prev",
            "baseline_week",
            "baseline_weight_kg",
            "delta_kg_from_baseline",
            "pct_change_from_baseline",
            "slope_kg_per_week",
            "n_weigh_ins",
        ]
    ].astype({"baseline_week": "Int64"})


def study_week_rows(weeks: pd.DataFrame, subject: pd.Series, week: pd.Series) -> np.ndarray:
    """For each (subject, week) pair, its row number in ``weeks`` (unique subject-weeks), or -1
    when the pair is not one of the study's weeks (including a missing subject or week)."""
    index = pd.MultiIndex.from_arrays([weeks[GROUP_COL].astype("int64"), weeks[WEEK_COL].astype("int64")])
    known = (subject.notna() & week.notna()).to_numpy()
    rows = np.full(len(subject), -1, dtype=np.int64)
    if known.any() and len(index):
        probe = pd.MultiIndex.from_arrays(
            [subject[known].astype("int64").to_numpy(), week[known].astype("int64").to_numpy()]
        )
        rows[known] = index.get_indexer(probe)
    return rows


def _sum_and_count(rows: np.ndarray, values: pd.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per study-week row: sum of the non-missing values (NaN when there are none) and their count."""
    v = values.to_numpy(dtype="float64", na_value=np.nan)
    ok = (rows >= 0) & ~np.isnan(v)
    count = np.bincount(rows[ok], minlength=n)
    total = np.bincount(rows[ok], weights=v[ok], minlength=n)
    return np.where(count > 0, total, np.nan), count


def _masked_int(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype("int64"), missing.copy())


def weekly_features(
    fiber: pd.DataFrame, nutrition: pd.DataFrame, weeks: pd.DataFrame, calendars: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per study subject-week: calorie and fiber sums/means/days, fiber per 1000 kcal, and for
    each food category whether it was eaten and how many entries. Returns (table, counts of
    rows left out because they fall outside the study's weeks).

    Every row is placed at its subject-week's row in ``weeks`` once, then summed with bincount:
    one pass over the daily log and one over the food entries, no joins of the large tables."""
    out = weeks[[*KEY, "week_start"]].sort_values(KEY, ignore_index=True)
    n = len(out)

    daily = fiber.dropna(subset=KEY)
    day_rows = study_week_rows(out, daily[GROUP_COL], daily[WEEK_COL])
    # Add each week's days in date order, whatever the file's row order: the same log in another
    # order gives the same bits (and so the same data version and model estimates).
    by_date = np.lexsort((daily["date"].to_numpy(), day_rows))
    daily, day_rows = daily.iloc[by_date], day_rows[by_date]
    kcal_sum, kcal_days = _sum_and_count(day_rows, daily["total_calories"], n)
    fiber_sum, fiber_days = _sum_and_count(day_rows, daily["total_fiber_g"], n)
    # Fiber per 1000 kcal over the days with both logged only.
    both = daily["total_calories"].notna().to_numpy() & daily["total_fiber_g"].notna().to_numpy()
    paired_rows = np.where(both, day_rows, -1)
    paired_kcal, paired_days = _sum_and_count(paired_rows, daily["total_calories"], n)
    paired_fiber, _ = _sum_and_count(paired_rows, daily["total_fiber_g"], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((paired_days > 0) & (paired_kcal > 0), 1000.0 * paired_fiber / paired_kcal, np.nan)
        out["kcal_sum"] = kcal_sum
        out["kcal_mean"] = np.where(kcal_days > 0, kcal_sum / np.maximum(kcal_days, 1), np.nan)
        out["kcal_days"] = kcal_days.astype("int64")
        out["fiber_g_sum"] = fiber_sum
        out["fiber_g_mean"] = np.where(fiber_days > 0, fiber_sum / np.maximum(fiber_days, 1), np.nan)
    out["fiber_days"] = fiber_days.astype("int64")
    out["fiber_g_per_1000kcal"] = ratio

    food = nutrition.dropna(subset=[GROUP_COL, "date"])
    food_rows = study_week_rows(out, food[GROUP_COL], assign_study_week(food, calendars))
    category = pd.Categorical(food["category"], categories=list(FOOD_CATEGORIES))
    # A week with any categorised entry has food logged; unknown categories count in no column.
    logged = (food_rows >= 0) & food["category"].notna().to_numpy()
    no_food = np.bincount(food_rows[logged], minlength=n) == 0
    codes = np.asarray(category.codes, dtype=np.int64)
    known = logged & (codes >= 0)
    n_cat = len(FOOD_CATEGORIES)
    counts = np.bincount(food_rows[known] * n_cat + codes[known], minlength=n * n_cat).reshape(n, n_cat)
    # No food entry at all that week is a logging gap: flags and counts stay missing.
    count_cols = {"food_entries": _masked_int(counts.sum(axis=1), no_food)}
    for i, cat in enumerate(FOOD_CATEGORIES):
        count_cols[f"{cat}_eaten"] = _masked_int(counts[:, i] > 0, no_food)
    for i, cat in enumerate(FOOD_CATEGORIES):
        count_cols[f"{cat}_entries"] = _masked_int(counts[:, i], no_food)
    columns = ["food_entries"] + [f"{c}_{s}" for c in FOOD_CATEGORIES for s in ("eaten", "entries")]
    out = pd.concat([out, pd.DataFrame({c: count_cols[c] for c in columns})], axis=1)

    left_out = {
        "daily_rows_outside_study_weeks": int((day_rows < 0).sum()),
        "food_entries_outside_study_weeks": int((food_rows < 0).sum()),
    }
    return out, left_out


def modeling_dataset(trajectories: pd.DataFrame, features: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join weights and features; outcome = next study week's weight minus this week's (only for
    consecutive weeks); keep complete cases. Returns (table, counts of rows dropped and why)."""
    t = trajectories[[*KEY, "weight_kg"]].sort_values(KEY)
    nxt = t.rename(columns={"weight_kg": "weight_kg_next"}).assign(**{WEEK_COL: t[WEEK_COL] - 1})
    m = t.merge(nxt, on=KEY, how="left")
    m[OUTCOME] = m["weight_kg_next"] - m["weight_kg"]
    f = features[[*KEY, "fiber_g_sum", "kcal_sum", "beans_eaten", "potato_eaten", "kcal_days", "fiber_days"]]
    m = m.merge(f, on=KEY, how="left")
    m["fiber_g_week"] = m["fiber_g_sum"].astype("float64")
    m["kcal_week_thousands"] = m["kcal_sum"].astype("float64") / 1000.0
    # 0/1 flags as nullable integers (the fits cast every predictor to float, study/models.py).
    m["beans_week"] = m["beans_eaten"].astype("Int64")
    m["potato_week"] = m["potato_eaten"].astype("Int64")
    no_outcome = m[OUTCOME].isna()
    no_predictor = m[list(PREDICTORS)].isna().any(axis=1)
    dropped = {
        "subject_weeks": len(m),
        "dropped_no_outcome": int(no_outcome.sum()),
        "dropped_missing_predictor": int((~no_outcome & no_predictor).sum()),
    }
    keep = m[~no_outcome & ~no_predictor]
    cols = [*KEY, "weight_kg", "weight_kg_next", OUTCOME, *PREDICTORS, "kcal_days", "fiber_days"]
    return keep[cols].reset_index(drop=True), dropped
