"""The production instance on a real PostgreSQL: deploy/dagster.postgres.yaml as shipped, a
private cluster on loopback with SSL required (potato_assets_tests/pg.py), step logs and MLflow
artifacts in S3 (moto's server).

- `dagster asset materialize --select '*'` on that instance, tracking to an `mlflow server` whose
  store is the same cluster: the run, its events, its compute logs and the MLflow runs land where
  production keeps them.
- `dagster-webserver` and `dagster-daemon run` as separate processes on one instance: a landing
  drop becomes gold, and the webserver reports the same runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dagster_postgres import PostgresRunStorage

from potato_assets.study.models import MODEL_NAMES
from potato_assets.study.schema import FIBER_FILE, NUTRITION_FILE, WEIGHT_FILE
from potato_assets_tests import pg
from potato_assets_tests.helpers import (
    MATERIALIZE_ALL,
    REPO,
    Processes,
    free_port,
    graphql,
    load_defs,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
PRODUCTION_YAML = REPO / "deploy" / "dagster.postgres.yaml"
COMPUTE_LOG_BUCKET = "potato-test-compute-logs"
COMPUTE_LOG_PREFIX = "dagster/compute-logs"
MLFLOW_BUCKET = "potato-test-mlflow-artifacts"
REPORT_KEY = dg.AssetKey(["gold", "reports", "model_report"])


@pytest.fixture(scope="module")
def cluster():
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg.private_cluster() as started:
        yield started


def production_home(root: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the production file, unchanged."""
    home = root / "home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    return home


def production_env(
    cluster: pg.PostgresCluster, db_name: str, home: Path, bucket: str = COMPUTE_LOG_BUCKET, **extra: str
) -> dict[str, str]:
    # AWS_* (moto's endpoint and test keys) come from the moto_s3 fixture through os.environ.
    return {
        **os.environ,
        **cluster.dagster_env(db_name),
        "DAGSTER_HOME": str(home),
        "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
        "GX_ANALYTICS_ENABLED": "false",
        **extra,
    }


