"""The one place that reads the project's environment variables.

Libraries keep reading their own standard variables (AWS_*, OTEL_*, OPENLINEAGE_*, MLFLOW_*);
this module reads only POTATO_* settings and turns them into plain values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# With the project installed editable (uv sync, make run) this is the repository root.
PROJECT_DIR = PACKAGE_DIR.parent
SAMPLE_DATA_DIR = PACKAGE_DIR / "sample_data"
DEFAULT_DATA_DIR = PROJECT_DIR / "data"
BUNDLED_CONTRACTS_DIR = PACKAGE_DIR / "contracts"
DEFAULT_MAX_LANDING_BYTES = 2 * 1024**3
DEFAULT_LAKE_BUCKETS = 32
# Past this a bucket holds too few subjects to be worth a directory of its own.
MAX_LAKE_BUCKETS = 4096


def _cpus() -> int:
    """CPUs this process may run on (its affinity where the platform says, e.g. in a cgroup)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


# Silver batches computed at once: two (each holds a batch in memory), fewer on one CPU.
DEFAULT_SILVER_WORKERS = min(2, _cpus())
MAX_SILVER_WORKERS = 64
# Processes sharing out a large contract's rules: likewise two, one on one CPU.
DEFAULT_CONTRACT_PROCESSES = min(2, _cpus())


@dataclass(frozen=True)
class Settings:
    lake_uri: str
    landing_uri: str
    # Share of a landing file's rows that may be quarantined before the run is blocked (#3).
    max_quarantine_share: float = 0.05
    # Orchestration (#4): freshness window, the daily refresh schedule, alerting.
    freshness_hours: float = 26.0
    schedule_cron: str = "0 6 * * *"
    schedule_timezone: str = "UTC"
    # How often the landing sensor lists the landing zone (seconds).
    landing_poll_seconds: int = 30
    alert_webhook_url: str | None = None
    # Telemetry (#5): Prometheus Pushgateway for batch metrics (OTLP is configured by OTEL_*).
    pushgateway_url: str | None = None
    # text|json: json adds JSON log lines (run id, trace id) on stderr beside Dagster's console.
    log_format: str = "text"
    # Experiment tracking (#6): DynamoDB run index table, and whether tracking failures fail runs.
    mlflow_tracking_uri: str = ""
    mlflow_index_table: str | None = None
    mlflow_required: bool = False
    # Artifact root for new MLflow experiments (e.g. s3://bucket/mlflow); None: beside a local store.
    mlflow_artifact_root: str | None = None
    # Where the data contracts (GX suites, <name>.json) are read: a CI run can try a changed copy.
    contracts_dir: Path = BUNDLED_CONTRACTS_DIR
    # Largest landing file ingestion reads (bytes); a larger one is refused before it is read.
    max_landing_bytes: int = DEFAULT_MAX_LANDING_BYTES
    # Subject buckets of the bronze and silver datasets (lib/lake/datasets.py): subject_id % this.
    lake_buckets: int = DEFAULT_LAKE_BUCKETS
    # Where silver runs (#17): embedded (DuckDB, in the run's process), spark (a Connect server)
    # or emr-serverless (one Spark job per table, submitted over Dagster Pipes).
    engine: str = "embedded"
    # The Spark Connect URL (sc://host:port[/;param=value...]); required when engine is spark.
    spark_remote: str | None = None
    # Where silver's Spark jobs run when engine is emr-serverless (all four required then): the
    # application, the role its jobs run as, the s3:// folder holding emr_job.py and
    # potato_job.zip, and the CloudWatch log group Dagster Pipes reads the jobs' messages from.
    emr_application_id: str | None = None
    emr_execution_role_arn: str | None = None
    emr_job_code_uri: str | None = None
    emr_log_group: str | None = None
    # Processes (1-8) that share out a large dataset's contract rules (lib/contracts.py,
    # run_contract_dataset): 1 is the run's own only; each more holds GX and one batch (~0.5 GB).
    contract_processes: int = DEFAULT_CONTRACT_PROCESSES
    # Batches of subject buckets the embedded engine computes at once, one thread each.
    silver_workers: int = DEFAULT_SILVER_WORKERS
    # Where the contract checks judge a bucketed dataset (#17): step (GX on pandas, in the check's
    # own process, bucket batches) or spark (GX's Spark engine on POTATO_SPARK_REMOTE's cluster).
    contract_engine: str = "step"


