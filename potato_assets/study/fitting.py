"""The three fits of next-week weight change: clustered OLS, subject fixed effects, random intercept.

Which models exist, their names and labels, is the registry in ``study/models.py``; this module
holds how each one is estimated.

Model: ``delta_kg_next ~ fiber_g_week + kcal_week_thousands + beans_week + potato_week`` on a
panel of subjects (``subject_id``) by study week. Every fit returns a :class:`ModelFit` whose
coefficient table is in the ORIGINAL units of the predictors (see ``schema.PREDICTOR_UNITS``).

Plain pandas/numpy: no Dagster here. statsmodels, linearmodels and scipy are imported inside the
functions that use them, so that importing this module (and the Dagster code location) stays fast.

Small-sample corrections and reference laws (more in each fit's ``se_type`` and ``details``):

* ``ols_cluster``: CR1, ``G/(G-1)·(N-1)/(N-K)`` with K = 5 (intercept + 4 slopes); t(G-1).
* ``fixed_effects``: linearmodels PanelOLS with an explicit constant, ``debiased=True`` and
  ``group_debias=True``; the absorbed subject effects are not counted because they are nested in
  the subject clusters, so the factor is ``G/(G-1)·(N-1)/(N-K)`` with K = 5 (4 slopes + constant),
  as Stata's ``xtreg, fe vce(cluster id)``; t(G-1) computed here.
* ``mixed_effects``: statsmodels MixedLM by REML on standardised predictors, the best of several
  optimisers and starts, checked against a closed-form profiled REML likelihood; Wald z.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from potato_assets.study.models import FIXED_EFFECTS, MIXED_EFFECTS, OLS_CLUSTER
from potato_assets.study.schema import FORMULA, GROUP_COL, OUTCOME, PREDICTORS, WEEK_COL

COEF_COLUMNS: tuple[str, ...] = (
    "term",
    "estimate",
    "std_error",
    "statistic",
    "p_value",
    "conf_low",
    "conf_high",
)
SUMMARY_KEYS: tuple[str, ...] = (
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
)
INTERCEPT = "Intercept"
CI_LEVEL = 0.95

# lme4's isSingular: a relative Cholesky factor sqrt(sigma_u^2/sigma_e^2) below this is singular.
SINGULAR_TOL = 1e-4
# The kept MixedLM fit must be this close to the profiled REML maximum: atol + rtol * |llf|.
PROFILE_ATOL = 1e-6
PROFILE_RTOL = 1e-6
MIXED_METHODS: tuple[str, ...] = ("lbfgs", "bfgs", "cg", "powell", "nm")
# Upper end of the profiled-REML search over theta = sigma_u^2 / sigma_e^2.
THETA_UPPER = 1e6
# statsmodels' sqrt parameter is never started at exactly 0: MixedLM raises there.
MIN_START_SQRT_THETA = 1e-4
# Above this many groups MixedLM's per-group Python loops take minutes for ten attempts, while
# the profiled REML solver below is exact (a global 1-D search) and takes milliseconds: it is
# then the estimator, validated against MixedLM in the tests on smaller panels.
STATSMODELS_MAX_GROUPS = 500


@dataclass(frozen=True)
class ModelFit:
    """One fitted model: tidy coefficients (original units), summary row, text, extra facts."""

    name: str
    coefficients: pd.DataFrame
    summary: dict
    text: str
    details: dict


# ----------------------------------------------------------------------------------------------
# Input checks and shared helpers
# ----------------------------------------------------------------------------------------------


def _validate(df: pd.DataFrame) -> pd.DataFrame:
    """Return the modelling columns sorted by subject and week, or raise ValueError naming why.

    Checks: required columns present, numeric and finite outcome/predictors, no missing values,
    at least 2 subjects (clusters), no constant or collinear predictors.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
    required = (GROUP_COL, WEEK_COL, OUTCOME, *PREDICTORS)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"modelling frame is missing column(s): {', '.join(missing)}")
    for col in required:
        n_na = int(df[col].isna().sum())
        if n_na:
            raise ValueError(f"column {col!r} has {n_na} missing value(s)")
    for col in (OUTCOME, *PREDICTORS):
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise ValueError(f"column {col!r} must be numeric, got dtype {df[col].dtype}")
        if not np.isfinite(df[col].to_numpy(dtype=float)).all():
            raise ValueError(f"column {col!r} has non-finite values")
    n_groups = int(df[GROUP_COL].nunique())
    if n_groups < 2:
        raise ValueError(f"need at least 2 groups in {GROUP_COL!r} to fit, got {n_groups}")
    out = df.loc[:, list(required)].copy()
    for col in (OUTCOME, *PREDICTORS):
        out[col] = out[col].astype(float)
    _check_design(out)
    return out.sort_values([GROUP_COL, WEEK_COL], kind="mergesort").reset_index(drop=True)


