"""The study's own calendar: each subject's week 1 start date, and study weeks of any date.

The weigh-in and daily-log files label rows with a study `week`. Weeks are 7 days, so every
labelled row says "week 1 starts between date - 7(week-1) - 6 and date - 7(week-1)". A subject's
week 1 starts on the latest date consistent with all of them: the smallest
`date - 7 * (week - 1)`. A row whose label puts it outside its week under that start contradicts
the calendar, and the subject's labels are rejected with the rows named.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from potato_assets.study.schema import GROUP_COL, WEEK_COL


class CalendarError(ValueError):
    """Week labels that no 7-day calendar can satisfy."""


def subject_calendars(*labelled: pd.DataFrame, sources: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subject: `week1_start` and `n_labelled_rows`, from frames with subject_id,
    date, week (and optionally source_line, and source_file or ``sources`` = each frame's file
    name, for error messages)."""
    frames = [
        f[[c for c in f.columns if c in (GROUP_COL, "date", WEEK_COL, "source_line")]].assign(
            _frame=i, _row=np.arange(len(f))
        )
        for i, f in enumerate(labelled)
    ]
    rows = pd.concat(frames, ignore_index=True).dropna(subset=[GROUP_COL, "date", WEEK_COL])
    if rows.empty:
        raise CalendarError("no rows with subject_id, date and week: the study calendar is undefined")
    anchor = rows["date"] - pd.to_timedelta(7 * (rows[WEEK_COL].astype("int64") - 1), unit="D")
    start = anchor.groupby(rows[GROUP_COL]).transform("min")
    offset = (anchor - start).dt.days
    bad = rows[offset > 6]
    if not bad.empty:

        def where(r: pd.Series) -> str:
            frame = labelled[int(r["_frame"])]
            if "source_file" in frame.columns:
                file = frame["source_file"].iloc[int(r["_row"])]
            else:
                file = sources[int(r["_frame"])] if sources else None
            line = f"line {int(r['source_line'])}" if "source_line" in r.index and pd.notna(r["source_line"]) else None
            return f" ({' '.join(str(p) for p in (file, line) if p is not None)})" if file or line else ""

        examples = "; ".join(
            f"subject {r[GROUP_COL]} {pd.Timestamp(r['date']).date()} labelled week {r[WEEK_COL]}{where(r)}"
            for _, r in bad.head(5).iterrows()
        )
        raise CalendarError(f"{len(bad)} row(s) carry a week label that contradicts a 7-day calendar: {examples}")
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
