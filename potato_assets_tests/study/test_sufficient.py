"""The fits from per-subject sufficient statistics equal the library fits (study/fitting.py).

Every number of the coefficient tables, the summaries and the details is held to the
statsmodels/linearmodels reference at 1e-9 (the mixed model at 1e-6), on the seed study, the
sample and synthetic panels (unbalanced, single-row subjects, missing weeks); splitting the
table into 1, 3 or 32 buckets does not change any result beyond 1e-12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from potato_assets.study import fitting, sufficient
from potato_assets.study.calendar import subject_calendars
from potato_assets.study.features import modeling_dataset, study_weeks, subject_trajectories, weekly_features
from potato_assets.study.ingest import parse_landing_csv
from potato_assets.study.models import MODELS, MODELS_BY_NAME
from potato_assets.study.schema import FIBER, NUTRITION, PREDICTORS, WEIGHT

NOW = pd.Timestamp("2026-01-01T00:00:00Z")
RTOL = 1e-9
MIXED_RTOL = 1e-6
NUMBERS = ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high")


def modeling_from(landing: Path) -> pd.DataFrame:
    def bronze(spec):
        raw = (landing / spec.file_name).read_bytes()
        return parse_landing_csv(raw, spec, source_file=spec.file_name, ingested_at=NOW).rows

    w, f, n = bronze(WEIGHT), bronze(FIBER), bronze(NUTRITION)
    cal = subject_calendars(w, f)
    features, _ = weekly_features(f, n, study_weeks(w, cal), cal)
    table, _ = modeling_dataset(subject_trajectories(w, cal), features)
    return table


def synthetic_panel(n_subjects: int, seed: int, max_weeks: int = 16, single: int = 0) -> pd.DataFrame:
    """A random-intercept panel: 1..max_weeks rows per subject, missing weeks, ``single`` one-row subjects."""
    rng = np.random.default_rng(seed)
    weeks_per = rng.integers(1, max_weeks + 1, n_subjects)
    weeks_per[:single] = 1
    ids = rng.permutation(np.arange(10, 10 + 3 * n_subjects, 3))  # not contiguous, not sorted
    rows = []
    for sid, k in zip(ids, weeks_per, strict=True):
        # Weeks with gaps: a random subset of 1..2k, in random order in the frame.
        weeks = rng.permutation(np.sort(rng.choice(np.arange(1, 2 * max_weeks + 1), size=k, replace=False)))
        u = rng.normal(0, 0.6)
        for week in weeks:
            fiber = round(float(rng.gamma(5, 35)), 1)
            kcal = float(rng.normal(14, 2.5))
            beans, potato = float(rng.random() < 0.3), float(rng.random() < 0.7)
            y = -0.003 * fiber + 0.06 * kcal - 0.2 * beans - 0.4 * potato + u + rng.normal(0, 0.9)
            rows.append((int(sid), int(week), y, fiber, kcal, beans, potato))
    return pd.DataFrame(rows, columns=["subject_id", "week", "delta_kg_next", *PREDICTORS])


def buckets(df: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """Whole subjects per bucket by subject_id % n, as the lake's datasets split them."""
    b = df["subject_id"].to_numpy() % n
    return [df[b == k].reset_index(drop=True) for k in range(n)]


def assert_fits_equal(ref: fitting.ModelFit, got: fitting.ModelFit, rtol: float, atol: float = 0.0) -> None:
    assert got.name == ref.name
    a, b = ref.coefficients.set_index("term"), got.coefficients.set_index("term")
    assert list(a.index) == list(b.index)
    for col in NUMBERS:
        np.testing.assert_allclose(b[col], a[col], rtol=rtol, atol=atol, err_msg=f"{ref.name} {col}")
    assert ref.summary.keys() == got.summary.keys()
    for key, value in ref.summary.items():
        if isinstance(value, float):
            np.testing.assert_allclose(got.summary[key], value, rtol=rtol, atol=atol, err_msg=f"{ref.name} {key}")
        else:
            assert got.summary[key] == value, key


