"""The three fits from per-subject sufficient statistics: the same numbers at any cohort size.

The modelling table arrives one bucket (a set of whole subjects) at a time; :class:`PanelBuilder`
reduces each bucket to, per subject, the row count n_i, the means of (4 predictors, outcome) and
the centred cross-products C_i = sum_j (z_ij - mean_i)(z_ij - mean_i)'. Everything the fits
report follows from these: pooled OLS with CR1 cluster SEs, the within (fixed effects) estimator
with Stata's clustered SEs, and the profiled REML random intercept, plus R², log-likelihoods and
every summary/details number. Memory is O(subjects), never O(rows): 21 floats per subject.

Working in centred form (subject means, global means) keeps the normal equations as well
conditioned as the libraries' own QR/pinv paths; the tests hold every number to statsmodels and
linearmodels (study/fitting.py, the reference) at 1e-9 and the mixed model to 1e-6.

Subjects are put in subject_id order before anything is summed across them, and each subject's
statistics depend only on its own rows (sorted by week): how the table is split into buckets
cannot change a single bit of the result.

Small panels (at most ``fitting.STATSMODELS_MAX_GROUPS`` subjects) also keep their rows, so the
mixed model there is still statsmodels MixedLM's, checked against the profile (as today); above
that the profiled REML solution is the estimator, as it already was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from potato_assets.study import fitting
from potato_assets.study.fitting import INTERCEPT, ModelFit
from potato_assets.study.models import FIXED_EFFECTS, OLS_CLUSTER
from potato_assets.study.schema import GROUP_COL, OUTCOME, PREDICTORS, WEEK_COL

# The statistics' variables: the predictors, then the outcome (index P).
VARIABLES: tuple[str, ...] = (*PREDICTORS, OUTCOME)
REQUIRED: tuple[str, ...] = (GROUP_COL, WEEK_COL, OUTCOME, *PREDICTORS)
P = len(PREDICTORS)
K = P + 1  # intercept + slopes
_ROWS, _COLS = np.triu_indices(P + 1)
# Rows reduced at once: bounds the temporaries (15 products per row) whatever the bucket size.
CHUNK_ROWS = 1 << 18
# Correlation-scaled design: smallest/largest eigenvalue below this is collinear (condition 1e6).
COLLINEAR_RATIO = 1e-12
SOURCE = "per-subject sufficient statistics (study/sufficient.py), bucket by bucket"


@dataclass(frozen=True)
class Panel:
    """Per-subject sufficient statistics of the modelling table, in subject_id order."""

    subject_id: np.ndarray  # (G,) int64, ascending
    n: np.ndarray  # (G,) rows per subject
    mean: np.ndarray  # (G, P+1) subject means of VARIABLES
    cross: np.ndarray  # (G, 15) upper triangle of C_i, in np.triu_indices order
    minimum: np.ndarray  # (P+1,) smallest value of each variable
    maximum: np.ndarray  # (P+1,) largest value
    duplicates: int  # duplicated (subject, week) rows
    week_min: float | None
    week_max: float | None
    # The rows themselves while the panel is small enough for statsmodels MixedLM, else None.
    rows: pd.DataFrame | None = field(default=None, compare=False)

    @property
    def nobs(self) -> int:
        return int(self.n.sum())

    @property
    def n_groups(self) -> int:
        return int(self.subject_id.size)

    @cached_property
    def grand_mean(self) -> np.ndarray:
        return (self.n[:, None] * self.mean).sum(axis=0) / self.nobs

    @cached_property
    def within(self) -> np.ndarray:
        """W = sum_i C_i: the within-subject cross-products of VARIABLES."""
        return _unpack(self.cross.sum(axis=0))

    @cached_property
    def total(self) -> np.ndarray:
        """T = W + sum_i n_i (mean_i - M)(mean_i - M)': cross-products about the grand mean."""
        dev = self.mean - self.grand_mean
        return self.within + (dev * self.n[:, None]).T @ dev

    def scores(self, v: np.ndarray) -> np.ndarray:
        """Row i is C_i @ v, from the packed upper triangles: (G, P+1)."""
        out = np.zeros((self.n_groups, P + 1))
        for k, (r, c) in enumerate(zip(_ROWS, _COLS, strict=True)):
            out[:, r] += self.cross[:, k] * v[c]
            if r != c:
                out[:, c] += self.cross[:, k] * v[r]
        return out


