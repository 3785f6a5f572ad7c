"""The three models on the seed study, checked against computations written out here.

The modelling table is built by the pipeline's own silver functions from the seed CSVs; the
references (least squares, cluster sandwiches, within transform, statsmodels' optimisers) are
independent of study/fitting.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from potato_assets.study import fitting
from potato_assets.study.calendar import subject_calendars
from potato_assets.study.features import modeling_dataset, study_weeks, subject_trajectories, weekly_features
from potato_assets.study.ingest import parse_landing_csv
from potato_assets.study.schema import FIBER, NUTRITION, PREDICTORS, WEIGHT

NOW = pd.Timestamp("2026-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def seed_modeling(seed_dir) -> pd.DataFrame:
    def bronze(spec):
        raw = (seed_dir / spec.file_name).read_bytes()
        return parse_landing_csv(raw, spec, source_file=spec.file_name, ingested_at=NOW).rows

    w, f, n = bronze(WEIGHT), bronze(FIBER), bronze(NUTRITION)
    cal = subject_calendars(w, f)
    features, _ = weekly_features(f, n, study_weeks(w, cal), cal)
    table, _ = modeling_dataset(subject_trajectories(w, cal), features)
    return table


def cluster_sandwich(X: np.ndarray, resid: np.ndarray, groups: np.ndarray) -> np.ndarray:
    bread = np.linalg.inv(X.T @ X)
    meat = np.zeros((X.shape[1], X.shape[1]))
    for g in np.unique(groups):
        s = X[groups == g].T @ resid[groups == g]
        meat += np.outer(s, s)
    return bread @ meat @ bread


def test_ols_cluster_matches_numpy_and_sandwich(seed_modeling):
    d = seed_modeling
    X = np.column_stack([np.ones(len(d)), d[list(PREDICTORS)].to_numpy(float)])
    y = d["delta_kg_next"].to_numpy(float)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    n, k = X.shape
    groups = d["subject_id"].to_numpy()
    g = len(np.unique(groups))
    # CR1, statsmodels' default small-sample correction for cluster SEs.
    cov = cluster_sandwich(X, y - X @ beta, groups) * g / (g - 1) * (n - 1) / (n - k)
    fit = fitting.fit_ols_cluster(d)
    table = fit.coefficients.set_index("term").loc[["Intercept", *PREDICTORS]]
    np.testing.assert_allclose(table["estimate"], beta, rtol=1e-9)
    np.testing.assert_allclose(table["std_error"], np.sqrt(np.diag(cov)), rtol=1e-9)
    assert fit.summary["n_groups"] == g == 50 and fit.summary["nobs"] == n


def test_fixed_effects_match_within_transform_and_sandwich(seed_modeling):
    d = seed_modeling
    cols = [*PREDICTORS, "delta_kg_next"]
    within = d[cols] - d.groupby("subject_id")[cols].transform("mean")
    X = within[list(PREDICTORS)].to_numpy(float)
    y = within["delta_kg_next"].to_numpy(float)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    n, g = len(d), d["subject_id"].nunique()
    k = len(PREDICTORS) + 1  # slopes + constant, absorbed effects not counted (Stata xtreg, fe)
    cov = cluster_sandwich(X, y - X @ beta, d["subject_id"].to_numpy()) * g / (g - 1) * (n - 1) / (n - k)
    fit = fitting.fit_fixed_effects(d)
    table = fit.coefficients.set_index("term").loc[list(PREDICTORS)]
    np.testing.assert_allclose(table["estimate"], beta, rtol=1e-8)
    np.testing.assert_allclose(table["std_error"], np.sqrt(np.diag(cov)), rtol=1e-8)
    ssr = ((y - X @ beta) ** 2).sum()
    assert fit.summary["r2"] == pytest.approx(1 - ssr / (y**2).sum(), rel=1e-8)


def test_mixed_model_reaches_the_best_reml_likelihood(seed_modeling):
    import statsmodels.formula.api as smf

    d = seed_modeling.copy()
    # Standardised predictors: statsmodels cannot fit raw weekly kcal reliably.
    for c in PREDICTORS:
        d[c] = (d[c] - d[c].mean()) / d[c].std(ddof=0)
    model = smf.mixedlm("delta_kg_next ~ " + " + ".join(PREDICTORS), d, groups=d["subject_id"])
    fit = fitting.fit_mixed_effects(seed_modeling)
    # The module reports the REML log-likelihood in original units: convert the standardised
    # fits' values by log|det A| of the scaling (A = diag(1, 1/sd_j) after centring).
    sds = seed_modeling[list(PREDICTORS)].std(ddof=0).to_numpy()
    shift = float(np.sum(np.log(sds)))
    tried = {}
    for method in ("lbfgs", "bfgs", "cg", "powell", "nm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tried[method] = model.fit(reml=True, method=method).llf - shift
            except (np.linalg.LinAlgError, ValueError):
                continue
    assert tried, "no statsmodels optimiser ran"
    for method, llf in tried.items():
        assert fit.summary["log_likelihood"] >= llf - 1e-6, (method, llf, fit.summary["log_likelihood"])
    assert fit.summary["converged"] is True
    # On the seed study the subject variance sits at its boundary: a singular fit, flagged.
    assert fit.summary["singular"] is True
    assert fit.summary["group_var"] / fit.summary["residual_var"] < 1e-8
