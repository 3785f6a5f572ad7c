"""Shared test helpers: load the project's definitions and materialise them with temp resources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from potato_assets.defs.resources import build_resources
from potato_assets.lib.lake import storage
from potato_assets.settings import Settings, normalize_uri


def load_defs() -> dg.Definitions:
    from potato_assets.definitions import defs

    return defs()


def settings_for(landing: str | Path, lake: str | Path) -> Settings:
    return Settings(lake_uri=normalize_uri(str(lake)), landing_uri=normalize_uri(str(landing)))


def resources_for(landing: str | Path, lake: str | Path, overrides: dict | None = None) -> dict:
    """The project's resources on temp locations; experiment tracking off unless overridden."""
    from potato_assets.defs.tracking import ExperimentTracker

    return {
        **build_resources(settings_for(landing, lake)),
        "experiment_tracker": ExperimentTracker(tracking_uri="", enabled=False),
        **(overrides or {}),
    }


def materialize_all(
    landing: str | Path,
    lake: str | Path,
    *,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    resources: dict | None = None,
) -> dg.ExecuteInProcessResult:
    defs = load_defs()
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        resources=resources_for(landing, lake, resources),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def read_table(lake_uri: str, key: str) -> pd.DataFrame:
    return storage.read_parquet(storage.to_upath(storage.join(normalize_uri(lake_uri), key + ".parquet")))


# --- the real CLI, as a user or CI runs it ----------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
MATERIALIZE_ALL = [str(DAGSTER), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"]


def cli_home(tmp_path: Path) -> Path:
    """A fresh DAGSTER_HOME whose instance configuration is the repository's dagster.yaml."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def cli_env(home: Path, landing: str | Path, lake: str | Path, **extra: str) -> dict[str, str]:
    """The process environment for a CLI run; MLflow tracks into the home, not the repository."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "POTATO_LANDING_URI": str(landing),
        "POTATO_LAKE_URI": str(lake),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        **extra,
    }


def run_cli(env: dict[str, str], cwd: Path, cmd: list[str] = MATERIALIZE_ALL, timeout: float = 600):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def sensor_tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None, landing_uri: str):
    """One evaluation of a landing-watching sensor on ``instance``: (result, its new cursor)."""
    from potato_assets.defs.resources import LandingZone

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"landing": LandingZone(landing_uri=landing_uri)},
        repository_def=load_defs().get_repository_def(),
    )
    result = sensor.evaluate_tick(context)
    return result, result.cursor


def graphql(base_url: str, query: str, timeout: float = 30) -> dict:
    """A query to a running dagster-webserver's GraphQL endpoint; GraphQL errors fail the test."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


class LoopbackReceiver:
    """An HTTP server on 127.0.0.1 that accepts every POST and keeps (path, body, gunzipped): the
    far end of webhooks and of the OpenLineage and OTLP exporters. ``status``, ``delay`` (seconds
    before answering) and ``response`` (a JSON body) shape its answer."""

    def __init__(self, status: int = 200, delay: float = 0.0, response: bytes = b"") -> None:
        import gzip
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.posts: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.posts.append((self.path, body))
                time.sleep(delay)
                self.send_response(status)
                if response:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(response)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str | None = None) -> list[bytes]:
        return [b for p, b in self.posts if path is None or p == path]

    def json(self, path: str | None = None) -> list:
        import json

        return [json.loads(b) for b in self.bodies(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
