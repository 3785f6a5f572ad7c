"""Gold: the registry's models of next-week weight change, their summary, figures and the report.

The models are the entries of study/models.py (fits in study/fitting.py); this module wires them to
the lake. Inputs that take one table per model arrive as keyword arguments named after the models.
"""

import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from potato_assets.defs.common import (
    CODE_VERSION,
    DOWNSTREAM_AUTOMATION,
    LAKE_POOL,
    MODEL_LIBRARIES,
    SCIENCE_OWNERS,
    DataFrame,
    freshness_policy,
)
from potato_assets.defs.resources import ExperimentTracker, LakeFiles
from potato_assets.lib.process import preload
from potato_assets.study.models import MODELS
from potato_assets.study.schema import FORMULA, GROUP_COL, LANDING_FILES, OUTCOME, WEEK_COL

if TYPE_CHECKING:
    import pandas as pd

    from potato_assets.report.provenance import Provenance

MODELS_PREFIX = ["gold", "models"]
# Silver tables reach gold as references (a bucketed dataset's DatasetRef) and are read bucket by
# bucket: never one DataFrame of the whole table. Typed Any so that the lake's IO manager hands
# over the reference instead of reading the table (an input typed DataFrame gets the whole table).
SILVER_TABLE = dg.Any
FIBER_FIGURE_COLUMNS = (GROUP_COL, "fiber_g_week", OUTCOME)
TRAJECTORY_COLUMNS = (GROUP_COL, WEEK_COL, "weight_kg", "delta_kg_from_baseline")
SUMMARY_NAME = "model_summary"
FIGURES = {
    "fiber_vs_weight_change": "Weekly fiber (g) against next-week weight change (kg), with the three models' fiber slopes.",
    "subject_trajectories": "Per-subject weight change from baseline by study week, with the cohort mean and 95% CI.",
}
GOLD: dict[str, Any] = dict(
    group_name="gold",
    owners=SCIENCE_OWNERS,
    code_version=CODE_VERSION,
    automation_condition=DOWNSTREAM_AUTOMATION,
    freshness_policy=freshness_policy(),
)


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([*MODELS_PREFIX, name])


def table_frames(table: Any, columns: Sequence[str]) -> Iterator["pd.DataFrame"]:
    """A silver table's columns, one frame of whole subjects at a time.

    A bucketed dataset (``DatasetRef``, lib/lake/datasets.py) gives groups of whole buckets; a
    table the lake still stores as one parquet object arrives as a DataFrame and is one frame.
    """
    iter_bucket_groups = getattr(table, "iter_bucket_groups", None)
    if iter_bucket_groups is not None:
        yield from iter_bucket_groups(list(columns))
    else:
        yield table.loc[:, [c for c in columns if c in table.columns]]


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
    ins={"modeling": dg.AssetIn(["silver", "modeling_dataset"], dagster_type=SILVER_TABLE)},
    outs={
        **{
            spec.name: dg.AssetOut(
                key=model_key(spec.name),
                description=f"{spec.description} Model: {FORMULA}. Tidy coefficient table in original units.",
                kinds={spec.library, "parquet"},
                dagster_type=DataFrame,
                **GOLD,
            )
            for spec in MODELS
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
    modeling: Any,
) -> Iterator[dg.Output]:
    preload(*MODEL_LIBRARIES)
    from potato_assets.report.digest import fiber_sample
    from potato_assets.report.formatting import coefficients_metadata_table, metadata_table
    from potato_assets.study.fitting import model_summary_table
    from potato_assets.study.sufficient import REQUIRED, PanelBuilder

    # One pass over the buckets: per-subject statistics for the fits and the tracker's figure
    # sample; memory is O(subjects), never O(rows).
    builder = PanelBuilder()
    columns = list(dict.fromkeys([*REQUIRED, *FIBER_FIGURE_COLUMNS]))

    def frames() -> Iterator["pd.DataFrame"]:
        for frame in table_frames(modeling, columns):
            builder.add(frame)
            yield frame

    if experiment_tracker.enabled:  # the tracker logs each fit's fiber figure
        sample = fiber_sample(frames())
    else:
        sample = None
        for _frame in frames():
            pass
    panel = builder.finish()
    context.log.info(f"modelling table: {panel.nobs} subject-weeks of {panel.n_groups} subjects")
    # All models are fitted on the same snapshot, so the summary always describes them together.
    fits = []
    for spec in MODELS:
        name = spec.name
        fit = spec.fit_panel(panel)
        fits.append(fit)
        # Experiment tracking (#6): one MLflow run per fit; a side channel (see defs/resources.py).
        tracking_metadata = experiment_tracker.track_fit(context, model_key(name), fit, sample)
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
                "coefficients": dg.MetadataValue.md(coefficients_metadata_table(fit.coefficients)),
                "summary_text_uri": text_uri,
                **tracking_metadata,
            },
        )
    summary = model_summary_table(fits)
    yield dg.Output(
        summary,
        output_name=SUMMARY_NAME,
        metadata={"table": dg.MetadataValue.md(metadata_table(summary))},
    )


