"""The one place that reads the project's environment variables.

Libraries keep reading their own standard variables (AWS_*, OTEL_*, OPENLINEAGE_*, MLFLOW_*);
this module reads only POTATO_* settings and turns them into plain values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# With the project installed editable (uv sync, make run) this is the repository root.
PROJECT_DIR = PACKAGE_DIR.parent
SAMPLE_DATA_DIR = PACKAGE_DIR / "sample_data"
DEFAULT_DATA_DIR = PROJECT_DIR / "data"


@dataclass(frozen=True)
class Settings:
    lake_uri: str
    landing_uri: str
    max_quarantine_share: float


def normalize_uri(value: str) -> str:
    """Plain path, file:// URI or s3://bucket/prefix -> 'file:///abs/path' or 's3://bucket/prefix'.

    Relative paths are resolved against the current directory; trailing slashes are dropped so
    that joining keys gives one canonical object name.
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
    return Path(value).expanduser().resolve().as_uri()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    share = env.get("POTATO_MAX_QUARANTINE_SHARE", "0.05")
    try:
        max_share = float(share)
    except ValueError:
        raise ValueError(f"POTATO_MAX_QUARANTINE_SHARE={share!r} is not a number") from None
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"POTATO_MAX_QUARANTINE_SHARE={share!r} must lie between 0 and 1")
    return Settings(
        lake_uri=normalize_uri(env.get("POTATO_LAKE_URI") or str(DEFAULT_DATA_DIR / "lake")),
        landing_uri=normalize_uri(env.get("POTATO_LANDING_URI") or str(SAMPLE_DATA_DIR)),
        max_quarantine_share=max_share,
    )