def assert_details_equal(ref: fitting.ModelFit, got: fitting.ModelFit, rtol: float) -> None:
    """The numeric details both fits report agree (the library-only ones are not in ``got``)."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = v
        return out

    r, g = flat(ref.details), flat(got.details)
    shared = r.keys() & g.keys()
    assert shared, "no shared numeric details"
    for key in sorted(shared):
        np.testing.assert_allclose(g[key], r[key], rtol=rtol, err_msg=f"{ref.name} details {key}")


@pytest.fixture(scope="module", params=["seed", "sample"])
def study_table(request, seed_dir, sample_dir) -> pd.DataFrame:
    return modeling_from(seed_dir if request.param == "seed" else sample_dir)


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_equal_to_the_library_fits_on_the_seed_study_and_the_sample(study_table, spec):
    ref = spec.fit(study_table)
    rtol = MIXED_RTOL if spec.has_variance_components else RTOL
    for n in (1, 3, 32):
        got = spec.fit_panel(sufficient.panel_from_buckets(buckets(study_table, n)))
        assert_fits_equal(ref, got, rtol)
        assert_details_equal(ref, got, rtol)


PANELS = {
    "balanced-ish": dict(n_subjects=80, seed=1),
    "unbalanced-with-singletons": dict(n_subjects=120, seed=2, single=30),
    "short-panels": dict(n_subjects=200, seed=3, max_weeks=3, single=60),
}


@pytest.fixture(scope="module", params=list(PANELS))
def panel_table(request) -> pd.DataFrame:
    return synthetic_panel(**PANELS[request.param])


@pytest.mark.parametrize("name", ["ols_cluster", "fixed_effects"])
def test_closed_form_fits_equal_the_libraries_on_synthetic_panels(panel_table, name):
    spec = MODELS_BY_NAME[name]
    ref = spec.fit(panel_table)
    got = spec.fit_panel(sufficient.panel_from_buckets(buckets(panel_table, 3)))
    assert_fits_equal(ref, got, RTOL)
    assert_details_equal(ref, got, RTOL)


def test_profiled_reml_from_sums_equals_the_row_level_profile(panel_table):
    # statsmodels_max_groups=1 makes both take the profiled REML path, on these small panels too.
    ref = fitting.fit_mixed_effects(panel_table, statsmodels_max_groups=1)
    panel = sufficient.panel_from_buckets(buckets(panel_table, 3), keep_rows_up_to=0)
    assert panel.rows is None
    got = sufficient.fit_mixed_effects(panel, statsmodels_max_groups=1)
    assert_fits_equal(ref, got, MIXED_RTOL)
    assert_details_equal(ref, got, MIXED_RTOL)


def test_mixed_model_above_the_statsmodels_limit_equals_todays_fit():
    table = synthetic_panel(n_subjects=fitting.STATSMODELS_MAX_GROUPS + 150, seed=7, max_weeks=6, single=40)
    ref = fitting.fit_mixed_effects(table)
    panel = sufficient.panel_from_buckets(buckets(table, 32))
    assert panel.rows is None  # more subjects than MixedLM is run on: no rows kept
    got = sufficient.fit_mixed_effects(panel)
    assert "MixedLM not run" in got.text
    assert_fits_equal(ref, got, MIXED_RTOL)
    assert_details_equal(ref, got, MIXED_RTOL)


def test_mixed_model_on_a_small_panel_is_still_cross_checked_by_mixedlm():
    table = synthetic_panel(n_subjects=60, seed=8)
    got = sufficient.fit_mixed_effects(sufficient.panel_from_buckets(buckets(table, 3)))
    assert got.details["attempts"], "MixedLM attempts are recorded on small panels"
    assert_fits_equal(fitting.fit_mixed_effects(table), got, MIXED_RTOL)


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_the_bucket_split_does_not_change_the_result(spec):
    table = synthetic_panel(n_subjects=fitting.STATSMODELS_MAX_GROUPS + 50, seed=9, single=25)
    fits = [spec.fit_panel(sufficient.panel_from_buckets(buckets(table, n))) for n in (1, 3, 32)]
    # Shuffled rows within a bucket change nothing either.
    shuffled = [b.sample(frac=1.0, random_state=4) for b in buckets(table, 5)]
    fits.append(spec.fit_panel(sufficient.panel_from_buckets(shuffled)))
    for other in fits[1:]:
        assert_fits_equal(fits[0], other, rtol=1e-12, atol=1e-300)


def test_chunks_end_on_subject_boundaries(monkeypatch):
    table = synthetic_panel(n_subjects=90, seed=10)
    whole = sufficient.panel_from_buckets([table])
    monkeypatch.setattr(sufficient, "CHUNK_ROWS", 7)
    chunked = sufficient.panel_from_buckets([table])
    np.testing.assert_array_equal(chunked.subject_id, whole.subject_id)
    np.testing.assert_array_equal(chunked.n, whole.n)
    np.testing.assert_allclose(chunked.cross, whole.cross, rtol=1e-13, atol=1e-9)


def test_statistics_are_the_subjects_own_sums():
    table = synthetic_panel(n_subjects=15, seed=11, single=3)
    panel = sufficient.panel_from_buckets(buckets(table, 4))
    assert panel.nobs == len(table) and panel.n_groups == table["subject_id"].nunique()
    assert list(panel.subject_id) == sorted(table["subject_id"].unique())
    z = table.set_index("subject_id")[list(sufficient.VARIABLES)]
    for i, sid in enumerate(panel.subject_id):
        rows = z.loc[[sid]].to_numpy(float)
        centred = rows - rows.mean(axis=0)
        np.testing.assert_allclose(panel.mean[i], rows.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(sufficient._unpack(panel.cross[i]), centred.T @ centred, atol=1e-9)
    # The totals are the table's own cross-products about its means.
    all_rows = z.to_numpy(float)
    dev = all_rows - all_rows.mean(axis=0)
    np.testing.assert_allclose(panel.total, dev.T @ dev, rtol=1e-11)


# ----------------------------------------------------------------------------------------------
# Bad input: the same sentences as the library fits
# ----------------------------------------------------------------------------------------------


def _sentence(fn, *args) -> str:
    with pytest.raises(ValueError) as error:
        fn(*args)
    return str(error.value)


def test_missing_values_are_counted_over_every_bucket():
    table = synthetic_panel(n_subjects=40, seed=12)
    table.loc[[0, 5, 17, 30], "fiber_g_week"] = np.nan
    expected = _sentence(fitting.fit_ols_cluster, table)
    assert expected == "column 'fiber_g_week' has 4 missing value(s)"
    assert _sentence(sufficient.panel_from_buckets, buckets(table, 8)) == expected


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.drop(columns=["kcal_week_thousands"]),
        lambda t: t.assign(beans_week=np.where(np.arange(len(t)) == 3, np.inf, t["beans_week"])),
        lambda t: t.assign(potato_week="yes"),
    ],
    ids=["missing-column", "infinite", "not-numeric"],
)
def test_bad_columns_read_as_the_library_fits_do(edit):
    table = edit(synthetic_panel(n_subjects=30, seed=13))
    assert _sentence(sufficient.panel_from_buckets, buckets(table, 3)) == _sentence(fitting.fit_ols_cluster, table)


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.assign(beans_week=1.0),
        lambda t: t.assign(potato_week=t["beans_week"]),
        lambda t: t[t["subject_id"] == t["subject_id"].iloc[0]],
    ],
    ids=["constant", "collinear", "one-subject"],
)
@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_unidentified_designs_read_as_the_library_fits_do(edit, spec):
    table = edit(synthetic_panel(n_subjects=30, seed=14))
    expected = _sentence(spec.fit, table)
    assert _sentence(spec.fit_panel, sufficient.panel_from_buckets(buckets(table, 3))) == expected


def test_duplicated_subject_weeks_fail_fixed_effects_only():
    table = synthetic_panel(n_subjects=30, seed=15)
    table = pd.concat([table, table.iloc[[2, 9]]], ignore_index=True)
    panel = sufficient.panel_from_buckets(buckets(table, 3))
    spec = MODELS_BY_NAME["fixed_effects"]
    assert _sentence(spec.fit_panel, panel) == _sentence(spec.fit, table) == "2 duplicated (subject_id, week) row(s)"
    assert_fits_equal(fitting.fit_ols_cluster(table), sufficient.fit_ols_cluster(panel), RTOL)


def test_a_subject_in_two_buckets_is_refused():
    table = synthetic_panel(n_subjects=10, seed=16)
    sid = table["subject_id"].value_counts().idxmax()  # a subject with several rows
    first = table[table["subject_id"] == sid]
    halves = [first.iloc[:1], pd.concat([first.iloc[1:], table[table["subject_id"] != sid]])]
    message = _sentence(sufficient.panel_from_buckets, halves)
    assert f"subject_id {sid} is in more than one bucket" in message
