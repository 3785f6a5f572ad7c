"""Silver's study rules as SQL: the one implementation every engine runs.

Each query reads named relations (the bronze tables and earlier silver tables, restricted to one
subject bucket or whole) and returns one silver table. The SQL is DuckDB's dialect; the Spark
engine transpiles it with sqlglot. Only portable constructs are used: joins, window functions,
CASE, integer day arithmetic (dates travel as days since 1970-01-01 and the engine turns them
back into dates), no engine-specific functions.

The pandas functions in ``calendar.py`` and ``features.py`` compute the same tables; the tests
hold these queries to them. Rules, as there:

* calendar: a subject's week 1 starts on the date consistent with the most of its labelled rows
  (each says week 1 starts within ``date - 7(week-1) - 6 .. date - 7(week-1)``), the latest such;
* trajectories: change from the previous study week only, baseline = first weighed week, the
  subject's least-squares slope of weight on week (centred sums; missing with < 2 weeks);
* weekly features: sums over the days and food entries of each study week; missing stays
  missing (no logged day: missing calories; no food entry: missing flags and counts);
* modelling table: outcome = next study week's weight minus this week's, complete cases only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from potato_assets.study.schema import FOOD_CATEGORIES, PREDICTORS

if TYPE_CHECKING:
    from potato_assets.study.calendar import CalendarError

EPOCH = "DATE '1970-01-01'"


def _days(column: str) -> str:
    """Days since 1970-01-01 of a date or timestamp column."""
    return f"DATE_DIFF('day', {EPOCH}, CAST({column} AS DATE))"


@dataclass(frozen=True)
class SilverQuery:
    """A silver table's query: the relations it reads, the columns it returns, which of them
    are days since 1970-01-01 (to be turned into dates) and the pandas type of each."""

    table: str
    # Relation -> the columns of it the query reads (bronze tables carry many more).
    reads: dict[str, tuple[str, ...]]
    sql: str
    dtypes: dict[str, str]
    day_columns: tuple[str, ...] = ()


_LABEL_COLUMNS = ("subject_id", "date", "week", "source_line")
_CALENDAR_COLUMNS = ("subject_id", "week1_start")

# Rows that label a date with a study week, from both labelled files; `frame` and `source_line`
# say where each came from (the calendar's error messages name them).
_LABELLED_ROWS = f"""
labelled AS (
    SELECT subject_id, {_days("date")} AS day, week, {_days("date")} - 7 * (week - 1) AS anchor_day,
           0 AS frame, source_line
    FROM weight WHERE subject_id IS NOT NULL AND date IS NOT NULL AND week IS NOT NULL
    UNION ALL
    SELECT subject_id, {_days("date")} AS day, week, {_days("date")} - 7 * (week - 1) AS anchor_day,
           1 AS frame, source_line
    FROM fiber WHERE subject_id IS NOT NULL AND date IS NOT NULL AND week IS NOT NULL
)"""

_LABELLED = f"""{_LABELLED_ROWS},
agreement AS (
    -- Rows agreeing with a start s have anchors in [s, s + 6]: each row's own anchor as s.
    SELECT subject_id, day, week, anchor_day, frame, source_line,
           COUNT(*) OVER (PARTITION BY subject_id ORDER BY anchor_day
                          RANGE BETWEEN CURRENT ROW AND 6 FOLLOWING) AS agree,
           COUNT(*) OVER (PARTITION BY subject_id) AS labelled_rows
    FROM labelled
),
starts AS (
    -- Most agreement first, then the latest start among those.
    SELECT subject_id, anchor_day AS week1_start, agree, labelled_rows
    FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY subject_id ORDER BY agree DESC, anchor_day DESC) AS pick
        FROM agreement
    ) ranked
    WHERE pick = 1
)"""

STUDY_CALENDAR = SilverQuery(
    table="study_calendar",
    reads={"weight": _LABEL_COLUMNS, "fiber": _LABEL_COLUMNS},
    sql=f"""