def _check_design(df: pd.DataFrame) -> None:
    """Raise ValueError for a constant predictor or a rank-deficient design [1, X]."""
    for col in PREDICTORS:
        if df[col].nunique() < 2:
            raise ValueError(f"predictor {col!r} is constant; its coefficient is not identified")
    x = _design(df)
    if len(df) <= x.shape[1]:
        raise ValueError(f"too few rows to fit: {len(df)} rows for {x.shape[1]} coefficients")
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise ValueError(f"predictors are collinear: {', '.join(PREDICTORS)}")


def _design(df: pd.DataFrame) -> np.ndarray:
    """The design matrix [1, predictors] in original units."""
    return np.column_stack([np.ones(len(df)), df[list(PREDICTORS)].to_numpy(dtype=float)])


def _group_codes(df: pd.DataFrame) -> np.ndarray:
    """Integer codes 0..G-1 of the subjects, in order of appearance."""
    codes, _ = pd.factorize(df[GROUP_COL])
    return codes


def _coef_table(
    terms: list[str], est: np.ndarray, se: np.ndarray, dist: str, df_t: float | None = None
) -> pd.DataFrame:
    """Tidy table with Wald statistic, two-sided p-value and 95% CI from a t(df_t) or normal law."""
    from scipy import stats  # loaded with statsmodels

    est, se = np.asarray(est, dtype=float), np.asarray(se, dtype=float)
    law = stats.t(df_t) if dist == "t" else stats.norm()
    stat = est / se
    crit = law.ppf(0.5 + CI_LEVEL / 2)
    return pd.DataFrame(
        {
            "term": list(terms),
            "estimate": est,
            "std_error": se,
            "statistic": stat,
            "p_value": 2 * law.sf(np.abs(stat)),
            "conf_low": est - crit * se,
            "conf_high": est + crit * se,
        },
        columns=list(COEF_COLUMNS),
    )


def _summary(name: str, **values: Any) -> dict:
    """Summary dict with exactly SUMMARY_KEYS, plain Python values (None where not applicable)."""
    out = {key: _plain(values.get(key)) for key in SUMMARY_KEYS}
    out["model"] = name
    return out