def _unpack(packed: np.ndarray) -> np.ndarray:
    full = np.zeros((P + 1, P + 1))
    full[_ROWS, _COLS] = packed
    full[_COLS, _ROWS] = packed
    return full


class PanelBuilder:
    """Adds the modelling table one bucket (whole subjects) at a time; :meth:`finish` -> Panel.

    Bad input raises ValueError with the same sentences as study/fitting.py. Missing values are
    counted over every bucket and reported together at :meth:`finish`.
    """

    def __init__(self, keep_rows_up_to: int = fitting.STATSMODELS_MAX_GROUPS) -> None:
        self._keep_rows_up_to = keep_rows_up_to
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._rows: list[pd.DataFrame] | None = []
        self._groups = 0
        self._missing = dict.fromkeys(REQUIRED, 0)
        self._min = np.full(P + 1, np.inf)
        self._max = np.full(P + 1, -np.inf)
        self._weeks: list[float] = []
        self._duplicates = 0

    def add(self, frame: pd.DataFrame) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise ValueError(f"modelling frame is missing column(s): {', '.join(missing)}")
        if frame.empty:
            return
        has_missing = False
        for col in REQUIRED:
            n_na = int(frame[col].isna().sum())
            self._missing[col] += n_na
            has_missing = has_missing or n_na > 0
        for col in VARIABLES:
            if not pd.api.types.is_numeric_dtype(frame[col]):
                raise ValueError(f"column {col!r} must be numeric, got dtype {frame[col].dtype}")
            values = frame[col].to_numpy(dtype=float)
            if np.isinf(values).any():
                raise ValueError(f"column {col!r} has non-finite values")
        if has_missing or any(self._missing.values()):
            return  # finish() names the missing values; nothing else is worth computing
        self._add_subjects(frame)

    def _add_subjects(self, frame: pd.DataFrame) -> None:
        sid = frame[GROUP_COL].to_numpy()
        week = frame[WEEK_COL].to_numpy()
        order = np.lexsort((week, sid))  # stable: a subject's rows by week, ties as given
        sid, week = sid[order], week[order]
        z = frame.loc[:, list(VARIABLES)].to_numpy(dtype=float)[order]
        self._min = np.minimum(self._min, z.min(axis=0))
        self._max = np.maximum(self._max, z.max(axis=0))
        self._weeks += [float(np.min(week)), float(np.max(week))]
        same = sid[1:] == sid[:-1]
        self._duplicates += int((same & (week[1:] == week[:-1])).sum())
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        counts = np.diff(np.append(starts, sid.size))
        # Chunks end on subject boundaries, so each subject is reduced from its own rows only.
        first = 0
        while first < starts.size:
            last = int(np.searchsorted(starts, starts[first] + CHUNK_ROWS, side="left"))
            last = max(last, first + 1)
            lo, hi = starts[first], starts[last] if last < starts.size else sid.size
            local = starts[first:last] - lo
            n_i = counts[first:last]
            zc = z[lo:hi]
            means = np.add.reduceat(zc, local, axis=0) / n_i[:, None]
            centred = zc - np.repeat(means, n_i, axis=0)
            cross = np.add.reduceat(centred[:, _ROWS] * centred[:, _COLS], local, axis=0)
            self._parts.append((sid[starts[first:last]].astype(np.int64), n_i.astype(np.int64), means, cross))
            first = last
        self._groups += starts.size
        if self._rows is not None:
            if self._groups <= self._keep_rows_up_to:
                self._rows.append(frame.loc[:, list(REQUIRED)])
            else:
                self._rows = None  # too many subjects for MixedLM: its rows are not kept

    def finish(self) -> Panel:
        for col, n_na in self._missing.items():
            if n_na:
                raise ValueError(f"column {col!r} has {n_na} missing value(s)")
        if not self._parts:
            raise ValueError(f"need at least 2 groups in {GROUP_COL!r} to fit, got 0")
        sid = np.concatenate([p[0] for p in self._parts])
        order = np.argsort(sid, kind="stable")
        sid = sid[order]
        repeated = sid[1:][sid[1:] == sid[:-1]]
        if repeated.size:
            raise ValueError(f"{GROUP_COL} {repeated[0]} is in more than one bucket: buckets must hold whole subjects")
        rows = None
        if self._rows is not None:
            rows = pd.concat(self._rows, ignore_index=True) if len(self._rows) > 1 else self._rows[0]
        return Panel(
            subject_id=sid,
            n=np.concatenate([p[1] for p in self._parts])[order],
            mean=np.concatenate([p[2] for p in self._parts])[order],
            cross=np.concatenate([p[3] for p in self._parts])[order],
            minimum=self._min,
            maximum=self._max,
            duplicates=self._duplicates,
            week_min=min(self._weeks),
            week_max=max(self._weeks),
            rows=rows,
        )


