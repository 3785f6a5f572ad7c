"""Gold: three models of next-week weight change, their summary, figures and the report.

The fits themselves are plain functions in study/models.py; this module wires them to the lake.
"""

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from potato_assets.defs.common import (
    CODE_VERSION,
    DOWNSTREAM_AUTOMATION,
    FRESHNESS,
    LAKE_POOL,
    SCIENCE_OWNERS,
    DataFrame,
)
from potato_assets.defs.resources import LakeFiles
from potato_assets.defs.tracking import ExperimentTracker
from potato_assets.study.schema import FORMULA, MODEL_NAMES

MODELS_PREFIX = ["gold", "models"]
SUMMARY_NAME = "model_summary"
FIGURES = {
    "fiber_vs_weight_change": "Weekly fiber (g) against next-week weight change (kg), with the three models' fiber slopes.",
    "subject_trajectories": "Per-subject weight change from baseline by study week, with the cohort mean and 95% CI.",
}
MODEL_DESCRIPTIONS = {
    "ols_cluster": "Pooled OLS with standard errors clustered by subject.",
    "fixed_effects": "Within-subject (entity) fixed effects, standard errors clustered by subject.",
    "mixed_effects": "Random-intercept linear mixed model by REML (best of several optimisers, checked against the profiled REML optimum).",
}
GOLD: dict[str, Any] = dict(
    group_name="gold",
    owners=SCIENCE_OWNERS,
    code_version=CODE_VERSION,
    automation_condition=DOWNSTREAM_AUTOMATION,
    freshness_policy=FRESHNESS,
)


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([*MODELS_PREFIX, name])


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dg.multi_asset(
    name="fit_models",
    pool=LAKE_POOL,
    ins={"modeling": dg.AssetIn(["silver", "modeling_dataset"])},
    outs={
        **{
            name: dg.AssetOut(
                key=model_key(name),
                description=f"{MODEL_DESCRIPTIONS[name]} Model: {FORMULA}. Tidy coefficient table in original units.",
                kinds={"statsmodels" if name != "fixed_effects" else "linearmodels", "parquet"},
                dagster_type=DataFrame,
                **GOLD,
            )
            for name in MODEL_NAMES
        },
        SUMMARY_NAME: dg.AssetOut(
            key=model_key(SUMMARY_NAME),
            description="One row per model: nobs, n_groups, r2 (within R² for FE), se_type, converged, singular, variance components, log-likelihood.",
            kinds={"pandas", "parquet"},
            dagster_type=DataFrame,
            **GOLD,
        ),
    },
)
def fit_models(
    context: dg.AssetExecutionContext,
    lake: LakeFiles,
    experiment_tracker: ExperimentTracker,
    modeling: DataFrame,
) -> Iterator[dg.Output]:
    from potato_assets.study import models

    # All three models are fitted on the same snapshot, so the summary always describes them together.
    fitters = {
        "ols_cluster": models.fit_ols_cluster,
        "fixed_effects": models.fit_fixed_effects,
        "mixed_effects": models.fit_mixed_effects,
    }
    fits = []
    for name in MODEL_NAMES:
        fit = fitters[name](modeling)
        fits.append(fit)
        # Experiment tracking (#6): one MLflow run per fit; a side channel (see defs/tracking.py).
        tracking_metadata = experiment_tracker.track_fit(context, model_key(name), fit, modeling)
        text_uri = lake.write_bytes(f"gold/models/{name}.txt", fit.text.encode("utf-8"))
        if fit.summary.get("singular"):
            context.log.warning(f"{name}: singular fit (random-intercept variance at its boundary)")
        if not fit.summary.get("converged", True):
            context.log.warning(f"{name}: did not converge: {json.dumps(_json_safe(fit.details))[:500]}")
        yield dg.Output(
            fit.coefficients,
            output_name=name,
            metadata={
                "formula": FORMULA,
                "se_type": str(fit.summary.get("se_type")),
                "summary": dg.MetadataValue.json(_json_safe(fit.summary)),
                "details": dg.MetadataValue.json(_json_safe(fit.details)),
                "coefficients": dg.MetadataValue.md(fit.coefficients.to_markdown(index=False, floatfmt=".4g")),
                "summary_text_uri": text_uri,
                **tracking_metadata,
            },
        )
    summary = models.model_summary_table(fits)
    yield dg.Output(
        summary,
        output_name=SUMMARY_NAME,
        metadata={"table": dg.MetadataValue.md(summary.to_markdown(index=False, floatfmt=".4g"))},
    )