WITH {_LABELLED}
SELECT subject_id, week1_start, labelled_rows AS n_labelled_rows
FROM starts
ORDER BY subject_id
""",
    dtypes={"subject_id": "Int64", "week1_start": "datetime64[ns]", "n_labelled_rows": "int64"},
    day_columns=("week1_start",),
)

# The labelled rows that contradict their subject's calendar (ingestion quarantines them, so on
# a lake built by bronze there are none): how many, and the first few in file order. It reads
# the calendar STUDY_CALENDAR has just computed from the same rows (`study_calendar`, as the
# dataset stores it): recomputing its window functions here cost more than the table itself.
# A row contradicts when its anchor lies outside [week1_start, week1_start + 6].
CALENDAR_CONTRADICTIONS = f"""
WITH {_LABELLED_ROWS},
starts AS (
    SELECT subject_id, {_days("week1_start")} AS week1_start FROM study_calendar
)
SELECT l.subject_id, l.day, l.week, l.frame, l.source_line, COUNT(*) OVER () AS contradictions
FROM labelled l JOIN starts s ON l.subject_id = s.subject_id
WHERE l.anchor_day < s.week1_start OR l.anchor_day > s.week1_start + 6
ORDER BY l.frame, l.source_line
LIMIT 5
"""


def calendar_contradictions_error(per_batch: Sequence[Sequence[Mapping[str, Any]]]) -> CalendarError:
    """The one sentence for CALENDAR_CONTRADICTIONS' rows of every batch: each batch counted its
    own, and the first few in file order across batches are quoted."""
    import datetime as dt

    from potato_assets.study.calendar import Contradiction, contradiction_error
    from potato_assets.study.schema import FIBER, WEIGHT

    count = sum(int(rows[0]["contradictions"]) for rows in per_batch if rows)
    files = (WEIGHT.file_name, FIBER.file_name)  # the query's `frame`
    first = sorted((r for rows in per_batch for r in rows), key=lambda r: (r["frame"], r["source_line"]))[:5]
    examples = [
        Contradiction(
            r["subject_id"],
            dt.date(1970, 1, 1) + dt.timedelta(days=int(r["day"])),
            r["week"],
            f"{files[int(r['frame'])]} line {int(r['source_line'])}",
        )
        for r in first
    ]
    return contradiction_error(count, examples)


# More than one weigh-in row for a subject-week: trajectories are undefined (bronze drops exact
# duplicates and quarantines conflicting ones, so this finds none on a lake bronze built).
DUPLICATE_WEIGH_INS = """
SELECT subject_id, week, COUNT(*) AS n FROM weight
GROUP BY subject_id, week HAVING COUNT(*) > 1
ORDER BY subject_id, week
LIMIT 3
"""

SUBJECT_TRAJECTORIES = SilverQuery(
    table="subject_trajectories",
    reads={"weight": ("subject_id", "week", "date", "weight_kg"), "study_calendar": _CALENDAR_COLUMNS},
    sql=f"""