# One input per model, named after it and typed here: the functions take them as **coefficients.
MODEL_INS = {spec.name: dg.AssetIn(model_key(spec.name), dagster_type=DataFrame) for spec in MODELS}
# What gold publishes (figures, report) is one consistent set: each piece waits for every model,
# the summary and the last silver table, so a blocking check anywhere upstream (bronze or silver
# contract, a model check) skips all of it and the last good run's figures and report stay.
PUBLISHED_AFTER = [
    dg.AssetKey(["silver", "modeling_dataset"]),
    *(model_key(spec.name) for spec in MODELS),
    model_key(SUMMARY_NAME),
]


def _gate(*read: dg.AssetKey) -> list[dg.AssetKey]:
    """The PUBLISHED_AFTER assets an asset does not already read as inputs."""
    return [key for key in PUBLISHED_AFTER if key not in read]


@dg.asset(
    key=["gold", "figures", "fiber_vs_weight_change"],
    ins={"modeling": dg.AssetIn(["silver", "modeling_dataset"], dagster_type=SILVER_TABLE), **MODEL_INS},
    deps=_gate(dg.AssetKey(["silver", "modeling_dataset"]), *(model_key(spec.name) for spec in MODELS)),
    description=FIGURES["fiber_vs_weight_change"] + " PNG under {lake}/gold/figures/.",
    kinds={"matplotlib", "png"},
    pool=LAKE_POOL,
    **GOLD,
)
def fiber_vs_weight_change_figure(
    lake: LakeFiles,
    modeling: Any,
    **coefficients: DataFrame,
) -> dg.MaterializeResult:
    from potato_assets.report import figures
    from potato_assets.report.digest import fiber_sample

    png = figures.fiber_vs_weight_change_png(fiber_sample(table_frames(modeling, FIBER_FIGURE_COLUMNS)), coefficients)
    return _figure_result(lake, "fiber_vs_weight_change", png)


@dg.asset(
    key=["gold", "figures", "subject_trajectories"],
    ins={"trajectories": dg.AssetIn(["silver", "subject_trajectories"], dagster_type=SILVER_TABLE)},
    deps=_gate(),
    description=FIGURES["subject_trajectories"] + " PNG under {lake}/gold/figures/.",
    kinds={"matplotlib", "png"},
    pool=LAKE_POOL,
    **GOLD,
)
def subject_trajectories_figure(lake: LakeFiles, trajectories: Any) -> dg.MaterializeResult:
    from potato_assets.report import figures
    from potato_assets.report.digest import trajectory_sample

    sample = trajectory_sample(table_frames(trajectories, TRAJECTORY_COLUMNS))
    return _figure_result(lake, "subject_trajectories", figures.trajectories_png(sample))