def panel_from_buckets(buckets: Iterable[pd.DataFrame], keep_rows_up_to: int = fitting.STATSMODELS_MAX_GROUPS) -> Panel:
    """The Panel of a modelling table given as frames of whole subjects (one frame is fine)."""
    builder = PanelBuilder(keep_rows_up_to)
    for frame in buckets:
        builder.add(frame)
    return builder.finish()


# ----------------------------------------------------------------------------------------------
# Input checks shared by the fits (the same rules and sentences as fitting._validate)
# ----------------------------------------------------------------------------------------------


def _check(panel: Panel) -> None:
    if panel.n_groups < 2:
        raise ValueError(f"need at least 2 groups in {GROUP_COL!r} to fit, got {panel.n_groups}")
    for j, col in enumerate(PREDICTORS):
        if panel.minimum[j] == panel.maximum[j]:
            raise ValueError(f"predictor {col!r} is constant; its coefficient is not identified")
    if panel.nobs <= K:
        raise ValueError(f"too few rows to fit: {panel.nobs} rows for {K} coefficients")
    txx = panel.total[:P, :P]
    d = 1.0 / np.sqrt(np.diag(txx))
    eig = np.linalg.eigvalsh(txx * np.outer(d, d))
    if not eig.min() > COLLINEAR_RATIO * eig.max():
        raise ValueError(f"predictors are collinear: {', '.join(PREDICTORS)}")


def _check_panel(panel: Panel) -> None:
    if panel.duplicates:
        raise ValueError(f"{panel.duplicates} duplicated ({GROUP_COL}, {WEEK_COL}) row(s)")
    if panel.nobs - panel.n_groups - P < 1:
        raise ValueError(f"too few rows for fixed effects: {panel.nobs} rows, {panel.n_groups} groups, {P} slopes")


def _intercept_map(center: np.ndarray) -> np.ndarray:
    """A with [b0, b] = A [a, b], where a is the intercept of the design centred at ``center``."""
    a = np.eye(K)
    a[0, 1:] = -center
    return a


# ----------------------------------------------------------------------------------------------
# (a) pooled OLS, clustered by subject
# ----------------------------------------------------------------------------------------------


