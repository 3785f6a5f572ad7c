"""The streaming landing writer: the same bytes as the whole-cohort writer whatever the chunk
size, and a failed write leaves the previous files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from potato_assets.lib import synthetic_landing
from potato_assets.lib.synthetic_landing import write_cohort_streaming
from potato_assets.study import schema, synthetic
from potato_assets.study.synthetic import CohortSpec, write_cohort
from potato_assets_tests.helpers import REPO, SAMPLE_DIR

SPEC = CohortSpec(n_subjects=45, n_weeks=4, seed=11)


def read_all(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("blocks", [synthetic.STREAM_BLOCK_SUBJECTS, 8])
def test_streamed_files_equal_the_whole_cohort_files_byte_for_byte(tmp_path, monkeypatch, blocks):
    monkeypatch.setattr(synthetic, "STREAM_BLOCK_SUBJECTS", blocks)
    whole = read_all(write_cohort(SPEC, tmp_path / "whole") and tmp_path / "whole")
    for chunk_subjects in (1, 6, 8, 45, 100):
        out = tmp_path / f"c{chunk_subjects}"
        paths = write_cohort_streaming(SPEC, out, chunk_subjects)
        assert set(paths) == {f.file_name for f in schema.LANDING_FILES}
        assert read_all(out) == whole, f"chunks of {chunk_subjects}, blocks of {blocks}"


def test_the_bundled_sample_is_the_streamed_default_cohort(tmp_path):
    write_cohort_streaming(CohortSpec(), tmp_path, chunk_subjects=16)
    for landing in schema.LANDING_FILES:
        assert (tmp_path / landing.file_name).read_bytes() == (SAMPLE_DIR / landing.file_name).read_bytes()


def test_a_write_failing_mid_stream_leaves_the_old_files_and_no_temp_files(tmp_path, monkeypatch):
    write_cohort_streaming(SPEC, tmp_path, 10)
    before = read_all(tmp_path)
    calls = []
    real = synthetic_landing.landing_arrow_table

    def fail_on_the_second_chunk(frame, landing):
        calls.append(landing.file_name)
        if len(calls) > len(schema.LANDING_FILES):
            raise OSError("disk full")
        return real(frame, landing)

    monkeypatch.setattr(synthetic_landing, "landing_arrow_table", fail_on_the_second_chunk)
    with pytest.raises(OSError, match="disk full"):
        write_cohort_streaming(dataclasses.replace(SPEC, seed=99), tmp_path, 10)
    assert read_all(tmp_path) == before


def test_cli_reports_size_speed_and_memory(tmp_path):
    cmd = [sys.executable, "-m", "potato_assets.lib.synthetic_landing", "--subjects", "30", "--weeks", "3"]
    cmd += ["--seed", "5", "--chunk-subjects", "7", "--out", str(tmp_path / "cli")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "30 subjects x 3 weeks, seed 5, chunks of 7:" in result.stdout and "MB/s, peak RSS" in result.stdout
    expected = write_cohort(CohortSpec(n_subjects=30, n_weeks=3, seed=5), tmp_path / "api")
    assert read_all(tmp_path / "cli") == read_all(tmp_path / "api") and len(expected) == 3
