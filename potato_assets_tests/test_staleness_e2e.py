"""The UI's staleness agrees with the data versions: `dagster-webserver` on a temporary
DAGSTER_HOME, runs from the CLI, landing observations from the landing sensor (recorded the way
the daemon records them), and each asset's staleStatus read over GraphQL.

Dagster marks an asset STALE when a DIRECT input's data version differs from the one recorded at
its last materialisation (or its code version changed); it does not propagate staleness, so a
change shows up one layer at a time as the layers are rebuilt.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.defs import automation
from potato_assets.settings import Settings
from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import (
    MATERIALIZE_ALL,
    cli_env,
    cli_home,
    edit_nutrition,
    free_port,
    graphql,
    load_defs,
    resources_for,
    run_cli,
)

pytestmark = pytest.mark.e2e
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")
STALENESS = (
    "{ assetNodes { assetKey { path } staleStatus staleCauses { key { path } category reason dependency { path } } } }"
)


class Webserver:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def graphql(self, query: str) -> dict:
        return graphql(self.url, query)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dagster-webserver exited:\n{self.log.read_text()[-3000:]}")
        try:
            return bool(self.graphql("{ assetNodes { id } }")["assetNodes"])
        except OSError:
            return False

    def staleness(self) -> dict[str, tuple[str, list[dict]]]:
        """Asset key -> (staleStatus, staleCauses), for every materialisable asset."""
        return {
            "/".join(n["assetKey"]["path"]): (n["staleStatus"], n["staleCauses"])
            for n in self.graphql(STALENESS)["assetNodes"]
            if n["assetKey"]["path"][0] != "landing"
        }

    def stale(self) -> dict[str, set[str]]:
        """Stale asset -> the assets Dagster names as the root cause (an input with a new data
        version)."""
        return {
            key: {"/".join(c["key"]["path"]) for c in causes}
            for key, (status, causes) in self.staleness().items()
            if status != "FRESH"
        }


@pytest.fixture
def cli(tmp_path, sample_dir):
    home = cli_home(tmp_path)
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    for spec in LANDING_FILES:
        shutil.copy(sample_dir / spec.file_name, landing / spec.file_name)
    env = cli_env(home, landing, lake, POTATO_SCHEDULE_CRON="0 0 29 2 *")
    return home, landing, lake, env


@pytest.fixture
def webserver(cli, tmp_path):
    home, _, _, env = cli
    # Create the SQLite storage once, up front: two processes creating it at once collide.
    dg.DagsterInstance.from_config(str(home)).dispose()
    port = free_port()
    log = tmp_path / "webserver.log"
    proc = subprocess.Popen(
        [str(WEBSERVER), "-h", "127.0.0.1", "-p", str(port), "-m", "potato_assets.definitions"],
        env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = Webserver(f"http://127.0.0.1:{port}", proc, log)
    try:
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def landing_sensor_ticks(home: Path, landing: Path, cursor: str | None) -> tuple[str | None, list[str], int]:
    """Two landing sensor ticks (a changed file counts once its size held still), whose asset
    events are reported to the instance as the daemon does (report_runless_asset_event).
    Returns (cursor, the landing assets observed, how many runs were requested)."""
    sensor = automation.build_landing_sensor(Settings(lake_uri="file:///unused", landing_uri=landing.as_uri()))
    instance = dg.DagsterInstance.from_config(str(home))
    recorded, requested = [], 0
    try:
        for _ in range(2):
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"landing": automation.LandingZone(landing_uri=landing.as_uri())},
                repository_def=load_defs().get_repository_def(),
            )
            result = sensor.evaluate_tick(context)
            cursor = result.cursor
            requested += len(result.run_requests or [])
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
                recorded.append(event.asset_key.to_user_string())
    finally:
        instance.dispose()
    return cursor, recorded, requested


def materialize(home: Path, landing: Path, lake: Path, selection: str) -> None:
    """A run of `selection` (with its checks) on the webserver's instance. In-process: the same
    events a CLI run writes, without another interpreter start (the test's first run is the CLI)."""
    defs = load_defs()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        result = dg.materialize(
            [*defs.assets, *(defs.asset_checks or [])],
            selection=selection.split(","),
            resources=resources_for(landing, lake),
            instance=instance,
        )
        assert result.success
    finally:
        instance.dispose()


def children(keys: set[str]) -> set[str]:
    graph = load_defs().resolve_asset_graph()
    return {
        child.to_user_string()
        for key in keys
        for child in graph.get(dg.AssetKey(key.split("/"))).child_keys
        if graph.get(child).is_materializable
    }


def test_the_ui_shows_what_a_landing_change_makes_stale(cli, webserver, tmp_path):
    home, landing, lake, env = cli
    done = run_cli(env, tmp_path, MATERIALIZE_ALL, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + 90
    while not webserver.ready():
        assert time.monotonic() < deadline, "dagster-webserver did not answer"
        time.sleep(0.5)

    graph = load_defs().resolve_asset_graph()
    materialisable = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert set(webserver.staleness()) == materialisable
    assert webserver.stale() == {}

    # `--select '*'` does not observe the landing files, so bronze recorded no version for them.
    # The landing sensor's first look records their content versions and requests one re-ingest
    # to anchor bronze to them; after it, everything is up to date.
    bronze = ",".join(f"bronze/{name}" for name in ("nutrition", "weight", "fiber", "quarantine"))
    cursor, recorded, requested = landing_sensor_ticks(home, landing, None)
    assert sorted(recorded) == ["landing/fiber", "landing/nutrition", "landing/weight"] and requested == 1
    assert set(webserver.stale()) == set(bronze.split(","))
    materialize(home, landing, lake, bronze)
    assert webserver.stale() == {}, webserver.staleness()
    # The same files, more ticks: nothing recorded, nothing requested, nothing stale.
    cursor, recorded, requested = landing_sensor_ticks(home, landing, cursor)
    assert (recorded, requested) == ([], 0) and webserver.stale() == {}

    # One subject-week's food entries change: the sensor records landing/nutrition's new version;
    # the two bronze tables read from it are stale, nothing else.
    edit_nutrition(landing, lake)
    cursor, recorded, requested = landing_sensor_ticks(home, landing, cursor)
    assert recorded == ["landing/nutrition"] and requested == 1
    assert webserver.stale() == {
        "bronze/nutrition": {"landing/nutrition"},
        "bronze/quarantine": {"landing/nutrition"},
    }

    # Bronze alone refreshed (ingest_landing, all four tables, as a hand-started bronze run; the
    # landing sensor's run would take the change to gold at once): weight and fiber are
    # re-ingested with their old versions, so only what reads food entries is stale now.
    materialize(home, landing, lake, bronze)
    stale = webserver.stale()
    assert stale == {key: {"bronze/nutrition"} for key in children({"bronze/nutrition"})}
    assert stale == {"silver/weekly_features": {"bronze/nutrition"}}

    # The stale table rebuilt: its content changed, so its own dependants turn stale.
    materialize(home, landing, lake, "silver/weekly_features")
    assert webserver.stale() == {key: {"silver/weekly_features"} for key in children({"silver/weekly_features"})}
