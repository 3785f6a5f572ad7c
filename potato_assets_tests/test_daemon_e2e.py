"""The Dagster daemon and a code server, as deployed, on an empty lake: the seed study dropped
into the landing folder makes the landing sensor launch ONE run that builds bronze, silver and
gold; an edited food-entry file launches one run that leaves the calendar and the trajectories
alone; the automation sensor adds nothing after either; the same file dropped again launches
nothing."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from potato_assets.study.schema import FIBER_FILE, NUTRITION_FILE, WEIGHT_FILE
from potato_assets_tests.helpers import Processes, cli_home, edit_nutrition, free_port, load_defs, wait_for

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
POLL_SECONDS = 5


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


def materialisations_by_run(home: Path) -> dict[str, set[str]]:
    """Run id -> the assets it materialised."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        keys = [k for k in load_defs().resolve_asset_graph().get_all_asset_keys() if k.path[0] != "landing"]
        by_run: dict[str, set[str]] = {}
        for key in keys:
            for record in instance.fetch_materializations(key, limit=20).records:
                by_run.setdefault(record.run_id, set()).add(key.to_user_string())
        return by_run
    finally:
        instance.dispose()


def finished(home: Path, count: int):
    """All runs, once there are `count` and every one has finished."""
    rs = runs(home)
    return rs if len(rs) >= count and all(r.is_finished for r in rs) else None


def automation_ticks(processes: Processes) -> int:
    return processes.log("daemon").count("for downstream_automation")


def test_a_drop_into_an_empty_lake_reaches_gold_in_one_run_and_a_food_edit_in_another(deployment, seed_dir, tmp_path):
    home, landing, lake, processes = deployment
    for name in (NUTRITION_FILE, WEIGHT_FILE):
        shutil.copy(seed_dir / name, landing / name)
    # The sensor ticks while a file is missing, and launches nothing.
    wait_for(
        lambda: "not in the landing zone yet" in processes.log("daemon"),
        120,
        "a landing sensor tick",
        processes,
    )
    assert runs(home) == []

    # The last file lands: ONE run takes the empty lake to gold, within 120 s.
    dropped = time.monotonic()
    shutil.copy(seed_dir / FIBER_FILE, landing / FIBER_FILE)
    first = wait_for(lambda: finished(home, 1), 120, "the landing run to build gold", processes, interval=1)
    took = time.monotonic() - dropped
    assert took <= 120, took
    assert len(first) == 1 and first[0].status == dg.DagsterRunStatus.SUCCESS, processes.log("code_server")[-3000:]
    assert first[0].tags.get("potato/trigger") == "landing"
    every_asset = {k for k in materialisations_by_run(home)[first[0].run_id]}
    repo_keys = {k.to_user_string() for k in load_defs().resolve_asset_graph().get_all_asset_keys()}
    assert every_asset == {k for k in repo_keys if not k.startswith("landing/")}
    for path in ("gold/reports/model_report.html", "gold/figures/fiber_vs_weight_change.png"):
        assert (lake / path).stat().st_size > 0
    assert any((lake / "gold" / "models").glob("*.parquet"))
    print(f"drop -> gold: {took:.1f} s in one run")  # the number the README quotes

    # The automation sensor adds nothing: a few ticks later, still one run.
    ticks = automation_ticks(processes)
    wait_for(lambda: automation_ticks(processes) >= ticks + 3, 60, "three automation ticks", processes)
    assert len(runs(home)) == 1

    # One food entry edited: one run, without the calendar or the trajectories.
    edit_nutrition(landing, lake)
    second = wait_for(lambda: finished(home, 2), 120, "the run for the edited food entries", processes)
    assert len(second) == 2
    edit_run = next(r for r in second if r.run_id != first[0].run_id)
    assert edit_run.status == dg.DagsterRunStatus.SUCCESS and edit_run.tags.get("potato/trigger") == "landing"
    assert edit_run.tags["potato/changed_tables"] == "bronze/nutrition"
    rebuilt = materialisations_by_run(home)[edit_run.run_id]
    assert {"silver/weekly_features", "silver/modeling_dataset", "gold/reports/model_report"} <= rebuilt
    assert not rebuilt & {"silver/study_calendar", "silver/subject_trajectories"}
    ticks = automation_ticks(processes)
    wait_for(lambda: automation_ticks(processes) >= ticks + 3, 60, "three automation ticks", processes)
    assert len(runs(home)) == 2

    # The same file again (new mtime, same bytes): ticks go by, nothing is launched.
    shutil.copy(landing / NUTRITION_FILE, tmp_path / "same.csv")
    shutil.copy(tmp_path / "same.csv", landing / NUTRITION_FILE)
    ticks_before = processes.log("daemon").count("no new or changed landing files")
    wait_for(
        lambda: processes.log("daemon").count("no new or changed landing files") >= ticks_before + 3,
        60,
        "three landing sensor ticks after the repeat drop",
        processes,
    )
    assert len(runs(home)) == 2