def normalize_uri(value: str) -> str:
    """Plain path, file:// URI or s3://bucket/prefix -> 'file:///abs/path' or 's3://bucket/prefix'.

    Relative paths are resolved against the current directory; trailing slashes are dropped so
    that joining keys gives one canonical object name. The location is taken literally: spaces,
    '#', '%' and non-ASCII stay as they are (no percent-encoding, no decoding), because UPath and
    fsspec treat what follows 'file://' or 's3://' as the path itself.
    """
    value = value.strip()
    if not value:
        raise ValueError("an empty string is not a storage location")
    if value.startswith("s3://"):
        rest = value[len("s3://") :].strip("/")
        if not rest:
            raise ValueError(f"{value!r} names no bucket")
        return "s3://" + rest
    if value.startswith("file://"):
        value = value[len("file://") :]
    elif "://" in value:
        raise ValueError(f"{value!r}: only plain paths, file:// and s3:// locations are supported")
    # Not Path.as_uri(): it percent-encodes, and nothing downstream decodes (a folder 'a b'
    # became a sibling 'a%20b').
    return "file://" + str(Path(value).expanduser().resolve())


def _number(env: Mapping[str, str], name: str, default: str, lo: float, hi: float) -> float:
    raw = env.get(name) or default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name}={raw!r} must lie between {lo:g} and {hi:g}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = (env.get(name) or "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name}={raw!r} must lie between {lo} and {hi}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (true/false)")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip()
    return value or None


def _directory(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"{name}={raw!r} is not a directory")
    return path


ENGINES = ("embedded", "spark", "emr-serverless")
EMR_SETTINGS = {
    # name -> what its value must look like, and how that is said
    "POTATO_EMR_APPLICATION_ID": (
        re.compile(r"[0-9a-z]{16}"),
        "an EMR Serverless application id (16 letters and digits)",
    ),
    "POTATO_EMR_EXECUTION_ROLE_ARN": (
        re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+"),
        "an IAM role ARN",
    ),
    "POTATO_EMR_JOB_CODE_URI": (
        re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?"),
        "an s3://bucket/prefix location",
    ),
    "POTATO_EMR_LOG_GROUP": (re.compile(r"[\w/.#-]{1,512}"), "a CloudWatch log group name"),
}
# sc://host:port, optionally followed by /;key=value parameters (Spark Connect's URL form).
SPARK_REMOTE_URL = re.compile(
    r"sc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})(/(;[^;=/]+=[^;]*)*)?"
)


def _spark_remote(env: Mapping[str, str], engine: str) -> str | None:
    value = _optional(env, "POTATO_SPARK_REMOTE")
    if value is None:
        if engine == "spark":
            raise ValueError(
                "POTATO_SPARK_REMOTE must be set to a Spark Connect URL (sc://host:port) when POTATO_ENGINE=spark"
            )
        return None
    match = SPARK_REMOTE_URL.fullmatch(value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"POTATO_SPARK_REMOTE={value!r} is not a Spark Connect URL of the form sc://host:port")
    return value


def _emr(env: Mapping[str, str], engine: str) -> dict[str, str | None]:
    """The EMR Serverless settings, each checked when set; all required with emr-serverless."""
    values = {}
    for name, (pattern, kind) in EMR_SETTINGS.items():
        value = _optional(env, name)
        if value is None and engine == "emr-serverless":
            raise ValueError(f"{name} must be set to {kind} when POTATO_ENGINE=emr-serverless")
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(f"{name}={value!r} is not {kind}")
        values[name] = value
    return values


