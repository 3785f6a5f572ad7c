"""Experiment tracking: one MLflow run per model fit, and an optional DynamoDB run index.

Plain Python, no Dagster. MLflow and boto3 are imported inside the functions that use them
(importing MLflow takes seconds), so importing this module is cheap.

Identity of a run: the tags ``dagster.root_run_id`` + ``dagster.asset_key``. A retried step and a
Dagster re-execution (new run id, same root run id) find that MLflow run and update it instead of
creating a second one; a new materialisation (a new root run) is a new MLflow run. The run index
item is keyed by (experiment_id, run_uuid), so writing it again overwrites the same item.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from potato_assets.lib.process import long_lived_imports
from potato_assets.study.models import ModelFit
from potato_assets.study.schema import FORMULA, PREDICTOR_UNITS

# Tags that identify "the same materialisation" across step retries and re-executions.
IDENTITY_TAGS: tuple[str, ...] = ("dagster.root_run_id", "dagster.asset_key")

# Bounds for an unreachable tracking server. MLflow's defaults (7 retries, backoff factor 2,
# 120 s timeout) can hold a step for minutes; these apply only where the variable is unset.
MLFLOW_HTTP_DEFAULTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow 3 sends usage telemetry by default; like Dagster's and GX's, it is off unless asked for.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# DynamoDB: fail within seconds, not botocore's 60 s connect timeout with retries.
DYNAMODB_CONNECT_TIMEOUT_S = 3
DYNAMODB_READ_TIMEOUT_S = 10
DYNAMODB_MAX_ATTEMPTS = 3

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: the tracking store, the artifact root for new experiments, the run index."""

    tracking_uri: str
    artifact_root: str | None = None
    index_table: str | None = None


@dataclass(frozen=True)
class FitRecord:
    """Everything logged for one fit (built by :func:`fit_record`)."""

    experiment: str
    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    artifacts: dict[str, bytes]


@dataclass(frozen=True)
class TrackedRun:
    experiment_id: str
    experiment_name: str
    run_id: str
    run_name: str
    status: str
    artifact_uri: str
    run_url: str | None
    reused: bool
    index_item: dict[str, Any] | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------------
# What is logged
# ----------------------------------------------------------------------------------------------


def metric_key(*parts: str) -> str:
    """A valid MLflow metric/param key: unsupported characters become '_', at most 250 chars."""
    key = ".".join(_KEY_UNSAFE.sub("_", str(p)) for p in parts)
    return key[:MAX_KEY_LENGTH]


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def optimiser(fit: ModelFit) -> str:
    """How the estimate was found: closed form for OLS/FE, the kept optimiser for REML."""
    if fit.name == "mixed_effects":
        kept = fit.details.get("kept_attempt")
        if kept:
            method, start = kept.get("method"), kept.get("start")
            return f"statsmodels MixedLM REML, method={method} from start={start}"
        return "profiled REML (GLS at the profiled optimum; no MixedLM fit kept)"
    if fit.name == "fixed_effects":
        return "closed form (within transformation, linearmodels PanelOLS)"
    return "closed form (least squares, statsmodels OLS)"


def fit_metrics(fit: ModelFit) -> dict[str, float]:
    """Summary numbers and, per term, estimate / std_error / p_value. Non-finite values omitted."""
    out: dict[str, float] = {}
    for name in ("nobs", "n_groups", "r2", "log_likelihood", "group_var", "residual_var"):
        value = _finite(fit.summary.get(name))
        if value is not None:
            out[metric_key(name)] = value
    for row in fit.coefficients.to_dict("records"):
        for column in ("estimate", "std_error", "p_value"):
            value = _finite(row.get(column))
            if value is not None:
                out[metric_key("coef", row["term"], column)] = value
    return out


def fit_params(fit: ModelFit) -> dict[str, str]:
    params = {
        "model": fit.name,
        "formula": FORMULA,
        "se_type": str(fit.summary.get("se_type")),
        "optimiser": optimiser(fit),
        "library": str(fit.details.get("library", "")),
        **{metric_key("unit", k): v for k, v in PREDICTOR_UNITS.items()},
    }
    return {k: v[:MAX_PARAM_LENGTH] for k, v in params.items()}


