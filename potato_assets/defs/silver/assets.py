"""Silver: the study calendar, subject trajectories, weekly features and the modelling table.

Each table is one query of study/silver.py, run by the silver engine over the bronze (and earlier
silver) datasets a batch of subject buckets at a time, and written as a bucketed dataset."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from potato_assets.defs.common import (
    CODE_VERSION,
    DOWNSTREAM_AUTOMATION,
    LAKE_POOL,
    OWNERS,
    SCIENCE_OWNERS,
    LakeDataset,
)
from potato_assets.defs.resources import LakeDatasets, SilverEngine
from potato_assets.lib.lake.datasets import LAYOUT, LAYOUT_KEY
from potato_assets.study.schema import PREDICTOR_UNITS

if TYPE_CHECKING:
    from potato_assets.lib.lake.datasets import DatasetRef
    from potato_assets.study.silver import SilverQuery

SILVER: dict[str, Any] = dict(
    dagster_type=LakeDataset,
    group_name="silver",
    # Every engine runs the same SQL (POTATO_ENGINE); each materialisation names the one it used.
    kinds={"duckdb", "spark", "parquet"},
    code_version=CODE_VERSION,
    automation_condition=DOWNSTREAM_AUTOMATION,
    pool=LAKE_POOL,
)
# Stored as a subject-bucketed dataset (lib/lake/datasets.py).
DATASET_METADATA = {LAYOUT_KEY: LAYOUT}
ENGINE_KEY = "silver/engine"


def build_table(
    query: "SilverQuery",
    inputs: Mapping[str, "DatasetRef"],
    lake_datasets: LakeDatasets,
    silver_engine: SilverEngine,
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    context: dg.AssetExecutionContext | None = None,
) -> tuple["DatasetRef | None", list[list[list[dict[str, Any]]]]]:
    """Run ``query`` over ``inputs`` batch by batch into a new version of its dataset; returns the
    committed ref and, per ``before``/``after`` query, its rows of each batch. Nothing is
    committed (the ref is None) when a batch fails or when a ``before`` query finds anything:
    the caller reports the findings."""
    from potato_assets.lib.engine import EngineJobFailed, EngineUnreachable
    from potato_assets.lib.engine.buckets import BucketMismatch, common_buckets, silver_schema

    try:
        buckets = common_buckets(inputs, lake_datasets.buckets)
    except BucketMismatch as exc:
        raise dg.Failure(description=f"silver/{query.table}: {exc}") from None
    engine = silver_engine.engine(context)
    try:
        key = dg.AssetKey(["silver", query.table])
        with lake_datasets.writer(key, schema=silver_schema(query)) as writer:
            try:
                found = engine.build(query, inputs, writer, buckets=buckets, before=before, after=after)
            except (EngineUnreachable, EngineJobFailed) as exc:
                raise dg.Failure(description=f"silver/{query.table}: {exc}") from None
            if any(rows for per_batch in found[: len(before)] for rows in per_batch):
                writer.abort()
                return None, found
            return writer.commit(), found
    finally:
        engine.close()


def versioned(ref: "DatasetRef", silver_engine: SilverEngine) -> dg.MaterializeResult:
    """The dataset with its content as data version (a recomputation that yields the same rows
    leaves the version, and so everything downstream, as it was) and the engine that built it."""
    # MaterializeResult, not Output: Output's data_version parameter is beta (and warns).
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.data_version),
        metadata={ENGINE_KEY: silver_engine.label()},
    )


def _totals(per_batch: list[list[dict[str, Any]]]) -> dict[str, int]:
    """A count query's one row per batch, added up."""
    totals: dict[str, int] = {}
    for rows in per_batch:
        for row in rows:
            for key, value in row.items():
                totals[key] = totals.get(key, 0) + int(value)
    return totals


@dg.asset(
    key=["silver", "study_calendar"],
    ins={"weight": dg.AssetIn(["bronze", "weight"]), "fiber": dg.AssetIn(["bronze", "fiber"])},
    description=(
        "Each subject's study calendar: the date its week 1 starts (weeks of 7 days), derived "
        "from the week labels of the weigh-in and daily-log files."
    ),
    owners=OWNERS,
    metadata=DATASET_METADATA,
    **SILVER,
)
def study_calendar(
    context: dg.AssetExecutionContext,
    weight: LakeDataset,
    fiber: LakeDataset,
    lake_datasets: LakeDatasets,
    silver_engine: SilverEngine,
) -> dg.MaterializeResult:
    from potato_assets.study import silver

    ref, (contradictions,) = build_table(
        silver.STUDY_CALENDAR,
        {"weight": weight, "fiber": fiber},
        lake_datasets,
        silver_engine,
        before=[silver.CALENDAR_CONTRADICTIONS],
        context=context,
    )
    if ref is None:
        raise dg.Failure(description=str(silver.calendar_contradictions_error(contradictions)))
    if ref.row_count == 0:
        raise dg.Failure(description="no rows with subject_id, date and week: the study calendar is undefined")
    return versioned(ref, silver_engine)