MODEL_INS = {name: dg.AssetIn(model_key(name)) for name in MODEL_NAMES}


@dg.asset(
    key=["gold", "figures", "fiber_vs_weight_change"],
    ins={"modeling": dg.AssetIn(["silver", "modeling_dataset"]), **MODEL_INS},
    description=FIGURES["fiber_vs_weight_change"] + " PNG under {lake}/gold/figures/.",
    kinds={"matplotlib", "png"},
    pool=LAKE_POOL,
    **GOLD,
)
def fiber_vs_weight_change_figure(
    lake: LakeFiles,
    modeling: DataFrame,
    ols_cluster: DataFrame,
    fixed_effects: DataFrame,
    mixed_effects: DataFrame,
) -> dg.MaterializeResult:
    from potato_assets.report import build as report

    coefficients = {"ols_cluster": ols_cluster, "fixed_effects": fixed_effects, "mixed_effects": mixed_effects}
    png = report.fiber_vs_weight_change_png(modeling, coefficients)
    return _figure_result(lake, "fiber_vs_weight_change", png)


@dg.asset(
    key=["gold", "figures", "subject_trajectories"],
    ins={"trajectories": dg.AssetIn(["silver", "subject_trajectories"])},
    description=FIGURES["subject_trajectories"] + " PNG under {lake}/gold/figures/.",
    kinds={"matplotlib", "png"},
    pool=LAKE_POOL,
    **GOLD,
)
def subject_trajectories_figure(lake: LakeFiles, trajectories: DataFrame) -> dg.MaterializeResult:
    from potato_assets.report import build as report

    return _figure_result(lake, "subject_trajectories", report.trajectories_png(trajectories))


def _figure_result(lake: LakeFiles, name: str, png: bytes) -> dg.MaterializeResult:
    from potato_assets.report import build as report

    uri = lake.write_bytes(f"gold/figures/{name}.png", png)
    return dg.MaterializeResult(
        metadata={
            "uri": uri,
            "size_bytes": len(png),
            "figure": dg.MetadataValue.md(report.png_markdown_embed(png, FIGURES[name])),
        }
    )


@dg.asset(
    key=["gold", "reports", "model_report"],
    ins={
        **MODEL_INS,
        "summary": dg.AssetIn(model_key(SUMMARY_NAME)),
        "modeling": dg.AssetIn(["silver", "modeling_dataset"]),
        "trajectories": dg.AssetIn(["silver", "subject_trajectories"]),
    },
    deps=[["gold", "figures", name] for name in FIGURES],
    description="The report a person reads: the three models side by side, the model summary and both figures, as Markdown and HTML under {lake}/gold/reports/.",
    kinds={"markdown", "html"},
    pool=LAKE_POOL,
    **GOLD,
)
def model_report(
    context: dg.AssetExecutionContext,
    lake: LakeFiles,
    ols_cluster: DataFrame,
    fixed_effects: DataFrame,
    mixed_effects: DataFrame,
    summary: DataFrame,
    modeling: DataFrame,
    trajectories: DataFrame,
) -> dg.MaterializeResult:
    from potato_assets.report import build as report

    markdown, html = report.render_report(
        coefficients={"ols_cluster": ols_cluster, "fixed_effects": fixed_effects, "mixed_effects": mixed_effects},
        summary=summary,
        modeling=modeling,
        trajectories=trajectories,
        figure_paths={name: f"../figures/{name}.png" for name in FIGURES},
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data_versions=None,
    )
    md_uri = lake.write_bytes("gold/reports/model_report.md", markdown.encode("utf-8"))
    html_uri = lake.write_bytes("gold/reports/model_report.html", html.encode("utf-8"))
    context.log.info(f"report written to {html_uri}")
    return dg.MaterializeResult(
        metadata={"markdown_uri": md_uri, "html_uri": html_uri, "report": dg.MetadataValue.md(markdown)}
    )
