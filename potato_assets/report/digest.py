"""Bounded digests of the silver tables for the figures and the report, built bucket by bucket.

A silver table at a million subjects does not fit in memory as one frame; the report needs only
counts, per-week means and a few thousand points. Each digest reads frames of whole subjects
(a bucketed dataset's buckets, or one frame) and keeps:

* :class:`TableProfile`: rows, subjects, week range and missed weigh-ins, exactly;
* :class:`FiberSample`: every row's means and ranges exactly, and the rows of a deterministic
  sample of subjects (the ``max_subjects`` smallest hashes of subject_id) for the scatter and
  the fiber-quantile bins;
* :class:`TrajectorySample`: each week's count, mean and SD of the change from baseline over
  every subject (combined across buckets with Chan's formula), and the lines of a deterministic
  sample of subjects.

The sample depends only on the subject ids, never on how the table is split into buckets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from potato_assets.study.schema import GROUP_COL, OUTCOME, WEEK_COL

FIBER = "fiber_g_week"
# Subjects whose rows the fiber figure keeps: 20k subjects x 12 weeks is ~240k points.
MAX_FIBER_SUBJECTS = 20_000
MAX_TRAJECTORY_SUBJECTS = 300


def _subject_hash(ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random order of subjects: pandas' keyed hash of the id (uint64)."""
    return pd.util.hash_array(np.asarray(ids))


def _keep_smallest(rows: pd.DataFrame, max_subjects: int) -> pd.DataFrame:
    """The rows of the ``max_subjects`` subjects with the smallest hash (column ``_h``)."""
    hashes = np.unique(rows["_h"].to_numpy())
    if hashes.size <= max_subjects:
        return rows
    cut = np.partition(hashes, max_subjects - 1)[max_subjects - 1]
    return rows[rows["_h"].to_numpy() <= cut]


@dataclass(frozen=True)
class TableProfile:
    """What the report says about a silver table: rows, subjects, weeks, missed weigh-ins."""

    rows: int
    subjects: int
    week_min: float | None
    week_max: float | None
    missing_weight: int

    @classmethod
    def of(cls, frame: pd.DataFrame) -> TableProfile:
        return profile_frames([frame])


def profile_frames(frames: Iterable[pd.DataFrame]) -> TableProfile:
    """One pass over frames of whole subjects (subjects are counted per frame)."""
    rows = subjects = missing = 0
    lo: float | None = None
    hi: float | None = None
    for frame in frames:
        rows += len(frame)
        if GROUP_COL in frame.columns:
            subjects += int(frame[GROUP_COL].nunique())
        if "weight_kg" in frame.columns:
            missing += int(pd.to_numeric(frame["weight_kg"], errors="coerce").isna().sum())
        if WEEK_COL in frame.columns:
            weeks = pd.to_numeric(frame[WEEK_COL], errors="coerce").dropna()
            if len(weeks):
                lo = float(weeks.min()) if lo is None else min(lo, float(weeks.min()))
                hi = float(weeks.max()) if hi is None else max(hi, float(weeks.max()))
    return TableProfile(rows, subjects, lo, hi, missing)


@dataclass(frozen=True)
class FiberSample:
    """The fiber figure's data: exact moments and ranges of every row, a sample's points."""

    points: pd.DataFrame  # FIBER and OUTCOME of the sampled subjects' rows (all rows if few)
    rows: int  # rows with both values, in the whole table
    subjects: int  # subjects in the whole table (0 when the frame has no subject_id)
    sampled_subjects: int | None  # None: every row is in ``points``
    x_mean: float
    y_mean: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @property
    def sampled(self) -> bool:
        return self.sampled_subjects is not None


def fiber_sample(frames: Iterable[pd.DataFrame], max_subjects: int = MAX_FIBER_SUBJECTS) -> FiberSample:
    kept: pd.DataFrame | None = None
    rows = subjects = 0
    sx = sy = 0.0
    x_lo = y_lo = np.inf
    x_hi = y_hi = -np.inf
    has_ids = True
    for frame in frames:
        if FIBER not in frame.columns or OUTCOME not in frame.columns:
            continue
        d = pd.DataFrame(
            {
                FIBER: pd.to_numeric(frame[FIBER], errors="coerce"),
                OUTCOME: pd.to_numeric(frame[OUTCOME], errors="coerce"),
            }
        )
        has_ids = has_ids and GROUP_COL in frame.columns
        if has_ids:
            d["_h"] = _subject_hash(frame[GROUP_COL].to_numpy())
            subjects += int(frame[GROUP_COL].nunique())
        d = d.dropna(subset=[FIBER, OUTCOME])
        if d.empty:
            continue
        x, y = d[FIBER].to_numpy(dtype=float), d[OUTCOME].to_numpy(dtype=float)
        rows += len(d)
        sx, sy = sx + float(x.sum()), sy + float(y.sum())
        x_lo, x_hi = min(x_lo, float(x.min())), max(x_hi, float(x.max()))
        y_lo, y_hi = min(y_lo, float(y.min())), max(y_hi, float(y.max()))
        kept = d if kept is None else pd.concat([kept, d], ignore_index=True)
        if has_ids:
            kept = _keep_smallest(kept, max_subjects)
    if kept is None or rows == 0:
        empty = pd.DataFrame({FIBER: pd.Series(dtype=float), OUTCOME: pd.Series(dtype=float)})
        return FiberSample(empty, 0, subjects, None, np.nan, np.nan, (np.nan, np.nan), (np.nan, np.nan))
    sampled = None
    if has_ids and len(kept) < rows:
        sampled = int(np.unique(kept["_h"].to_numpy()).size)
    points = kept.loc[:, [FIBER, OUTCOME]].reset_index(drop=True)
    return FiberSample(points, rows, subjects, sampled, sx / rows, sy / rows, (x_lo, x_hi), (y_lo, y_hi))