WITH t AS (
    SELECT w.subject_id, w.week, {_days("w.date")} AS weigh_in_date, w.weight_kg,
           {_days("c.week1_start")} + 7 * (w.week - 1) AS week_start,
           LAG(w.week) OVER (PARTITION BY w.subject_id ORDER BY w.week) AS prev_week,
           LAG(w.weight_kg) OVER (PARTITION BY w.subject_id ORDER BY w.week) AS prev_weight
    FROM weight w LEFT JOIN study_calendar c ON w.subject_id = c.subject_id
),
observed AS (
    SELECT subject_id, week, weight_kg,
           ROW_NUMBER() OVER (PARTITION BY subject_id ORDER BY week) AS nth,
           week - AVG(week) OVER (PARTITION BY subject_id) AS xc,
           weight_kg - AVG(weight_kg) OVER (PARTITION BY subject_id) AS yc
    FROM t WHERE weight_kg IS NOT NULL
),
per_subject AS (
    SELECT subject_id,
           MIN(CASE WHEN nth = 1 THEN week END) AS baseline_week,
           MIN(CASE WHEN nth = 1 THEN weight_kg END) AS baseline_weight_kg,
           COUNT(*) AS n_weigh_ins,
           -- Centred sums: the textbook sums formula loses digits on kg-scale weights.
           CASE WHEN COUNT(*) >= 2 AND SUM(xc * xc) > 0 THEN SUM(xc * yc) / SUM(xc * xc) END AS slope_kg_per_week
    FROM observed GROUP BY subject_id
)
SELECT t.subject_id, t.week, t.week_start, t.weigh_in_date, t.weight_kg,
       -- Change from the previous study week only: a gap in the weigh-in rows gives no change.
       CASE WHEN t.prev_week = t.week - 1 THEN t.weight_kg - t.prev_weight END AS delta_kg_prev,
       p.baseline_week, p.baseline_weight_kg,
       t.weight_kg - p.baseline_weight_kg AS delta_kg_from_baseline,
       100.0 * (t.weight_kg - p.baseline_weight_kg) / p.baseline_weight_kg AS pct_change_from_baseline,
       p.slope_kg_per_week,
       COALESCE(p.n_weigh_ins, 0) AS n_weigh_ins
FROM t LEFT JOIN per_subject p ON t.subject_id = p.subject_id
ORDER BY t.subject_id, t.week
""",
    dtypes={
        "subject_id": "Int64",
        "week": "Int64",
        "week_start": "datetime64[ns]",
        "weigh_in_date": "datetime64[ns]",
        "weight_kg": "float64",
        "delta_kg_prev": "float64",
        "baseline_week": "Int64",
        "baseline_weight_kg": "float64",
        "delta_kg_from_baseline": "float64",
        "pct_change_from_baseline": "float64",
        "slope_kg_per_week": "float64",
        "n_weigh_ins": "int64",
    },
    day_columns=("week_start", "weigh_in_date"),
)


def _food_columns() -> tuple[str, dict[str, str]]:
    """Per category: whether it was eaten that week and how many entries (missing without any
    food entry that week)."""
    select, dtypes = ["CASE WHEN f.logged > 0 THEN COALESCE(f.known, 0) END AS food_entries"], {"food_entries": "Int64"}
    for i, category in enumerate(FOOD_CATEGORIES):
        select.append(
            f"CASE WHEN f.logged > 0 THEN CASE WHEN COALESCE(f.c{i}, 0) > 0 THEN 1 ELSE 0 END END AS {category}_eaten"
        )
        select.append(f"CASE WHEN f.logged > 0 THEN COALESCE(f.c{i}, 0) END AS {category}_entries")
        dtypes[f"{category}_eaten"] = "Int64"
        dtypes[f"{category}_entries"] = "Int64"
    return ",\n       ".join(select), dtypes


def _category_counts() -> str:
    return ",\n           ".join(
        f"SUM(CASE WHEN category = '{category}' THEN n ELSE 0 END) AS c{i}"
        for i, category in enumerate(FOOD_CATEGORIES)
    )


_FOOD_SELECT, _FOOD_DTYPES = _food_columns()
_KNOWN = ", ".join(f"'{c}'" for c in FOOD_CATEGORIES)

# The study's subject-weeks: those with a weigh-in row; daily rows and food entries outside them
# are left out (and counted by WEEKLY_LEFT_OUT).
_WEEKS = f"""
weeks AS (
    SELECT DISTINCT w.subject_id, w.week, {_days("c.week1_start")} + 7 * (w.week - 1) AS week_start
    FROM weight w LEFT JOIN study_calendar c ON w.subject_id = c.subject_id
    WHERE w.subject_id IS NOT NULL AND w.week IS NOT NULL
),
food AS (
    -- Each entry's study week in its subject's calendar (missing for a subject without one).
    SELECT n.subject_id, n.category,
           CAST(FLOOR(({_days("n.date")} - {_days("c.week1_start")}) / 7.0) AS BIGINT) + 1 AS week
    FROM nutrition n LEFT JOIN study_calendar c ON n.subject_id = c.subject_id
    WHERE n.subject_id IS NOT NULL AND n.date IS NOT NULL
)"""

WEEKLY_FEATURES = SilverQuery(
    table="weekly_features",
    reads={
        "weight": ("subject_id", "week"),
        # The date (unused by the SQL) second: a subject's days sorted by it are in a log's own
        # order, so batch_relations need not sort (lib/engine/buckets.batch_relations).
        "fiber": ("subject_id", "date", "week", "total_calories", "total_fiber_g"),
        # Not the free-text food column: decoding it costs more than the rest.
        "nutrition": ("subject_id", "date", "category"),
        "study_calendar": _CALENDAR_COLUMNS,
    },
    sql=f"""
