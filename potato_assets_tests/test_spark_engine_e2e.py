"""Silver on the local Spark cluster (#17): the whole graph with POTATO_ENGINE=spark gives the
embedded engine's silver tables (row for row, floats within 1e-12 relative) and its gold, on the
seed study and a 10k cohort; the cluster's REST API shows its executors ran each table's jobs,
and the silver files are Spark's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from potato_assets.defs.resources import build_resources
from potato_assets.lib.engine import spark_cluster as sc
from potato_assets.lib.engine.spark import job_tag
from potato_assets.lib.lake import datasets, storage
from potato_assets.lib.synthetic_landing import write_cohort_streaming
from potato_assets.settings import load_settings
from potato_assets.study import silver
from potato_assets.study.synthetic import CohortSpec
from potato_assets_tests.helpers import materialize_all, read_table, spark_cluster

pytestmark = pytest.mark.e2e
GOLD = ("ols_cluster", "fixed_effects", "mixed_effects", "model_summary")


@pytest.fixture(scope="module")
def cluster(spark_state):
    return spark_cluster(spark_state)


@pytest.fixture(scope="module")
def cohort_10k(tmp_path_factory):
    directory = tmp_path_factory.mktemp("landing-10k")
    write_cohort_streaming(CohortSpec(n_subjects=10_000, seed=17), directory)
    return directory


def _relative_difference(a: pd.Series, b: pd.Series) -> float:
    x, y = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
    assert np.array_equal(np.isnan(x), np.isnan(y)), f"{a.name}: missing in different rows"
    both = ~np.isnan(x)
    if not both.any():
        return 0.0
    scale = np.maximum(np.abs(x[both]), np.finfo("float64").tiny)
    return float(np.max(np.abs(x[both] - y[both]) / scale))


def _tasks_by_executor(cluster: sc.SparkCluster) -> dict[str, int]:
    (app,) = sc.driver_api(cluster)
    return {e["id"]: e["totalTasks"] for e in sc.driver_api(cluster, f"/{app['id']}/executors")}


def _tagged_jobs(cluster: sc.SparkCluster) -> dict[str, int]:
    """Completed jobs per silver table, from the job tags the engine sets."""
    (app,) = sc.driver_api(cluster)
    jobs = sc.driver_api(cluster, f"/{app['id']}/jobs")
    counts = {table: 0 for table in silver.QUERIES}
    for job in jobs:
        for table in counts:
            if job["status"] == "SUCCEEDED" and any(t.endswith(f"_Tag_{job_tag(table)}") for t in job["jobTags"]):
                counts[table] += 1
    return counts


@pytest.mark.parametrize("cohort", ["seed", "10k"])
def test_silver_on_the_cluster_equals_the_embedded_engine_and_gold_follows(
    cohort, cluster, seed_dir, cohort_10k, tmp_path
):
    landing = seed_dir if cohort == "seed" else cohort_10k
    embedded_lake, spark_lake = tmp_path / "embedded", tmp_path / "spark"
    assert materialize_all(landing, embedded_lake).success

    jobs_before, tasks_before = _tagged_jobs(cluster), _tasks_by_executor(cluster)
    engine = build_resources(load_settings({"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": cluster.connect_url}))
    result = materialize_all(landing, spark_lake, resources={"silver_engine": engine["silver_engine"]})
    assert result.success
    for table in silver.QUERIES:
        (materialization,) = result.asset_materializations_for_node(f"silver__{table}")
        assert materialization.metadata["silver/engine"].value == f"spark ({cluster.connect_url})"

    # The cluster did the work: every silver table's jobs ran, on the workers' executors only.
    jobs_after, tasks_after = _tagged_jobs(cluster), _tasks_by_executor(cluster)
    assert all(jobs_after[t] > jobs_before[t] for t in silver.QUERIES), (jobs_before, jobs_after)
    assert tasks_after.pop("driver") == tasks_before.pop("driver", 0) == 0
    assert len(tasks_after) == 2 and all(n > tasks_before.get(e, 0) for e, n in tasks_after.items()), tasks_after

    worst = 0.0
    for table in silver.QUERIES:
        key = f"silver/{table}"
        ref = datasets.current(storage.join(spark_lake.as_uri(), key))
        assert ref is not None and ref.files
        # Spark wrote the parts (its version is in every footer), the step only moved them.
        for f in ref.files:
            footer = pq.read_metadata(storage.to_upath(f"{ref.version_uri}/{f.path}").path).metadata
            assert b"org.apache.spark.version" in footer
        expected, got = read_table(embedded_lake.as_uri(), key), read_table(spark_lake.as_uri(), key)
        assert list(got.columns) == list(expected.columns) and (got.dtypes == expected.dtypes).all(), table
        assert len(got) == len(expected), table
        for column in expected.columns:
            if expected[column].dtype == "float64":
                worst = max(worst, _relative_difference(expected[column], got[column]))
            else:
                pd.testing.assert_series_equal(got[column], expected[column], obj=f"{key}.{column}")
        # The same rows in the same buckets, in the same order within each.
        embedded_ref = datasets.current(storage.join(embedded_lake.as_uri(), key))
        assert [(f.bucket, f.rows) for f in ref.files] == [(f.bucket, f.rows) for f in embedded_ref.files]
        pd.testing.assert_frame_equal(ref.read(), embedded_ref.read(), rtol=1e-12)
    assert worst <= 1e-12, worst

    for name in GOLD:
        expected, got = (
            read_table(embedded_lake.as_uri(), f"gold/models/{name}"),
            read_table(spark_lake.as_uri(), f"gold/models/{name}"),
        )
        # Silver agrees to the last bits or so; the fits amplify that by their conditioning.
        pd.testing.assert_frame_equal(got, expected, rtol=1e-9 if name != "mixed_effects" else 1e-6)
