"""The report of a real run says what it ran on: the landing files' own hashes and the row counts."""

from __future__ import annotations

import hashlib
import re

import pytest

from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import materialize_all, read_table

pytestmark = pytest.mark.e2e
ACCOUNTING = re.compile(r"(\d+) subject-weeks → (\d+) modelled: (\d+) without an outcome \([^)]*\), (\d+) missing")


def test_report_provenance_matches_the_landing_files_and_the_rows_add_up(sample_dir, tmp_path):
    lake = tmp_path / "lake"
    result = materialize_all(sample_dir, lake)
    assert result.success
    md = (lake / "gold/reports/model_report.md").read_text(encoding="utf-8")
    html = (lake / "gold/reports/model_report.html").read_text(encoding="utf-8")
    for spec in LANDING_FILES:
        digest = hashlib.sha256((sample_dir / spec.file_name).read_bytes()).hexdigest()
        assert digest in md and digest in html, spec.file_name
        bronze = read_table(lake.as_uri(), f"bronze/{spec.asset_name}")
        # Per file: read = quarantined + duplicates dropped + kept, and kept is the bronze table.
        row = next(
            line for line in md.splitlines() if line.startswith(f"| `{spec.file_name}` | ") and digest not in line
        )
        read, quarantined, duplicates, kept = map(int, row.strip(" |").split(" | ")[1:])
        assert read == quarantined + duplicates + kept and kept == len(bronze), row
    for out in (md, html):
        assert "synthetic sample: do not cite these results" in out
        assert result.run_id in out
    n, modelled, no_outcome, missing = map(int, ACCOUNTING.search(md).groups())
    assert n == modelled + no_outcome + missing
    assert modelled == len(read_table(lake.as_uri(), "silver/modeling_dataset"))
    assert "do not add up" not in md