WITH {_WEEKS},
daily AS (
    SELECT d.subject_id, d.week,
           SUM(d.total_calories) AS kcal_sum, COUNT(d.total_calories) AS kcal_days,
           SUM(d.total_fiber_g) AS fiber_g_sum, COUNT(d.total_fiber_g) AS fiber_days,
           -- Fiber per 1000 kcal over the days with both logged only.
           SUM(CASE WHEN d.total_fiber_g IS NOT NULL THEN d.total_calories END) AS paired_kcal,
           SUM(CASE WHEN d.total_calories IS NOT NULL THEN d.total_fiber_g END) AS paired_fiber,
           COUNT(CASE WHEN d.total_calories IS NOT NULL AND d.total_fiber_g IS NOT NULL THEN 1 END) AS paired_days
    FROM fiber d
    WHERE d.subject_id IS NOT NULL AND d.week IS NOT NULL
    GROUP BY d.subject_id, d.week
),
entry_counts AS (
    -- Entries per subject-week and category first: the per-category sums below then run over
    -- at most 11 rows a week instead of every entry.
    SELECT subject_id, week, category, COUNT(*) AS n
    FROM food WHERE category IS NOT NULL
    GROUP BY subject_id, week, category
),
entries AS (
    -- A week with any categorised entry has food logged; unknown categories count in no column.
    SELECT subject_id, week, SUM(n) AS logged,
           SUM(CASE WHEN category IN ({_KNOWN}) THEN n ELSE 0 END) AS known,
           {_category_counts()}
    FROM entry_counts GROUP BY subject_id, week
)
SELECT k.subject_id, k.week, k.week_start,
       d.kcal_sum,
       CASE WHEN d.kcal_days > 0 THEN d.kcal_sum / d.kcal_days END AS kcal_mean,
       COALESCE(d.kcal_days, 0) AS kcal_days,
       d.fiber_g_sum,
       CASE WHEN d.fiber_days > 0 THEN d.fiber_g_sum / d.fiber_days END AS fiber_g_mean,
       COALESCE(d.fiber_days, 0) AS fiber_days,
       CASE WHEN d.paired_days > 0 AND d.paired_kcal > 0 THEN 1000.0 * d.paired_fiber / d.paired_kcal END
           AS fiber_g_per_1000kcal,
       {_FOOD_SELECT}
FROM weeks k
LEFT JOIN daily d ON k.subject_id = d.subject_id AND k.week = d.week
LEFT JOIN entries f ON k.subject_id = f.subject_id AND k.week = f.week
ORDER BY k.subject_id, k.week
""",
    dtypes={
        "subject_id": "Int64",
        "week": "Int64",
        "week_start": "datetime64[ns]",
        "kcal_sum": "float64",
        "kcal_mean": "float64",
        "kcal_days": "int64",
        "fiber_g_sum": "float64",
        "fiber_g_mean": "float64",
        "fiber_days": "int64",
        "fiber_g_per_1000kcal": "float64",
        **_FOOD_DTYPES,
    },
    day_columns=("week_start",),
)

# How many daily rows and food entries fall outside the study's weeks (reported, not an error).
WEEKLY_LEFT_OUT = f"""
WITH {_WEEKS}
SELECT
    (SELECT COUNT(*) FROM fiber d
     WHERE d.subject_id IS NOT NULL AND d.week IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM weeks k WHERE k.subject_id = d.subject_id AND k.week = d.week))
        AS daily_rows_outside_study_weeks,
    (SELECT COUNT(*) FROM food f
     WHERE f.week IS NULL
        OR NOT EXISTS (SELECT 1 FROM weeks k WHERE k.subject_id = f.subject_id AND k.week = f.week))
        AS food_entries_outside_study_weeks
