"""No secret leaves the environment: one CLI materialisation of the sample with credentials in
every URL setting, then every place a run writes to is searched for them.

MLflow is a real `mlflow server` on 127.0.0.1 (reached with userinfo); OpenLineage, OTLP and the
Pushgateway are loopback receivers (the OpenLineage URL also carries `?api_key=`). Searched: the
console (stdout, stderr with JSON log lines), every file under DAGSTER_HOME (the SQLite event log),
the lake, the MLflow store and artifacts, and every body the receivers got.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from potato_assets_tests.helpers import MATERIALIZE_ALL, LoopbackReceiver, cli_home, free_port

pytestmark = pytest.mark.e2e

SECRETS = {
    "mlflow_user": "mlflow-user-Zq81x",
    "mlflow_password": "mlflow-pass-Kx93y",
    "lineage_user": "lineage-user-Ab12c",
    "lineage_password": "lineage-pass-Cd34e",
    "lineage_query": "lineage-query-Ef56g",
    "lineage_api_key": "lineage-apikey-Gh78i",
    "pushgateway_password": "push-pass-Ij90k",
    "webhook_password": "hook-pass-Lm12n",
    "webhook_query": "hook-query-Op34q",
}


def _start_mlflow(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp / "mlflow" / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # No job runner (it starts a dozen huey consumers); its own session, so stopping it
        # stops the uvicorn worker too.
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    pytest.skip("mlflow server did not start on 127.0.0.1 within 240 s")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _files(root: Path) -> dict[str, bytes]:
    """Every file's bytes; for SQLite databases also every value, zlib-decompressed where it is
    compressed (Dagster stores run and job snapshots that way: a raw grep would miss them)."""
    found = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    for name in [n for n in found if n.endswith(".db")]:
        found[f"{name} (values)"] = _sqlite_values(root / name)
    return found


def _sqlite_values(path: Path) -> bytes:
    import sqlite3
    import zlib

    chunks: list[bytes] = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        with contextlib.suppress(zlib.error):
                            value = zlib.decompress(value)
                        chunks.append(value)
                    elif value is not None:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


def _leaks(label: str, blob: bytes) -> list[str]:
    found = []
    for name, secret in SECRETS.items():
        for form in {secret, base64.b64encode(secret.encode()).decode()}:
            if form.encode() in blob:
                found.append(f"{name} in {label}")
    return found


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory, sample_dir):
    tmp = tmp_path_factory.mktemp("secrets")
    (tmp / "mlflow").mkdir()
    home = cli_home(tmp)
    mlflow, mlflow_port = _start_mlflow(tmp)
    lineage_rx, otlp_rx, push_rx = LoopbackReceiver(), LoopbackReceiver(), LoopbackReceiver()
    s = SECRETS
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POTATO_", "OTEL_", "OPENLINEAGE_", "MLFLOW_"))},
        "DAGSTER_HOME": str(home),
        "POTATO_LAKE_URI": str(tmp / "lake"),
        "POTATO_LANDING_URI": str(sample_dir),
        "POTATO_LOG_FORMAT": "json",
        "MLFLOW_TRACKING_URI": f"http://{s['mlflow_user']}:{s['mlflow_password']}@127.0.0.1:{mlflow_port}",
        "OPENLINEAGE_URL": (
            f"http://{s['lineage_user']}:{s['lineage_password']}@{lineage_rx.url[7:]}/?api_key={s['lineage_query']}"
        ),
        "OPENLINEAGE_API_KEY": s["lineage_api_key"],
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_rx.url,
        "POTATO_PUSHGATEWAY_URL": f"http://pusher:{s['pushgateway_password']}@{push_rx.url[7:]}",
        "POTATO_ALERT_WEBHOOK_URL": (
            f"https://alerts:{s['webhook_password']}@127.0.0.1:9/hook?token={s['webhook_query']}"
        ),
    }
    try:
        proc = subprocess.run(MATERIALIZE_ALL, env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
        yield {
            "proc": proc,
            "tmp": tmp,
            "home": home,
            "mlflow_port": mlflow_port,
            "receivers": {"lineage": lineage_rx, "otlp": otlp_rx, "pushgateway": push_rx},
        }
    finally:
        _stop(mlflow)
        for rx in (lineage_rx, otlp_rx, push_rx):
            rx.close()


def test_the_run_succeeds_and_every_channel_was_used(leaky_run):
    proc, rx = leaky_run["proc"], leaky_run["receivers"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rx["lineage"].bodies("/api/v1/lineage"), "no OpenLineage events arrived"
    assert rx["otlp"].bodies("/v1/traces"), "no spans arrived"
    # The credentials still work: userinfo became HTTP basic auth, the API key a bearer token.
    pushes = [r for r in rx["pushgateway"].requests if r[0] == "PUT"]
    assert pushes, "nothing was pushed to the Pushgateway"
    expected = "Basic " + base64.b64encode(f"pusher:{SECRETS['pushgateway_password']}".encode()).decode()
    assert {auth for _, _, auth in pushes} == {expected}
    # (requests prefers the URL's userinfo to the API key when both are set.)
    userinfo = f"{SECRETS['lineage_user']}:{SECRETS['lineage_password']}".encode()
    assert {auth for _, _, auth in rx["lineage"].requests} == {"Basic " + base64.b64encode(userinfo).decode()}


def test_the_model_metadata_links_to_the_run_without_credentials(leaky_run):
    assert leaky_run["proc"].returncode == 0
    with dg.DagsterInstance.from_config(str(leaky_run["home"])) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["gold", "models", "ols_cluster"]))
        assert event is not None and event.asset_materialization is not None
        metadata = event.asset_materialization.metadata
    assert metadata["tracking_status"].value == "tracked"
    url = metadata["mlflow_run_url"].value
    assert url.startswith(f"http://127.0.0.1:{leaky_run['mlflow_port']}/#/experiments/"), url


def test_no_secret_anywhere(leaky_run):
    proc, tmp = leaky_run["proc"], leaky_run["tmp"]
    leaks = _leaks("stdout", proc.stdout.encode()) + _leaks("stderr", proc.stderr.encode())
    places = {"DAGSTER_HOME": leaky_run["home"], "lake": tmp / "lake", "MLflow store": tmp / "mlflow"}
    for label, root in places.items():
        files = _files(root)
        assert files, f"{label} is empty"
        for name, blob in files.items():
            leaks += _leaks(f"{label}/{name}", blob)
    for label, rx in leaky_run["receivers"].items():
        for path, body in rx.posts:
            leaks += _leaks(f"a body sent to {label} ({path.split('?')[0]})", body)
    assert not leaks, leaks