def fit_ols_cluster(panel: Panel) -> ModelFit:
    """Pooled OLS, CR1 cluster-robust SEs by subject, t(G-1): statsmodels' numbers, from sums.

    In the design centred at the grand means the bread is diag(N, T_xx); subject i's score is
    (n_i e_i, C_i,x. v + (mean_i,x - M_x) n_i e_i) with v = (-b, 1) and e_i its mean residual.
    """
    _check(panel)
    n, g = panel.nobs, panel.n_groups
    mean, total = panel.grand_mean, panel.total
    slopes = np.linalg.solve(total[:P, :P], total[:P, P])
    v = np.append(-slopes, 1.0)
    dev = panel.mean - mean
    e_bar = dev @ v  # each subject's mean residual
    within = panel.scores(v)
    ne = panel.n * e_bar
    scores = np.column_stack([ne, within[:, :P] + dev[:, :P] * ne[:, None]])
    ssr = float((within @ v).sum() + (ne * e_bar).sum())  # sum of squared residuals
    factor = g / (g - 1) * (n - 1) / (n - K)
    bread = np.zeros((K, K))
    bread[0, 0] = 1.0 / n
    bread[1:, 1:] = np.linalg.inv(total[:P, :P])
    a = _intercept_map(mean[:P])
    cov = a @ (bread @ (scores.T @ scores) @ bread * factor) @ a.T
    est = a @ np.append(mean[P], slopes)
    coefs = fitting._coef_table([INTERCEPT, *PREDICTORS], est, np.sqrt(np.diag(cov)), "t", g - 1)
    se_type = f"cluster-robust by {GROUP_COL} (CR1: G/(G-1)·(N-1)/(N-K), K={K}), t(G-1)"
    summary = fitting._summary(
        OLS_CLUSTER.name,
        nobs=n,
        n_groups=g,
        r2=1.0 - ssr / float(total[P, P]),
        se_type=se_type,
        converged=True,
        residual_var=ssr / (n - K),
        log_likelihood=_gaussian_llf(ssr, n),
    )
    details = fitting._plain(
        {
            "library": f"{SOURCE}; equal to statsmodels OLS, cov_type='cluster', use_correction=True, use_t=True",
            "k_params": K,
            "correction_factor": factor,
            "t_df": g - 1,
        }
    )
    notes = [f"SE correction factor G/(G-1)·(N-1)/(N-K) = {factor:.6g}; t with {g - 1} df."]
    text = fitting._text("Pooled OLS, clustered by subject", coefs, summary, notes, _source_text(panel))
    return ModelFit(OLS_CLUSTER.name, coefs, summary, text, details)


def _gaussian_llf(ssr: float, n: int) -> float:
    """statsmodels' OLS llf and linearmodels' loglik: -n/2 (log 2π + log(SSR/n) + 1)."""
    return float(-0.5 * n * (np.log(2 * np.pi) + np.log(ssr / n) + 1.0))


def _source_text(panel: Panel) -> str:
    return (
        f"(computed from {SOURCE}: {panel.n_groups} subjects, {panel.nobs} subject-weeks;"
        " the tests hold these numbers to the statsmodels/linearmodels fits in study/fitting.py)"
    )


# ----------------------------------------------------------------------------------------------
# (b) subject fixed effects, clustered by subject
# ----------------------------------------------------------------------------------------------


def fit_fixed_effects(panel: Panel) -> ModelFit:
    """Within estimator, Stata's clustered SEs (K=5), t(G-1): linearmodels PanelOLS's numbers.

    Slopes b = W_xx^-1 W_xy; subject i's score is C_i,x. v with v = (-b, 1). The explicit
    constant (Stata's _cons = M_y - M_x'b) has a zero score in every cluster, so its variance
    is M_x' Cov(b) M_x.
    """
    _check(panel)
    _check_panel(panel)
    n, g = panel.nobs, panel.n_groups
    within, mean = panel.within, panel.grand_mean
    wxx_inv = np.linalg.inv(within[:P, :P])
    slopes = np.linalg.solve(within[:P, :P], within[:P, P])
    v = np.append(-slopes, 1.0)
    per_subject = panel.scores(v)
    scores = per_subject[:, :P]
    ssr = float((per_subject @ v).sum())
    factor = g / (g - 1) * (n - 1) / (n - K)
    cov = wxx_inv @ (scores.T @ scores) @ wxx_inv * factor
    coefs = fitting._coef_table(list(PREDICTORS), slopes, np.sqrt(np.diag(cov)), "t", g - 1)
    df_resid = n - g - P
    resid_var = ssr / df_resid
    r2_within = 1.0 - ssr / float(within[P, P])
    se_type = (
        f"cluster-robust by {GROUP_COL} (Stata xtreg,fe: G/(G-1)·(N-1)/(N-K), K={K} = 4 slopes"
        " + constant, absorbed effects not counted), t(G-1)"
    )
    summary = fitting._summary(
        FIXED_EFFECTS.name,
        nobs=n,
        n_groups=g,
        r2=r2_within,
        se_type=se_type,
        converged=True,
        residual_var=resid_var,
        log_likelihood=_gaussian_llf(ssr, n) if ssr > 0 else None,
    )
    cons = float(mean[P] - mean[:P] @ slopes)
    cons_se = float(np.sqrt(mean[:P] @ cov @ mean[:P]))
    details = fitting._plain(
        {
            "library": f"{SOURCE}; equal to linearmodels PanelOLS(entity_effects=True) with explicit"
            " constant, cov_type='clustered', cluster_entity=True, debiased=True, group_debias=True,"
            " auto_df=True",
            "correction": "G/(G-1)·(N-1)/(N-K): debiased gives n/(n-K), group_debias"
            " G/(G-1)·(n-1)/n; entity effects nested in clusters so extra_df=0 (not counted)",
            "k_counted": K,
            "correction_factor": factor,
            "t_df": g - 1,
            "library_df_resid": df_resid,
            "library_s2": ssr / (n - K),
            "residual_var_definition": "SSR/(N-G-4) (Stata's sigma_e^2)",
            "rsquared_within": r2_within,
            "average_effect_cons": {"estimate": cons, "std_error": cons_se},
        }
    )
    notes = [
        f"SE correction factor G/(G-1)·(N-1)/(N-K) = {factor:.6g} with K={K}; t with {g - 1} df.",
        f"Intercept absorbed by the subject effects; the average effect (Stata's _cons) is in details: {cons:.6g}.",
        f"residual_var = SSR/(N-G-4) = {resid_var:.6g}; linearmodels' s2 = SSR/(N-{K}).",
    ]
    text = fitting._text(
        "Subject fixed effects (within), clustered by subject", coefs, summary, notes, _source_text(panel)
    )
    return ModelFit(FIXED_EFFECTS.name, coefs, summary, text, details)