@dataclass(frozen=True)
class TrajectorySample:
    """The trajectories figure's data: every subject's weekly statistics, a sample's lines."""

    lines: pd.DataFrame  # GROUP_COL, WEEK_COL, _y (change from baseline) of the sampled subjects
    weekly: pd.DataFrame  # index week; count, mean, std (ddof=1) of _y over every subject
    subjects: int
    sampled_subjects: int  # subjects in ``lines``


def baseline_change(trajectories: pd.DataFrame) -> pd.DataFrame:
    """subject, week and change from baseline (kg); computed from weight_kg if needed."""
    t = trajectories.copy()
    if "delta_kg_from_baseline" in t.columns:
        t["_y"] = pd.to_numeric(t["delta_kg_from_baseline"], errors="coerce")
    else:
        t["_y"] = np.nan
    if t["_y"].isna().all() and "weight_kg" in t.columns:
        t = t.sort_values([GROUP_COL, WEEK_COL])
        w = pd.to_numeric(t["weight_kg"], errors="coerce")
        first = w.groupby(t[GROUP_COL]).transform("first")  # first non-NaN weigh-in
        t["_y"] = w - first
    t[WEEK_COL] = pd.to_numeric(t[WEEK_COL], errors="coerce")
    return t[[GROUP_COL, WEEK_COL, "_y"]].dropna(subset=[WEEK_COL])


def _combine_weekly(a: pd.DataFrame | None, b: pd.DataFrame) -> pd.DataFrame:
    """Chan et al.'s pairwise update of count, mean and M2 per week."""
    if a is None:
        return b
    a, b = a.align(b, fill_value=0.0)
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    safe = n.where(n > 0, 1.0)
    mean = a["mean"] + delta * b["count"] / safe
    m2 = a["m2"] + b["m2"] + delta**2 * a["count"] * b["count"] / safe
    return pd.DataFrame({"count": n, "mean": mean, "m2": m2})


def trajectory_sample(frames: Iterable[pd.DataFrame], max_subjects: int = MAX_TRAJECTORY_SUBJECTS) -> TrajectorySample:
    weekly: pd.DataFrame | None = None
    kept: pd.DataFrame | None = None
    subjects = 0
    for frame in frames:
        if frame.empty or GROUP_COL not in frame.columns or WEEK_COL not in frame.columns:
            continue
        t = baseline_change(frame)
        subjects += int(t[GROUP_COL].nunique())
        valid = t.dropna(subset=["_y"])
        if len(valid):
            g = valid.groupby(WEEK_COL, sort=True)["_y"]
            part = pd.DataFrame({"count": g.count().astype(float), "mean": g.mean()})
            part["m2"] = g.var(ddof=0) * part["count"]
            weekly = _combine_weekly(weekly, part)
        t = t.assign(_h=_subject_hash(t[GROUP_COL].to_numpy()))
        kept = t if kept is None else pd.concat([kept, t], ignore_index=True)
        kept = _keep_smallest(kept, max_subjects)
    if weekly is None:
        weekly = pd.DataFrame({"count": [], "mean": [], "m2": []}, dtype=float)
    weekly = weekly.sort_index()
    weekly["std"] = np.sqrt(weekly["m2"] / (weekly["count"] - 1).where(weekly["count"] > 1))
    lines = (
        kept.drop(columns="_h").sort_values([GROUP_COL, WEEK_COL], kind="mergesort")
        if kept is not None
        else pd.DataFrame(columns=[GROUP_COL, WEEK_COL, "_y"])
    )
    sampled = int(lines[GROUP_COL].nunique()) if len(lines) else 0
    return TrajectorySample(lines, weekly[["count", "mean", "std"]], subjects, sampled)
