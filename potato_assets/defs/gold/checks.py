"""Gold validation checks on the registry's fitted models (rules in study/validation.py).

ERROR checks (not converged, non-finite numbers, too few clusters) are blocking: models that
cannot be trusted fail the run (the CLI exits non-zero) and the figures and report, which wait for
every model (gold/assets.py PUBLISHED_AFTER), are not rewritten: the last good report stays.
WARN checks (singular mixed fit, fiber estimates that disagree) only show in the UI and the run.
"""

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import dagster as dg

from potato_assets.defs.common import DataFrame
from potato_assets.defs.gold.assets import MODEL_INS, SUMMARY_NAME, model_key
from potato_assets.study import validation as mv
from potato_assets.study.models import MODELS

SUMMARY_KEY = model_key(SUMMARY_NAME)
ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def _result(verdict: mv.Verdict, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata={k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in verdict.facts.items()},
    )


@dg.asset_check(
    asset=SUMMARY_KEY,
    name="all_models_converged",
    blocking=True,
    description="ERROR when any of the three models did not converge (the mixed model must also reach the profiled REML optimum).",
)
def all_models_converged(summary: DataFrame) -> dg.AssetCheckResult:
    return _result(mv.all_converged(summary), ERROR)


def _with_inputs(fn: Callable[..., Any], names: Iterable[str]) -> Callable[..., Any]:
    """``fn(..., **tables)`` with one named DataFrame parameter per name.

    Asset checks, unlike assets, refuse ``**kwargs`` for their additional_ins; the signature
    lists the registry's models so no hand-written signature has to.
    """
    signature = inspect.signature(fn)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    named = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=DataFrame) for n in names]
    fn.__signature__ = signature.replace(parameters=[*fixed, *named])  # type: ignore[attr-defined]
    return fn


def _fiber_estimates_agree(summary: DataFrame, **coefficients: DataFrame) -> dg.AssetCheckResult:
    in_model_order = {spec.name: coefficients[spec.name] for spec in MODELS}
    return _result(mv.fiber_estimates_agree(in_model_order), WARN)


fiber_estimates_agree = dg.asset_check(
    asset=SUMMARY_KEY,
    name="fiber_estimates_agree",
    additional_ins=MODEL_INS,
    description=(
        "WARN when two models' fiber_g_week estimates differ by more than "
        f"{mv.AGREEMENT_Z} x sqrt(se_a^2 + se_b^2): a conservative 95% sampling band for the same "
        "slope. Disagreement points to between-subject confounding (pooled OLS vs fixed effects)."
    ),
)(_with_inputs(_fiber_estimates_agree, MODEL_INS))


def finite_estimates_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=model_key(name),
        name="finite_estimates",
        blocking=True,
        description="ERROR when any estimate or standard error is non-finite, or a standard error is not positive.",
    )
    def _finite(value: DataFrame) -> dg.AssetCheckResult:
        return _result(mv.finite_estimates(name, value), ERROR)

    return _finite


def enough_clusters_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=model_key(name),
        name="enough_clusters",
        blocking=True,
        additional_ins={"summary": dg.AssetIn(SUMMARY_KEY)},
        description=f"ERROR when the cluster-robust standard errors come from fewer than {mv.MIN_CLUSTERS} subjects.",
    )
    def _clusters(value: DataFrame, summary: DataFrame) -> dg.AssetCheckResult:
        return _result(mv.enough_clusters(summary, name), ERROR)

    return _clusters


def not_singular_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=model_key(name),
        name="not_singular",
        additional_ins={"summary": dg.AssetIn(SUMMARY_KEY)},
        description="WARN when the random-intercept variance is at its boundary (lme4's isSingular rule).",
    )
    def _not_singular(value: DataFrame, summary: DataFrame) -> dg.AssetCheckResult:
        return _result(mv.not_singular(summary, name), WARN)

    return _not_singular


finite_estimates_checks = [finite_estimates_check(spec.name) for spec in MODELS]
enough_clusters_checks = [enough_clusters_check(spec.name) for spec in MODELS if spec.clustered_se]
not_singular_checks = [not_singular_check(spec.name) for spec in MODELS if spec.has_variance_components]