CONTRACT_ENGINES = ("step", "spark")


def _contract_engine(env: Mapping[str, str], engine: str) -> str:
    value = _choice(env, "POTATO_CONTRACT_ENGINE", "step", CONTRACT_ENGINES)
    if value == "spark" and engine != "spark":
        raise ValueError(
            "POTATO_CONTRACT_ENGINE=spark runs the contract checks on silver's Spark cluster and needs "
            f"POTATO_ENGINE=spark (it is {engine})"
        )
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    engine = _choice(env, "POTATO_ENGINE", "embedded", ENGINES)
    emr = _emr(env, engine)
    return Settings(
        lake_uri=normalize_uri(env.get("POTATO_LAKE_URI") or str(DEFAULT_DATA_DIR / "lake")),
        landing_uri=normalize_uri(env.get("POTATO_LANDING_URI") or str(SAMPLE_DATA_DIR)),
        max_quarantine_share=_number(env, "POTATO_MAX_QUARANTINE_SHARE", "0.05", 0.0, 1.0),
        freshness_hours=_number(env, "POTATO_FRESHNESS_HOURS", "26", 0.01, 24 * 365),
        schedule_cron=(env.get("POTATO_SCHEDULE_CRON") or "0 6 * * *").strip(),
        schedule_timezone=(env.get("POTATO_SCHEDULE_TIMEZONE") or "UTC").strip(),
        landing_poll_seconds=int(_number(env, "POTATO_LANDING_POLL_SECONDS", "30", 1, 3600)),
        alert_webhook_url=_optional(env, "POTATO_ALERT_WEBHOOK_URL"),
        pushgateway_url=_optional(env, "POTATO_PUSHGATEWAY_URL"),
        log_format=_choice(env, "POTATO_LOG_FORMAT", "text", ("text", "json")),
        # MLflow reads MLFLOW_TRACKING_URI itself; this is only the project's default for it.
        mlflow_tracking_uri=_optional(env, "MLFLOW_TRACKING_URI")
        or f"sqlite:///{DEFAULT_DATA_DIR / 'mlflow' / 'mlflow.db'}",
        mlflow_index_table=_optional(env, "POTATO_MLFLOW_INDEX_TABLE"),
        mlflow_required=_flag(env, "POTATO_MLFLOW_REQUIRED"),
        mlflow_artifact_root=_optional(env, "POTATO_MLFLOW_ARTIFACT_ROOT"),
        contracts_dir=_directory(env, "POTATO_CONTRACTS_DIR", BUNDLED_CONTRACTS_DIR),
        max_landing_bytes=int(
            _number(env, "POTATO_MAX_LANDING_BYTES", str(DEFAULT_MAX_LANDING_BYTES), 1, float(2**62))
        ),
        lake_buckets=_whole(env, "POTATO_LAKE_BUCKETS", DEFAULT_LAKE_BUCKETS, 1, MAX_LAKE_BUCKETS),
        engine=engine,
        spark_remote=_spark_remote(env, engine),
        emr_application_id=emr["POTATO_EMR_APPLICATION_ID"],
        emr_execution_role_arn=emr["POTATO_EMR_EXECUTION_ROLE_ARN"],
        emr_job_code_uri=emr["POTATO_EMR_JOB_CODE_URI"],
        emr_log_group=emr["POTATO_EMR_LOG_GROUP"],
        contract_processes=_whole(env, "POTATO_CONTRACT_PROCESSES", DEFAULT_CONTRACT_PROCESSES, 1, 8),
        silver_workers=_whole(env, "POTATO_SILVER_WORKERS", DEFAULT_SILVER_WORKERS, 1, MAX_SILVER_WORKERS),
        contract_engine=_contract_engine(env, engine),
    )


@cache
def get_settings() -> Settings:
    """The process's settings, read from its environment once, when the definitions are built
    (code server, daemon, each run process): never at import. Tests pass their own Settings."""
    return load_settings()
