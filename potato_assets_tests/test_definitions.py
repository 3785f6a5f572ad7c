"""The definitions load fast, without heavy imports, and match the committed snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from potato_assets_tests.helpers import load_defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
# Imported by steps when they run, never by loading the definitions (code server, daemon, CLI).
HEAVY = (
    "statsmodels",
    "linearmodels",
    "matplotlib",
    "great_expectations",
    "mlflow",
    "scipy",
    "pandas",
    "numpy",
    "pyarrow",
)


def describe_definitions() -> dict:
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "materializable": node.is_materializable,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "code_version": node.code_version,
            "freshness_policy": type(node.freshness_policy).__name__ if node.freshness_policy else None,
            "automation_condition": node.automation_condition.name if node.automation_condition else None,
        }
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
        "resources": sorted(defs.resources or {}),
    }


def test_definitions_match_snapshot():
    current = describe_definitions()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "definitions changed: review, then rerun with UPDATE_SNAPSHOTS=1"


def test_required_asset_keys_exist():
    keys = set(describe_definitions()["assets"])
    required = {
        "bronze/nutrition",
        "bronze/weight",
        "bronze/fiber",
        "silver/subject_trajectories",
        "silver/weekly_features",
        "silver/modeling_dataset",
        "gold/models/ols_cluster",
        "gold/models/fixed_effects",
        "gold/models/mixed_effects",
        "gold/models/model_summary",
    }
    assert required <= keys
    assert any(k.startswith("gold/reports/") for k in keys)
    assert any(k.startswith("gold/figures/") for k in keys)


def test_loading_definitions_imports_no_statistics_or_dataframe_stack():
    code = (
        "import sys\n"
        "from potato_assets.definitions import defs\n"
        "defs()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_table_and_table_input_is_typed():
    """Bronze and silver tables flow as LakeDataset references (never rows), gold tables and the
    quarantine as DataFrames; every table input says which it takes."""
    import dagster as dg
    import pandas as pd

    from potato_assets.defs.common import DataFrame, LakeDataset

    job = load_defs().resolve_implicit_global_asset_job_def()
    outputs, inputs = {}, {}
    for node in job.graph.node_defs:
        outputs |= {f"{node.name}.{out.name}": out.dagster_type.key for out in node.output_defs}
        inputs |= {f"{node.name}<{inp.name}": inp.dagster_type.key for inp in node.input_defs}
    silver = ("study_calendar", "subject_trajectories", "weekly_features", "modeling_dataset")
    datasets = {
        **{f"ingest_landing.bronze__{name}": "LakeDataset" for name in ("weight", "fiber", "nutrition")},
        **{f"silver__{name}.result": "LakeDataset" for name in silver},
    }
    table_steps = {"ingest_landing", "fit_models", *(f"silver__{name}" for name in silver)}
    tables = {k: v for k, v in outputs.items() if k.split(".")[0] in table_steps}
    assert len(tables) == 4 + 4 + 4, tables
    assert {k: v for k, v in tables.items() if v == "LakeDataset"} == datasets
    assert {v for k, v in tables.items() if k not in datasets} == {"DataFrame"}
    # figures, the report and the checks write no table
    assert {v for k, v in outputs.items() if k not in tables} <= {"Any", "Nothing"}
    loaded = {k: v for k, v in inputs.items() if v != "Nothing"}
    assert "gold__reports__model_report<summary" in loaded and "fit_models<modeling" in loaded
    silver_inputs = {k: v for k, v in loaded.items() if k.split("<")[0] in {f"silver__{n}" for n in silver}}
    assert silver_inputs and set(silver_inputs.values()) == {"LakeDataset"}, silver_inputs
    # A contract check takes what the lake holds: a DatasetRef (read in batches) or a DataFrame;
    # gold reads the silver tables as references, bucket by bucket (gold/assets.py SILVER_TABLE).
    by_reference = {
        "fit_models<modeling",
        "gold__figures__fiber_vs_weight_change<modeling",
        "gold__figures__subject_trajectories<trajectories",
        "gold__reports__model_report<modeling",
        "gold__reports__model_report<trajectories",
        *(k for k in loaded if k.endswith("_contract<value")),
    }
    assert len(by_reference) == 5 + 7
    assert {k for k, v in loaded.items() if v == "Any"} == by_reference, loaded
    assert {v for k, v in loaded.items() if k not in by_reference} <= {"DataFrame", "LakeDataset"}, loaded
    assert dg.check_dagster_type(DataFrame, pd.DataFrame({"a": [1]})).success
    assert not dg.check_dagster_type(DataFrame, {"a": [1]}).success
    assert not dg.check_dagster_type(LakeDataset, pd.DataFrame({"a": [1]})).success


def test_descriptions_are_plain_text():
    # The UI shows asset and check descriptions as plain text in lists and the graph: no Markdown.
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    described = {key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()}
    for checks_def in defs.asset_checks or []:
        for spec in checks_def.check_specs:
            described[f"{spec.asset_key.to_user_string()}:{spec.name}"] = spec.description
    for sensor in defs.sensors or []:
        described[sensor.name] = sensor.description
    marked = {name: text for name, text in described.items() if text and "`" in text}
    assert not marked, marked