@contextlib.contextmanager
def production_instance(env: dict[str, str]):
    """The instance a process with ``env`` opens (its yaml reads DAGSTER_PG_* from the environment)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        instance = dg.DagsterInstance.get()
        try:
            yield instance
        finally:
            instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_mlflow_server(cluster: pg.PostgresCluster, processes: Processes, cwd: Path) -> str:
    cluster.create_database("mlflow")
    port = free_port()
    cmd = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", cluster.url("mlflow"),
        "--default-artifact-root", f"s3://{MLFLOW_BUCKET}/mlflow", "--no-serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    processes.start("mlflow", cmd, {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, cwd)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, 180, "mlflow server to answer /health", processes)
    return url


@pytest.fixture(scope="module")
def production_run(cluster, moto_s3, sample_dir, tmp_path_factory):
    """One `dagster asset materialize --select '*'` on the production instance, tracking to an
    MLflow server on the same cluster."""
    root = tmp_path_factory.mktemp("pg-cli")
    moto_s3.create_bucket(Bucket=COMPUTE_LOG_BUCKET)
    moto_s3.create_bucket(Bucket=MLFLOW_BUCKET)
    processes = Processes(root)
    try:
        mlflow_url = start_mlflow_server(cluster, processes, root)
        db_name = cluster.create_database("dagster_cli")
        home = production_home(root)
        env = production_env(
            cluster,
            db_name,
            home,
            POTATO_LANDING_URI=str(sample_dir),
            POTATO_LAKE_URI=str(root / "lake"),
            MLFLOW_TRACKING_URI=mlflow_url,
            POTATO_MLFLOW_REQUIRED="true",
        )
        started = time.monotonic()
        result = run_cli(env, root, MATERIALIZE_ALL)
        yield {
            "result": result,
            "seconds": time.monotonic() - started,
            "db": db_name,
            "env": env,
            "mlflow_url": mlflow_url,
            "lake": root / "lake",
            "s3": moto_s3,
        }
    finally:
        processes.stop_all()


def test_materialize_on_the_production_instance_writes_runs_events_and_compute_logs(cluster, production_run):
    result = production_run["result"]
    assert result.returncode == 0, result.stderr[-4000:]
    db = production_run["db"]
    [(run_id, status)] = cluster.query(db, "SELECT run_id, status FROM runs")
    assert status == "SUCCESS"
    materialized = {
        key
        for (key,) in cluster.query(
            db,
            "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        )
    }
    expected = {
        dg.AssetKey(k.path).to_string()
        for k in load_defs().resolve_asset_graph().get_all_asset_keys()
        if k.path[0] != "landing"
    }
    assert materialized == expected
    # The instance the CLI wrote is the one the daemon and webserver would read.
    with production_instance(production_run["env"]) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        report = instance.get_latest_materialization_event(REPORT_KEY)
        assert report is not None and report.run_id == run_id
    # Every step's stderr (the step's log lines) was uploaded under the configured prefix.
    s3 = production_run["s3"]
    listing = s3.list_objects_v2(Bucket=COMPUTE_LOG_BUCKET, Prefix=f"{COMPUTE_LOG_PREFIX}/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert keys and all(run_id in k for k in keys), keys
    errs = [k for k in keys if k.endswith(".err")]
    assert errs, keys
    body = s3.get_object(Bucket=COMPUTE_LOG_BUCKET, Key=errs[0])["Body"].read().decode()
    assert "STEP_START" in body or "Started execution of step" in body, body[:2000]


def test_the_model_runs_are_tracked_to_an_mlflow_server_on_postgres_with_s3_artifacts(cluster, production_run):
    from mlflow import MlflowClient

    assert production_run["result"].returncode == 0, production_run["result"].stderr[-4000:]
    client = MlflowClient(tracking_uri=production_run["mlflow_url"])
    [(dagster_run_id,)] = cluster.query(production_run["db"], "SELECT run_id FROM runs")
    for name in MODEL_NAMES:
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, f"no MLflow experiment {name}"
        assert experiment.artifact_location.startswith(f"s3://{MLFLOW_BUCKET}/mlflow/")
        [run] = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.data.tags["dagster.run_id"] == dagster_run_id
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts, f"{name}: no artifacts"
    # The server's store is the Postgres database, its artifacts the S3 bucket.
    stored = {
        name
        for (name,) in cluster.query("mlflow", "SELECT e.name FROM runs r JOIN experiments e USING (experiment_id)")
    }
    assert stored == set(MODEL_NAMES)
    objects = production_run["s3"].list_objects_v2(Bucket=MLFLOW_BUCKET, Prefix="mlflow/").get("Contents", [])
    assert any(o["Key"].endswith(".csv") and o["Size"] > 0 for o in objects), [o["Key"] for o in objects]


def test_the_production_storage_pools_its_connections(cluster, moto_s3, tmp_path):
    """One connection serves a run of event writes (dagster-postgres alone opens one per write),
    and a run worker rebuilding the instance from its ref gets the same pooled storage."""
    import sqlalchemy

    from potato_assets.lib.pg_storage import PooledPostgresEventLogStorage, PooledPostgresRunStorage

    db_name = cluster.create_database("dagster_pool")
    env = production_env(cluster, db_name, production_home(tmp_path))
    with production_instance(env) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        connects = []
        sqlalchemy.event.listen(storage._engine, "connect", lambda *_: connects.append(1))  # noqa: SLF001
        for _ in range(30):
            instance.report_runless_asset_event(dg.AssetMaterialization("pooled"))
        assert len(connects) <= 2, len(connects)
        assert len(instance.fetch_materializations(dg.AssetKey("pooled"), limit=50).records) == 30
        # Every connection the cluster sees uses SSL.
        ssl = cluster.query(
            db_name,
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = %s",
            (db_name,),
        )
        assert ssl == [(True,)]
        rebuilt = dg.DagsterInstance.from_ref(instance.get_ref())
        try:
            assert isinstance(rebuilt.event_log_storage, PooledPostgresEventLogStorage)
            assert isinstance(rebuilt.run_storage, PooledPostgresRunStorage)
        finally:
            rebuilt.dispose()


def test_webserver_and_daemon_on_postgres_take_a_landing_drop_to_gold(cluster, moto_s3, sample_dir, tmp_path):
    moto_s3.create_bucket(Bucket=f"{COMPUTE_LOG_BUCKET}-daemon")
    db_name = cluster.create_database("dagster_daemon")
    home = production_home(tmp_path)
    landing = tmp_path / "landing"
    landing.mkdir()
    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: potato_assets\n"
    )
    env = production_env(
        cluster,
        db_name,
        home,
        f"{COMPUTE_LOG_BUCKET}-daemon",
        POTATO_LANDING_URI=str(landing),
        POTATO_LAKE_URI=str(tmp_path / "lake"),
        POTATO_LANDING_POLL_SECONDS="5",
        # Keep the daily refresh out of the test window whatever the clock says.
        POTATO_SCHEDULE_CRON="0 0 29 2 *",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    processes = Processes(tmp_path)
    try:
        processes.start(
            "code_server",
            [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port),
             "-m", "potato_assets.definitions"],
            env,
            tmp_path,
        )  # fmt: skip
        processes.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, tmp_path)
        processes.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)],
            env,
            tmp_path,
        )
        web = f"http://127.0.0.1:{web_port}"

        def location_loaded() -> bool:
            try:
                data = graphql(
                    web,
                    "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }",
                )
            except OSError:
                return False
            entries = data["workspaceOrError"].get("locationEntries") or []
            return any((e.get("locationOrLoadError") or {}).get("__typename") == "RepositoryLocation" for e in entries)

        wait_for(location_loaded, 180, "the webserver to load the code location", processes, interval=2)
        for name in (NUTRITION_FILE, WEIGHT_FILE, FIBER_FILE):
            shutil.copy(sample_dir / name, landing / name)

        def report_materialised():
            rows = cluster.query(
                db_name,
                "SELECT run_id FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
                (REPORT_KEY.to_string(),),
            )
            if not rows and cluster.query(db_name, "SELECT run_id FROM runs WHERE status = 'FAILURE'"):
                raise pytest.fail.Exception("a run failed")  # no need to wait out the timeout
            return rows[0][0] if rows else None

        try:
            report_run = wait_for(
                report_materialised, 420, "the daemon to take the drop to gold", processes, interval=3
            )
        except pytest.fail.Exception as timeout:
            reached = cluster.query(
                db_name,
                "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY 1",
            )
            runs = cluster.query(db_name, "SELECT run_id, status FROM runs")
            # Why a run failed, from its own events (the processes' logs rarely say).
            failures = cluster.query(
                db_name,
                "SELECT dagster_event_type, event FROM event_logs WHERE dagster_event_type IN "
                "('STEP_FAILURE', 'PIPELINE_FAILURE', 'RUN_FAILURE', 'ENGINE_EVENT') AND event LIKE '%%\"error\": {%%' ORDER BY id DESC LIMIT 6",
            )
            why = "\n".join(f"{kind}: {body[:1500]}" for kind, body in failures)
            pytest.fail(f"no report; materialised: {[k for (k,) in reached]}; runs: {runs}\n{why}\n{timeout}")

        def finished_runs():
            data = graphql(web, "{ runsOrError { ... on Runs { results { runId status } } } }")
            results = data["runsOrError"]["results"]
            return (
                results if results and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in results) else None
            )

        runs = wait_for(finished_runs, 180, "every launched run to finish", processes, interval=2)
        assert {r["status"] for r in runs} == {"SUCCESS"}, runs
        # The webserver reads the runs the daemon launched from the shared Postgres instance.
        stored = {run_id for (run_id,) in cluster.query(db_name, "SELECT run_id FROM runs")}
        assert {r["runId"] for r in runs} == stored and report_run in stored
        assert (tmp_path / "lake" / "gold" / "reports" / "model_report.html").stat().st_size > 0
        data = graphql(
            web,
            '{ assetOrError(assetKey: {path: ["gold", "reports", "model_report"]}) '
            "{ ... on Asset { assetMaterializations(limit: 1) { runId } } } }",
        )
        assert data["assetOrError"]["assetMaterializations"][0]["runId"] == report_run
    finally:
        processes.stop_all()
