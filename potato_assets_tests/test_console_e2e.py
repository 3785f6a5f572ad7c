"""What a person sees in the terminal: `make run` as a user runs it, on temp instance, lake and
MLflow locations (make variables, which override the Makefile's own)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from potato_assets_tests.helpers import landing_with_bad_weights

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def make_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        f"DAGSTER_HOME={tmp_path / 'home'}",
        f"POTATO_LAKE_URI={tmp_path / 'lake'}",
        f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("POTATO_LANDING_URI", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.e2e
def test_make_run_on_the_sample_prints_a_short_console_with_a_closing_summary(tmp_path):
    proc = make_run(tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    lines = output.splitlines()
    assert len(lines) < MAX_LINES, output
    assert "DEBUG" not in output and "Warning" not in output, output
    [summary] = [line for line in lines if line.startswith("Run ") and " succeeded: " in line]
    assert "15 assets materialised" in summary and "0 warned, 0 failed" in summary, summary
    assert any(line.startswith("  gold (7): ") for line in lines), output
    assert any(line.startswith("Report:") for line in lines), output


@pytest.mark.e2e
def test_make_run_with_a_blocking_check_failure_explains_it_and_exits_non_zero(sample_dir, tmp_path):
    landing = landing_with_bad_weights(sample_dir, tmp_path / "landing", 42)
    proc = make_run(tmp_path, f"POTATO_LANDING_URI={landing}")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = output.splitlines()
    reason = "Potato_tidy.csv: 42 of 600 rows quarantined (7.0%), more than the 5% allowed."
    assert f"FAILED check bronze/weight: quarantine_share (ERROR, blocking: downstream not run): {reason}" in lines
    assert "    file Potato_tidy.csv, line 2, column weight_kg, value 'abc', reason not a number" in lines
    assert any(line.startswith("Not materialised: ") and "silver/study_calendar" in line for line in lines)
    assert not (tmp_path / "lake" / "silver").exists()