def _figure_result(lake: LakeFiles, name: str, png: bytes) -> dg.MaterializeResult:
    from potato_assets.report import figures

    uri = lake.write_bytes(f"gold/figures/{name}.png", png)
    return dg.MaterializeResult(
        metadata={
            "uri": uri,
            "size_bytes": len(png),
            "figure": dg.MetadataValue.md(figures.png_markdown_embed(png, FIGURES[name])),
        }
    )


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any] | None:
    """The raw metadata values of the key's latest materialisation on this instance."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def _report_provenance(context: dg.AssetExecutionContext, modelled: int) -> "Provenance":
    """What the report ran on, from the bronze and silver records ingest and features wrote."""
    from potato_assets.lib.redact import redact_uri
    from potato_assets.report.provenance import LandingFile, Provenance, RowAccounting, package_versions
    from potato_assets.settings import SAMPLE_DATA_DIR, normalize_uri

    files, unrecorded, locations = [], [], set()
    for spec in LANDING_FILES:
        meta = _latest_metadata(context, dg.AssetKey(["bronze", spec.asset_name]))
        if meta is None or "source_sha256" not in meta:
            unrecorded.append(spec.file_name)
            continue
        files.append(
            LandingFile(
                file_name=spec.file_name,
                sha256=str(meta["source_sha256"]),
                rows_read=int(meta["rows_read"]),
                rows_quarantined=int(meta["rows_quarantined"]),
                exact_duplicates_dropped=int(meta.get("exact_duplicates_dropped", 0)),
            )
        )
        locations.add(str(meta["source_uri"]).rsplit("/", 1)[0])
    # Where ingest read the files, as recorded; never guessed from this process's settings.
    landing = locations.pop() if len(locations) == 1 else None
    silver = _latest_metadata(context, dg.AssetKey(["silver", "modeling_dataset"])) or {}
    rows = (
        RowAccounting(
            subject_weeks=int(silver["subject_weeks"]),
            no_outcome=int(silver["dropped_no_outcome"]),
            missing_predictor=int(silver["dropped_missing_predictor"]),
            modelled=modelled,
        )
        if {"subject_weeks", "dropped_no_outcome", "dropped_missing_predictor"} <= silver.keys()
        else None
    )
    return Provenance(
        landing_location=redact_uri(landing) if landing else "unknown (no single landing location recorded)",
        synthetic_sample=landing is not None and normalize_uri(landing) == normalize_uri(str(SAMPLE_DATA_DIR)),
        files=tuple(files),
        code_version=CODE_VERSION,
        packages=package_versions(),
        run_id=context.run.run_id,
        rows=rows,
        unrecorded_files=tuple(unrecorded),
    )


@dg.asset(
    key=["gold", "reports", "model_report"],
    ins={
        **MODEL_INS,
        "summary": dg.AssetIn(model_key(SUMMARY_NAME)),
        "modeling": dg.AssetIn(["silver", "modeling_dataset"], dagster_type=SILVER_TABLE),
        "trajectories": dg.AssetIn(["silver", "subject_trajectories"], dagster_type=SILVER_TABLE),
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
    summary: DataFrame,
    modeling: Any,
    trajectories: Any,
    **coefficients: DataFrame,
) -> dg.MaterializeResult:
    from potato_assets.report.digest import profile_frames
    from potato_assets.report.render import embed_figures, to_html, to_markdown
    from potato_assets.report.sections import build_report

    modeled = profile_frames(table_frames(modeling, (GROUP_COL, WEEK_COL)))
    weighed = profile_frames(table_frames(trajectories, (GROUP_COL, WEEK_COL, "weight_kg")))
    # The files link the figures beside them; the UI's Markdown view carries them inline.
    paths = {name: f"../figures/{name}.png" for name in FIGURES}
    report = build_report(
        provenance=_report_provenance(context, modeled.rows),
        coefficients=coefficients,
        summary=summary,
        modeling=modeled,
        trajectories=weighed,
        figure_paths=paths,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    markdown, html = to_markdown(report), to_html(report)
    pngs = {}
    for name, path in paths.items():
        try:
            pngs[path] = lake.read_bytes(f"gold/figures/{name}.png")
        except FileNotFoundError:
            context.log.warning(
                f"gold/figures/{name} has never been materialised: the UI's report shows its caption only"
            )
    ui_markdown = to_markdown(embed_figures(report, pngs))
    md_uri = lake.write_bytes("gold/reports/model_report.md", markdown.encode("utf-8"))
    html_uri = lake.write_bytes("gold/reports/model_report.html", html.encode("utf-8"))
    context.log.info(f"report written to {html_uri}")
    return dg.MaterializeResult(
        metadata={"markdown_uri": md_uri, "html_uri": html_uri, "report": dg.MetadataValue.md(ui_markdown)}
    )