# ----------------------------------------------------------------------------------------------
# (c) random-intercept mixed model by REML
# ----------------------------------------------------------------------------------------------


def reml_profile(panel: Panel) -> tuple[fitting._ProfiledReml, fitting._Scaling]:
    """fitting's profiled REML likelihood on the standardised design, from the panel's sums."""
    n, mean, total = panel.nobs, panel.grand_mean, panel.total
    center = mean[:P]
    scale = np.sqrt(np.diag(total[:P, :P]) / n)  # population SD (ddof=0), as fitting._standardise
    dev = (panel.mean[:, :P] - center) / scale
    sx = panel.n[:, None] * np.column_stack([np.ones(panel.n_groups), dev])
    sy = panel.n * panel.mean[:, P]
    xtx = np.zeros((K, K))
    xtx[0, 0] = n
    xtx[1:, 1:] = total[:P, :P] / np.outer(scale, scale)
    xty = np.append(n * mean[P], total[:P, P] / scale)
    yty = float(total[P, P] + n * mean[P] ** 2)
    profile = fitting._ProfiledReml.from_sums(panel.n, sx, sy, xtx, xty, yty)
    return profile, fitting._Scaling(center=center, scale=scale)


def fit_mixed_effects(panel: Panel, *, statsmodels_max_groups: int = fitting.STATSMODELS_MAX_GROUPS) -> ModelFit:
    """Random-intercept LMM by REML, as fitting.fit_mixed_effects.

    Up to ``statsmodels_max_groups`` subjects the panel's rows are at hand and the fit is
    fitting's own (MixedLM attempts checked against the profile); above, the GLS solution at the
    profiled REML optimum, built from the panel's sums.
    """
    _check(panel)
    if panel.n_groups <= statsmodels_max_groups:
        if panel.rows is None:
            raise ValueError(
                f"the mixed model's statsmodels cross-check needs the rows of a panel of {panel.n_groups}"
                f" subjects (at most {statsmodels_max_groups}); build the panel with keep_rows_up_to"
            )
        return fitting.fit_mixed_effects(panel.rows, statsmodels_max_groups=statsmodels_max_groups)
    profile, scaling = reml_profile(panel)
    theta, llf = profile.maximise()
    kept = fitting._profile_solution(profile, theta, statsmodels_max_groups)
    return fitting._mixed_result(panel.nobs, panel.n_groups, scaling, profile, [], kept, theta, llf)
