"""Dagster's own CLI, `dg`, works on this project from the repository root (what CI runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")


def dg(*args: str) -> subprocess.CompletedProcess:
    # VIRTUAL_ENV: the project's .venv is the one in use (dg warns otherwise).
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    return subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_succeeds():
    proc = dg("check", "defs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully." in proc.stdout + proc.stderr


def test_dg_list_defs_lists_the_project_assets_checks_and_sensors():
    proc = dg("list", "defs", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    listed = json.loads(proc.stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {"bronze/weight", "silver/modeling_dataset", "gold/reports/model_report"} <= assets
    assert any(c["key"] == "bronze/weight:quarantine_share" for c in listed["asset_checks"])
    assert {"landing_sensor", "run_failure_alerts"} <= {s["name"] for s in listed["sensors"]}
