"""Settings that may carry credentials reach resources as dg.EnvVar: Dagster stores resource
config in every run's job snapshot (and shows it in the UI), and only the variable's name may
be stored there."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
from dagster._core.snap import JobSnap
from dagster_shared.serdes import serialize_value
from potato_assets.definitions import defs

job = defs().resolve_implicit_global_asset_job_def()
print(serialize_value(JobSnap.from_job_def(job)))
"""


def test_no_credential_from_the_environment_reaches_the_job_snapshot():
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://mlflow-user:mlflow-snap-secret@127.0.0.1:1",
        "POTATO_ALERT_WEBHOOK_URL": "https://hook:hook-snap-secret@127.0.0.1:2/h?token=hook-snap-token",
    }
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout
    for secret in ("mlflow-snap-secret", "mlflow-user", "hook-snap-secret", "hook-snap-token"):
        assert secret not in out
    # Not vacuous: the snapshot names the variables the values come from.
    assert '{\\"env\\": \\"MLFLOW_TRACKING_URI\\"}' in out
    assert '{\\"env\\": \\"POTATO_ALERT_WEBHOOK_URL\\"}' in out
