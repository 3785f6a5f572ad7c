"""Silver: the study calendar, subject trajectories, weekly features and the modelling table."""

from typing import Any

import dagster as dg

from potato_assets.defs.common import (
    CODE_VERSION,
    DOWNSTREAM_AUTOMATION,
    LAKE_POOL,
    OWNERS,
    SCIENCE_OWNERS,
    DataFrame,
)
from potato_assets.study.schema import FIBER, PREDICTOR_UNITS, WEIGHT

SILVER: dict[str, Any] = dict(
    dagster_type=DataFrame,
    group_name="silver",
    kinds={"pandas", "parquet"},
    code_version=CODE_VERSION,
    automation_condition=DOWNSTREAM_AUTOMATION,
    pool=LAKE_POOL,
)


# What the calendar reads: week labels and, for its error messages, the line (the file is known).
CALENDAR_COLUMNS = ["subject_id", "date", "week", "source_line"]


def versioned(table: DataFrame) -> dg.MaterializeResult:
    """The table with its content as data version: a recomputation that yields the same rows
    leaves the version, and so everything downstream, as it was."""
    from potato_assets.lib.lake.data_version import table_version

    # MaterializeResult, not Output: Output's data_version parameter is beta (and warns).
    return dg.MaterializeResult(value=table, data_version=dg.DataVersion(table_version(table)))


@dg.asset(
    key=["silver", "study_calendar"],
    ins={
        "weight": dg.AssetIn(["bronze", "weight"], metadata={"columns": CALENDAR_COLUMNS}),
        "fiber": dg.AssetIn(["bronze", "fiber"], metadata={"columns": CALENDAR_COLUMNS}),
    },
    description=(
        "Each subject's study calendar: the date its week 1 starts (weeks of 7 days), derived "
        "from the week labels of the weigh-in and daily-log files."
    ),
    owners=OWNERS,
    **SILVER,
)
def study_calendar(weight: DataFrame, fiber: DataFrame) -> dg.MaterializeResult:
    from potato_assets.study import calendar

    try:
        return versioned(calendar.subject_calendars(weight, fiber, sources=(WEIGHT.file_name, FIBER.file_name)))
    except calendar.CalendarError as exc:
        raise dg.Failure(description=str(exc)) from None


@dg.asset(
    key=["silver", "subject_trajectories"],
    ins={
        "weight": dg.AssetIn(["bronze", "weight"]),
        "calendars": dg.AssetIn(["silver", "study_calendar"]),
    },
    description=(
        "Per subject and study week: weight (kg), change from the previous week, change from "
        "baseline (first non-missing weight), percent change, and the subject's OLS slope (kg/week)."
    ),
    owners=SCIENCE_OWNERS,
    **SILVER,
)
def subject_trajectories(weight: DataFrame, calendars: DataFrame) -> dg.MaterializeResult:
    from potato_assets.study import features

    return versioned(features.subject_trajectories(weight, calendars))


@dg.asset(
    key=["silver", "weekly_features"],
    ins={
        "fiber": dg.AssetIn(
            ["bronze", "fiber"], metadata={"columns": ["subject_id", "date", "week", "total_calories", "total_fiber_g"]}
        ),
        # Only what the features use: decoding the free-text food column costs more than the rest.
        "nutrition": dg.AssetIn(["bronze", "nutrition"], metadata={"columns": ["subject_id", "date", "category"]}),
        "weight": dg.AssetIn(["bronze", "weight"], metadata={"columns": ["subject_id", "week"]}),
        "calendars": dg.AssetIn(["silver", "study_calendar"]),
    },
    description=(
        "Per subject and study week: kcal and fiber (sum, mean, days logged), fiber per 1000 kcal "
        "(over days with both logged), and for each of the 11 food categories whether it was "
        "eaten and how many entries. Missing stays missing."
    ),
    owners=SCIENCE_OWNERS,
    **SILVER,
)
def weekly_features(
    context: dg.AssetExecutionContext,
    fiber: DataFrame,
    nutrition: DataFrame,
    weight: DataFrame,
    calendars: DataFrame,
) -> dg.MaterializeResult:
    from potato_assets.study import features

    weeks = features.study_weeks(weight, calendars)
    table, left_out = features.weekly_features(fiber, nutrition, weeks, calendars)
    context.add_output_metadata(dict(left_out))
    return versioned(table)


# Which input columns each modelling column comes from (OpenLineage columnLineage, the UI).
_TRAJECTORIES = dg.AssetKey(["silver", "subject_trajectories"])
_WEEKLY = dg.AssetKey(["silver", "weekly_features"])
MODELING_COLUMN_LINEAGE = dg.TableColumnLineage(
    {
        out: [dg.TableColumnDep(asset_key=asset, column_name=col) for asset, col in deps]
        for out, deps in {
            "subject_id": [(_TRAJECTORIES, "subject_id"), (_WEEKLY, "subject_id")],
            "week": [(_TRAJECTORIES, "week"), (_WEEKLY, "week")],
            "weight_kg": [(_TRAJECTORIES, "weight_kg")],
            "weight_kg_next": [(_TRAJECTORIES, "weight_kg")],
            "delta_kg_next": [(_TRAJECTORIES, "weight_kg")],
            "fiber_g_week": [(_WEEKLY, "fiber_g_sum")],
            "kcal_week_thousands": [(_WEEKLY, "kcal_sum")],
            "beans_week": [(_WEEKLY, "beans_eaten")],
            "potato_week": [(_WEEKLY, "potato_eaten")],
            "kcal_days": [(_WEEKLY, "kcal_days")],
            "fiber_days": [(_WEEKLY, "fiber_days")],
        }.items()
    }
)


@dg.asset(
    key=["silver", "modeling_dataset"],
    ins={
        "trajectories": dg.AssetIn(["silver", "subject_trajectories"]),
        "weekly": dg.AssetIn(["silver", "weekly_features"]),
    },
    description=(
        "The modelling table (complete cases): outcome delta_kg_next (kg, next study week's weight "
        "minus this week's, consecutive weeks only) and predictors "
        + "; ".join(f"{k} = {v}" for k, v in PREDICTOR_UNITS.items())
        + "."
    ),
    owners=SCIENCE_OWNERS,
    metadata={"dagster/column_lineage": MODELING_COLUMN_LINEAGE},
    **SILVER,
)
def modeling_dataset(
    context: dg.AssetExecutionContext, trajectories: DataFrame, weekly: DataFrame
) -> dg.MaterializeResult:
    from potato_assets.study import features

    table, counts = features.modeling_dataset(trajectories, weekly)
    context.add_output_metadata({**counts, "subjects": int(table["subject_id"].nunique())})
    return versioned(table)
