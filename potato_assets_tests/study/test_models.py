"""Tests of study/fitting.py against independent numpy computations on seeded synthetic panels.

Every reference (least squares, sandwiches, within transform, GLS, REML conversions) is written
here from the formulas, not taken from the module's helpers; the one helper used directly, the
profiled REML likelihood, is itself tested against statsmodels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from potato_assets.study import fitting
from potato_assets.study.models import MODEL_NAMES, MODELS

PREDICTORS = ["fiber_g_week", "kcal_week_thousands", "beans_week", "potato_week"]
COEF_COLUMNS = ["term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]
SUMMARY_KEYS = [
    "model",
    "nobs",
    "n_groups",
    "r2",
    "se_type",
    "converged",
    "singular",
    "group_var",
    "residual_var",
    "log_likelihood",
]
SM_METHODS = ["lbfgs", "bfgs", "cg", "powell", "nm"]
# Seeds found by searching this generator (see the tests that use them).
SINGULAR_SEED = 3  # subject_sd=0: the profiled REML optimum is at theta = 0
SHORT_SEED, SHORT_SD = 7, 0.1  # statsmodels' default fit claims convergence below the optimum


def make_panel(
    seed: int,
    n_subjects: int = 45,
    n_weeks: int = 11,
    subject_sd: float = 0.4,
    resid_sd: float = 0.5,
    drop_frac: float = 0.0,
) -> pd.DataFrame:
    """Subjects x weeks with subject intercepts and predictors that depend on a subject trait.

    kcal_week_thousands is 7 days of ~2000 kcal / 1000 (~14); fiber 100-300 g/week; beans and
    potato are 0/1. Rows are shuffled, so nothing may rely on the input order.
    """
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_subjects), n_weeks)
    n = idx.size
    trait = rng.normal(size=n_subjects)[idx]
    u = rng.normal(0.0, subject_sd, n_subjects)[idx]
    kcal = 7 * (2000 + 150 * trait + rng.normal(0, 120, n)) / 1000
    fiber = np.clip(200 + 40 * trait + rng.normal(0, 35, n), 100, 300)
    beans = (rng.random(n) < 1 / (1 + np.exp(-0.8 * trait))).astype(float)
    potato = (rng.random(n) < 1 / (1 + np.exp(-(0.3 - 0.5 * trait)))).astype(float)
    y = 0.3 - 0.003 * fiber + 0.08 * (kcal - 14) - 0.1 * beans - 0.15 * potato + u + rng.normal(0, resid_sd, n)
    df = pd.DataFrame(
        {
            "subject_id": idx + 101,
            "week": np.tile(np.arange(1, n_weeks + 1), n_subjects),
            "delta_kg_next": y,
            "fiber_g_week": fiber,
            "kcal_week_thousands": kcal,
            "beans_week": beans,
            "potato_week": potato,
        }
    )
    if drop_frac:
        df = df.drop(index=df.index[rng.choice(n, int(drop_frac * n), replace=False)])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, X = [1, predictors] in original units, and subject labels."""
    x = np.column_stack([np.ones(len(df)), df[PREDICTORS].to_numpy(float)])
    return df["delta_kg_next"].to_numpy(float), x, df["subject_id"].to_numpy()


def cluster_sandwich(x: np.ndarray, e: np.ndarray, groups: np.ndarray, factor: float) -> np.ndarray:
    """factor * (X'X)^-1 [sum_g X_g'e_g e_g'X_g] (X'X)^-1, looping over clusters explicitly."""
    bread = np.linalg.inv(x.T @ x)
    meat = np.zeros((x.shape[1], x.shape[1]))
    for g in np.unique(groups):
        s = x[groups == g].T @ e[groups == g]
        meat += np.outer(s, s)
    return factor * bread @ meat @ bread