def _plain(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays and tuples into JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(title: str, coefficients: pd.DataFrame, summary: dict, notes: list[str], lib: str) -> str:
    """Human-readable report: our table (used downstream), summary, notes, library output."""
    rows = "\n".join(f"  {k}: {v}" for k, v in summary.items())
    body = [
        f"{title}\nFormula: {FORMULA}",
        "Coefficients (original units):\n" + coefficients.to_string(index=False, float_format="%.6g"),
        "Summary:\n" + rows,
        "Notes:\n" + "\n".join(f"  - {n}" for n in notes),
        "Library output:\n" + lib,
    ]
    return "\n\n".join(body) + "\n"


# ----------------------------------------------------------------------------------------------
# (a) pooled OLS, clustered by subject
# ----------------------------------------------------------------------------------------------


def fit_ols_cluster(df: pd.DataFrame) -> ModelFit:
    """Pooled OLS with CR1 cluster-robust SEs by subject and t(G-1) inference (statsmodels).

    statsmodels' ``use_correction=True`` multiplies the sandwich by G/(G-1)·(N-1)/(N-K);
    with ``use_t=True`` it sets ``df_resid_inference = G-1`` for cluster covariances. That df is
    checked here, so a change in statsmodels' behaviour fails loudly instead of silently.
    """
    import statsmodels.api as sm

    data = _validate(df)
    y, x, groups = data[OUTCOME].to_numpy(), _design(data), _group_codes(data)
    n, k, g = x.shape[0], x.shape[1], int(groups.max()) + 1
    terms = [INTERCEPT, *PREDICTORS]
    res = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": True}, use_t=True)
    df_t = getattr(res, "df_resid_inference", None)
    if df_t != g - 1:
        raise RuntimeError(f"statsmodels used df={df_t} for cluster inference, expected G-1={g - 1}")
    coefs = _coef_table(terms, res.params, res.bse, "t", df_t)
    factor = g / (g - 1) * (n - 1) / (n - k)
    se_type = f"cluster-robust by {GROUP_COL} (CR1: G/(G-1)·(N-1)/(N-K), K={k}), t(G-1)"
    summary = _summary(
        OLS_CLUSTER.name,
        nobs=n,
        n_groups=g,
        r2=float(res.rsquared),
        se_type=se_type,
        converged=True,
        residual_var=float(res.mse_resid),
        log_likelihood=float(res.llf),
    )
    details = _plain(
        {
            "library": "statsmodels OLS, cov_type='cluster', use_correction=True, use_t=True",
            "k_params": k,
            "correction_factor": factor,
            "t_df": df_t,
            "p_values_from_library_match": bool(np.allclose(res.pvalues, coefs["p_value"])),
        }
    )
    notes = [f"SE correction factor G/(G-1)·(N-1)/(N-K) = {factor:.6g}; t with {df_t} df."]
    text = _text("Pooled OLS, clustered by subject", coefs, summary, notes, res.summary().as_text())
    return ModelFit(OLS_CLUSTER.name, coefs, summary, text, details)


# ----------------------------------------------------------------------------------------------
# (b) subject fixed effects, clustered by subject
# ----------------------------------------------------------------------------------------------


def fit_fixed_effects(df: pd.DataFrame) -> ModelFit:
    """Within (subject fixed effects) estimator with Stata-style clustered SEs and t(G-1) inference.

    linearmodels' clustered covariance is (X'X)^-1 S (X'X)^-1 · n/(n - extra_df - k·debiased)
    · [G/(G-1)·(n-1)/n if group_debias]. With ``auto_df`` (default) the entity effects are not
    counted (extra_df = 0) because they are nested in the entity clusters. Fitting with an
    explicit constant makes k = 5 (4 slopes + constant, as Stata's ``_cons``), so the factor is
    G/(G-1)·(N-1)/(N-5): exactly ``xtreg, fe vce(cluster id)``. The constant only changes k: the
    slopes, residuals and slope block of the sandwich are the same as without it. linearmodels'
    own p-values use t(N-G-4); the reported ones are recomputed with t(G-1) as Stata does.
    """
    from linearmodels.panel import PanelOLS

    data = _validate(df)
    _check_panel(data)
    n, g = len(data), int(data[GROUP_COL].nunique())
    panel = data.set_index([GROUP_COL, WEEK_COL])
    exog = panel[list(PREDICTORS)].copy()
    exog.insert(0, "const", 1.0)
    model = PanelOLS(panel[OUTCOME], exog, entity_effects=True)
    res = model.fit(cov_type="clustered", cluster_entity=True, debiased=True, group_debias=True)
    k = exog.shape[1]
    params, se = res.params[list(PREDICTORS)], res.std_errors[list(PREDICTORS)]
    coefs = _coef_table(list(PREDICTORS), params.to_numpy(), se.to_numpy(), "t", g - 1)
    factor = g / (g - 1) * (n - 1) / (n - k)
    resid_var = float(res.resid_ss) / float(res.df_resid)
    se_type = (
        f"cluster-robust by {GROUP_COL} (Stata xtreg,fe: G/(G-1)·(N-1)/(N-K), K={k} = 4 slopes"
        " + constant, absorbed effects not counted), t(G-1)"
    )
    summary = _summary(
        FIXED_EFFECTS.name,
        nobs=n,
        n_groups=g,
        r2=float(res.rsquared_within),
        se_type=se_type,
        converged=True,
        residual_var=resid_var,
        log_likelihood=_finite_or_none(getattr(res, "loglik", None)),
    )
    details = _fe_details(res, n, g, k, factor, resid_var)
    notes = [
        f"SE correction factor G/(G-1)·(N-1)/(N-K) = {factor:.6g} with K={k}; t with {g - 1} df.",
        "Intercept absorbed by the subject effects; the average effect (Stata's _cons) is in"
        f" details: {details['average_effect_cons']['estimate']:.6g}.",
        f"residual_var = SSR/(N-G-4) = {resid_var:.6g}; linearmodels' s2 = SSR/(N-{k}).",
        f"linearmodels' own p-values below use t({int(res.df_resid)}); the table above uses t({g - 1}).",
    ]
    text = _text(
        "Subject fixed effects (within), clustered by subject",
        coefs,
        summary,
        notes,
        str(res.summary),
    )
    return ModelFit(FIXED_EFFECTS.name, coefs, summary, text, details)


def _check_panel(data: pd.DataFrame) -> None:
    """FE needs unique (subject, week) rows and residual degrees of freedom after the effects."""
    dup = data.duplicated([GROUP_COL, WEEK_COL])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicated ({GROUP_COL}, {WEEK_COL}) row(s)")
    n, g = len(data), data[GROUP_COL].nunique()
    if n - g - len(PREDICTORS) < 1:
        raise ValueError(f"too few rows for fixed effects: {n} rows, {g} groups, {len(PREDICTORS)} slopes")


def _fe_details(res: Any, n: int, g: int, k: int, factor: float, resid_var: float) -> dict:
    """JSON-friendly facts about the FE fit: correction, dfs, library quantities, Stata's _cons."""
    return _plain(
        {
            "library": "linearmodels PanelOLS(entity_effects=True) with explicit constant,"
            " cov_type='clustered', cluster_entity=True, debiased=True, group_debias=True,"
            " auto_df=True",
            "correction": "G/(G-1)·(N-1)/(N-K): debiased gives n/(n-K), group_debias"
            " G/(G-1)·(n-1)/n; entity effects nested in clusters so extra_df=0 (not counted)",
            "k_counted": k,
            "correction_factor": factor,
            "t_df": g - 1,
            "library_df_resid": int(res.df_resid),
            "library_s2": float(res.s2),
            "residual_var_definition": "SSR/(N-G-4) (Stata's sigma_e^2)",
            "rsquared_within": float(res.rsquared_within),
            "average_effect_cons": {
                "estimate": float(res.params["const"]),
                "std_error": float(res.std_errors["const"]),
            },
        }
    )


def _finite_or_none(value: Any) -> float | None:
    """A finite float, or None for a missing/NaN quantity."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


# ----------------------------------------------------------------------------------------------
# (c) random-intercept mixed model by REML
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scaling:
    """x_s = (x - center) / scale per predictor; beta_orig = A beta_s with A below."""

    center: np.ndarray
    scale: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """A such that [1, x] A = [1, x_s]: row 0 = [1, -center/scale], diagonal 1/scale."""
        k = len(self.scale) + 1
        a = np.eye(k)
        a[0, 1:] = -self.center / self.scale
        a[1:, 1:] = np.diag(1.0 / self.scale)
        return a

    @property
    def log_abs_det(self) -> float:
        return float(-np.log(self.scale).sum())


def _standardise(data: pd.DataFrame) -> tuple[np.ndarray, _Scaling]:
    """Centre each predictor and divide by its population SD (binary ones too): a stable fit."""
    raw = data[list(PREDICTORS)].to_numpy(dtype=float)
    scaling = _Scaling(center=raw.mean(axis=0), scale=raw.std(axis=0))
    xs = (raw - scaling.center) / scaling.scale
    return np.column_stack([np.ones(len(raw)), xs]), scaling


class _ProfiledReml:
    """Closed-form REML log-likelihood of y = Xb + u_group + e profiled over b and sigma_e^2.

    With theta = sigma_u^2/sigma_e^2, V_i = sigma_e^2 (I + theta J), so V_i*^-1 = I - c_i J with
    c_i = theta/(1 + n_i theta) and log|V_i*| = log(1 + n_i theta). Only per-group sums are needed.
    The constant matches statsmodels' MixedLM REML llf (``loglike`` with ``profile_fe=True``).
    """

    # Distinct group sizes when the per-group terms are pre-summed by size (from_sums), else None.
    _sizes: np.ndarray | None

    def __init__(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        n_groups = int(groups.max()) + 1
        sx = np.zeros((n_groups, x.shape[1]))
        np.add.at(sx, groups, x)
        n_i = np.bincount(groups, minlength=n_groups).astype(float)
        sy = np.bincount(groups, weights=y, minlength=n_groups)
        self._set(n_i, sx, sy, x.T @ x, x.T @ y, float(y @ y))

    @classmethod
    def from_sums(
        cls, n_i: np.ndarray, sx: np.ndarray, sy: np.ndarray, xtx: np.ndarray, xty: np.ndarray, yty: float
    ) -> _ProfiledReml:
        """The same likelihood from per-group sums (study/sufficient.py builds them bucket by bucket)."""
        profile = cls.__new__(cls)
        profile._set(np.asarray(n_i, dtype=float), sx, sy, xtx, xty, float(yty))
        profile._group_by_size()
        return profile

    def _group_by_size(self) -> None:
        """Pre-sum the per-group terms over groups of equal size: c_i depends on n_i only, so each
        likelihood evaluation then costs O(distinct sizes) instead of O(groups) (1M subjects)."""
        order = np.argsort(self.n_i, kind="stable")
        sizes = self.n_i[order]
        starts = np.flatnonzero(np.concatenate([[True], sizes[1:] != sizes[:-1]]))
        ends = np.append(starts[1:], sizes.size)
        sx, sy = self.sx[order], self.sy[order]
        self._sizes = sizes[starts]
        self._counts = (ends - starts).astype(float)
        self._sxx = np.stack([sx[a:b].T @ sx[a:b] for a, b in zip(starts, ends, strict=True)])
        self._sxy = np.stack([sx[a:b].T @ sy[a:b] for a, b in zip(starts, ends, strict=True)])
        self._syy = np.array([float(sy[a:b] @ sy[a:b]) for a, b in zip(starts, ends, strict=True)])

    def _set(
        self, n_i: np.ndarray, sx: np.ndarray, sy: np.ndarray, xtx: np.ndarray, xty: np.ndarray, yty: float
    ) -> None:
        self.n_i, self.sx, self.sy = n_i, sx, sy
        self.xtx, self.xty, self.yty = xtx, xty, yty
        self.m = int(n_i.sum()) - sx.shape[1]  # N - p
        self._sizes = None  # set by _group_by_size

    def parts(self, theta: float) -> tuple[float, np.ndarray, np.ndarray, float]:
        """(llf, beta_gls, X'V*^-1X, sigma_e^2) at theta."""
        if self._sizes is not None:
            c = theta / (1.0 + self._sizes * theta)
            xvx = self.xtx - np.tensordot(c, self._sxx, axes=1)
            xvy = self.xty - c @ self._sxy
            c_syy = float(c @ self._syy)
            log_det_v = float(self._counts @ np.log1p(self._sizes * theta))
        else:
            c = theta / (1.0 + self.n_i * theta)
            xvx = self.xtx - (self.sx * c[:, None]).T @ self.sx
            xvy = self.xty - (self.sx * c[:, None]).T @ self.sy
            c_syy = float(c @ self.sy**2)
            log_det_v = float(np.log1p(self.n_i * theta).sum())
        beta = np.linalg.solve(xvx, xvy)
        qf = self.yty - c_syy - float(xvy @ beta)
        m = self.m
        llf = -0.5 * (log_det_v + np.linalg.slogdet(xvx)[1] + m * np.log(qf) + m * (np.log(2 * np.pi) + 1 - np.log(m)))
        return float(llf), beta, xvx, qf / m

    def llf(self, theta: float) -> float:
        return self.parts(theta)[0]

    def maximise(self, extra_thetas: tuple[float, ...] = ()) -> tuple[float, float]:
        """(theta_hat, llf_max) on [0, THETA_UPPER]: log grid with 0, bounded Brent around the best.

        ``extra_thetas`` (e.g. where MixedLM ended) are candidates too, so the result is never
        below a point that was actually reached.
        """
        from scipy.optimize import minimize_scalar  # loaded with statsmodels

        grid = np.concatenate([[0.0], np.logspace(-8, np.log10(THETA_UPPER), 71)])
        values = np.array([self.llf(t) for t in grid])
        i = int(values.argmax())
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        brent = minimize_scalar(
            lambda t: -self.llf(t), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10 * hi}
        )
        candidates = [(values[i], grid[i]), (-float(brent.fun), float(brent.x))]
        candidates += [(self.llf(t), t) for t in extra_thetas if np.isfinite(t) and t >= 0]
        llf_max, theta_hat = max(candidates)
        return float(theta_hat), float(llf_max)


def fit_mixed_effects(df: pd.DataFrame, *, statsmodels_max_groups: int = STATSMODELS_MAX_GROUPS) -> ModelFit:
    """Random-intercept LMM by REML; the best of several MixedLM fits, checked against the profile.

    Fitted on standardised predictors so the optimisation is well conditioned whatever the units
    (raw kcal has been reported to give a singular Hessian), then coefficients and their
    covariance are mapped back exactly: b = A b_s, Cov = A Cov_s A'.
    statsmodels' default call is run, then every optimiser in MIXED_METHODS from statsmodels'
    default start (theta = 1) and from the profiled-REML optimum; the fit with the highest REML
    llf is kept and must reach the profile maximum to be called converged.

    ``log_likelihood`` is the REML llf of the design in ORIGINAL units (statsmodels'
    standardised-design llf + log|det A|, since REML depends on the X parametrisation), which
    is what a fit on the raw predictors would report.
    """
    data = _validate(df)
    y, groups = data[OUTCOME].to_numpy(), _group_codes(data)
    xs, scaling = _standardise(data)
    profile = _ProfiledReml(xs, y, groups)
    theta0, llf0 = profile.maximise()
    nobs, n_groups = len(data), int(groups.max()) + 1
    if n_groups > statsmodels_max_groups:
        kept = _profile_solution(profile, theta0, statsmodels_max_groups)
        return _mixed_result(nobs, n_groups, scaling, profile, [], kept, theta0, llf0)
    attempts, best = _mixed_attempts(xs, y, groups, theta0)
    theta_hat, llf_max = profile.maximise(tuple(a["theta"] for a in attempts if a["theta"] is not None))
    kept = _kept_solution(best, profile, theta_hat)
    return _mixed_result(nobs, n_groups, scaling, profile, attempts, kept, theta_hat, llf_max)


def _mixed_attempts(xs: np.ndarray, y: np.ndarray, groups: np.ndarray, theta0: float) -> tuple[list[dict], Any]:
    """Run every (start, method) MixedLM REML fit; return a record of each and the best result."""
    import statsmodels.api as sm

    model = sm.MixedLM(y, xs, groups=groups)
    starts = {
        "statsmodels_default": None,
        "profile_optimum": np.array([max(np.sqrt(theta0), MIN_START_SQRT_THETA)]),
    }
    # statsmodels' own default call (start theta = 1, bfgs then lbfgs then cg) comes first; it
    # already runs bfgs from the default start, so that pair is not repeated (it costs seconds).
    plan: list[tuple[str, str | None, np.ndarray | None]] = [("statsmodels_default", None, None)]
    plan += [
        (name, method, start)
        for name, start in starts.items()
        for method in MIXED_METHODS
        if not (start is None and method == "bfgs")
    ]
    attempts, best = [], None
    for start_name, method, start in plan:
        record, res = _one_attempt(model, method, start)
        record = {"start": start_name, **record}
        attempts.append(record)
        if res is not None and (best is None or res.llf > best[1].llf):
            best = (record, res)
    return attempts, best


def _one_attempt(model: Any, method: str | None, start: np.ndarray | None) -> tuple[dict, Any]:
    """One MixedLM REML fit; errors and warnings are recorded instead of raised or printed.

    ``method=None`` is statsmodels' default (bfgs, then lbfgs, then cg while not converged).
    """
    record: dict[str, Any] = {
        "method": method or "default (bfgs, lbfgs, cg)",
        "start_theta": 1.0 if start is None else float(start[0] ** 2),
        "llf": None,
        "converged": False,
        "theta": None,
        "error": None,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(reml=True, method=method, start_params=start)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            res = None
    record["warnings"] = sorted({str(w.message) for w in caught})
    if res is None or not np.isfinite(res.llf):
        return record, None
    record.update(llf=float(res.llf), converged=bool(res.converged), theta=float(res.cov_re_unscaled[0, 0]))
    return record, res


@dataclass(frozen=True)
class _Kept:
    """The reported mixed-model solution, on the standardised design."""

    record: dict | None  # the kept attempt, None if no MixedLM run succeeded
    llf: float
    theta: float
    scale: float
    beta: np.ndarray
    cov: np.ndarray
    se_source: str
    sm_converged: bool
    library_text: str


def _profile_solution(profile: _ProfiledReml, theta_hat: float, max_groups: int) -> _Kept:
    """GLS at the profiled REML optimum, the estimator for panels too large for MixedLM."""
    llf, beta, xvx, scale = profile.parts(theta_hat)
    record = {"start": "profile", "method": "profiled REML: log grid + bounded Brent over theta"}
    source = "GLS sigma_e^2 (X'V*^-1X)^-1 at the profiled REML optimum, as lme4's vcov"
    text = f"(MixedLM not run: more than {max_groups} groups; the profiled REML solver is exact)"
    return _Kept(record, llf, theta_hat, scale, beta, scale * np.linalg.inv(xvx), source, True, text)


def _kept_solution(best: Any, profile: _ProfiledReml, theta_hat: float) -> _Kept:
    """The best MixedLM fit; if none ran, GLS at the profiled optimum (then never 'converged')."""
    if best is None:
        llf, beta, xvx, scale = profile.parts(theta_hat)
        cov = scale * np.linalg.inv(xvx)
        source = "GLS sigma_e^2 (X'V*^-1X)^-1 at the profiled optimum (no MixedLM fit ran)"
        return _Kept(None, llf, theta_hat, scale, beta, cov, source, False, "(none)")
    record, res = best
    theta, scale = float(res.cov_re_unscaled[0, 0]), float(res.scale)
    beta = np.asarray(res.fe_params, dtype=float)
    cov, source = _mixed_fe_cov(res, profile, theta, scale, len(beta))
    text = res.summary().as_text()
    return _Kept(record, float(res.llf), theta, scale, beta, cov, source, bool(res.converged), text)


def _mixed_result(
    nobs: int,
    n_groups: int,
    scaling: _Scaling,
    profile: _ProfiledReml,
    attempts: list[dict],
    kept: _Kept,
    theta_hat: float,
    llf_max: float,
) -> ModelFit:
    """Map the kept solution to original units and judge convergence and singularity."""
    tol = PROFILE_ATOL + PROFILE_RTOL * abs(llf_max)
    at_optimum = kept.record is not None and kept.llf >= llf_max - tol
    singular = bool(np.sqrt(theta_hat) < SINGULAR_TOL)
    converged = at_optimum and (kept.sm_converged or singular)
    a = scaling.matrix
    beta, cov = a @ kept.beta, a @ kept.cov @ a.T
    coefs = _coef_table([INTERCEPT, *PREDICTORS], beta, np.sqrt(np.diag(cov)), "z")
    summary = _summary(
        MIXED_EFFECTS.name,
        nobs=nobs,
        n_groups=n_groups,
        se_type=f"model-based (REML; {kept.se_source}), Wald z",
        converged=converged,
        singular=singular,
        group_var=kept.theta * kept.scale,
        residual_var=kept.scale,
        log_likelihood=kept.llf + scaling.log_abs_det,
    )
    profile_facts = {
        "theta": theta_hat,
        "relative_sd": float(np.sqrt(theta_hat)),
        "reml_llf_standardised": llf_max,
        "sigma_e2": profile.parts(theta_hat)[3],
        "at_upper_bound": bool(theta_hat >= THETA_UPPER),
        "gap_to_kept": llf_max - kept.llf,
        "tolerance": tol,
        "profile_minus_statsmodels_llf_max_abs": _profile_agreement(profile, attempts),
    }
    details = _mixed_details(scaling, profile, attempts, kept, profile_facts)
    details.update(at_profile_optimum=at_optimum)
    notes = _mixed_notes(converged, at_optimum, singular, theta_hat, llf_max, kept)
    lib = "statsmodels summary of the fit on STANDARDISED predictors (not original units):\n"
    text = _text(
        "Random-intercept linear mixed model (REML)",
        coefs,
        summary,
        notes,
        lib + kept.library_text,
    )
    return ModelFit(MIXED_EFFECTS.name, coefs, summary, text, details)


def _mixed_details(scaling: _Scaling, profile: _ProfiledReml, attempts: list[dict], kept: _Kept, facts: dict) -> dict:
    """JSON-friendly record: scaling, every attempt, the kept one, the profile check, GLS SEs."""
    a = scaling.matrix
    gls_cov = a @ (kept.scale * np.linalg.inv(profile.parts(kept.theta)[2])) @ a.T
    record = kept.record
    return _plain(
        {
            "library": "statsmodels MixedLM(reml=True), random intercept by subject"
            if attempts
            else "profiled REML solver (statsmodels MixedLM skipped: too many groups)",
            "scaling": {
                "method": "each predictor centred and divided by its population SD (ddof=0),"
                " binary ones included; beta = A beta_s, Cov = A Cov_s A'",
                "center": dict(zip(PREDICTORS, scaling.center, strict=True)),
                "scale": dict(zip(PREDICTORS, scaling.scale, strict=True)),
                "log_abs_det_A": scaling.log_abs_det,
            },
            "log_likelihood_definition": "REML llf of the original-units design ="
            " statsmodels' standardised-design llf + log|det A|",
            "reml_llf_standardised": kept.llf,
            "attempts": attempts,
            "kept_attempt": None if record is None else {k: record[k] for k in ("start", "method")},
            "statsmodels_converged": kept.sm_converged,
            "theta": kept.theta,
            "relative_sd": float(np.sqrt(kept.theta)),
            "profile": facts,
            "singular_rule": f"sqrt(theta_profile) < {SINGULAR_TOL} (lme4 isSingular, relative scale)",
            "se_source": kept.se_source,
            "gls_std_error": dict(zip([INTERCEPT, *PREDICTORS], np.sqrt(np.diag(gls_cov)), strict=True)),
            "inference": "normal (Wald z), as statsmodels",
        }
    )


def _mixed_fe_cov(res: Any, profile: _ProfiledReml, theta: float, scale: float, k: int) -> tuple[np.ndarray, str]:
    """Fixed-effect covariance of the kept fit: statsmodels' (inverse observed information) block.

    Falls back to sigma_e^2 (X'V*^-1X)^-1 if statsmodels' block is not finite or not positive
    definite (it can happen at the boundary, where its Hessian is singular).
    """
    cov = np.asarray(res.cov_params(), dtype=float)[:k, :k]
    if np.isfinite(cov).all() and np.all(np.linalg.eigvalsh((cov + cov.T) / 2) > 0):
        return cov, "statsmodels MixedLM cov_params (inverse observed information), fe block"
    xvx = profile.parts(theta)[2]
    return scale * np.linalg.inv(xvx), "GLS sigma_e^2 (X'V*^-1X)^-1 (statsmodels block unusable)"


def _profile_agreement(profile: _ProfiledReml, attempts: list[dict]) -> float | None:
    """Largest |profile llf - MixedLM llf| at the thetas MixedLM reached: checks the constant."""
    diffs = [abs(profile.llf(a["theta"]) - a["llf"]) for a in attempts if a["theta"] is not None]
    return max(diffs) if diffs else None


def _mixed_notes(
    converged: bool,
    at_optimum: bool,
    singular: bool,
    theta_hat: float,
    llf_max: float,
    kept: _Kept,
) -> list[str]:
    """Plain-language notes on convergence, the profile check and singularity."""
    rec = kept.record
    source = "none (GLS at the profile)" if rec is None else f"{rec['method']} from {rec['start']}"
    notes = [
        f"Kept fit: {source}; REML llf (standardised design) {kept.llf:.8g}, profile maximum"
        f" {llf_max:.8g} at theta = sigma_u^2/sigma_e^2 = {theta_hat:.6g}.",
        "log_likelihood is on the original-units design (standardised llf + log|det A|).",
        "Predictors standardised for fitting; coefficients and covariance mapped back exactly.",
    ]
    if not at_optimum:
        notes.append("NOT CONVERGED: no MixedLM fit reached the profiled REML maximum.")
    elif not converged:
        notes.append("NOT CONVERGED: statsmodels did not report convergence for the kept fit.")
    if singular:
        notes.append("SINGULAR: the subject variance is at its boundary (0); the model reduces to OLS.")
    return notes


# ----------------------------------------------------------------------------------------------
# Summary table
# ----------------------------------------------------------------------------------------------


def model_summary_table(fits: list[ModelFit]) -> pd.DataFrame:
    """One row per fit, columns exactly SUMMARY_KEYS in that order."""
    return pd.DataFrame([[f.summary.get(k) for k in SUMMARY_KEYS] for f in fits], columns=list(SUMMARY_KEYS))
