"""Validation rules for the three fitted models (gold): plain functions on the gold tables.

Each rule returns a :class:`Verdict`; the Dagster checks in defs/gold/checks.py only wire them.

Fiber agreement tolerance
-------------------------
The three models estimate the same fiber slope in different ways: pooled OLS mixes between- and
within-subject variation, fixed effects uses within-subject variation only, the random-intercept
model weighs the two. When subjects' baseline tendencies are unrelated to their fiber intake, all
three are consistent for the same slope and differ only by sampling noise. Two estimates a and b
therefore agree when

    |b_a - b_b| <= 1.96 * sqrt(se_a^2 + se_b^2)

i.e. when their difference is no larger than a 95% sampling band. Because the estimates share the
data they are positively correlated, so the true SE of the difference is smaller than the square
root used here: the band is conservative and a WARN means a real disagreement — typically
between-subject confounding that fixed effects removes and pooled OLS does not (the logic of the
Hausman test).

numpy and pandas are imported inside the rules: the Dagster checks read the constants below when
the definitions load, which must not pay for importing them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FIBER_TERM = "fiber_g_week"
AGREEMENT_Z = 1.96
MIN_CLUSTERS = 20


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    facts: dict[str, Any] = field(default_factory=dict)


def _row(summary: pd.DataFrame, model: str) -> pd.Series:
    rows = summary[summary["model"] == model]
    if rows.empty:
        raise ValueError(f"model_summary has no row for {model!r}")
    return rows.iloc[0]


def all_converged(summary: pd.DataFrame) -> Verdict:
    status = {str(m): bool(c) for m, c in zip(summary["model"], summary["converged"], strict=True)}
    failed = [m for m, ok in status.items() if not ok]
    if failed:
        return Verdict(False, f"did not converge: {', '.join(failed)}.", {"converged": status})
    return Verdict(True, f"all {len(status)} models converged.", {"converged": status})


def finite_estimates(model: str, coefficients: pd.DataFrame) -> Verdict:
    """Every estimate and standard error finite, and every standard error positive."""
    import numpy as np

    est = coefficients["estimate"].to_numpy(dtype=float)
    se = coefficients["std_error"].to_numpy(dtype=float)
    bad = ~np.isfinite(est) | ~np.isfinite(se) | ~(se > 0)
    terms = coefficients["term"].astype(str).tolist()
    facts = {
        "terms": len(terms),
        "estimates": {t: _num(e) for t, e in zip(terms, est, strict=True)},
        "std_errors": {t: _num(s) for t, s in zip(terms, se, strict=True)},
    }
    if bad.any():
        names = [t for t, b in zip(terms, bad, strict=True) if b]
        return Verdict(
            False,
            f"{model}: non-finite estimate or non-positive/non-finite SE for {', '.join(names)}.",
            facts,
        )
    return Verdict(True, f"{model}: all {len(terms)} estimates and SEs finite, SEs positive.", facts)


def not_singular(summary: pd.DataFrame, model: str) -> Verdict:
    """A model with variance components: the between-subject variance is away from 0."""
    import pandas as pd

    row = _row(summary, model)
    singular = bool(row["singular"]) if row["singular"] is not None and not pd.isna(row["singular"]) else False
    facts = {
        "singular": singular,
        "group_var": _num(row.get("group_var")),
        "residual_var": _num(row.get("residual_var")),
    }
    if singular:
        return Verdict(
            False,
            f"{model}: singular fit — the between-subject variance is at its boundary (0); "
            "the random intercept adds nothing and the fit equals pooled GLS.",
            facts,
        )
    return Verdict(True, f"{model}: random-intercept variance is away from its boundary.", facts)


def enough_clusters(summary: pd.DataFrame, model: str, minimum: int = MIN_CLUSTERS) -> Verdict:
    row = _row(summary, model)
    n_groups = int(row["n_groups"])
    facts = {"n_clusters": n_groups, "min_clusters": minimum, "se_type": str(row.get("se_type"))}
    if n_groups < minimum:
        return Verdict(
            False,
            f"{model}: cluster-robust SEs from {n_groups} subjects; below {minimum} they understate uncertainty.",
            facts,
        )
    return Verdict(True, f"{model}: cluster-robust SEs from {n_groups} subjects (at least {minimum}).", facts)


def fiber_estimates_agree(coefficients: dict[str, pd.DataFrame], z: float = AGREEMENT_Z) -> Verdict:
    """Pairwise |b_a - b_b| <= z * sqrt(se_a^2 + se_b^2) for the fiber slope (see module doc)."""
    import numpy as np

    fiber: dict[str, tuple[float, float]] = {}
    for model, table in coefficients.items():
        row = table[table["term"] == FIBER_TERM]
        if row.empty:
            raise ValueError(f"{model} has no {FIBER_TERM!r} coefficient")
        fiber[model] = (float(row["estimate"].iloc[0]), float(row["std_error"].iloc[0]))
    pairs = {}
    disagree = []
    for a, b in itertools.combinations(fiber, 2):
        (ea, sa), (eb, sb) = fiber[a], fiber[b]
        diff = abs(ea - eb)
        tolerance = z * math.sqrt(sa**2 + sb**2)
        ok = bool(np.isfinite(diff) and np.isfinite(tolerance) and diff <= tolerance)
        pairs[f"{a} vs {b}"] = {"difference": _num(diff), "tolerance": _num(tolerance), "agree": ok}
        if not ok:
            disagree.append(f"{a} vs {b} differ by {diff:.4g} (tolerance {tolerance:.4g})")
    facts = {
        "fiber_estimates": {m: {"estimate": _num(e), "std_error": _num(s)} for m, (e, s) in fiber.items()},
        "pairs": pairs,
        "tolerance_rule": f"|b_a - b_b| <= {z} * sqrt(se_a^2 + se_b^2)",
    }
    if disagree:
        return Verdict(False, "fiber estimates disagree: " + "; ".join(disagree) + ".", facts)
    return Verdict(True, f"the {len(fiber)} fiber estimates agree within sampling error.", facts)


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