@dg.asset(
    key=["silver", "subject_trajectories"],
    ins={"weight": dg.AssetIn(["bronze", "weight"]), "study_calendar": dg.AssetIn(["silver", "study_calendar"])},
    description=(
        "Per subject and study week: weight (kg), change from the previous week, change from "
        "baseline (first non-missing weight), percent change, and the subject's OLS slope (kg/week)."
    ),
    owners=SCIENCE_OWNERS,
    metadata=DATASET_METADATA,
    **SILVER,
)
def subject_trajectories(
    context: dg.AssetExecutionContext,
    weight: LakeDataset,
    study_calendar: LakeDataset,
    lake_datasets: LakeDatasets,
    silver_engine: SilverEngine,
) -> dg.MaterializeResult:
    from potato_assets.study import silver

    ref, (duplicates,) = build_table(
        silver.SUBJECT_TRAJECTORIES,
        {"weight": weight, "study_calendar": study_calendar},
        lake_datasets,
        silver_engine,
        before=[silver.DUPLICATE_WEIGH_INS],
        context=context,
    )
    if ref is None:
        shown = [{"subject_id": r["subject_id"], "week": r["week"]} for rows in duplicates for r in rows][:3]
        raise dg.Failure(description=f"more than one weigh-in for a subject-week, e.g. {shown}")
    return versioned(ref, silver_engine)


@dg.asset(
    key=["silver", "weekly_features"],
    ins={
        "weight": dg.AssetIn(["bronze", "weight"]),
        "fiber": dg.AssetIn(["bronze", "fiber"]),
        "nutrition": dg.AssetIn(["bronze", "nutrition"]),
        "study_calendar": dg.AssetIn(["silver", "study_calendar"]),
    },
    description=(
        "Per subject and study week: kcal and fiber (sum, mean, days logged), fiber per 1000 kcal "
        "(over days with both logged), and for each of the 11 food categories whether it was "
        "eaten and how many entries. Missing stays missing."
    ),
    owners=SCIENCE_OWNERS,
    metadata=DATASET_METADATA,
    **SILVER,
)
def weekly_features(
    context: dg.AssetExecutionContext,
    weight: LakeDataset,
    fiber: LakeDataset,
    nutrition: LakeDataset,
    study_calendar: LakeDataset,
    lake_datasets: LakeDatasets,
    silver_engine: SilverEngine,
) -> dg.MaterializeResult:
    from potato_assets.study import silver

    ref, (left_out,) = build_table(
        silver.WEEKLY_FEATURES,
        {"weight": weight, "fiber": fiber, "nutrition": nutrition, "study_calendar": study_calendar},
        lake_datasets,
        silver_engine,
        after=[silver.WEEKLY_LEFT_OUT],
        context=context,
    )
    assert ref is not None
    context.add_output_metadata(_totals(left_out))
    return versioned(ref, silver_engine)


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
        "subject_trajectories": dg.AssetIn(["silver", "subject_trajectories"]),
        "weekly_features": dg.AssetIn(["silver", "weekly_features"]),
    },
    description=(
        "The modelling table (complete cases): outcome delta_kg_next (kg, next study week's weight "
        "minus this week's, consecutive weeks only) and predictors "
        + "; ".join(f"{k} = {v}" for k, v in PREDICTOR_UNITS.items())
        + "."
    ),
    owners=SCIENCE_OWNERS,
    metadata={**DATASET_METADATA, "dagster/column_lineage": MODELING_COLUMN_LINEAGE},
    **SILVER,
)
def modeling_dataset(
    context: dg.AssetExecutionContext,
    subject_trajectories: LakeDataset,
    weekly_features: LakeDataset,
    lake_datasets: LakeDatasets,
    silver_engine: SilverEngine,
) -> dg.MaterializeResult:
    from potato_assets.study import silver

    ref, (dropped, subjects) = build_table(
        silver.MODELING_DATASET,
        {"subject_trajectories": subject_trajectories, "weekly_features": weekly_features},
        lake_datasets,
        silver_engine,
        after=[silver.MODELING_DROPPED, silver.MODELING_SUBJECTS],
        context=context,
    )
    assert ref is not None
    context.add_output_metadata({**_totals(dropped), **_totals(subjects)})
    return versioned(ref, silver_engine)
