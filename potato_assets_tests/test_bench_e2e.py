"""`make bench` end to end on a tiny cohort: it must keep running on a fresh clone (not a timing test)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from potato_assets_tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench  # noqa: E402


def test_growth_is_reported_per_thousand_subjects_between_sizes():
    rows = [
        {"subjects": 10_000, "run_s": 30.0, "wall_s": 40.0, "tree_peak_rss_mb": 1500.0},
        {"subjects": 1_000, "run_s": 12.0, "wall_s": 19.0, "tree_peak_rss_mb": 600.0},
    ]
    assert bench.growth_lines(rows) == [
        "",
        "| from → to subjects | run s per 1,000 added | CLI process s per 1,000 added "
        "| peak tree RSS MB per 1,000 added |",
        "|---|---|---|---|",
        "| 1,000 → 10,000 | +2.000 | +2.333 | +100.0 |",
    ]
    assert bench.growth_lines(rows[:1]) == []


def test_the_slope_from_100k_to_1m_is_spelled_out_and_a_missing_number_is_a_dash():
    rows = [
        {"subjects": 1_000_000, "run_s": 700.0, "wall_s": 720.0, "tree_peak_rss_mb": None},
        {"subjects": 10_000, "run_s": 25.0, "wall_s": 30.0, "tree_peak_rss_mb": 900.0},
        {"subjects": 100_000, "run_s": 88.0, "wall_s": 95.0, "tree_peak_rss_mb": 2000.0},
    ]
    lines = bench.growth_lines(rows)
    assert lines[3:5] == [
        "| 10,000 → 100,000 | +0.700 | +0.722 | +12.2 |",
        "| 100,000 → 1,000,000 | +0.680 | +0.694 | — |",
    ]
    assert lines[-1] == "Slope from 100,000 to 1,000,000 subjects: 0.680 s of run time per 1,000 subjects."
    assert not any("Slope" in line for line in bench.growth_lines(rows[1:]))


def test_a_size_row_is_one_markdown_row_under_the_header():
    row = {
        "subjects": 100_000, "weeks": 12, "landing_mb": 639.1, "generate_s": 51.2, "generate_reused": True,
        "wall_s": 300.5, "cpu_s": 290.0, "run_s": 280.25, "s_per_1000_subjects": 2.803, "tree_peak_rss_mb": 6100.0,
        "largest_process_rss_mb": 5900.5, "layers_s": {"bronze": 100.0, "silver": 120.0, "gold": 60.25},
        "silver_assets_s": 80.0, "steps_s": {"fit_models": 30.5}, "mixed_model_s": None,
    }  # fmt: skip
    line = bench.size_row(row)
    assert line == (
        "| 100,000 × 12 | 639.1 | 51.2 (reused) | 300.5 | 290.0 | 280.25 | 2.803 | 6100.0 | 5900.5 "
        "| 100.0 | 120.0 | 80.0 | 60.25 | 30.5 | — |"
    )
    header, rule = bench.TABLE_HEADER
    assert line.count("|") == header.count("|") == rule.count("|")


@pytest.mark.parametrize(
    ("given", "sizes"),
    [(["1000,10000,100000,1000000"], [1000, 10000, 100000, 1000000]), (["60", "1_000"], [60, 1000])],
)
def test_sizes_take_commas_spaces_and_underscores(given, sizes):
    assert bench.parse_sizes(given) == sizes


def test_a_size_below_one_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        bench.parse_sizes(["1000,0"])


def test_kept_landing_files_are_reused_only_while_they_are_what_the_generator_wrote(tmp_path):
    landing = tmp_path / "landing-n20-w2"
    first = bench.generate_landing(20, 2, landing)
    assert first["generate_reused"] is False and first["generate_s"] > 0 and first["generate_peak_rss_mb"] > 50
    assert len(list(landing.glob("*.csv"))) == 3
    stamp = {p.name: p.stat().st_mtime_ns for p in landing.glob("*.csv")}
    again = bench.generate_landing(20, 2, landing)
    assert again == {**first, "generate_reused": True}
    assert {p.name: p.stat().st_mtime_ns for p in landing.glob("*.csv")} == stamp
    with (landing / "Potato_tidy.csv").open("a") as fh:  # a truncated or edited file is regenerated
        fh.write("1,2024-01-01,1,,,\n")
    assert bench.generate_landing(20, 2, landing)["generate_reused"] is False
    assert bench.generate_landing(21, 2, landing)["generate_reused"] is False  # another cohort


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
    # two materialisations, each with its own process's and its tree's peak RSS; the row is one of them
    assert len(size["runs"]) == 2 and all(r["peak_rss_mb"] > 100 for r in size["runs"])
    assert all(r["tree_peak_rss_mb"] >= 0.5 * r["peak_rss_mb"] for r in size["runs"])
    assert all(r["largest_process_rss_mb"] >= r["peak_rss_mb"] for r in size["runs"])
    assert {k: size[k] for k in bench.RUN_FIELDS} in size["runs"]
    assert size["generate_s"] > 0 and size["landing_mb"] > 0 and size["generate_reused"] is False
    assert size["cpu_s"] > 0 and size["generate_cpu_s"] > 0
    assert "materialised 2 times" in out.stdout
    assert 0 < size["silver_assets_s"] < size["layers_s"]["silver"]
    assert {"ingest_landing", "fit_models", "silver__weekly_features_contract"} <= set(size["steps_s"])
