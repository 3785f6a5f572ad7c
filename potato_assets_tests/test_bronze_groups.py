"""Bronze ingest's staging (defs/bronze/staging.py): phase A's rows held in memory, spilled to
scratch before, during or after any file, and a spilled bucket finished in groups of whole
subjects all give the same tables and quarantine, duplicates and label contradictions included."""

import threading

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from potato_assets.defs.bronze import assets as bronze
from potato_assets.defs.bronze import staging
from potato_assets.lib.lake.datasets import current
from potato_assets.study.schema import WEIGHT_FILE
from potato_assets_tests.helpers import copy_landing, resources_for


def _ingest(landing, lake) -> dict[str, pd.DataFrame]:
    result = dg.materialize([bronze.ingest_landing], resources=resources_for(landing, lake))
    assert result.success
    tables = {}
    for name in ("fiber", "nutrition", "weight"):
        ref = current(f"{lake}/bronze/{name}")
        tables[name] = ref.read().sort_values("source_line", ignore_index=True).drop(columns="ingested_at")
    tables["quarantine"] = pd.read_parquet(f"{lake}/bronze/quarantine.parquet")
    return tables


def _landing_with_row_defects(seed_dir, path):
    landing = copy_landing(seed_dir, path)
    weight = landing / WEIGHT_FILE
    lines = weight.read_text().splitlines()
    # an exact duplicate, a conflicting duplicate, a week label that contradicts the calendar
    # and an unparseable weight (phase A quarantines it)
    fields = lines[5].split(",")
    conflict = ",".join([*fields[:3], "99.5", *fields[4:]])
    wrong_week = lines[9].split(",")
    wrong_week[2] = str(int(wrong_week[2]) + 3)
    bad_value = lines[12].split(",")
    bad_value[3] = "heavy"
    weight.write_text("\n".join([*lines, lines[5], conflict, ",".join(wrong_week), ",".join(bad_value)]) + "\n")
    return landing


@pytest.mark.parametrize("group_rows", [40, 300])
def test_groups_of_subjects_give_the_one_pass_tables(seed_dir, tmp_path, monkeypatch, group_rows):
    landing = _landing_with_row_defects(seed_dir, tmp_path / "landing")
    one_pass = _ingest(landing, tmp_path / "one")
    monkeypatch.setattr(staging, "IN_MEMORY_ROWS", 0)
    monkeypatch.setattr(staging, "FINISH_GROUP_ROWS", group_rows)
    groups = []
    split = staging.Staging.groups

    def counted(self):
        for bucket, rows in split(self):
            groups.append(bucket)
            yield bucket, rows

    monkeypatch.setattr(staging.Staging, "groups", counted)
    grouped = _ingest(landing, tmp_path / "grouped")
    assert len(groups) > len(set(groups))  # some bucket was finished in several groups
    assert len(one_pass["quarantine"]) >= 4
    for name, table in one_pass.items():
        pd.testing.assert_frame_equal(grouped[name], table, obj=name)


# Phase A reads nutrition (3,060 seed rows, one batch, 164 kB), weight (600 + 4 added, 41 kB),
# fiber (3,637, 100 kB). A row budget spills with nutrition's batch (0, 700), with weight's
# (3,500: nutrition already closed) or with fiber's (4,000); a byte budget before any row is held
# (0), before weight's (180 kB) or before fiber's (250 kB); None: all held in memory.
@pytest.mark.parametrize(
    "budget",
    [
        ("rows", 0),
        ("rows", 700),
        ("rows", 3_500),
        ("rows", 4_000),
        ("bytes", 0),
        ("bytes", 180_000),
        ("bytes", 250_000),
        None,
    ],
)
def test_held_and_spilled_rows_give_the_same_tables(seed_dir, tmp_path, monkeypatch, budget):
    landing = _landing_with_row_defects(seed_dir, tmp_path / "landing")
    monkeypatch.setattr(staging, "IN_MEMORY_ROWS", 10**9)
    monkeypatch.setattr(staging, "IN_MEMORY_BYTES", 10**12)
    held = _ingest(landing, tmp_path / "held")
    spills = []
    spill = staging.Staging._spill

    def counted(self):
        spills.append(sorted(self._held))
        spill(self)

    monkeypatch.setattr(staging.Staging, "_spill", counted)
    if budget is not None:
        kind, limit = budget
        monkeypatch.setattr(staging, "IN_MEMORY_ROWS" if kind == "rows" else "IN_MEMORY_BYTES", limit)
    other = _ingest(landing, tmp_path / "other")
    assert len(spills) == (0 if budget is None else 1)
    if budget is not None and budget[0] == "bytes":
        # a byte budget spills before the file that crosses it is held
        expected = {
            0: [],
            180_000: ["Potato_nutrition_rows.csv"],
            250_000: ["Potato_nutrition_rows.csv", "Potato_tidy.csv"],
        }
        assert spills[0] == expected[budget[1]]
    for name, table in held.items():
        pd.testing.assert_frame_equal(other[name], table, obj=name)


def _staged(tmp_path, buckets: int) -> staging.Staging:
    """Two files' rows spilled to scratch in 7 buckets: bucket 1 empty, bucket 3 of 30 rows, the
    others of 54-60 rows."""
    rng = np.random.default_rng(11)
    stage = staging.Staging(str(tmp_path / "scratch"), buckets)
    for name, subjects, rows_each in (("a.csv", np.arange(1, 60), 6), ("b.csv", np.arange(2, 30, 2), 3)):
        subjects = subjects[(subjects % buckets != 1) & ((subjects % buckets != 3) | (subjects < 30))]
        ids = np.repeat(subjects, rows_each)
        rows = pd.DataFrame(
            {
                "subject_id": ids,
                "line": np.arange(len(ids)),
                "value": rng.random(len(ids)),
                "text": [f"r{i}" if i % 4 else None for i in range(len(ids))],
            }
        )
        for start in range(0, len(rows), 50):
            stage.add(name, rows.iloc[start : start + 50], 10**6)
        stage.close(name)
    return stage


def test_prefetched_scratch_buckets_give_the_same_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "IN_MEMORY_ROWS", 0)
    monkeypatch.setattr(staging, "FINISH_GROUP_ROWS", 40)  # buckets of 0, <=40 and >40 rows
    seen = {}
    for prefetch in (False, True):
        monkeypatch.setattr(staging, "PREFETCH", prefetch)
        stage = _staged(tmp_path / str(prefetch), buckets=7)
        seen[prefetch] = list(stage.groups())
        stage.discard()
    assert [b for b, _ in seen[True]] == [b for b, _ in seen[False]]
    # an empty bucket and one of 30 rows whole, the others in two groups
    assert [b for b, _ in seen[True]] == [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 6]
    assert [sum(len(f) for f in frames.values()) for b, frames in seen[True] if b in (1, 3)] == [0, 30]
    for (_, with_prefetch), (_, without) in zip(seen[True], seen[False], strict=True):
        assert list(with_prefetch) == list(without) == ["a.csv", "b.csv"]
        for name in without:
            pd.testing.assert_frame_equal(with_prefetch[name], without[name], obj=name)
    assert not [t for t in threading.enumerate() if t.name.startswith("staging-prefetch")]


def test_discarding_mid_groups_waits_for_the_read_ahead(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "IN_MEMORY_ROWS", 0)
    stage = _staged(tmp_path, buckets=7)
    groups = stage.groups()
    next(groups)  # bucket 0 handed over, bucket 1 being read
    stage.discard()
    assert not [t for t in threading.enumerate() if t.name.startswith("staging-prefetch")]
    groups.close()
