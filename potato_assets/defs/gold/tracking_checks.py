"""WARN checks: did each model's materialisation reach the experiment tracker?

They read the tracking status the model step recorded in the materialisation's metadata, so
they never contact MLflow themselves. A failure is a warning: tracking is a side channel.
"""

import dagster as dg

from potato_assets.defs.gold.assets import model_key
from potato_assets.study.models import MODELS

CHECK_NAME = "experiment_tracking"


def _metadata_value(metadata: dict, name: str):
    value = metadata.get(name)
    return getattr(value, "value", value)


def _tracking_check(model: str) -> dg.AssetChecksDefinition:
    key = model_key(model)

    @dg.asset_check(
        asset=key,
        name=CHECK_NAME,
        blocking=False,
        description=f"{model}: the fit was logged as an MLflow run (WARN when tracking failed).",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(key)
        metadata = dict(event.asset_materialization.metadata) if event and event.asset_materialization else {}
        status = _metadata_value(metadata, "tracking_status")
        facts = {
            name: str(_metadata_value(metadata, name))
            for name in (
                "tracking_status",
                "tracking_error",
                "mlflow_run_id",
                "mlflow_experiment_id",
            )
            if name in metadata
        }
        if status in ("tracked", "disabled"):
            description = "tracking disabled" if status == "disabled" else f"MLflow run {facts.get('mlflow_run_id')}"
            return dg.AssetCheckResult(passed=True, metadata=facts, description=description)
        reason = facts.get("tracking_error") or "no tracking status recorded on the materialisation"
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=facts,
            description=f"experiment tracking failed: {reason}",
        )

    return _check


tracking_checks = [_tracking_check(spec.name) for spec in MODELS]
