"""The silver Spark job (lib/engine/emr_job.py), as EMR Serverless would run it, on the local
standalone cluster: `spark-submit` with a classic SparkSession, the job's code from the bundle
(`scripts/spark_job_bundle.py`) on an interpreter without site-packages, and Dagster Pipes
context and messages through PipesSubprocessClient. The step adopts what the job wrote; the
silver tables and the counts it reported equal the embedded engine's on the seed study."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from potato_assets.defs.resources import SilverEngine
from potato_assets.lib.engine import spark_cluster as sc
from potato_assets.lib.engine.spark_job import SparkJobEngine
from potato_assets.lib.lake import datasets, storage
from potato_assets.study import silver
from potato_assets_tests.helpers import REPO, materialize_all, spark_cluster_missing

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def job_cluster(tmp_path_factory):
    """Master and two one-core workers, no Connect server (it would hold every core)."""
    reason = spark_cluster_missing()
    if reason:
        pytest.skip(f"no local Spark cluster: {reason}")
    state = tmp_path_factory.mktemp("spark-jobs")
    try:
        yield sc.start_cluster(state, workers=2, worker_memory="1g", connect=False)
    finally:
        sc.stop_cluster(state)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    subprocess.run([sys.executable, str(REPO / "scripts" / "spark_job_bundle.py"), "--out", str(out)], check=True)
    # The driver's Python: this interpreter's base install without site-packages (-S), so the
    # job imports only the bundle and Spark's own pyspark.zip and py4j (spark-submit's PYTHONPATH).
    python = out / "python-without-site"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    python.write_text(f'#!/bin/sh\nexec {base} -S "$@"\n')
    python.chmod(0o755)
    return out / "emr_job.py", out / "potato_job.zip", python


class SubmittedSparkJobs(SilverEngine):
    """The silver engine with each table's job submitted to the local cluster by spark-submit."""

    state_dir: str = ""
    entry: str = ""
    package: str = ""
    python: str = ""

    def engine(self, context=None):
        def submit(context, table, arguments):
            cluster = sc.read_state(Path(self.state_dir))
            command, env = sc.spark_submit_command(
                cluster, self.entry, arguments, py_files=[self.package], python=self.python
            )
            return dg.PipesSubprocessClient(env=env).run(context=context, command=command)

        return SparkJobEngine("spark-job", context, submit)


def test_the_job_builds_the_embedded_engines_silver_and_reports_its_counts(
    job_cluster, bundle, seed_dir, tmp_path, monkeypatch
):
    # What a process that used Spark Connect leaves in its environment (pyspark sets it), which
    # the submitted job inherits: the job still runs on spark-submit's classic session.
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:1")
    entry, package, python = bundle
    embedded_lake, job_lake = tmp_path / "embedded", tmp_path / "job"
    embedded = materialize_all(seed_dir, embedded_lake)
    assert embedded.success
    engine = SubmittedSparkJobs(
        kind="spark-job", state_dir=job_cluster.state_dir, entry=str(entry), package=str(package), python=str(python)
    )
    result = materialize_all(seed_dir, job_lake, resources={"silver_engine": engine})
    assert result.success

    for table in silver.QUERIES:
        key = f"silver/{table}"
        ref = datasets.current(storage.join(job_lake.as_uri(), key))
        expected = datasets.current(storage.join(embedded_lake.as_uri(), key))
        assert ref is not None and ref.files, table
        # Spark wrote every part (its version is in each footer); the step only moved them.
        for f in ref.files:
            footer = pq.read_metadata(storage.to_upath(f"{ref.version_uri}/{f.path}").path).metadata
            assert b"org.apache.spark.version" in footer, (table, f.path)
        assert [(f.bucket, f.rows) for f in ref.files] == [(f.bucket, f.rows) for f in expected.files], table
        pd.testing.assert_frame_equal(ref.read(), expected.read(), rtol=1e-12)

    # The counts the job reported over Pipes became the same metadata the embedded step gives.
    for table, keys in {
        "weekly_features": ("daily_rows_outside_study_weeks", "food_entries_outside_study_weeks"),
        "modeling_dataset": ("subject_weeks", "dropped_no_outcome", "dropped_missing_predictor", "subjects"),
    }.items():
        (got,) = result.asset_materializations_for_node(f"silver__{table}")
        (want,) = embedded.asset_materializations_for_node(f"silver__{table}")
        for name in keys:
            assert got.metadata[name].value == want.metadata[name].value, (table, name)
