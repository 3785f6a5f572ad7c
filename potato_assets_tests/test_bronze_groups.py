"""Phase B of bronze ingest finishes a large bucket in groups of whole subjects: the tables and the
quarantine are what one pass per bucket gives, duplicates and label contradictions included."""

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs.bronze import assets as bronze
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


@pytest.mark.parametrize("group_rows", [40, 300])
def test_groups_of_subjects_give_the_one_pass_tables(seed_dir, tmp_path, monkeypatch, group_rows):
    landing = copy_landing(seed_dir, tmp_path / "landing")
    weight = landing / WEIGHT_FILE
    lines = weight.read_text().splitlines()
    # an exact duplicate, a conflicting duplicate and a week label that contradicts the calendar
    fields = lines[5].split(",")
    conflict = ",".join([*fields[:3], "99.5", *fields[4:]])
    wrong_week = lines[9].split(",")
    wrong_week[2] = str(int(wrong_week[2]) + 3)
    weight.write_text("\n".join([*lines, lines[5], conflict, ",".join(wrong_week)]) + "\n")

    one_pass = _ingest(landing, tmp_path / "one")
    monkeypatch.setattr(bronze, "FINISH_GROUP_ROWS", group_rows)
    groups = []
    split = bronze.subject_groups

    def counted(staged, buckets):
        for bucket, read in split(staged, buckets):
            groups.append(bucket)
            yield bucket, read

    monkeypatch.setattr(bronze, "subject_groups", counted)
    grouped = _ingest(landing, tmp_path / "grouped")
    assert len(groups) > len(set(groups))  # some bucket was finished in several groups
    assert len(one_pass["quarantine"]) >= 3
    for name, table in one_pass.items():
        pd.testing.assert_frame_equal(grouped[name], table, obj=name)