def coefficients_csv(fit: ModelFit) -> bytes:
    return fit.coefficients.to_csv(index=False).encode("utf-8")


def coefficients_parquet(fit: ModelFit) -> bytes:
    buffer = io.BytesIO()
    fit.coefficients.to_parquet(buffer, index=False)
    return buffer.getvalue()


def fit_record(
    fit: ModelFit,
    *,
    dagster_run_id: str,
    root_run_id: str | None,
    asset_key: str,
    code_version: str | None,
    data_version: str | None,
    figures: Mapping[str, bytes] | None = None,
) -> FitRecord:
    """The run to log for ``fit``: tags identify the Dagster materialisation it came from."""
    tags = {
        "dagster.run_id": dagster_run_id,
        "dagster.root_run_id": root_run_id or dagster_run_id,
        "dagster.asset_key": asset_key,
        "dagster.code_version": code_version or "",
        "dagster.data_version.silver/modeling_dataset": data_version or "",
        "converged": str(fit.summary.get("converged")),
        "singular": str(fit.summary.get("singular")),
    }
    summary_json = json.dumps(_json_safe({"summary": fit.summary, "details": fit.details}), indent=2, default=str)
    artifacts = {
        "coefficients.csv": coefficients_csv(fit),
        "coefficients.parquet": coefficients_parquet(fit),
        "summary.txt": fit.text.encode("utf-8"),
        "summary.json": summary_json.encode("utf-8"),
        **{f"figures/{name}.png": png for name, png in (figures or {}).items()},
    }
    return FitRecord(
        experiment=fit.name,
        run_name=f"{fit.name}-{dagster_run_id[:8]}",
        tags=tags,
        params=fit_params(fit),
        metrics=fit_metrics(fit),
        artifacts=artifacts,
    )


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, so the JSON artifact is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------
# MLflow
# ----------------------------------------------------------------------------------------------


def bound_http_retries(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Set MLflow's HTTP retry/timeout variables to short bounds, and its telemetry off, where the
    user has not set them."""
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        environ.setdefault(name, value)


def default_artifact_root(tracking_uri: str) -> str | None:
    """Local SQLite/file store -> an `artifacts` folder beside it; a server decides its own."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db_path = tracking_uri[len("sqlite:///") :]
        return Path(db_path).resolve().parent.joinpath("artifacts").as_uri() if db_path else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or tracking_uri).resolve().joinpath("artifacts").as_uri()
    return None


def _prepare_local_store(tracking_uri: str) -> None:
    # SQLite cannot create the folder of its database file.
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri[len("sqlite:///") :])
        if str(db_path) not in ("", ":memory:"):
            db_path.parent.mkdir(parents=True, exist_ok=True)


def redact_uri(text: str) -> str:
    """Passwords in URIs masked: postgresql+psycopg2://user:secret@host/db -> ...://user:***@host/db."""
    return re.sub(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", r"\1:***@", text, flags=re.I)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page on an MLflow server (http/https stores only)."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def client_for(target: TrackingTarget) -> Any:
    bound_http_retries()
    _prepare_local_store(target.tracking_uri)
    with long_lived_imports():
        from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)


