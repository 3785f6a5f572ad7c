"""`make bench` end to end on a tiny cohort: it must keep running on a fresh clone (not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from potato_assets_tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench  # noqa: E402


def test_growth_is_reported_per_thousand_subjects_between_sizes():
    rows = [
        {"subjects": 10_000, "run_s": 30.0, "peak_rss_mb": 1500.0},
        {"subjects": 1_000, "run_s": 12.0, "peak_rss_mb": 600.0},
    ]
    assert bench.growth_lines(rows) == [
        "",
        "From 1,000 to 10,000 subjects: run +2.00 s, peak RSS +100 MB per 1,000 subjects.",
    ]
    assert bench.growth_lines(rows[:1]) == []


@pytest.mark.e2e
def test_bench_runs_and_prints_the_table(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench.py"),
            "--sizes",
            "60",
            "--validate-repeats",
            "1",
            "--repeats",
            "2",
        ]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| 60 × 12 |" in out.stdout and "definitions validate" in out.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    (size,) = report["sizes"]
    assert size["subjects"] == 60 and size["mixed_converged"] is True
    assert 0 < size["run_s"] < size["wall_s"]
    # two materialisations, each with its own process's peak RSS; the table row is one of them
    assert len(size["runs"]) == 2 and all(r["peak_rss_mb"] > 100 for r in size["runs"])
    assert {k: size[k] for k in ("wall_s", "run_s", "peak_rss_mb")} in size["runs"]
    assert "materialised 2 times" in out.stdout
    assert 0 < size["silver_assets_s"] < size["layers_s"]["silver"]
    assert {"ingest_landing", "fit_models", "silver__weekly_features_contract"} <= set(size["steps_s"])
