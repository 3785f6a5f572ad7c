"""Wall time of one `dagster asset materialize --select '*'` on the sample data, per instance:
SQLite (the repository's dagster.yaml) against Postgres (deploy/dagster.postgres.yaml, a private
SSL cluster from potato_assets_tests/pg.py, step logs to moto S3), alternating, N runs each.

    .venv/bin/python scripts/bench_instance.py --repeats 3 [--postgres-yaml a.yaml --postgres-yaml b.yaml]

Several --postgres-yaml files are run in turn within each round (e.g. before/after a change).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from potato_assets_tests import pg  # noqa: E402
from potato_assets_tests.helpers import free_port  # noqa: E402

BIN = Path(sys.executable).parent
SAMPLE = REPO / "potato_assets" / "sample_data"
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"]


def start_moto() -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    return proc, env


def one_run(yaml_path: Path, extra_env: dict[str, str], root: Path) -> float:
    home = Path(tempfile.mkdtemp(dir=root))
    shutil.copy(yaml_path, home / "dagster.yaml")
    env = {
        **os.environ,
        **extra_env,
        "DAGSTER_HOME": str(home),
        "POTATO_LANDING_URI": str(SAMPLE),
        "POTATO_LAKE_URI": str(home / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
    }
    started = time.monotonic()
    result = subprocess.run(MATERIALIZE, env=env, cwd=home, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"run failed on {yaml_path}:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres-yaml", type=Path, action="append")
    args = parser.parse_args()
    yamls: list[Path] = args.postgres_yaml or [REPO / "deploy" / "dagster.postgres.yaml"]
    reason = pg.unavailable_reason()
    if reason:
        raise SystemExit(reason)
    root = Path(tempfile.mkdtemp(prefix="bench-instance-"))
    moto, aws_env = start_moto()
    import boto3

    boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="bench-logs")  # fmt: skip
    times: dict[str, list[float]] = {"sqlite": [], **{str(y): [] for y in yamls}}
    try:
        with pg.private_cluster() as cluster:
            for i in range(args.repeats):
                times["sqlite"].append(one_run(REPO / "dagster.yaml", {}, root))
                print(f"round {i + 1}: sqlite {times['sqlite'][-1]:.1f} s", flush=True)
                for j, yaml_path in enumerate(yamls):
                    db = cluster.create_database(f"bench{i}_{j}")
                    env = {**aws_env, **cluster.dagster_env(db), "DAGSTER_COMPUTE_LOG_BUCKET": "bench-logs"}
                    times[str(yaml_path)].append(one_run(yaml_path, env, root))
                    [(count,)] = cluster.query(db, "SELECT count(*) FROM event_logs")
                    print(f"round {i + 1}: {yaml_path} {times[str(yaml_path)][-1]:.1f} s ({count} events)", flush=True)
            breakdown = cluster.query(
                f"bench{args.repeats - 1}_0",
                "SELECT coalesce(dagster_event_type, 'log message'), count(*) FROM event_logs GROUP BY 1 ORDER BY 2 DESC",
            )
    finally:
        moto.terminate()
        shutil.rmtree(root, ignore_errors=True)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.1f} s, runs {', '.join(f'{v:.1f}' for v in values)}")
    print(f"events of the last run on {yamls[0]}:", ", ".join(f"{t} {n}" for t, n in breakdown))


if __name__ == "__main__":
    main()
