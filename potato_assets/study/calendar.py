"""The study's own calendar: each subject's week 1 start date, and study weeks of any date.

The weigh-in and daily-log files label rows with a study `week`. Weeks are 7 days, so every
labelled row says "week 1 starts between date - 7(week-1) - 6 and date - 7(week-1)". A subject's
week 1 starts on the date consistent with the most of its labelled rows (the latest such date:
when every row agrees, the smallest `date - 7 * (week - 1)`). One mistyped date or week then
contradicts the majority and is named itself, instead of every row that disagrees with it.
Ingestion quarantines such rows (`label_contradictions`); `subject_calendars` refuses any left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from potato_assets.study.schema import GROUP_COL, WEEK_COL


class CalendarError(ValueError):
    """Week labels that no 7-day calendar can satisfy."""


def _labelled_rows(labelled: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [
        f[[c for c in f.columns if c in (GROUP_COL, "date", WEEK_COL, "source_line")]].assign(
            _frame=i, _row=np.arange(len(f))
        )
        for i, f in enumerate(labelled)
    ]
    return pd.concat(frames, ignore_index=True).dropna(subset=[GROUP_COL, "date", WEEK_COL]).reset_index(drop=True)


def _anchor_days(rows: pd.DataFrame) -> np.ndarray:
    """Per row: the day (since 1970-01-01) its date and week label put week 1's start on."""
    days = rows["date"].to_numpy(dtype="datetime64[D]").astype("int64")
    return days - 7 * (rows[WEEK_COL].to_numpy(dtype="int64") - 1)


def _majority_start(rows: pd.DataFrame) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Per row: its subject's week 1 start, how many of the subject's rows agree with it, and
    how many rows the subject has. O(n log n): candidates are the rows' own anchors. Day
    numbers throughout: pandas' timedelta and datetime conversions cost more than the rule."""
    days = _anchor_days(rows)
    subject = pd.factorize(rows[GROUP_COL])[0].astype("int64")
    span = int(days.max() - days.min()) + 7 if len(days) else 7
    combined = subject * span + (days - days.min())
    order = np.argsort(combined, kind="stable")
    ordered = combined[order]
    # Rows agreeing with a start s have anchors in [s, s + 6]; a row's own anchor as s.
    agree = np.searchsorted(ordered, combined + 6, side="right") - np.searchsorted(ordered, combined, side="left")
    # Most agreement first, then the latest start among those: one lexsort, first row per subject.
    pick = np.lexsort((-days, -agree, subject))
    first = pick[np.r_[True, subject[pick][1:] != subject[pick][:-1]]]
    start_days = np.empty(len(first), dtype="int64")
    agreeing = np.empty(len(first), dtype=agree.dtype)
    start_days[subject[first]] = days[first]
    agreeing[subject[first]] = agree[first]
    start = start_days[subject].astype("datetime64[D]").astype(rows["date"].dtype)
    sizes = np.bincount(subject)
    return pd.Series(start, index=rows.index), agreeing[subject], sizes[subject]


def _contradicting(rows: pd.DataFrame, start: pd.Series) -> np.ndarray:
    offset = _anchor_days(rows) - start.to_numpy(dtype="datetime64[D]").astype("int64")
    return (offset < 0) | (offset > 6)


def label_contradictions(*labelled: pd.DataFrame) -> list[pd.Series]:
    """For each frame (subject_id, date, week): a reason on every row whose date and week label
    contradict its subject's calendar (as the majority of the subject's rows in all frames set
    it), <NA> elsewhere. Rows missing any of the three are not judged."""
    out = [pd.Series(pd.NA, index=f.index, dtype="string") for f in labelled]
    rows = _labelled_rows(labelled)
    if rows.empty:
        return out
    start, agree, size = _majority_start(rows)
    bad = _contradicting(rows, start)
    for i in np.flatnonzero(bad):
        r = rows.iloc[i]
        actual = (pd.Timestamp(r["date"]) - start.iloc[i]).days // 7 + 1
        reason = (
            f"date and week label contradict subject {r[GROUP_COL]}'s calendar: week 1 starts "
            f"{start.iloc[i].date()} by {agree[i]} of {size[i]} labelled rows, so "
            f"{pd.Timestamp(r['date']).date()} is week {actual}, not week {r[WEEK_COL]}"
        )
        frame = labelled[int(r["_frame"])]
        out[int(r["_frame"])].loc[frame.index[int(r["_row"])]] = reason
    return out


@dataclass(frozen=True)
class Contradiction:
    """A labelled row that contradicts its subject's calendar, as an error message quotes it."""

    subject_id: object
    date: dt.date
    week: object
    where: str = ""  # "<file> line <n>", or empty when unknown


def contradiction_error(count: int, examples: Sequence[Contradiction]) -> CalendarError:
    """The one sentence naming how many rows contradict their calendar, and the first few."""
    shown = "; ".join(
        f"subject {c.subject_id} {c.date} labelled week {c.week}" + (f" ({c.where})" if c.where else "")
        for c in examples
    )
    return CalendarError(
        f"{count} row(s) carry a week label that contradicts their subject's 7-day calendar "
        f"(as most of its rows set it): {shown}"
    )


def subject_calendars(*labelled: pd.DataFrame, sources: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subject: `week1_start` and `n_labelled_rows`, from frames with subject_id,
    date, week (and optionally source_line, and source_file or ``sources`` = each frame's file
    name, for error messages)."""
    rows = _labelled_rows(labelled)
    if rows.empty:
        raise CalendarError("no rows with subject_id, date and week: the study calendar is undefined")
    start, _, _ = _majority_start(rows)
    bad = rows[_contradicting(rows, start)]
    if not bad.empty:

        def where(r: pd.Series) -> str:
            frame = labelled[int(r["_frame"])]
            if "source_file" in frame.columns:
                file = frame["source_file"].iloc[int(r["_row"])]
            else:
                file = sources[int(r["_frame"])] if sources else None
            line = f"line {int(r['source_line'])}" if "source_line" in r.index and pd.notna(r["source_line"]) else None
            return " ".join(str(p) for p in (file, line) if p is not None)

        raise contradiction_error(
            len(bad),
            [
                Contradiction(r[GROUP_COL], pd.Timestamp(r["date"]).date(), r[WEEK_COL], where(r))
                for _, r in bad.head(5).iterrows()
            ],
        )
    calendars = (
        pd.DataFrame({GROUP_COL: rows[GROUP_COL], "week1_start": start})
        .groupby(GROUP_COL, as_index=False)
        .agg(week1_start=("week1_start", "first"), n_labelled_rows=("week1_start", "size"))
    )
    return calendars.astype({GROUP_COL: "Int64"})


def week_start(calendars: pd.DataFrame, subject_week: pd.DataFrame) -> pd.Series:
    """First day of each (subject_id, week) row's study week."""
    start = subject_week[[GROUP_COL]].merge(calendars, on=GROUP_COL, how="left")["week1_start"]
    return (start + pd.to_timedelta(7 * (subject_week[WEEK_COL].astype("int64") - 1).to_numpy(), unit="D")).set_axis(
        subject_week.index
    )


def assign_study_week(entries: pd.DataFrame, calendars: pd.DataFrame) -> pd.Series:
    """Study week (Int64, <NA> for unknown subjects) of each row's `date` in its subject's calendar.
    Dates before week 1 get weeks <= 0; callers keep only the study's weeks."""
    start = entries[[GROUP_COL]].merge(calendars, on=GROUP_COL, how="left")["week1_start"]
    days = (entries["date"].reset_index(drop=True) - start).dt.days
    return (days // 7 + 1).astype("Int64").set_axis(entries.index)