def check_t_inference(coefs: pd.DataFrame, df_t: int) -> None:
    """p-values and 95% CIs follow t(df_t) from estimate and std_error."""
    t = coefs["estimate"] / coefs["std_error"]
    np.testing.assert_allclose(coefs["statistic"], t, rtol=1e-12)
    np.testing.assert_allclose(coefs["p_value"], 2 * stats.t.sf(np.abs(t), df_t), rtol=1e-8)
    half = stats.t.ppf(0.975, df_t) * coefs["std_error"]
    np.testing.assert_allclose(coefs["conf_low"], coefs["estimate"] - half, rtol=1e-10)
    np.testing.assert_allclose(coefs["conf_high"], coefs["estimate"] + half, rtol=1e-10)


def rescaled_design(df: pd.DataFrame, center: np.ndarray, scale: np.ndarray):
    """[1, (x - center)/scale] and A with beta_orig = A beta_scaled; log|det A| = -sum log scale."""
    xs = (df[PREDICTORS].to_numpy(float) - center) / scale
    a = np.eye(len(PREDICTORS) + 1)
    a[0, 1:] = -center / scale
    a[1:, 1:] = np.diag(1 / scale)
    return np.column_stack([np.ones(len(df)), xs]), a, -np.log(scale).sum()


def direct_mixedlm(y, x, groups, method, start_params=None):
    """A MixedLM REML fit run here, or None if statsmodels raises (e.g. lbfgs' singular matrix)."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return sm.MixedLM(y, x, groups=groups).fit(reml=True, method=method, start_params=start_params)
        except np.linalg.LinAlgError:
            return None


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return make_panel(seed=11, drop_frac=0.05)  # unbalanced and shuffled


@pytest.fixture(scope="module")
def fits(panel: pd.DataFrame) -> dict[str, fitting.ModelFit]:
    return {
        "ols_cluster": fitting.fit_ols_cluster(panel),
        "fixed_effects": fitting.fit_fixed_effects(panel),
        "mixed_effects": fitting.fit_mixed_effects(panel),
    }


# ------------------------------------------------------------------------------------------------
# 1. OLS, clustered
# ------------------------------------------------------------------------------------------------


def test_ols_matches_lstsq_and_cr1_sandwich(panel, fits):
    fit = fits["ols_cluster"]
    y, x, groups = arrays(panel)
    n, k, g = x.shape[0], x.shape[1], len(np.unique(groups))
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    e = y - x @ beta
    cov = cluster_sandwich(x, e, groups, g / (g - 1) * (n - 1) / (n - k))

    coefs = fit.coefficients
    assert list(coefs["term"]) == ["Intercept", *PREDICTORS]
    np.testing.assert_allclose(coefs["estimate"], beta, rtol=1e-8)
    np.testing.assert_allclose(coefs["std_error"], np.sqrt(np.diag(cov)), rtol=1e-8)
    check_t_inference(coefs, g - 1)
    assert fit.details["t_df"] == g - 1
    s = fit.summary
    assert (s["nobs"], s["n_groups"]) == (n, g)
    np.testing.assert_allclose(s["r2"], 1 - e @ e / np.sum((y - y.mean()) ** 2), rtol=1e-10)
    np.testing.assert_allclose(s["residual_var"], e @ e / (n - k), rtol=1e-10)
    loglik = -n / 2 * (np.log(2 * np.pi * e @ e / n) + 1)
    np.testing.assert_allclose(s["log_likelihood"], loglik, rtol=1e-10)
    assert s["singular"] is None and s["group_var"] is None and s["converged"] is True


# ------------------------------------------------------------------------------------------------
# 2. Fixed effects, clustered
# ------------------------------------------------------------------------------------------------


def test_fixed_effects_match_within_ls_and_stata_sandwich(panel, fits):
    fit = fits["fixed_effects"]
    cols = ["delta_kg_next", *PREDICTORS]
    within = panel[cols] - panel.groupby("subject_id")[cols].transform("mean")
    yw, xw = within["delta_kg_next"].to_numpy(), within[PREDICTORS].to_numpy()
    groups = panel["subject_id"].to_numpy()
    n, g, k_slopes = len(panel), len(np.unique(groups)), len(PREDICTORS)
    beta = np.linalg.lstsq(xw, yw, rcond=None)[0]
    e = yw - xw @ beta
    # Stata xtreg, fe vce(cluster): K = slopes + constant, absorbed effects not counted.
    cov = cluster_sandwich(xw, e, groups, g / (g - 1) * (n - 1) / (n - (k_slopes + 1)))

    coefs = fit.coefficients
    assert list(coefs["term"]) == PREDICTORS
    np.testing.assert_allclose(coefs["estimate"], beta, rtol=1e-8)
    np.testing.assert_allclose(coefs["std_error"], np.sqrt(np.diag(cov)), rtol=1e-8)
    check_t_inference(coefs, g - 1)
    s = fit.summary
    np.testing.assert_allclose(s["r2"], 1 - e @ e / (yw @ yw), rtol=1e-10)
    np.testing.assert_allclose(s["residual_var"], e @ e / (n - g - k_slopes), rtol=1e-10)
    assert (s["nobs"], s["n_groups"]) == (n, g)
    assert fit.details["k_counted"] == k_slopes + 1 and fit.details["t_df"] == g - 1


# ------------------------------------------------------------------------------------------------
# 3. Mixed model: REML optimum, original units, GLS
# ------------------------------------------------------------------------------------------------


def test_mixed_llf_not_below_any_direct_statsmodels_optimiser(panel, fits):
    """Direct fits on predictors standardised here (SD with ddof=1); llfs put on original units."""
    fit = fits["mixed_effects"]
    y, _, groups = arrays(panel)
    raw = panel[PREDICTORS].to_numpy(float)
    xs, _, log_det = rescaled_design(panel, raw.mean(axis=0), raw.std(axis=0, ddof=1))
    direct = {m: direct_mixedlm(y, xs, groups, m) for m in SM_METHODS}
    llfs = {m: r.llf + log_det for m, r in direct.items() if r is not None}
    assert len(llfs) >= 3, direct
    kept = fit.summary["log_likelihood"]
    for method, llf in llfs.items():
        assert kept >= llf - 1e-6, (method, kept, llf)
    # The same optimum, not a constant offset: the best direct run is (nearly) as good.
    assert kept - max(llfs.values()) < 1e-4
    assert fit.summary["converged"] is True and fit.details["at_profile_optimum"] is True


def test_mixed_coefficients_are_gls_at_reported_variance_components(panel, fits):
    fit = fits["mixed_effects"]
    y, x, groups = arrays(panel)
    s2u, s2e = fit.summary["group_var"], fit.summary["residual_var"]
    xvx, xvy = np.zeros((5, 5)), np.zeros(5)
    for g in np.unique(groups):
        m = groups == g
        vinv = np.linalg.inv(s2e * np.eye(m.sum()) + s2u * np.ones((m.sum(), m.sum())))
        xvx += x[m].T @ vinv @ x[m]
        xvy += x[m].T @ vinv @ y[m]
    beta = np.linalg.solve(xvx, xvy)
    gls_se = np.sqrt(np.diag(np.linalg.inv(xvx)))
    np.testing.assert_allclose(fit.coefficients["estimate"], beta, rtol=1e-6)
    np.testing.assert_allclose(list(fit.details["gls_std_error"].values()), gls_se, rtol=1e-6)
    # statsmodels' observed-information SEs differ from the GLS ones only slightly.
    np.testing.assert_allclose(fit.coefficients["std_error"], gls_se, rtol=1e-2)


def test_mixed_matches_direct_fit_on_rescaled_raw_data(panel, fits):
    """Fiber in 100 g, kcal minus 14, 0/1 as is: fitted here, mapped back here, same answers."""
    fit = fits["mixed_effects"]
    y, _, groups = arrays(panel)
    xr, a, log_det = rescaled_design(panel, np.array([0, 14, 0, 0]), np.array([100, 1, 1, 1]))
    res = direct_mixedlm(y, xr, groups, "powell")
    assert res is not None and res.converged
    beta = a @ np.asarray(res.fe_params)
    cov = a @ np.asarray(res.cov_params())[:5, :5] @ a.T
    np.testing.assert_allclose(fit.coefficients["estimate"], beta, rtol=1e-5)
    np.testing.assert_allclose(fit.coefficients["std_error"], np.sqrt(np.diag(cov)), rtol=1e-5)
    np.testing.assert_allclose(fit.summary["log_likelihood"], res.llf + log_det, rtol=1e-8)
    np.testing.assert_allclose(fit.summary["group_var"], res.cov_re[0, 0], rtol=1e-4)
    np.testing.assert_allclose(fit.summary["residual_var"], res.scale, rtol=1e-5)
    z = fit.coefficients["estimate"] / fit.coefficients["std_error"]
    np.testing.assert_allclose(fit.coefficients["p_value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-8)


def test_profiled_reml_matches_statsmodels_definition(panel):
    """The closed-form profile equals MixedLM's REML llf (same constant) at several theta."""
    import statsmodels.api as sm

    y, _, groups = arrays(panel)
    raw = panel[PREDICTORS].to_numpy(float)
    xs, _, _ = rescaled_design(panel, raw.mean(axis=0), raw.std(axis=0))
    codes = pd.factorize(groups)[0]
    profile = fitting._ProfiledReml(xs, y, codes)
    model = sm.MixedLM(y, xs, groups=codes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(reml=True, method="powell")  # sets the REML state that loglike reads
    for theta in (1e-3, 0.05, 0.6, 4.0, 100.0):
        sm_llf = model.loglike(np.array([np.sqrt(theta)]), profile_fe=True)
        np.testing.assert_allclose(profile.llf(theta), sm_llf, rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# 4. Singular fits
# ------------------------------------------------------------------------------------------------


def test_singular_when_no_subject_effect():
    fit = fitting.fit_mixed_effects(make_panel(SINGULAR_SEED, subject_sd=0.0))
    s = fit.summary
    assert s["singular"] is True
    assert s["group_var"] < 1e-6 * s["residual_var"]  # numerically 0
    assert fit.details["profile"]["relative_sd"] < 1e-4
    assert s["converged"] is True and fit.details["at_profile_optimum"] is True


def test_not_singular_with_strong_subject_effect():
    fit = fitting.fit_mixed_effects(make_panel(5, n_subjects=30, subject_sd=1.0))
    s = fit.summary
    assert s["singular"] is False
    assert 0.5 < s["group_var"] < 2.0  # true subject variance is 1.0
    assert s["converged"] is True


# ------------------------------------------------------------------------------------------------
# 5. statsmodels' default optimiser stops short; the module does not
# ------------------------------------------------------------------------------------------------


def test_default_optimiser_stops_short_but_kept_fit_reaches_profile_maximum():
    """Seed found by search: statsmodels 0.15's default fit (bfgs, then lbfgs) reports
    converged=True at an interior point ~0.2 REML log-likelihood units below the maximum.
    If a statsmodels upgrade makes the first assertion fail, search for a new seed.
    The direct fit standardises as the module does (population SD): the llf it stops at is the
    same with ddof=1, but its converged flag (from the lbfgs leg) is not.
    """
    df = make_panel(SHORT_SEED, subject_sd=SHORT_SD)
    y, _, groups = arrays(df)
    raw = df[PREDICTORS].to_numpy(float)
    xs, _, log_det = rescaled_design(df, raw.mean(axis=0), raw.std(axis=0))
    default = direct_mixedlm(y, xs, groups, None)
    fit = fitting.fit_mixed_effects(df)
    kept = fit.summary["log_likelihood"]
    assert default.converged and default.llf + log_det < kept - 0.1
    profile = fit.details["profile"]
    llf_std = fit.details["reml_llf_standardised"]
    assert abs(llf_std - profile["reml_llf_standardised"]) <= 1e-6 * abs(llf_std) + 1e-6
    assert fit.summary["converged"] is True
    default_attempt = fit.details["attempts"][0]
    assert default_attempt["start"] == "statsmodels_default"
    assert default_attempt["llf"] < llf_std - 0.1


def test_not_converged_when_only_the_short_fit_is_available(monkeypatch):
    """With every attempt but statsmodels' default call suppressed, the kept fit is the short one:
    it must be flagged as not converged, with the profile's theta and llf reported."""
    real = fitting._one_attempt

    def default_only(model, method, start):
        if method is None:
            return real(model, method, start)
        return {"method": method, "llf": None, "converged": False, "theta": None}, None

    monkeypatch.setattr(fitting, "_one_attempt", default_only)
    fit = fitting.fit_mixed_effects(make_panel(SHORT_SEED, subject_sd=SHORT_SD))
    profile = fit.details["profile"]
    assert fit.details["statsmodels_converged"] is True  # statsmodels' own claim
    assert fit.details["at_profile_optimum"] is False and fit.summary["converged"] is False
    assert profile["gap_to_kept"] > 0.1 and profile["theta"] > 0
    assert "NOT CONVERGED" in fit.text


def test_profile_solution_reported_when_no_mixedlm_fit_runs(monkeypatch):
    """If every MixedLM call fails, the GLS solution at the profiled optimum is reported,
    flagged as not converged, and it is the GLS estimate at the reported variance components."""
    monkeypatch.setattr(
        fitting,
        "_one_attempt",
        lambda model, method, start: ({"method": method, "theta": None}, None),
    )
    df = make_panel(5, n_subjects=20, subject_sd=0.5)
    fit = fitting.fit_mixed_effects(df)
    assert fit.summary["converged"] is False and fit.details["kept_attempt"] is None
    np.testing.assert_allclose(fit.summary["group_var"] / fit.summary["residual_var"], fit.details["profile"]["theta"])
    y, x, groups = arrays(df)
    s2u, s2e = fit.summary["group_var"], fit.summary["residual_var"]
    xvx, xvy = np.zeros((5, 5)), np.zeros(5)
    for g in np.unique(groups):
        m = groups == g
        vinv = np.linalg.inv(s2e * np.eye(m.sum()) + s2u * np.ones((m.sum(), m.sum())))
        xvx += x[m].T @ vinv @ x[m]
        xvy += x[m].T @ vinv @ y[m]
    np.testing.assert_allclose(fit.coefficients["estimate"], np.linalg.solve(xvx, xvy), rtol=1e-8)
    se = np.sqrt(np.diag(np.linalg.inv(xvx)))
    np.testing.assert_allclose(fit.coefficients["std_error"], se, rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# 6. Bad input
# ------------------------------------------------------------------------------------------------

FITTERS = [fitting.fit_ols_cluster, fitting.fit_fixed_effects, fitting.fit_mixed_effects]


@pytest.mark.parametrize("fitter", FITTERS)
def test_missing_column_is_named(fitter):
    df = make_panel(1, n_subjects=10, n_weeks=4).drop(columns="kcal_week_thousands")
    with pytest.raises(ValueError, match="kcal_week_thousands"):
        fitter(df)


@pytest.mark.parametrize("fitter", FITTERS)
def test_nan_predictor_is_named(fitter):
    df = make_panel(1, n_subjects=10, n_weeks=4)
    df.loc[3, "fiber_g_week"] = np.nan
    with pytest.raises(ValueError, match="fiber_g_week.*missing"):
        fitter(df)


@pytest.mark.parametrize("fitter", FITTERS)
def test_single_group_is_rejected(fitter):
    df = make_panel(1, n_subjects=1, n_weeks=20)
    with pytest.raises(ValueError, match="at least 2 groups in 'subject_id'"):
        fitter(df)


@pytest.mark.parametrize("fitter", FITTERS)
def test_constant_predictor_is_named(fitter):
    df = make_panel(1, n_subjects=10, n_weeks=4).assign(beans_week=1.0)
    with pytest.raises(ValueError, match="beans_week.*constant"):
        fitter(df)


def test_fixed_effects_rejects_duplicate_subject_weeks():
    df = make_panel(1, n_subjects=10, n_weeks=4)
    with pytest.raises(ValueError, match="duplicated"):
        fitting.fit_fixed_effects(pd.concat([df, df.iloc[:1]], ignore_index=True))


# ------------------------------------------------------------------------------------------------
# 7. Shapes, keys, summary table
# ------------------------------------------------------------------------------------------------


def test_tables_keys_and_json(fits):
    assert MODEL_NAMES == ("ols_cluster", "fixed_effects", "mixed_effects")
    for name, fit in fits.items():
        assert fit.name == name
        assert list(fit.coefficients.columns) == COEF_COLUMNS
        terms = PREDICTORS if name == "fixed_effects" else ["Intercept", *PREDICTORS]
        assert list(fit.coefficients["term"]) == terms
        values = fit.coefficients[COEF_COLUMNS[1:]].to_numpy(float)
        assert np.isfinite(values).all() and (fit.coefficients["std_error"] > 0).all()
        assert list(fit.summary) == SUMMARY_KEYS and fit.summary["model"] == name
        assert isinstance(fit.text, str) and "Coefficients" in fit.text
        json.dumps(fit.details)
        json.dumps(fit.summary)
    table = fitting.model_summary_table(list(fits.values()))
    assert list(table.columns) == SUMMARY_KEYS
    assert list(table["model"]) == list(MODEL_NAMES)
    assert table.loc[2, "r2"] is None or pd.isna(table.loc[2, "r2"])


def test_import_is_lazy():
    code = (
        "import sys, potato_assets.study.fitting\n"
        "heavy = [m for m in ('statsmodels', 'linearmodels', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_registry_import_loads_no_numerics():
    code = (
        "import sys, potato_assets.study.models\n"
        "heavy = [m for m in ('numpy', 'pandas', 'statsmodels') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_every_registered_model_fits_under_its_name(panel):
    for spec in MODELS:
        fit = spec.fit(panel)
        assert fit.name == spec.name and fit.summary["model"] == spec.name
        assert ("Intercept" not in set(fit.coefficients["term"])) == spec.absorbs_intercept
        assert (fit.summary["group_var"] is not None) == spec.has_variance_components


def test_profiled_solver_path_matches_mixedlm_path():
    """Large panels use the profiled REML solver alone; on a panel both can fit they agree."""
    df = make_panel(11, n_subjects=60)
    via_statsmodels = fitting.fit_mixed_effects(df)
    via_profile = fitting.fit_mixed_effects(df, statsmodels_max_groups=10)
    assert via_profile.details["attempts"] == [] and via_statsmodels.details["attempts"]
    assert via_profile.summary["converged"] is True
    assert via_profile.summary["log_likelihood"] == pytest.approx(via_statsmodels.summary["log_likelihood"], abs=1e-6)
    a = via_profile.coefficients.set_index("term")
    b = via_statsmodels.coefficients.set_index("term")
    np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-5, atol=1e-8)
    # GLS SEs (as lme4 reports them) vs statsmodels' inverse observed information: within 2%.
    np.testing.assert_allclose(a["std_error"], b["std_error"], rtol=2e-2)
    assert via_profile.summary["group_var"] == pytest.approx(via_statsmodels.summary["group_var"], rel=1e-4)
