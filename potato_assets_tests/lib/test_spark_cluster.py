"""The local Spark cluster (#17): a standalone master, two one-core workers and a Connect server,
all on 127.0.0.1; queries through Spark Connect run on the workers' executors, not in a local
session; one command stops every process it started."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from potato_assets.lib.engine import spark_cluster as sc
from potato_assets_tests.helpers import spark_cluster, spark_cluster_missing

needs_java = pytest.mark.skipif(
    spark_cluster_missing() is not None, reason=f"no local Spark cluster: {spark_cluster_missing()}"
)


@pytest.fixture(scope="module")
def cluster(spark_state):
    return spark_cluster(spark_state)


def test_ipv4_and_mapped_ipv6_addresses_are_read_from_proc():
    assert sc._address("0100007F") == "127.0.0.1"
    assert sc._address("00000000000000000000000000000000") == "::"
    assert sc._address("0000000000000000FFFF00000100007F") == "127.0.0.1"
    assert sc._address("00000000000000000000000001000000") == "::1"


def test_a_missing_or_damaged_state_file_means_no_cluster(tmp_path):
    assert sc.read_state(tmp_path) is None
    (tmp_path / sc.STATE_FILE).write_text("{not json")
    assert sc.read_state(tmp_path) is None
    assert sc.stop_cluster(tmp_path) == []


@pytest.mark.e2e
@needs_java
def test_master_lists_two_alive_one_core_workers_and_the_connect_application(cluster):
    state = sc.master_state(cluster)
    workers = [w for w in state["workers"] if w["state"] == "ALIVE"]
    assert len(workers) == 2 and all(w["cores"] == 1 and w["host"] == "127.0.0.1" for w in workers)
    assert [app["name"] for app in state["activeapps"]] == ["potato-spark-connect"]
    assert cluster.connect_url.startswith("sc://127.0.0.1:")


@pytest.mark.e2e
@needs_java
def test_queries_through_connect_run_on_the_workers_executors(cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    n = 200_000
    path = tmp_path / "weights.parquet"
    pq.write_table(
        pa.table({"subject": [i % 97 for i in range(n)], "kg": [float(i % 1000) / 10 for i in range(n)]}),
        path,
        row_group_size=20_000,
    )
    spark = SparkSession.builder.remote(cluster.connect_url).getOrCreate()
    try:
        by_key = spark.range(0, n, numPartitions=8).groupBy((F.col("id") % 7).alias("k")).count().orderBy("k")
        counts = {row["k"]: row["count"] for row in by_key.collect()}
        assert counts == {k: len(range(k, n, 7)) for k in range(7)}

        # The workers' executors read the file (same machine, same path).
        by_subject = spark.read.parquet(str(path)).groupBy("subject").agg(F.count("*").alias("n"), F.sum("kg"))
        rows = {row["subject"]: row for row in by_subject.collect()}
        assert len(rows) == 97 and sum(row["n"] for row in rows.values()) == n
        expected_3 = sum(float(i % 1000) / 10 for i in range(3, n, 97))
        assert rows[3]["sum(kg)"] == pytest.approx(expected_3, rel=1e-12)
    finally:
        spark.stop()

    # The Connect server's application is the master's, and its executors live on the two workers.
    app_id = sc.master_state(cluster)["activeapps"][0]["id"]
    on_workers = [[e for e in sc.worker_state(ui)["executors"] if e["appid"] == app_id] for ui in cluster.worker_uis]
    assert all(len(executors) == 1 for executors in on_workers), on_workers
    # The driver's REST API: the tasks ran on those two executors, none on the driver (a local
    # session would run them all on the driver).
    assert [app["id"] for app in sc.driver_api(cluster)] == [app_id]
    executors = sc.driver_api(cluster, f"/{app_id}/executors")
    assert isinstance(executors, list)
    by_id = {e["id"]: e for e in executors}
    assert by_id.pop("driver")["totalTasks"] == 0
    assert sorted(by_id) == sorted(str(e[0]["id"]) for e in on_workers)
    assert all(e["totalTasks"] > 0 and e["hostPort"].startswith("127.0.0.1:") for e in by_id.values()), by_id


@pytest.mark.e2e
@needs_java
def test_every_process_listens_on_loopback_only(cluster):
    pids = sc.cluster_processes(cluster.state_dir)
    # master, two workers, the Connect driver, and one executor per worker
    assert len(pids) >= 6, pids
    sockets = sc.listening_sockets(pids)
    connect_port = int(cluster.connect_url.rsplit(":", 1)[1])
    assert connect_port in {port for _, _, port in sockets}
    assert {address for _, address, _ in sockets} == {"127.0.0.1"}, sockets

    # Cross-check with ss: the Connect port's listener is bound to 127.0.0.1.
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{connect_port}"], capture_output=True, text=True)
    if ss.returncode == 0:
        locals_ = [line.split()[3] for line in ss.stdout.splitlines() if line.strip()]
        assert locals_ and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in locals_), locals_

    others = _non_loopback_ipv4()
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, connect_port), timeout=3):
            pass


def _non_loopback_ipv4() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    addresses = [line.split()[3].split("/")[0] for line in out.stdout.splitlines() if " inet " in line]
    return [a for a in addresses if not a.startswith("127.")]


@pytest.mark.e2e
@needs_java
def test_start_is_idempotent_and_one_command_stops_every_process(cluster):
    again = sc.start_cluster(cluster.state_dir, workers=2)
    assert again.pids == cluster.pids and again.connect_url == cluster.connect_url
    running = sc.cluster_processes(cluster.state_dir)
    assert set(cluster.pids.values()) <= set(running)

    down = subprocess.run(
        [sys.executable, "-m", "potato_assets.lib.engine.spark_cluster", "down", "--state-dir", cluster.state_dir],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert f"stopped {len(running)} process(es)" in down.stdout
    assert sc.cluster_processes(cluster.state_dir) == []
    assert not any(sc._alive(pid) for pid in running)
    assert sc.read_state(cluster.state_dir) is None
