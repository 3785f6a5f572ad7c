"""The checks-only jobs: every asset check against the lake as it is, reading and never writing.

The e2e tests build one lake on the sample with the real CLI, then run `python -m
potato_assets.lake_checks` (what `make checks` runs) against it and hash every file of the lake
before and after each run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from potato_assets import lake_checks
from potato_assets.defs import checks_job
from potato_assets.settings import BUNDLED_CONTRACTS_DIR, load_settings
from potato_assets_tests.helpers import REPO, cli_env, cli_home, load_defs, read_table, run_cli

CHECKS_CLI = [sys.executable, "-m", "potato_assets.lake_checks"]


# --- the jobs ---------------------------------------------------------------------------------


def _job(name: str) -> dg.JobDefinition:
    return load_defs().resolve_job_def(name)


def _check_names(job: dg.JobDefinition) -> set[str]:
    return {f"{k.asset_key.to_user_string()}:{k.name}" for k in job.asset_layer.asset_graph.asset_check_keys}


def test_lake_checks_jobs_select_checks_and_no_asset():
    all_checks = {
        f"{k.asset_key.to_user_string()}:{k.name}" for k in load_defs().resolve_asset_graph().asset_check_keys
    }
    tracking = {c for c in all_checks if c.endswith(":experiment_tracking")}
    assert tracking, "the gold experiment_tracking checks exist"
    full = _job("lake_checks")
    assert not full.asset_layer.executable_asset_keys  # nothing to materialise
    assert _check_names(full) == all_checks - tracking
    by_layer = {layer: _check_names(_job(checks_job.job_name(layer))) for layer in checks_job.LAYERS}
    for layer, names in by_layer.items():
        assert names and all(n.startswith(f"{layer}/") for n in names), layer
        assert not _job(checks_job.job_name(layer)).asset_layer.executable_asset_keys
    assert set().union(*by_layer.values()) == _check_names(full)
    # Only check steps: one op per check, none of them an asset's.
    assert len(full.graph.node_dict) == len(all_checks - tracking)


def test_cli_and_definitions_agree_on_job_names():
    for layer in (None, *checks_job.LAYERS):
        assert lake_checks.job_name(layer) == checks_job.job_name(layer)
    assert tuple(lake_checks.LAYERS) == checks_job.LAYERS
    with pytest.raises(ValueError, match="platinum"):
        checks_job.job_name("platinum")


def test_contracts_dir_setting(tmp_path):
    assert load_settings({}).contracts_dir == BUNDLED_CONTRACTS_DIR
    assert load_settings({"POTATO_CONTRACTS_DIR": str(tmp_path)}).contracts_dir == tmp_path.resolve()
    with pytest.raises(ValueError, match="POTATO_CONTRACTS_DIR='/nowhere/at/all' is not a directory"):
        load_settings({"POTATO_CONTRACTS_DIR": "/nowhere/at/all"})


# --- the verdict and the exit code ------------------------------------------------------------


def _summary(*verdicts: lake_checks.Verdict) -> lake_checks.Summary:
    return lake_checks.Summary("run-1", "lake_checks", "SUCCESS", list(verdicts))


def test_exit_code_is_non_zero_only_for_error_failures_and_checks_that_could_not_run():
    ok = lake_checks.Verdict("bronze/weight:contract", "passed", "ERROR", True)
    warned = lake_checks.Verdict("gold/models/model_summary:fiber_estimates_agree", "warned", "WARN")
    failed = lake_checks.Verdict("silver/weekly_features:contract", "failed", "ERROR", True, "x", ["rule r [critical]"])
    errored = lake_checks.Verdict("silver/study_calendar:contract", "errored", description="no such table")
    assert _summary(ok).exit_code == 0
    assert _summary(ok, warned).exit_code == 0
    assert _summary(ok, warned, failed).exit_code == 1
    assert _summary(ok, errored).exit_code == 1
    assert _summary().exit_code == 1  # a run that judged nothing passes nothing
    text = lake_checks.render(_summary(ok, warned, failed), "file:///lake", BUNDLED_CONTRACTS_DIR)
    assert "FAILED  silver/weekly_features:contract [ERROR, blocking]" in text
    assert "rule r [critical]" in text
    assert "warned  gold/models/model_summary:fiber_estimates_agree [WARN]" in text
    assert "3 checks: 1 passed, 1 warned, 1 failed, 0 could not run." in text


def test_failing_rules_name_the_rule_its_reason_and_examples():
    # The shape defs/contract_checks.py writes: every rule's outcome in one `rules` entry.
    metadata = {
        "rules": dg.MetadataValue.json(
            {
                "weight_kg_range": {
                    "success": False,
                    "severity": "critical",
                    "unexpected_count": 3,
                    "unexpected_examples": [{"source_line": 7}],
                    "why": "plausible adult weights",
                },
                "not_empty": {"success": True, "severity": "critical"},
            }
        ),
        "rows_checked": 10,
    }
    assert lake_checks._failing_rules(metadata) == [
        "rule weight_kg_range [critical]: 3 unexpected, e.g. [{'source_line': 7}] (rule: plausible adult weights)"
    ]


def test_without_dagster_home_the_command_refuses_in_one_sentence(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert lake_checks.main([]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err


# --- against a built lake ---------------------------------------------------------------------


def lake_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under the lake (hidden ones too), by path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory, sample_dir):
    """A lake built from the sample by `dagster asset materialize` (what CI's main checkout does)."""
    root = tmp_path_factory.mktemp("lake_checks")
    home = cli_home(root)
    env = cli_env(home, sample_dir, root / "lake", POTATO_MLFLOW_REQUIRED="false")
    proc = run_cli(env, REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, home, env


def _run_checks(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CHECKS_CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )


def _tightened_contracts(target: Path, lake: Path) -> float:
    """A copy of the contracts whose weight_kg_range ends at the stored weights' median."""
    shutil.copytree(BUNDLED_CONTRACTS_DIR, target)
    median = float(read_table(lake.as_uri(), "bronze/weight")["weight_kg"].median())
    path = target / "bronze_weight.json"
    suite = json.loads(path.read_text())
    (rule,) = [e for e in suite["expectations"] if e["meta"]["rule"] == "weight_kg_range"]
    rule["kwargs"]["max_value"] = median
    path.write_text(json.dumps(suite, indent=2))
    return median


@pytest.mark.e2e
def test_a_tightened_contract_fails_on_the_lake_the_unchanged_one_passes_and_nothing_is_written(
    built_lake, tmp_path, monkeypatch, capsys
):
    root, _, build_env = built_lake
    lake = root / "lake"
    # A fresh instance, as in CI against the production lake: no record of any materialisation.
    home = cli_home(tmp_path)
    env = {**build_env, "DAGSTER_HOME": str(home)}
    tightened = tmp_path / "contracts"
    _tightened_contracts(tightened, lake)
    before = lake_digest(lake)

    failing = _run_checks({**env, "POTATO_CONTRACTS_DIR": str(tightened)}, "--layer", "bronze")
    assert failing.returncode == 1, failing.stdout[-3000:] + failing.stderr[-3000:]
    assert "FAILED  bronze/weight:contract [ERROR, blocking]" in failing.stdout
    assert "rule weight_kg_range [critical]:" in failing.stdout
    assert "FAILED: 1 check(s) failed with ERROR or could not run: bronze/weight:contract." in failing.stdout
    assert lake_digest(lake) == before

    passing = _run_checks(env, "--layer", "bronze")
    assert passing.returncode == 0, passing.stdout[-3000:] + passing.stderr[-3000:]
    assert "6 checks: 6 passed, 0 warned, 0 failed, 0 could not run." in passing.stdout
    assert lake_digest(lake) == before

    # The results are the instance's (the UI shows them); the quarantine gate judged the lake alone.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["lake_checks_bronze", "lake_checks_bronze"]
        assert not instance.get_records_for_run(
            runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        gate = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(["bronze", "weight"]), "quarantine_share"), limit=1
        )[0]
        assert gate.run_id == runs[0].run_id
        evaluation = gate.event.dagster_event.event_specific_data
        assert evaluation.passed
        assert evaluation.metadata["counted_from"].value == "lake"
        assert "counted from the lake alone" in evaluation.description

    # --run-id judges a finished run again (e.g. one launched from the UI): newest first.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("POTATO_LAKE_URI", str(lake))
    assert lake_checks.main(["--run-id", runs[0].run_id]) == 0
    assert lake_checks.main(["--run-id", runs[1].run_id]) == 1
    assert "rule weight_kg_range [critical]:" in capsys.readouterr().out
    assert lake_checks.main(["--run-id", "no-such-run"]) == 2


@pytest.mark.e2e
def test_every_check_runs_on_the_instance_that_built_the_lake_and_writes_nothing(built_lake):
    root, _, env = built_lake
    lake = root / "lake"
    before = lake_digest(lake)
    proc = _run_checks(env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = len(_check_names(_job("lake_checks")))
    assert f"{expected} checks: {expected} passed" in proc.stdout
    assert "dagster job execute -m potato_assets.definitions -j lake_checks" in proc.stdout
    assert lake_digest(lake) == before
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        gate = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(["bronze", "weight"]), "quarantine_share"), limit=1
        )[0]
        # This instance wrote the table: its exact counts (duplicates included) are used.
        assert gate.event.dagster_event.event_specific_data.metadata["counted_from"].value == "materialisation"


