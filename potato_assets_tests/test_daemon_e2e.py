"""The Dagster daemon and a code server, as deployed: a new landing file makes the landing
sensor launch one run of ingest_landing, the automation sensor follows with the runs that bring
silver and gold up to date (each asset once); the same file dropped again launches nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.study.schema import FIBER_FILE, NUTRITION_FILE, WEIGHT_FILE
from potato_assets_tests.helpers import cli_home, free_port, load_defs

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
POLL_SECONDS = 5
REPORT_KEY = dg.AssetKey(["gold", "reports", "model_report"])
# Runs the automation sensor launches carry this tag (Dagster's asset daemon sets it).
FROM_AUTOMATION = "dagster/from_automation_condition"


class Processes:
    """Started processes, each in its own process group, all stopped on teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Whatever the leader left behind in its group (run workers).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, processes: Processes, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, proc in processes.procs.items():
            if proc.poll() is not None:
                tail = processes.log(name)[-3000:]
                pytest.fail(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(interval)
    logs = "\n".join(f"--- {n}\n{processes.log(n)[-2500:]}" for n in processes.procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


@pytest.fixture
def deployment(tmp_path):
    home = cli_home(tmp_path)
    landing = tmp_path / "landing"
    landing.mkdir()
    port = free_port()
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: potato_assets\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "POTATO_LANDING_URI": str(landing),
        "POTATO_LAKE_URI": str(tmp_path / "lake"),
        "POTATO_LANDING_POLL_SECONDS": str(POLL_SECONDS),
        # Keep the daily refresh out of the test window whatever the clock says.
        "POTATO_SCHEDULE_CRON": "0 0 29 2 *",
        "GX_ANALYTICS_ENABLED": "false",
    }
    dg.DagsterInstance.from_config(str(home)).dispose()  # create the storage once, up front
    processes = Processes(tmp_path)
    try:
        processes.start(
            "code_server",
            [
                str(BIN / "dagster"),
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-m",
                "potato_assets.definitions",
            ],
            env,
            tmp_path,
        )
        processes.start(
            "daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
            env,
            tmp_path,
        )
        yield home, landing, tmp_path / "lake", processes
    finally:
        processes.stop_all()


def runs(home: Path) -> list[dg.DagsterRun]:
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        return list(instance.get_runs())
    finally:
        instance.dispose()


def test_landing_drop_launches_one_run_and_a_repeat_drop_launches_none(deployment, sample_dir):
    home, landing, lake, processes = deployment
    for name in (NUTRITION_FILE, WEIGHT_FILE):
        shutil.copy(sample_dir / name, landing / name)
    # The sensor ticks while a file is missing, and launches nothing.
    wait_for(
        lambda: "not in the landing zone yet" in processes.log("daemon"),
        120,
        "a landing sensor tick",
        processes,
    )
    assert runs(home) == []

    shutil.copy(sample_dir / FIBER_FILE, landing / FIBER_FILE)
    launched = wait_for(lambda: runs(home), 90, "the landing sensor to launch a run", processes)
    assert len(launched) == 1 and launched[0].tags.get("potato/trigger") == "landing"
    run_id = launched[0].run_id

    # The automation sensor takes it from there, one layer per tick, until the report exists.
    def report_materialised():
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            return instance.get_latest_materialization_event(REPORT_KEY)
        finally:
            instance.dispose()

    report = wait_for(report_materialised, 420, "the automation sensor to materialise gold", processes, interval=2)
    all_runs = wait_for(
        lambda: (rs := runs(home)) and all(r.is_finished for r in rs) and rs,
        120,
        "every launched run to finish",
        processes,
        interval=2,
    )
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in all_runs), processes.log("code_server")[-3000:]
    follow_ups = [r for r in all_runs if r.run_id != run_id]
    assert follow_ups and all(r.tags.get(FROM_AUTOMATION) == "true" for r in follow_ups)
    assert report.run_id in {r.run_id for r in follow_ups}
    assert (lake / "gold" / "reports" / "model_report.html").stat().st_size > 0
    # Each asset was materialised once: no layer ran twice on its way down.
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        repo_keys = [k for k in load_defs().resolve_asset_graph().get_all_asset_keys() if k.path[0] != "landing"]
        counts = {k.to_user_string(): len(instance.fetch_materializations(k, limit=5).records) for k in repo_keys}
    finally:
        instance.dispose()
    assert set(counts.values()) == {1}, counts
    run_ids = sorted(r.run_id for r in all_runs)

    # The same file again (new mtime, same bytes): ticks go by, nothing is launched.
    shutil.copy(sample_dir / FIBER_FILE, landing / FIBER_FILE)
    ticks_before = processes.log("daemon").count("no new or changed landing files")
    wait_for(
        lambda: processes.log("daemon").count("no new or changed landing files") >= ticks_before + 3,
        60,
        "three landing sensor ticks after the repeat drop",
        processes,
    )
    assert sorted(r.run_id for r in runs(home)) == run_ids
