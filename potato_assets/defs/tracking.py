"""The experiment tracker resource: each gold model fit becomes one MLflow run.

A thin ConfigurableResource on MlflowClient (lib/tracking.py), not dagster-mlflow: its
`mlflow_tracking` is a legacy op-style resource that opens ONE run per Dagster run in ONE experiment
through MLflow's global fluent state, and connects when the resource is initialised (an unreachable
store would fail the step before the fit). Here every fit gets its own run in its model's
experiment, and tracking is a side channel that can fail without failing the models.
"""

import time
from typing import TYPE_CHECKING, Any

import dagster as dg

from potato_assets.defs.common import DATA_VERSION_TAG, DataFrame
from potato_assets.settings import Settings

if TYPE_CHECKING:
    from potato_assets.study.models import ModelFit

MODELING_KEY = dg.AssetKey(["silver", "modeling_dataset"])


class ExperimentTracker(dg.ConfigurableResource):
    """Logs model fits to MLflow (and the DynamoDB run index when `index_table` is set)."""

    tracking_uri: str
    artifact_root: str | None = None
    index_table: str | None = None
    # True: a tracking failure fails the model asset (POTATO_MLFLOW_REQUIRED).
    required: bool = False
    # False: nothing is logged (tests and runs that want no tracking store at all).
    enabled: bool = True

    def track_fit(
        self,
        context: dg.AssetExecutionContext,
        asset_key: dg.AssetKey,
        fit: "ModelFit",
        modeling: "DataFrame | None" = None,
    ) -> dict[str, Any]:
        """Log one fit; returns metadata for the model's materialisation.

        A failure is logged as one warning line and reported as `tracking_status: failed`,
        unless `required`, in which case it raises dg.Failure.
        """
        if not self.enabled:
            return {"tracking_status": "disabled"}
        from potato_assets.lib import tracking
        from potato_assets.lib.redact import redact_text, redact_uri

        started = time.monotonic()
        try:
            record = tracking.fit_record(
                fit,
                dagster_run_id=context.run.run_id,
                root_run_id=context.run.root_run_id,
                asset_key=asset_key.to_user_string(),
                code_version=context.assets_def.code_versions_by_key.get(asset_key),
                data_version=_latest_data_version(context, MODELING_KEY),
                figures=_figures(context, fit, modeling),
            )
            target = tracking.TrackingTarget(self.tracking_uri.strip(), self.artifact_root, self.index_table)
            run = tracking.log_fit(target, record)
        except Exception as error:  # any store/network/credential error: the fit itself is fine
            first_line = str(error).splitlines()[0][:300] if str(error) else ""
            message = redact_text(f"{type(error).__name__}: {first_line}")
            where = redact_uri(self.tracking_uri)
            seconds = time.monotonic() - started
            if self.required:
                raise dg.Failure(
                    description=(
                        f"{fit.name}: experiment tracking is required (POTATO_MLFLOW_REQUIRED=true)"
                        f" but logging the fit to MLflow at {where} failed after {seconds:.1f} s:"
                        f" {message}"
                    ),
                    metadata={"tracking_status": "failed", "tracking_error": message},
                ) from None  # the cause's text quotes the tracking URI, credentials included
            context.log.warning(
                f"{fit.name}: experiment tracking failed after {seconds:.1f} s ({message}); "
                f"the model is materialised without an MLflow run"
            )
            return {"tracking_status": "failed", "tracking_error": message, "tracking_uri": where}
        metadata: dict[str, Any] = {
            "tracking_status": "tracked",
            "mlflow_experiment": run.experiment_name,
            "mlflow_experiment_id": run.experiment_id,
            "mlflow_run_id": run.run_id,
            "mlflow_run": f"runs:/{run.run_id}",
            "mlflow_artifact_uri": run.artifact_uri,
            "mlflow_run_reused": run.reused,
            "mlflow_run_indexed": run.index_item is not None,
        }
        if run.run_url:
            metadata["mlflow_run_url"] = dg.MetadataValue.url(run.run_url)
        return metadata


def _latest_data_version(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str | None:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


def _figures(context: dg.AssetExecutionContext, fit: "ModelFit", modeling: "DataFrame | None") -> dict[str, bytes]:
    """This fit's fiber slope over the data, when the modelling table is at hand."""
    if modeling is None:
        return {}
    from potato_assets.report import build as report

    try:
        return {"fiber_vs_weight_change": report.fiber_vs_weight_change_png(modeling, {fit.name: fit.coefficients})}
    except Exception as error:  # a figure is a nice-to-have in the run, never a reason to fail it
        context.log.debug(f"{fit.name}: no figure for the MLflow run ({type(error).__name__}: {error})")
        return {}


def build_tracker(settings: Settings) -> ExperimentTracker:
    from potato_assets.defs.common import from_environment

    return ExperimentTracker(
        tracking_uri=from_environment("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
        artifact_root=settings.mlflow_artifact_root,
        index_table=settings.mlflow_index_table,
        required=settings.mlflow_required,
    )


@dg.definitions
def tracking() -> dg.Definitions:
    from potato_assets.defs.common import SETTINGS

    return dg.Definitions(resources={"experiment_tracker": build_tracker(SETTINGS)})
