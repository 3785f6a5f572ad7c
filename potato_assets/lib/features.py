"""Silver science: subject trajectories, weekly features and the modelling table.

Plain pandas, no Dagster. Missing stays missing: a week with no logged calories has missing
calories (not 0), and a week with no food entry at all has missing category flags.
"""

from __future__ import annotations

import pandas as pd

from potato_assets.lib.calendar import assign_study_week, week_start
from potato_assets.lib.schema import FOOD_CATEGORIES, GROUP_COL, OUTCOME, PREDICTORS, WEEK_COL

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


def _daily_sums(fiber: pd.DataFrame) -> pd.DataFrame:
    g = fiber.groupby(KEY)
    out = pd.DataFrame(
        {
            "kcal_sum": g["total_calories"].sum(min_count=1),
            "kcal_days": g["total_calories"].count(),
            "fiber_g_sum": g["total_fiber_g"].sum(min_count=1),
            "fiber_days": g["total_fiber_g"].count(),
        }
    )
    both = fiber.dropna(subset=["total_calories", "total_fiber_g"])
    paired = both.groupby(KEY)[["total_calories", "total_fiber_g"]].sum()
    ratio = 1000.0 * paired["total_fiber_g"] / paired["total_calories"].where(paired["total_calories"] > 0)
    out["fiber_g_per_1000kcal"] = ratio
    return out.reset_index()


def _food_counts(entries: pd.DataFrame) -> pd.DataFrame:
    counts = entries.groupby([*KEY, "category"], observed=True).size().unstack("category", fill_value=0)
    counts = counts.reindex(columns=list(FOOD_CATEGORIES), fill_value=0)
    out = pd.DataFrame(index=counts.index)
    out["food_entries"] = counts.sum(axis=1)
    for cat in FOOD_CATEGORIES:
        out[f"{cat}_entries"] = counts[cat]
        out[f"{cat}_eaten"] = (counts[cat] > 0).astype("int64")
    return out.reset_index()


def weekly_features(
    fiber: pd.DataFrame, nutrition: pd.DataFrame, weeks: pd.DataFrame, calendars: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per study subject-week: calorie and fiber sums/means/days, fiber per 1000 kcal, and for
    each food category whether it was eaten and how many entries. Returns (table, counts of
    rows left out because they fall outside the study's weeks)."""
    daily = fiber.dropna(subset=KEY)
    in_study = daily.merge(weeks[KEY], on=KEY, how="inner")
    sums = _daily_sums(in_study)

    food = nutrition.dropna(subset=[GROUP_COL, "date"]).copy()
    food[WEEK_COL] = assign_study_week(food, calendars)
    food_in = food.merge(weeks[KEY], on=KEY, how="inner")
    counts = _food_counts(food_in)

    out = weeks.merge(sums, on=KEY, how="left").merge(counts, on=KEY, how="left")
    out["kcal_mean"] = out["kcal_sum"] / out["kcal_days"].where(out["kcal_days"] > 0)
    out["fiber_g_mean"] = out["fiber_g_sum"] / out["fiber_days"].where(out["fiber_days"] > 0)
    for col in ("kcal_days", "fiber_days"):
        out[col] = out[col].fillna(0).astype("int64")
    # No food entry at all that week is a logging gap: flags and counts stay missing.
    count_cols = ["food_entries"] + [f"{c}_{s}" for c in FOOD_CATEGORIES for s in ("eaten", "entries")]
    out[count_cols] = out[count_cols].astype("Int64")
    order = [
        *KEY,
        "week_start",
        "kcal_sum",
        "kcal_mean",
        "kcal_days",
        "fiber_g_sum",
        "fiber_g_mean",
        "fiber_days",
        "fiber_g_per_1000kcal",
        *count_cols,
    ]
    left_out = {
        "daily_rows_outside_study_weeks": len(daily) - len(in_study),
        "food_entries_outside_study_weeks": len(food) - len(food_in),
    }
    return out[order].sort_values(KEY, ignore_index=True), left_out


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
    m["beans_week"] = m["beans_eaten"].astype("Float64").astype("float64")
    m["potato_week"] = m["potato_eaten"].astype("Float64").astype("float64")
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
