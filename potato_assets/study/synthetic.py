"""Seeded synthetic cohorts shaped exactly like the study's three landing CSVs.

This module writes ``Potato_tidy.csv`` (weekly weigh-ins), ``Potato_fiber_daily.csv`` (daily
intake log) and ``Potato_nutrition_rows.csv`` (itemised food entries) for any number of subjects
and study weeks. Names and column order come from :mod:`potato_assets.study.schema`. The data are
invented. They are not a copy, resample or perturbation of the seed study. The generator is built
from the published figures below and from what the landing files must look like. Plain
numpy/pandas/pyarrow; no Dagster.

Published figures used
----------------------
* Slime Mold Time Mold (SMTM), "Potato Diet Community Trial: Sign up Now, lol" (2022-04-29):
  the trial asked volunteers to eat (almost) only potatoes for four weeks and to log their weight.
  The study brief calls this the "2020" trial, but it was announced and run in 2022.
* SMTM, "LOSE 10.6 POUNDS in FOUR WEEKS with this ONE WEIRD TRICK ..." (full report,
  2022-07-12): participants who completed the trial lost **10.6 lb (about 4.8 kg) over four
  weeks** on average. This is the calibration target ``four_week_loss_kg = 4.8``.
* SMTM, "Potato Diet Community Trial: 6 Month Followup" (2023-01-26): of the people who finished
  four weeks, **all but one lost weight**, and **a few lost more than 20 lb (about 9 kg)**. This
  sets a small non-responder share (``non_responder_rate = 0.03``, about 1 in 64 plus measurement
  noise) and a between-subject spread wide enough for a right tail beyond 9 kg
  (``responder_sd = 0.4``).
* Week-by-week split of the same trial's data, normalised to 28 days (neoncube, "Potato diet
  comparisons"): **5.1, 1.8, 2.1 and 1.9 lb in weeks 1-4**. Almost half of the four-week loss comes
  in week 1, and the loss is roughly flat after that. This sets ``first_week_share = 0.47`` and a
  gentle geometric taper from week 2 on (``weekly_taper = 0.9``).

Everything else is a modelling assumption, not a published figure. That includes baseline weights
of about 60-110 kg, scale noise, intake levels, missingness rates, food items and the size of the
intake effects. Each assumption is a documented knob of :class:`CohortSpec`.

Model
-----
Subject calendar
    Subject ``i`` starts on ``start_date + offset_i``, where ``offset_i`` is uniform on
    ``0..start_stagger_days``. With ``start_stagger_days = 0``, all subjects start on
    ``start_date``. Study week ``k`` of subject ``i`` covers days
    ``start_i + 7(k-1) .. start_i + 7k - 1``, for ``k = 1..n_weeks``. The ``week`` labels in both
    files that carry them follow this subject-specific calendar.

Adherence
    Each subject has an adherence level on the logit scale, drawn around
    ``logit(adherence_median)`` with SD ``adherence_subject_sd``. Each week adds noise with SD
    ``adherence_week_sd`` and a drift of ``adherence_weekly_drift`` per week. Every day is a
    potato day with that week's adherence probability; all other days are mixed-diet days. Low
    adherers therefore have fewer potato days and fewer potato entries, and eat more other foods.
    A subject-week is a "beans week" with probability ``beans_week_rate``, which varies by
    subject. Beans entries appear only in beans weeks, and those weeks carry extra fiber.

Daily intake (true values; logging gaps are applied afterwards)
    * kcal on a potato day is about N(``potato_day_kcal``, 280).
    * kcal on a mixed day is about N(``other_day_kcal``, 420).
    * Each subject also has a kcal offset with SD 150.
    * kcal is reflected into [1200, 3500].
    * Fiber is kcal/100 x (2.1 g on potato days, 1.0 g on mixed days) x lognormal(0, 0.18) day
      noise, plus 5 g on beans weeks. It is reflected into [10, 80].

Weight (modelled at the weigh-in grain)
    ``W_i1`` is the subject's baseline, about N(``baseline_weight_mean_kg``,
    ``baseline_weight_sd_kg``). ``W_i,k+1 = W_ik - d_ik``. The loss ``d_ik`` during study week
    ``k``, the change from weigh-in k to weigh-in k+1, is::

        d_ik = s_i * base_k
               + fiber_effect_kg_per_g    * (fiber_ik  - mean_k(fiber))
               - kcal_effect_kg_per_1000  * (kcal_ik   - mean_k(kcal)) / 1000
               + potato_effect_kg         * (potato_ik - mean_k(potato))
               + beans_effect_kg          * (beans_ik  - mean_k(beans))
               + N(0, process_sd_kg)

    The terms are:

    * ``base_1 = four_week_loss_kg * first_week_share``.
    * ``base_k = four_week_loss_kg * (1 - first_week_share) * weekly_taper**(k-2) / (1 + t + t**2)``
      for ``k >= 2``, with ``t = weekly_taper``. So ``base_1 + .. + base_4 = four_week_loss_kg``.
    * ``s_i`` is the subject's responsiveness: lognormal with mean 1 and log-SD ``responder_sd``,
      times ``W_i1 / baseline_weight_mean_kg`` (heavier people lose more kg). It is 0 for a
      share ``non_responder_rate`` of subjects. It is rescaled so the cohort mean is 1.
    * ``fiber_ik``, ``kcal_ik`` and ``potato_ik`` are the week's true mean daily fiber, mean daily
      kcal and share of potato days. ``beans_ik`` is 0/1. Each is centred on its cohort mean for
      that week, so the centring keeps the mean loss on the published curve. The effects
      are deliberately modest and noisy. Even so, the seed project's regression
      ``delta_kg_next ~ fiber_g_week + kcal_week_thousands + beans_week + potato_week`` finds
      the expected signs on a cohort of a few thousand subjects.

    The recorded ``weight_kg`` is ``W_ik`` plus scale/day noise N(0, ``measurement_sd_kg``),
    rounded to 0.1 kg. A missed weigh-in leaves the cell empty; the row itself stays. Each
    subject's miss rate is Beta-distributed, with cohort mean ``missing_weighin_rate``. The
    weigh-in day is the subject's preferred weekday offset within the week, jittered with SD
    ``weighin_day_jitter_sd`` days and clipped to the week.

Energy and mood (1-10)
    Each subject has a baseline, and each week adds noise that energy and mood partly share. Both
    are clipped to [1, 10] and rounded to 0.1. A share ``missing_rating_rate`` of cells is empty.

Logging gaps
    Each day is unlogged with a subject-specific probability whose cohort mean is
    ``missing_day_rate``. An unlogged day has no row. On a logged day, the kcal cell is empty with
    probability ``missing_kcal_rate`` and the fiber cell with probability ``missing_fiber_rate``.

Food entries
    A share ``diary_day_rate`` of logged days also has an itemised diary. Such a day has
    ``1 + Poisson(extra_entries_mean)`` entries, capped at 6. Each entry draws its category from
    a potato-day or a mixed-day profile, then one of 4-5 typical items in that category. Its
    nutrients are the item's reference serving, scaled by lognormal portion noise (with larger
    potato portions on potato days) and a small per-nutrient jitter. A share
    ``late_entry_subject_rate`` of subjects log one more diary day, 1-5 days after their last
    study week, as real food logs do. The diary is partial: entries need not add up to the day's
    ``total_calories``.

Determinism and scale
    All randomness comes from ``numpy.random.SeedSequence(seed)``. Subjects are drawn in blocks of
    ``STREAM_BLOCK_SUBJECTS`` (10,000), each with one child stream per component: block 0 uses
    the seed's own children (so cohorts of up to 10,000 subjects, the bundled sample among them,
    are what this generator always made), block b >= 1 streams keyed by (seed, b). The weekly
    exposures are centred on the whole cohort's means, which a cohort of several blocks gets
    from a first pass over its blocks' intake. The same spec therefore gives byte-identical files
    with the same numpy version, whatever chunk size they are produced in. All steps are
    vectorised, with no per-row Python loops. CSV text comes from pyarrow's CSV writer, fed
    dictionary columns (each distinct date or tenth formatted once). Streamed in chunks
    (``potato_assets.lib.synthetic_landing``), 1M subjects x 12 weeks (6.5 GB of CSV) took 142 s on a quiet
    2-core machine (46 MB/s, 107 s of CPU) with a peak RSS of about 0.5 GiB.

File format
    UTF-8 without a BOM. ``\\n`` line endings and a header line. Columns are in schema order. Dates
    are ISO ``yyyy-mm-dd``. Floats have one decimal. A missing value is an empty field, and no
    field is quoted. Rows are sorted by subject, then date; food entries of the same day keep their
    generation order.

API
---
``generate_cohort(spec) -> dict[str, DataFrame]`` is keyed by the three schema file names. The
frames hold exactly the file contents: ``date`` is an ISO string, floats are already rounded and
missing values are NaN. ``synthetic_cohort_chunks(spec, chunk_subjects)`` yields the same rows as
consecutive pieces of ``chunk_subjects`` subjects. ``landing_arrow_table(frame, landing)`` is a
frame as the Arrow table whose CSV text is the file's. ``write_cohort(spec, directory) ->
dict[str, Path]`` writes each file of a cohort held in memory atomically (a temp file in the same
directory, then ``os.replace``); ``potato_assets.lib.synthetic_landing.write_cohort_streaming``
writes the same bytes chunk by chunk. ``subject_start_dates(spec)`` returns every subject's
calendar start.

CLI::

    python -m potato_assets.study.synthetic --subjects 50 --weeks 12 --seed 20240101 --out DIR
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from potato_assets.study import schema

__all__ = [
    "CSV_WRITE_OPTIONS",
    "FOOD_ITEMS",
    "STREAM_BLOCK_SUBJECTS",
    "CohortSpec",
    "generate_cohort",
    "landing_arrow_table",
    "main",
    "subject_start_dates",
    "synthetic_cohort_chunks",
    "write_cohort",
]

# ---------------------------------------------------------------------------------------------
# Food items: (name, kcal, protein_g, carbs_g, fat_g, fiber_g) for one typical serving. Values are
# rounded from standard food-composition tables (USDA FoodData Central style figures).
# ---------------------------------------------------------------------------------------------
FOOD_ITEMS: dict[str, tuple[tuple[str, float, float, float, float, float], ...]] = {
    "potato": (
        ("baked potato", 161.0, 4.3, 36.6, 0.2, 3.8),
        ("mashed potatoes", 214.0, 3.9, 35.0, 7.0, 3.1),
        ("boiled potatoes", 134.0, 2.9, 31.0, 0.2, 2.8),
        ("roasted potatoes", 210.0, 3.5, 30.0, 8.5, 3.3),
        ("oven fries", 225.0, 3.6, 34.0, 8.0, 3.4),
    ),
    "beans": (
        ("black beans", 227.0, 15.2, 40.8, 0.9, 15.0),
        ("lentils", 230.0, 17.9, 39.9, 0.8, 15.6),
        ("chickpeas", 269.0, 14.5, 45.0, 4.2, 12.5),
        ("kidney beans", 225.0, 15.3, 40.4, 0.9, 13.1),
    ),
    "vegetables": (
        ("broccoli", 55.0, 3.7, 11.2, 0.6, 5.1),
        ("spinach", 41.0, 5.3, 6.8, 0.5, 4.3),
        ("carrots", 52.0, 1.2, 12.3, 0.3, 3.6),
        ("green salad", 35.0, 2.0, 6.0, 0.4, 2.5),
        ("bell peppers", 30.0, 1.0, 7.0, 0.3, 2.5),
    ),
    "fruit": (
        ("apple", 95.0, 0.5, 25.0, 0.3, 4.4),
        ("banana", 105.0, 1.3, 27.0, 0.4, 3.1),
        ("orange", 62.0, 1.2, 15.4, 0.2, 3.1),
        ("blueberries", 84.0, 1.1, 21.0, 0.5, 3.6),
    ),
    "oats": (
        ("oatmeal", 166.0, 5.9, 28.0, 3.6, 4.0),
        ("overnight oats", 300.0, 11.0, 48.0, 7.0, 6.0),
        ("steel cut oats", 170.0, 7.0, 29.0, 3.0, 5.0),
    ),
    "rice": (
        ("brown rice", 218.0, 4.5, 45.8, 1.6, 3.5),
        ("white rice", 205.0, 4.3, 44.5, 0.4, 0.6),
        ("basmati rice", 210.0, 4.4, 46.0, 0.5, 0.7),
        ("fried rice", 238.0, 5.5, 45.0, 4.0, 1.4),
    ),
    "bread": (
        ("whole wheat bread", 160.0, 8.0, 28.0, 2.0, 4.0),
        ("sourdough", 185.0, 7.5, 36.0, 1.2, 1.6),
        ("bagel", 277.0, 11.0, 55.0, 1.4, 2.4),
        ("toast with butter", 150.0, 3.0, 14.0, 9.0, 1.0),
    ),
    "nuts": (
        ("almonds", 164.0, 6.0, 6.1, 14.2, 3.5),
        ("walnuts", 185.0, 4.3, 3.9, 18.5, 1.9),
        ("peanut butter", 190.0, 7.0, 7.0, 16.0, 1.6),
        ("cashews", 157.0, 5.2, 8.6, 12.4, 0.9),
    ),
    "egg": (
        ("scrambled eggs", 182.0, 12.0, 2.0, 13.5, 0.0),
        ("hard boiled eggs", 155.0, 12.6, 1.1, 10.6, 0.0),
        ("omelet", 200.0, 13.0, 3.0, 15.0, 0.5),
    ),
    "dairy": (
        ("greek yogurt", 100.0, 17.0, 6.0, 0.7, 0.0),
        ("milk", 122.0, 8.0, 12.0, 4.8, 0.0),
        ("cheddar cheese", 114.0, 7.0, 0.4, 9.4, 0.0),
        ("cottage cheese", 183.0, 24.0, 9.5, 5.0, 0.0),
    ),
    "meat": (
        ("chicken breast", 187.0, 35.0, 0.0, 4.0, 0.0),
        ("ground beef", 280.0, 29.0, 0.0, 17.0, 0.0),
        ("salmon", 233.0, 25.0, 0.0, 14.0, 0.0),
        ("pork chop", 230.0, 30.0, 0.0, 11.0, 0.0),
    ),
}

# Relative category weights of a food entry, in schema.FOOD_CATEGORIES order. On a potato day,
# most entries are potatoes. On a mixed day, entries spread across everything. Beans entries
# happen only in beans weeks; the weight is set to 0 otherwise.
_CATEGORY_WEIGHTS_POTATO_DAY = {
    "potato": 0.62, "beans": 0.12, "vegetables": 0.10, "fruit": 0.05, "oats": 0.02, "rice": 0.01,
    "bread": 0.01, "nuts": 0.02, "egg": 0.02, "dairy": 0.02, "meat": 0.01,
}  # fmt: skip
_CATEGORY_WEIGHTS_MIXED_DAY = {
    "potato": 0.10, "beans": 0.12, "vegetables": 0.13, "fruit": 0.11, "oats": 0.07, "rice": 0.09,
    "bread": 0.11, "nuts": 0.06, "egg": 0.07, "dairy": 0.06, "meat": 0.08,
}  # fmt: skip

# Fixed intake-model constants (see module docstring).
_KCAL_RANGE = (1200.0, 3500.0)
_FIBER_RANGE = (10.0, 80.0)
_POTATO_KCAL_DAY_SD = 280.0
_OTHER_KCAL_DAY_SD = 420.0
_KCAL_SUBJECT_SD = 150.0
_FIBER_PER_100KCAL_POTATO = 2.1
_FIBER_PER_100KCAL_OTHER = 1.0
_FIBER_DAY_LOG_SD = 0.18
_BEANS_WEEK_FIBER_G = 5.0
_MAX_ENTRIES_PER_DAY = 6
_PORTION_LOG_SD = 0.3
_POTATO_DAY_POTATO_PORTION = 1.8
_NUTRIENT_JITTER_LOG_SD = 0.05
_MAX_DICTIONARY_TENTHS = 2_000_000


@dataclass(frozen=True)
class CohortSpec:
    """Everything that determines a synthetic cohort. The same spec gives the same bytes.

    Defaults reproduce the bundled sample (50 subjects x 12 weeks, seed 20240101). Rates are
    cohort means in [0, 1). Where noted, they vary between subjects.
    """

    n_subjects: int = 50
    n_weeks: int = 12
    start_date: datetime.date = datetime.date(2024, 1, 1)
    """Earliest subject start; subject starts are ``start_date + 0..start_stagger_days``."""
    seed: int = 20240101
    start_stagger_days: int = 6
    """Subjects start on ``start_date`` plus a uniform 0..N days offset (0 = all the same)."""

    # --- logging gaps and missing cells ---
    missing_weighin_rate: float = 0.10
    """Share of weigh-ins with an empty ``weight_kg`` (subject-specific, Beta, this mean)."""
    missing_rating_rate: float = 0.03
    """Share of empty ``energy_1_10`` / ``mood_1_10`` cells (independently)."""
    missing_day_rate: float = 0.20
    """Share of subject-days with no daily-log row (subject-specific, Beta, this mean)."""
    missing_kcal_rate: float = 0.07
    """Share of daily-log rows with an empty ``total_calories``."""
    missing_fiber_rate: float = 0.05
    """Share of daily-log rows with an empty ``total_fiber_g``."""
    diary_day_rate: float = 0.45
    """Share of logged days that also have itemised food entries."""
    extra_entries_mean: float = 1.2
    """Entries per diary day are ``1 + Poisson(extra_entries_mean)``, capped at 6."""
    late_entry_subject_rate: float = 0.05
    """Share of subjects with one diary day 1-5 days after their last study week."""
    weighin_day_jitter_sd: float = 1.0
    """SD (days) around the subject's preferred weigh-in day within each week."""

    # --- weight model (published calibration, see module docstring) ---
    baseline_weight_mean_kg: float = 82.0
    baseline_weight_sd_kg: float = 12.0
    four_week_loss_kg: float = 4.8
    """Mean loss from weigh-in 1 to weigh-in 5 (SMTM: 10.6 lb over four weeks)."""
    first_week_share: float = 0.47
    """Share of the four-week loss that falls in week 1 (5.1 of 10.9 lb)."""
    weekly_taper: float = 0.9
    """Ratio of consecutive weekly losses from week 2 on."""
    responder_sd: float = 0.4
    """Log-SD of a subject's loss multiplier (lognormal, mean 1)."""
    non_responder_rate: float = 0.03
    """Share of subjects whose diet-driven loss is 0 ("all but one lost weight")."""
    measurement_sd_kg: float = 0.7
    """Weigh-in noise (scale, clothing, water), per weigh-in."""
    process_sd_kg: float = 0.3
    """Week-to-week noise of the true loss."""

    # --- adherence and intake ---
    adherence_median: float = 0.8
    """Median share of potato days (a subject at logit 0 noise)."""
    adherence_subject_sd: float = 1.0
    """Between-subject SD of adherence, logit scale."""
    adherence_week_sd: float = 0.7
    """Within-subject week-to-week SD of adherence, logit scale."""
    adherence_weekly_drift: float = -0.08
    """Change in adherence logit per study week (people drift off the diet)."""
    beans_week_rate: float = 0.35
    """Mean share of subject-weeks in which beans are eaten (subject-specific, Beta)."""
    potato_day_kcal: float = 1750.0
    other_day_kcal: float = 2400.0

    # --- modest intake effects on the week's loss (kg per week; see module docstring) ---
    fiber_effect_kg_per_g: float = 0.02
    """Extra loss per g/day of mean daily fiber above the week's cohort mean."""
    kcal_effect_kg_per_1000: float = 0.5
    """Less loss per 1000 kcal/day of mean daily intake above the week's cohort mean."""
    potato_effect_kg: float = 0.3
    """Extra loss per unit share of potato days above the week's cohort mean."""
    beans_effect_kg: float = 0.1
    """Extra loss in a beans week relative to the week's cohort mean."""

    def __post_init__(self) -> None:
        if int(self.n_subjects) < 1:
            raise ValueError(f"n_subjects must be >= 1, got {self.n_subjects}")
        if int(self.n_weeks) < 1:
            raise ValueError(f"n_weeks must be >= 1, got {self.n_weeks}")
        if not isinstance(self.start_date, datetime.date):
            raise TypeError("start_date must be a datetime.date")
        if not 0 <= int(self.start_stagger_days) <= 366:
            raise ValueError("start_stagger_days must be in 0..366")
        for name in (
            "missing_weighin_rate",
            "missing_rating_rate",
            "missing_day_rate",
            "missing_kcal_rate",
            "missing_fiber_rate",
            "diary_day_rate",
            "late_entry_subject_rate",
            "first_week_share",
            "non_responder_rate",
            "adherence_median",
            "beans_week_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 < self.adherence_median < 1.0:
            raise ValueError("adherence_median must be strictly between 0 and 1")
        for name in (
            "extra_entries_mean",
            "weighin_day_jitter_sd",
            "baseline_weight_sd_kg",
            "responder_sd",
            "measurement_sd_kg",
            "process_sd_kg",
            "adherence_subject_sd",
            "adherence_week_sd",
            "weekly_taper",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


# ---------------------------------------------------------------------------------------------
# Random streams: one child per component, so each component is reproducible on its own.
# ---------------------------------------------------------------------------------------------
_STREAMS = ("calendar", "subjects", "weeks", "days", "weighins", "diary", "nutrients", "late")


def _rngs(spec: CohortSpec) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(spec.seed)).spawn(len(_STREAMS))
    return {name: np.random.Generator(np.random.PCG64(ss)) for name, ss in zip(_STREAMS, children, strict=True)}


STREAM_BLOCK_SUBJECTS = 10_000
"""Subjects per block of random streams. Block 0 draws from the seed's own streams, so a cohort of
up to this many subjects is exactly what the generator always made (the bundled sample among
them); block b >= 1 draws from streams keyed by (seed, b). Chunks are cut from whole blocks, so
the cohort never depends on the chunk size."""


def _block_ranges(spec: CohortSpec) -> list[tuple[int, int]]:
    """0-based [lo, hi) subject ranges of the stream blocks."""
    n = int(spec.n_subjects)
    return [(lo, min(lo + STREAM_BLOCK_SUBJECTS, n)) for lo in range(0, n, STREAM_BLOCK_SUBJECTS)]


def _block_rngs(spec: CohortSpec, block: int) -> dict[str, np.random.Generator]:
    if block == 0:
        return _rngs(spec)
    # spawn_key (len(_STREAMS), b) is disjoint from the seed's own children (0,) .. (7,)
    root = np.random.SeedSequence(int(spec.seed), spawn_key=(len(_STREAMS), block))
    children = root.spawn(len(_STREAMS))
    return {name: np.random.Generator(np.random.PCG64(ss)) for name, ss in zip(_STREAMS, children, strict=True)}


def _subject_offsets(spec: CohortSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, int(spec.start_stagger_days) + 1, size=n)


def subject_start_dates(spec: CohortSpec) -> pd.Series:
    """Each subject's calendar start (day 1 of study week 1), indexed by subject_id."""
    offsets = np.concatenate(
        [
            _subject_offsets(spec, _block_rngs(spec, b)["calendar"], hi - lo)
            for b, (lo, hi) in enumerate(_block_ranges(spec))
        ]
    )
    starts = np.datetime64(spec.start_date, "D") + offsets.astype("timedelta64[D]")
    index = pd.RangeIndex(1, int(spec.n_subjects) + 1, name=schema.GROUP_COL)
    return pd.Series(starts.astype("datetime64[s]"), index=index, name="start_date")


# ---------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------
def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold values back into [lo, hi] at the edges, so the bounds get no spikes. Then clip."""
    x = np.where(x < lo, 2 * lo - x, x)
    x = np.where(x > hi, 2 * hi - x, x)
    return np.clip(x, lo, hi)


def _beta_rates(rng: np.random.Generator, mean: float, concentration: float, n: int) -> np.ndarray:
    """Subject-specific rates with the given cohort mean (degenerate at 0 and 1)."""
    if mean <= 0.0:
        return np.zeros(n)
    if mean >= 1.0:
        return np.ones(n)
    return rng.beta(mean * concentration, (1.0 - mean) * concentration, size=n)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _round1(x: np.ndarray) -> np.ndarray:
    return np.round(x, 1)


def _base_weekly_loss(spec: CohortSpec) -> np.ndarray:
    """Population-mean loss in study week k (weigh-in k to k+1), k = 1..n_weeks."""
    k = np.arange(1, int(spec.n_weeks) + 1)
    t = float(spec.weekly_taper)
    rest = spec.four_week_loss_kg * (1.0 - spec.first_week_share) / (1.0 + t + t * t)
    base = rest * np.power(t, np.maximum(k - 2, 0).astype(float))
    base[0] = spec.four_week_loss_kg * spec.first_week_share
    return base


def _category_cdfs() -> np.ndarray:
    """Cumulative category weights, shape (4, n_categories).

    The rows are potato-day with beans, potato-day without beans, mixed-day with beans and
    mixed-day without beans.
    """
    cats = schema.FOOD_CATEGORIES
    beans = cats.index("beans")
    rows = []
    for weights in (_CATEGORY_WEIGHTS_POTATO_DAY, _CATEGORY_WEIGHTS_MIXED_DAY):
        w = np.array([weights[c] for c in cats], dtype=float)
        for with_beans in (True, False):
            v = w.copy()
            if not with_beans:
                v[beans] = 0.0
            rows.append(np.cumsum(v / v.sum()))
    cdfs = np.vstack(rows)
    cdfs[:, -1] = 1.0
    return cdfs


def _item_tables() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat item names, item->category code, per-category first item / item count, nutrients."""
    names: list[str] = []
    item_cat: list[int] = []
    nutrients: list[tuple[float, ...]] = []
    first = np.zeros(len(schema.FOOD_CATEGORIES), dtype=np.int64)
    count = np.zeros(len(schema.FOOD_CATEGORIES), dtype=np.int64)
    for ci, cat in enumerate(schema.FOOD_CATEGORIES):
        first[ci] = len(names)
        count[ci] = len(FOOD_ITEMS[cat])
        for name, *values in FOOD_ITEMS[cat]:
            names.append(name)
            item_cat.append(ci)
            nutrients.append(tuple(values))
    return names, np.array(item_cat), first, count, np.array(nutrients, dtype=float)


def _iso_dates(days: np.ndarray) -> pd.Series:
    """datetime64[D] array -> pandas string Series of ISO dates (Arrow-backed).

    A cohort spans a few hundred days: each distinct day is formatted once and gathered.
    """
    if days.size == 0:
        return pd.Series(pd.arrays.ArrowStringArray(pa.array([], pa.string())))
    first = days.min()
    codes = (days - first).astype(np.int64)
    names = pa.array(first + np.arange(int(codes.max()) + 1).astype("timedelta64[D]")).cast(pa.string())
    return pd.Series(pd.arrays.ArrowStringArray(names.take(pa.array(codes))))


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def generate_cohort(spec: CohortSpec) -> dict[str, pd.DataFrame]:
    """Generate the three landing tables for ``spec``, keyed by their schema file names.

    Each frame has exactly the columns of its schema file, in file order. Every value already has
    its final text representation: ISO-date strings, floats rounded to 0.1 and NaN for empty.
    The whole cohort is in memory; :func:`synthetic_cohort_chunks` yields the same rows in
    bounded pieces.
    """
    return next(synthetic_cohort_chunks(spec, int(spec.n_subjects)))


def synthetic_cohort_chunks(
    spec: CohortSpec, chunk_subjects: int = STREAM_BLOCK_SUBJECTS
) -> Iterator[dict[str, pd.DataFrame]]:
    """The cohort as consecutive pieces of ``chunk_subjects`` subjects (the last one shorter).

    Each piece is keyed like :func:`generate_cohort` and holds every row of its subjects.
    Concatenated in order, the pieces are :func:`generate_cohort`'s frames, whatever the chunk
    size. Memory is bounded by the larger of one piece and one stream block: a cohort of more
    than one block first draws every block's intake once (not kept) for the cohort's weekly means.
    """
    if int(chunk_subjects) < 1:
        raise ValueError(f"chunk_subjects must be >= 1, got {chunk_subjects}")
    chunk = int(chunk_subjects)
    blocks = _block_ranges(spec)
    week_means = _cohort_week_means(spec) if len(blocks) > 1 else None
    pieces: list[dict[str, pd.DataFrame]] = []
    have = 0
    for block, (lo, hi) in enumerate(blocks):
        frames = _block_frames(spec, block, lo, hi, week_means)
        next_id, left = lo + 1, hi - lo
        while left:
            take = min(chunk - have, left)
            if take < left:
                part, frames = _split_before(frames, next_id + take)
            else:
                part = frames
            pieces.append(part)
            have, left, next_id = have + take, left - take, next_id + take
            if have == chunk:
                yield _concat(pieces)
                pieces, have = [], 0
    if pieces:
        yield _concat(pieces)


def _split_before(
    frames: dict[str, pd.DataFrame], subject_id: int
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Rows of subjects below ``subject_id`` and the rest (frames are sorted by subject)."""
    head, tail = {}, {}
    for name, frame in frames.items():
        cut = int(np.searchsorted(frame[schema.GROUP_COL].to_numpy(), subject_id, side="left"))
        head[name] = frame.iloc[:cut].reset_index(drop=True)
        tail[name] = frame.iloc[cut:].reset_index(drop=True)
    return head, tail


def _concat(pieces: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    if len(pieces) == 1:
        return pieces[0]
    return {name: pd.concat([p[name] for p in pieces], ignore_index=True) for name in pieces[0]}


@dataclass
class _Intake:
    """One block's subjects: traits, weeks and true daily intake (before logging gaps)."""

    starts: np.ndarray
    baseline: np.ndarray
    scale: np.ndarray
    day_missing_rate: np.ndarray
    weighin_missing_rate: np.ndarray
    preferred_weighin_day: np.ndarray
    energy_base: np.ndarray
    mood_base: np.ndarray
    beans_week: np.ndarray
    process_noise: np.ndarray
    beans_day: np.ndarray
    potato_day: np.ndarray
    kcal: np.ndarray
    fiber: np.ndarray


def _draw_intake(spec: CohortSpec, rng: dict[str, np.random.Generator], n: int) -> _Intake:
    """The first draws of a block's calendar, subjects, weeks and days streams."""
    n_weeks = int(spec.n_weeks)
    n_days = 7 * n_weeks

    # Calendar
    starts = np.datetime64(spec.start_date, "D") + _subject_offsets(spec, rng["calendar"], n).astype("timedelta64[D]")

    # Subject-level traits
    rs = rng["subjects"]
    baseline = _reflect(rs.normal(spec.baseline_weight_mean_kg, spec.baseline_weight_sd_kg, n), 45.0, 180.0)
    sigma = float(spec.responder_sd)
    multiplier = rs.lognormal(-0.5 * sigma * sigma, sigma, n)
    responder = rs.random(n) >= spec.non_responder_rate
    scale = np.where(responder, multiplier, 0.0) * baseline / spec.baseline_weight_mean_kg
    if spec.non_responder_rate < 1.0:
        scale = scale / (1.0 - spec.non_responder_rate)
    adherence_logit = np.log(spec.adherence_median / (1.0 - spec.adherence_median)) + rs.normal(
        0.0, spec.adherence_subject_sd, n
    )
    beans_rate = _beta_rates(rs, spec.beans_week_rate, 3.0, n)
    day_missing_rate = _beta_rates(rs, spec.missing_day_rate, 8.0, n)
    weighin_missing_rate = _beta_rates(rs, spec.missing_weighin_rate, 10.0, n)
    kcal_offset = rs.normal(0.0, _KCAL_SUBJECT_SD, n)
    preferred_weighin_day = rs.integers(0, 7, n)
    energy_base = rs.normal(5.6, 1.3, n)
    mood_base = rs.normal(5.8, 1.2, n)

    # Week-level (n x n_weeks)
    rw = rng["weeks"]
    week_idx = np.arange(n_weeks, dtype=float)
    adherence = _sigmoid(
        adherence_logit[:, None]
        + spec.adherence_weekly_drift * week_idx[None, :]
        + rw.normal(0.0, spec.adherence_week_sd, (n, n_weeks))
    )
    beans_week = rw.random((n, n_weeks)) < beans_rate[:, None]
    process_noise = rw.normal(0.0, spec.process_sd_kg, (n, n_weeks))

    # Day-level (n x n_days): true intake; the logging gaps are drawn next from the same stream
    rd = rng["days"]
    adherence_day = np.repeat(adherence, 7, axis=1)
    beans_day = np.repeat(beans_week, 7, axis=1)
    potato_day = rd.random((n, n_days)) < adherence_day
    kcal = np.where(potato_day, spec.potato_day_kcal, spec.other_day_kcal) + np.where(
        potato_day, _POTATO_KCAL_DAY_SD, _OTHER_KCAL_DAY_SD
    ) * rd.standard_normal((n, n_days))
    kcal = _reflect(kcal + kcal_offset[:, None], *_KCAL_RANGE)
    density = np.where(potato_day, _FIBER_PER_100KCAL_POTATO, _FIBER_PER_100KCAL_OTHER)
    fiber = kcal / 100.0 * density * rd.lognormal(0.0, _FIBER_DAY_LOG_SD, (n, n_days))
    fiber = _reflect(fiber + _BEANS_WEEK_FIBER_G * beans_day, *_FIBER_RANGE)
    return _Intake(
        starts=starts,
        baseline=baseline,
        scale=scale,
        day_missing_rate=day_missing_rate,
        weighin_missing_rate=weighin_missing_rate,
        preferred_weighin_day=preferred_weighin_day,
        energy_base=energy_base,
        mood_base=mood_base,
        beans_week=beans_week,
        process_noise=process_noise,
        beans_day=beans_day,
        potato_day=potato_day,
        kcal=kcal,
        fiber=fiber,
    )


def _weekly_exposures(spec: CohortSpec, intake: _Intake) -> tuple[np.ndarray, ...]:
    """Each subject-week's mean daily kcal, mean daily fiber, potato-day share and beans flag."""
    n, n_weeks = intake.beans_week.shape
    return (
        intake.kcal.reshape(n, n_weeks, 7).mean(axis=2),
        intake.fiber.reshape(n, n_weeks, 7).mean(axis=2),
        intake.potato_day.reshape(n, n_weeks, 7).mean(axis=2),
        intake.beans_week.astype(float),
    )


def _cohort_week_means(spec: CohortSpec) -> np.ndarray:
    """Cohort mean of each weekly exposure, shape (4, n_weeks): block sums in block order."""
    sums = np.zeros((4, int(spec.n_weeks)))
    for block, (lo, hi) in enumerate(_block_ranges(spec)):
        exposures = _weekly_exposures(spec, _draw_intake(spec, _block_rngs(spec, block), hi - lo))
        sums += np.stack([x.sum(axis=0) for x in exposures])
    return sums / int(spec.n_subjects)


def _block_frames(
    spec: CohortSpec, block: int, lo: int, hi: int, week_means: np.ndarray | None
) -> dict[str, pd.DataFrame]:
    """Every row of subjects lo+1..hi (one stream block). ``week_means`` None: the block is the
    whole cohort and its own means are the cohort's."""
    rng = _block_rngs(spec, block)
    n = hi - lo
    n_weeks = int(spec.n_weeks)
    n_days = 7 * n_weeks
    subject_ids = np.arange(lo + 1, hi + 1, dtype=np.int64)
    intake = _draw_intake(spec, rng, n)
    starts = intake.starts
    rd = rng["days"]
    logged = rd.random((n, n_days)) >= intake.day_missing_rate[:, None]
    kcal_missing = rd.random((n, n_days)) < spec.missing_kcal_rate
    fiber_missing = rd.random((n, n_days)) < spec.missing_fiber_rate

    # Weight trajectory at the weigh-in grain; each exposure centred on its cohort mean per week
    exposures = _weekly_exposures(spec, intake)
    if week_means is None:
        week_means = np.stack([x.sum(axis=0) for x in exposures]) / n
    kcal_week, fiber_week, potato_share, beans_week = (
        x - m[None, :] for x, m in zip(exposures, week_means, strict=True)
    )
    loss = (
        intake.scale[:, None] * _base_weekly_loss(spec)[None, :]
        + spec.fiber_effect_kg_per_g * fiber_week
        - spec.kcal_effect_kg_per_1000 * kcal_week / 1000.0
        + spec.potato_effect_kg * potato_share
        + spec.beans_effect_kg * beans_week
        + intake.process_noise
    )
    true_weight = intake.baseline[:, None] - np.concatenate([np.zeros((n, 1)), np.cumsum(loss[:, :-1], axis=1)], axis=1)

    # Weigh-ins
    rwi = rng["weighins"]
    weight = true_weight + rwi.normal(0.0, spec.measurement_sd_kg, (n, n_weeks))
    weight[rwi.random((n, n_weeks)) < intake.weighin_missing_rate[:, None]] = np.nan
    day_in_week = np.clip(
        intake.preferred_weighin_day[:, None]
        + np.rint(rwi.normal(0.0, spec.weighin_day_jitter_sd, (n, n_weeks))).astype(np.int64),
        0,
        6,
    )
    shared = rwi.normal(0.0, 0.8, (n, n_weeks))
    energy = np.clip(intake.energy_base[:, None] + shared + rwi.normal(0.0, 0.9, (n, n_weeks)), 1, 10)
    mood = np.clip(intake.mood_base[:, None] + shared + rwi.normal(0.0, 0.9, (n, n_weeks)), 1, 10)
    energy[rwi.random((n, n_weeks)) < spec.missing_rating_rate] = np.nan
    mood[rwi.random((n, n_weeks)) < spec.missing_rating_rate] = np.nan

    weighin_offset = (7 * np.arange(n_weeks)[None, :] + day_in_week).ravel()
    weighin_dates = np.repeat(starts, n_weeks) + weighin_offset.astype("timedelta64[D]")
    tidy = pd.DataFrame(
        {
            "subject_id": np.repeat(subject_ids, n_weeks),
            "date": _iso_dates(weighin_dates),
            "week": np.tile(np.arange(1, n_weeks + 1, dtype=np.int64), n),
            "weight_kg": _round1(weight.ravel()),
            "energy_1_10": _round1(energy.ravel()),
            "mood_1_10": _round1(mood.ravel()),
        }
    )

    # Daily log: one row per logged subject-day, ordered by subject then date
    flat = np.flatnonzero(logged.ravel())
    day_subject = flat // n_days
    day_offset = flat % n_days
    day_dates = starts[day_subject] + day_offset.astype("timedelta64[D]")
    kcal_logged = np.where(kcal_missing.ravel()[flat], np.nan, intake.kcal.ravel()[flat])
    fiber_logged = np.where(fiber_missing.ravel()[flat], np.nan, intake.fiber.ravel()[flat])
    daily = pd.DataFrame(
        {
            "subject_id": subject_ids[day_subject],
            "date": _iso_dates(day_dates),
            "week": (day_offset // 7 + 1).astype(np.int64),
            "total_calories": _round1(kcal_logged),
            "total_fiber_g": _round1(fiber_logged),
        }
    )

    potato_logged = intake.potato_day.ravel()[flat]
    beans_logged = intake.beans_day.ravel()[flat]
    # Free the day-level arrays before the (large) food-entry step.
    del intake, exposures, logged
    del kcal_missing, fiber_missing, kcal_logged, fiber_logged

    nutrition = _food_entries(
        spec,
        rng,
        starts=starts,
        logged_flat=flat,
        potato_day_flat=potato_logged,
        beans_day_flat=beans_logged,
        n_days=n_days,
        first_id=lo + 1,
    )

    frames = {schema.WEIGHT_FILE: tidy, schema.FIBER_FILE: daily, schema.NUTRITION_FILE: nutrition}
    for landing in schema.LANDING_FILES:
        frames[landing.file_name] = frames[landing.file_name][list(landing.columns)]
    return frames


def _food_entries(
    spec: CohortSpec,
    rng: dict[str, np.random.Generator],
    *,
    starts: np.ndarray,
    logged_flat: np.ndarray,
    potato_day_flat: np.ndarray,
    beans_day_flat: np.ndarray,
    n_days: int,
    first_id: int,
) -> pd.DataFrame:
    """Itemised food entries: several per diary day, plus a few late entries."""
    n = starts.size
    rdi = rng["diary"]
    names, item_cat, first_item, item_count, nutrients = _item_tables()
    cdfs = _category_cdfs()

    diary = rdi.random(logged_flat.size) < spec.diary_day_rate
    d_flat = logged_flat[diary]
    d_potato = potato_day_flat[diary]
    d_beans = beans_day_flat[diary]
    counts = 1 + np.minimum(rdi.poisson(spec.extra_entries_mean, d_flat.size), _MAX_ENTRIES_PER_DAY - 1)

    # Late diary days: one per selected subject, 1-5 days after the last study day, mixed diet.
    rl = rng["late"]
    late_subjects = np.flatnonzero(rl.random(n) < spec.late_entry_subject_rate)
    late_day = n_days - 1 + rl.integers(1, 6, late_subjects.size)
    late_counts = 1 + np.minimum(rl.poisson(1.0, late_subjects.size), 3)

    subject_idx = np.concatenate([d_flat // n_days, late_subjects])
    day_offset = np.concatenate([d_flat % n_days, late_day])
    potato = np.concatenate([d_potato, np.zeros(late_subjects.size, dtype=bool)])
    beans = np.concatenate([d_beans, np.ones(late_subjects.size, dtype=bool)])
    counts = np.concatenate([counts, late_counts])

    e_subject = np.repeat(subject_idx, counts)
    e_day = np.repeat(day_offset, counts)
    e_potato = np.repeat(potato, counts)
    e_beans = np.repeat(beans, counts)
    m = e_subject.size

    # Category by inverse CDF on the day's profile, then a uniform item within the category.
    profile = 2 * (~e_potato).astype(np.int64) + (~e_beans).astype(np.int64)
    u = rdi.random(m)
    category = np.zeros(m, dtype=np.int64)
    for p in range(cdfs.shape[0]):
        sel = profile == p
        if sel.any():
            category[sel] = np.minimum(np.searchsorted(cdfs[p], u[sel], side="right"), cdfs.shape[1] - 1)
    item = first_item[category] + np.minimum(
        (rdi.random(m) * item_count[category]).astype(np.int64), item_count[category] - 1
    )

    rn = rng["nutrients"]
    portion = rn.lognormal(0.0, _PORTION_LOG_SD, m)
    portion = np.where(
        e_potato & (category == schema.FOOD_CATEGORIES.index("potato")),
        portion * _POTATO_DAY_POTATO_PORTION,
        portion,
    )
    jitter = np.exp(_NUTRIENT_JITTER_LOG_SD * rn.standard_normal((m, 5), dtype=np.float32))
    values = _round1(nutrients[item] * portion[:, None] * jitter)

    # Subject order first, then date; late days follow each subject's in-study days.
    order = np.argsort(e_subject, kind="stable")
    e_subject = e_subject[order]
    e_dates = starts[e_subject] + e_day[order].astype("timedelta64[D]")
    item = item[order]
    values = values[order]

    return pd.DataFrame(
        {
            "subject_id": (e_subject + first_id).astype(np.int64),
            "date": _iso_dates(e_dates),
            "food_item": pd.Categorical.from_codes(item, categories=pd.Index(names, dtype="str")),
            "category": pd.Categorical.from_codes(
                item_cat[item], categories=pd.Index(list(schema.FOOD_CATEGORIES), dtype="str")
            ),
            "calories": values[:, 0],
            "protein_g": values[:, 1],
            "carbs_g": values[:, 2],
            "fat_g": values[:, 3],
            "fiber_g": values[:, 4],
        }
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _one_decimal(values: np.ndarray) -> pa.Array:
    """Float column -> text with exactly one decimal ('68.8', '70.0', '-0.4'; -0.04 -> '0.0');
    NaN -> null.

    A column spans a bounded range of tenths, so each tenth in the range is formatted once and
    the column is a dictionary of them: Arrow's CSV writer then only copies text.
    """
    missing = np.isnan(values)
    tenths = np.rint(np.where(missing, 0.0, values) * 10.0).astype(np.int64)
    if tenths.size == 0:
        return pa.array([], pa.string())
    lo, hi = int(tenths.min()), int(tenths.max())
    if hi - lo > _MAX_DICTIONARY_TENTHS:  # a range this wide is no dictionary: 128-bit decimals
        words = np.empty((values.size, 2), dtype=np.int64)  # little-endian low word, sign-extended high
        words[:, 0] = tenths
        words[:, 1] = tenths >> 63
        null_count = int(missing.sum())
        validity = pa.array(~missing).buffers()[1] if null_count else None
        return pa.Array.from_buffers(
            pa.decimal128(38, 1), values.size, [validity, pa.py_buffer(words)], null_count=null_count
        )
    every = np.arange(lo, hi + 1, dtype=np.int64)
    magnitude = np.abs(every)
    text = pc.binary_join_element_wise(
        pa.array(magnitude // 10).cast(pa.string()), pa.array(magnitude % 10).cast(pa.string()), "."
    )
    if lo < 0:
        text = pc.if_else(pa.array(every < 0), pc.binary_join_element_wise("-", text, ""), text)
    codes = pa.array((tenths - lo).astype(np.int32), mask=missing if missing.any() else None)
    return pa.DictionaryArray.from_arrays(codes, text)


def landing_arrow_table(frame: pd.DataFrame, landing: schema.LandingFile) -> pa.Table:
    """The frame as an Arrow table whose CSV text (no quoting, null = empty field) is the
    landing file's: floats with one decimal, ints, ISO dates and plain text."""
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name, kind in landing.columns.items():
        series = frame[name]
        if kind == "float":
            columns[name] = _one_decimal(series.to_numpy(dtype=float, na_value=np.nan))
        elif kind == "int":
            columns[name] = pa.array(series.to_numpy(dtype=np.int64))
        else:  # date / str: already text (categorical -> dictionary, Arrow strings without a copy)
            arr = pa.Table.from_pandas(frame[[name]], preserve_index=False).column(0)
            if kind == "str":
                text = arr.combine_chunks()
                text = text.dictionary if pa.types.is_dictionary(text.type) else text
                if len(text) and pc.any(pc.match_substring_regex(text, r'[,"\r\n]')).as_py():
                    raise ValueError(f"column {name!r} holds text that would need CSV quoting")
            columns[name] = arr
    return pa.table(columns)


CSV_WRITE_OPTIONS = {"include_header": False, "quoting_style": "none", "batch_size": 65536}
"""pyarrow.csv.WriteOptions for the body of a landing file (the header is written as is)."""


def _write_csv(frame: pd.DataFrame, landing: schema.LandingFile, path: Path) -> None:
    """Write one landing CSV atomically: temp file in the same directory, then os.replace."""
    table = landing_arrow_table(frame, landing)
    # A fresh, uniquely named sibling (opened exclusively, so the process umask applies as for any
    # new file), then os.replace: readers see either the old file or the complete new one.
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp_name, "xb") as fh:
            fh.write((",".join(landing.columns) + "\n").encode("utf-8"))
            if table.num_rows:
                pa_csv.write_csv(
                    table,
                    fh,
                    write_options=pa_csv.WriteOptions(**CSV_WRITE_OPTIONS),
                )
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_cohort(spec: CohortSpec, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Generate ``spec`` and write the three landing CSVs into ``directory``.

    The directory is created if needed. Returns file name -> written path.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    frames = generate_cohort(spec)
    paths: dict[str, Path] = {}
    for landing in schema.LANDING_FILES:
        path = out / landing.file_name
        _write_csv(frames[landing.file_name], landing, path)
        paths[landing.file_name] = path
    return paths


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = {f.name: f.default for f in fields(CohortSpec)}
    parser = argparse.ArgumentParser(
        prog="python -m potato_assets.study.synthetic",
        description="Write a seeded synthetic potato-diet cohort (the study's three landing CSVs).",
    )
    parser.add_argument("--subjects", type=int, default=defaults["n_subjects"])
    parser.add_argument("--weeks", type=int, default=defaults["n_weeks"])
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument(
        "--start-date",
        type=datetime.date.fromisoformat,
        default=defaults["start_date"],
        help="earliest subject start, ISO yyyy-mm-dd (default %(default)s)",
    )
    parser.add_argument(
        "--stagger-days",
        type=int,
        default=defaults["start_stagger_days"],
        help="subject starts spread over start-date + 0..N days (default %(default)s)",
    )
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    spec = CohortSpec(
        n_subjects=args.subjects,
        n_weeks=args.weeks,
        seed=args.seed,
        start_date=args.start_date,
        start_stagger_days=args.stagger_days,
    )
    t0 = time.perf_counter()
    paths = write_cohort(spec, args.out)
    elapsed = time.perf_counter() - t0
    for path in paths.values():
        print(f"{path}  ({path.stat().st_size:,} bytes)")
    print(f"{spec.n_subjects} subjects x {spec.n_weeks} weeks, seed {spec.seed}: {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