def _bucket_digest(s3, bucket: str) -> dict[str, str]:
    """sha256 of every object in the bucket (not only under the lake), by key."""
    digests = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            digests[item["Key"]] = hashlib.sha256(body).hexdigest()
    return digests


@pytest.mark.e2e
def test_on_an_s3_lake_a_failing_rule_and_a_missing_table_fail_the_run_and_no_object_changes(
    built_lake, moto_s3, tmp_path
):
    root, _, build_env = built_lake
    lake = root / "lake"
    bucket = "lake-checks-e2e"
    moto_s3.create_bucket(Bucket=bucket)
    for path in sorted(lake.rglob("*")):
        key = f"lake/{path.relative_to(lake).as_posix()}"
        if path.is_file() and not key.startswith("lake/silver/study_calendar/"):  # one table missing
            moto_s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    tightened = tmp_path / "contracts"
    _tightened_contracts(tightened, lake)
    env = {
        **build_env,
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        "DAGSTER_HOME": str(cli_home(tmp_path)),
        "POTATO_LAKE_URI": f"s3://{bucket}/lake",
        "POTATO_CONTRACTS_DIR": str(tightened),
    }
    before = _bucket_digest(moto_s3, bucket)

    proc = _run_checks(env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"Asset checks against the lake s3://{bucket}/lake" in out
    assert "FAILED  bronze/weight:contract [ERROR, blocking]" in out
    assert "rule weight_kg_range [critical]:" in out
    # The check that could not load its table is named, with the reason, not silently skipped.
    assert "ERRORED silver/study_calendar:contract" in out
    assert "study_calendar.parquet" in out.split("ERRORED silver/study_calendar:contract", 1)[1].splitlines()[1]
    expected = len(_check_names(_job("lake_checks")))
    assert f"{expected} checks: {expected - 2} passed, 0 warned, 1 failed, 1 could not run." in out
    assert _bucket_digest(moto_s3, bucket) == before