"""

_PREDICTOR_MISSING = " OR ".join(f"{p} IS NULL" for p in PREDICTORS)

_MODEL_ROWS = """
m AS (
    SELECT t.subject_id, t.week, t.weight_kg, nxt.weight_kg AS weight_kg_next,
           nxt.weight_kg - t.weight_kg AS delta_kg_next,
           CAST(f.fiber_g_sum AS DOUBLE) AS fiber_g_week,
           CAST(f.kcal_sum AS DOUBLE) / 1000.0 AS kcal_week_thousands,
           f.beans_eaten AS beans_week, f.potato_eaten AS potato_week,
           f.kcal_days, f.fiber_days
    FROM subject_trajectories t
    LEFT JOIN subject_trajectories nxt ON nxt.subject_id = t.subject_id AND nxt.week = t.week + 1
    LEFT JOIN weekly_features f ON f.subject_id = t.subject_id AND f.week = t.week
)"""

MODELING_DATASET = SilverQuery(
    table="modeling_dataset",
    reads={
        "subject_trajectories": ("subject_id", "week", "weight_kg"),
        "weekly_features": (
            "subject_id",
            "week",
            "fiber_g_sum",
            "kcal_sum",
            "beans_eaten",
            "potato_eaten",
            "kcal_days",
            "fiber_days",
        ),
    },
    sql=f"""
WITH {_MODEL_ROWS}
SELECT subject_id, week, weight_kg, weight_kg_next, delta_kg_next, {", ".join(PREDICTORS)}, kcal_days, fiber_days
FROM m
WHERE delta_kg_next IS NOT NULL AND NOT ({_PREDICTOR_MISSING})
ORDER BY subject_id, week
""",
    dtypes={
        "subject_id": "Int64",
        "week": "Int64",
        "weight_kg": "float64",
        "weight_kg_next": "float64",
        "delta_kg_next": "float64",
        "fiber_g_week": "float64",
        "kcal_week_thousands": "float64",
        "beans_week": "Int64",
        "potato_week": "Int64",
        "kcal_days": "int64",
        "fiber_days": "int64",
    },
)

# Why subject-weeks did not become modelling rows (the report's row accounting).
MODELING_DROPPED = f"""
WITH {_MODEL_ROWS}
SELECT COUNT(*) AS subject_weeks,
       COUNT(CASE WHEN delta_kg_next IS NULL THEN 1 END) AS dropped_no_outcome,
       COUNT(CASE WHEN delta_kg_next IS NOT NULL AND ({_PREDICTOR_MISSING}) THEN 1 END) AS dropped_missing_predictor
FROM m
"""

# Subjects in the modelling table (buckets hold disjoint subjects, so batches add up).
MODELING_SUBJECTS = f"""
WITH {_MODEL_ROWS}
SELECT COUNT(DISTINCT subject_id) AS subjects
FROM m
WHERE delta_kg_next IS NOT NULL AND NOT ({_PREDICTOR_MISSING})
"""

QUERIES: dict[str, SilverQuery] = {
    q.table: q for q in (STUDY_CALENDAR, SUBJECT_TRAJECTORIES, WEEKLY_FEATURES, MODELING_DATASET)
}

# The check and count queries by name, so a Spark job can be told which to run (emr_job.py).
NAMED_QUERIES: dict[str, str] = {
    "calendar_contradictions": CALENDAR_CONTRADICTIONS,
    "duplicate_weigh_ins": DUPLICATE_WEIGH_INS,
    "weekly_left_out": WEEKLY_LEFT_OUT,
    "modeling_dropped": MODELING_DROPPED,
    "modeling_subjects": MODELING_SUBJECTS,
}