def experiment_id_for(client: Any, target: TrackingTarget, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = target.artifact_root or default_artifact_root(target.tracking_uri)
    location = f"{root.rstrip('/')}/{name}" if root else None
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Created concurrently by another step: use that one.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run(client: Any, experiment_id: str, tags: Mapping[str, str]) -> Any | None:
    """The run carrying the same identity tags, if one exists (the latest if several)."""
    clauses = [f"tags.`{k}` = '{_quote(tags[k])}'" for k in IDENTITY_TAGS]
    runs = client.search_runs(
        [experiment_id],
        filter_string=" and ".join(clauses),
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def log_fit(target: TrackingTarget, record: FitRecord) -> TrackedRun:
    """Log ``record`` as one finished MLflow run (reusing the run with the same identity tags).

    Raises whatever the store raises; the caller decides whether that fails the asset. When the
    index table is set, the finished run is also written there (see :func:`write_index_item`).
    """
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    client = client_for(target)
    experiment_id = experiment_id_for(client, target, record.experiment)
    existing = find_run(client, experiment_id, record.tags)
    if existing is not None and _params_conflict(existing.data.params, record.params):
        existing = None  # params are immutable in MLflow: a changed fit gets a new run
    if existing is None:
        run = client.create_run(experiment_id, run_name=record.run_name, tags=record.tags)
    else:
        run = existing
        client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    run_id = run.info.run_id
    try:
        now_ms = _now_ms()
        new_params = {k: v for k, v in record.params.items() if run.data.params.get(k) != v}
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now_ms, 0) for k, v in record.metrics.items()],
            params=[Param(k, v) for k, v in new_params.items()],
            tags=[RunTag(k, v) for k, v in record.tags.items()],
        )
        with tempfile.TemporaryDirectory(prefix="potato-mlflow-") as tmp:
            for relative, data in record.artifacts.items():
                path = Path(tmp, relative)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            client.log_artifacts(run_id, tmp)
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))
    except Exception:
        _mark_failed(client, run_id)
        raise
    finished = client.get_run(run_id)
    item = None
    if target.index_table:
        item = write_index_item(target.index_table, finished, record.experiment)
    return TrackedRun(
        experiment_id=experiment_id,
        experiment_name=record.experiment,
        run_id=run_id,
        run_name=finished.info.run_name,
        status=finished.info.status,
        artifact_uri=finished.info.artifact_uri,
        run_url=run_url(target.tracking_uri, experiment_id, run_id),
        reused=existing is not None,
        index_item=item,
    )


def _params_conflict(logged: Mapping[str, str], new: Mapping[str, str]) -> bool:
    return any(k in logged and logged[k] != v for k, v in new.items())


def _mark_failed(client: Any, run_id: str) -> None:
    # The store is the likely culprit; the original error is the one that matters.
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status="FAILED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# ----------------------------------------------------------------------------------------------
# DynamoDB run index
# ----------------------------------------------------------------------------------------------

# DynamoDB numbers: up to 38 significant digits, magnitude between 1e-130 and 1e126.
_DYNAMO_MIN, _DYNAMO_MAX = Decimal("1e-130"), Decimal("1e126")


def dynamo_number(value: Any) -> Decimal | None:
    """A finite number as a DynamoDB-safe Decimal; None for NaN, inf, None or out of range."""
    number = _finite(value)
    if number is None:
        return None
    # Integers (times in ms, counts) stay exact; floats keep their shortest round-trip digits.
    exact_int = isinstance(value, int) and not isinstance(value, bool)
    decimal = Decimal(int(value)) if exact_int else Decimal(repr(number))
    if decimal != 0 and not _DYNAMO_MIN <= abs(decimal) < _DYNAMO_MAX:
        return None
    return decimal


def index_item(run: Any, experiment_name: str) -> dict[str, Any]:
    """The run-index item for a finished MLflow run, typed as the terraform table declares.

    Key: experiment_id (S) + run_uuid (S). Times are epoch milliseconds (N); metrics are a map of
    numbers (N, non-finite values left out); params and tags are maps of strings.
    """
    info, data = run.info, run.data
    item: dict[str, Any] = {
        "experiment_id": str(info.experiment_id),
        "run_uuid": str(info.run_id),
        "run_name": str(info.run_name or ""),
        "status": str(info.status),
        "experiment_name": experiment_name,
        "artifact_uri": str(info.artifact_uri or ""),
        "metrics": {k: d for k, v in data.metrics.items() if (d := dynamo_number(v)) is not None},
        "params": {k: str(v) for k, v in data.params.items()},
        "tags": {k: str(v) for k, v in data.tags.items() if not k.startswith("mlflow.")},
    }
    for name, value in (("start_time", info.start_time), ("end_time", info.end_time)):
        number = dynamo_number(value)
        if number is not None:
            item[name] = number
    return item


def dynamodb_table(table_name: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=DYNAMODB_CONNECT_TIMEOUT_S,
        read_timeout=DYNAMODB_READ_TIMEOUT_S,
        retries={"max_attempts": DYNAMODB_MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.resource("dynamodb", config=config).Table(table_name)


def write_index_item(table_name: str, run: Any, experiment_name: str) -> dict[str, Any]:
    """Put the run's item; the same (experiment_id, run_uuid) overwrites: reruns never duplicate."""
    item = index_item(run, experiment_name)
    dynamodb_table(table_name).put_item(Item=item)
    return item
