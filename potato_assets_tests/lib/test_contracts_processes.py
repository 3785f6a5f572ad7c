"""A dataset's contract judged in two processes (lib/contracts.run_contract_dataset with
processes=2, lib/contract_workers.py): exactly the one-process result, the same refusals and
errors; a worker that dies fails the check in seconds and the next run gets a new one; below the
batch threshold a worker judges the whole suite and the calling process never imports GX; a
worker never outlives its parent. The split is forced on small data with min_split_batches=1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from potato_assets.lib import contract_workers, contracts
from potato_assets.lib.lake.datasets import VERSION_PREFIX
from potato_assets_tests.helpers import BROKEN_TABLES, CONTRACT_SUITES, REPO, set_cells, write_dataset

SPLIT = {"processes": 2, "min_split_batches": 1}


def assert_split_same(suite: str, ref, batch_rows: int) -> contracts.ContractResult:
    one = contracts.run_contract_dataset(suite, ref, batch_rows=batch_rows)
    two = contracts.run_contract_dataset(suite, ref, batch_rows=batch_rows, **SPLIT)
    assert [o.rule for o in two.outcomes] == [o.rule for o in one.outcomes]
    for got, want in zip(two.outcomes, one.outcomes, strict=True):
        assert got.as_dict() == want.as_dict(), got.rule  # examples and their order included
        assert got == want
    assert (two.rows, two.batches) == (one.rows, one.batches)
    assert two == one and two.summary() == one.summary()
    return one


@pytest.mark.parametrize("suite", CONTRACT_SUITES)
def test_two_processes_give_the_one_process_result_on_the_sample(sample_tables, tmp_path, suite):
    ref = write_dataset(tmp_path / "ds", sample_tables[suite], 4)
    assert len(contracts.rule_groups(contracts.load_suite(suite)["expectations"], 2)) == 2
    assert assert_split_same(suite, ref, batch_rows=300).success


@pytest.mark.parametrize("suite", CONTRACT_SUITES)
def test_two_processes_give_the_one_process_result_on_the_seed_study(seed_tables, tmp_path, suite):
    ref = write_dataset(tmp_path / "ds", seed_tables[suite], 8)
    assert_split_same(suite, ref, batch_rows=200)


def _broken_everywhere(weight: pd.DataFrame) -> pd.DataFrame:
    """bronze_weight broken in rules of both processes' shares: ranges, a duplicate week, missing
    weeks (a nullable column in some batches only), a soft rule's allowance used up."""
    weight = set_cells(weight, [3, 10, 200, 401], "weight_kg", [500.0, 12.0, 301.0, 29.0])
    weight = set_cells(weight, [5, 6, 300], "energy_1_10", [0, 11, 99])
    weight = set_cells(weight, [1, 2], "week", [1, 1])
    weight = set_cells(weight.astype({"week": "Int64"}), [50, 51], "week", [pd.NA, pd.NA])
    weight.loc[weight.index[: len(weight) // 3], "mood_1_10"] = np.nan
    return weight.assign(weight_kg=weight["weight_kg"].where(weight.index % 3 != 0))


# A dataset cannot hold a row without a subject (its bucket): null_subjects stays a frame case.
CASES = {case: (suite, breaking) for case, (suite, breaking, _) in BROKEN_TABLES.items() if case != "null_subjects"}
CASES["everywhere"] = ("bronze_weight", _broken_everywhere)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_give_the_one_process_result_on_broken_datasets(sample_tables, tmp_path, case):
    suite, breaking = CASES[case]
    ref = write_dataset(tmp_path / "ds", breaking(sample_tables[suite]), 4)
    result = assert_split_same(suite, ref, batch_rows=250)
    if case == "everywhere":
        failed = {o.rule for o in result.outcomes if not o.success}
        groups = contracts.rule_groups(contracts.load_suite(suite)["expectations"], 2, contracts.text_columns(ref))
        assert all(failed & set(g) for g in groups), (failed, groups)  # failures in both shares
        assert {"weight_kg_range", "energy_1_10_range", "one_row_per_subject_week", "week_present"} <= failed


def test_rule_groups_share_out_whole_columns_evenly_in_suite_order():
    for name in CONTRACT_SUITES:
        expectations = contracts.load_suite(name)["expectations"]
        order = [e["meta"]["rule"] for e in expectations]
        groups = contracts.rule_groups(expectations, 2)
        assert len(groups) == 2 and sorted(r for g in groups for r in g) == sorted(order)
        assert all(g == [r for r in order if r in g] for g in groups)
        column_of = {e["meta"]["rule"]: (contracts._rule_columns(e) or [""])[0] for e in expectations}
        owners = [{column_of[r] for r in g} for g in groups]
        assert not owners[0] & owners[1]  # a column is read by one process
    nutrition = contracts.load_suite("bronze_nutrition")["expectations"]
    # the two text columns, dearest to read, go to different processes
    text = contracts.rule_groups(nutrition, 2, {"food_item", "category"})
    assert sorted(("food_item_present" in g, "category_known" in g) for g in text) == [(False, True), (True, False)]
    assert contracts.rule_groups(nutrition, 1) == [[e["meta"]["rule"] for e in nutrition]]
    assert len(contracts.rule_groups(nutrition[:1], 2)) == 1  # one rule: nothing to share
    assert len(contracts.rule_groups(nutrition, 30)) == 10  # one group per column at most


@pytest.fixture
def no_worker_may_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a contract worker was started")

    monkeypatch.setattr(contract_workers, "Worker", refuse)


def test_one_process_never_starts_a_worker(sample_tables, tmp_path, no_worker_may_start):
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_nutrition"], 4)
    result = contracts.run_contract_dataset("bronze_nutrition", ref, batch_rows=10, processes=1)
    assert result.batches > 8 and result.success


@pytest.mark.parametrize("suite", CONTRACT_SUITES)
def test_below_the_threshold_a_worker_judges_the_whole_suite(sample_tables, tmp_path, suite):
    ref = write_dataset(tmp_path / "ds", sample_tables[suite], 4)
    rows = ref.row_count // 3  # a few batches of whole buckets
    batches = len(contracts.dataset_batches(ref, [], rows))
    assert 1 < batches < contracts.SPLIT_MIN_BATCHES
    one = contracts.run_contract_dataset(suite, ref, batch_rows=rows)
    two = contracts.run_contract_dataset(suite, ref, batch_rows=rows, processes=2)
    assert two == one and [o.as_dict() for o in two.outcomes] == [o.as_dict() for o in one.outcomes]
    assert two.batches == batches


# A small dataset judged with two processes: the calling process never imports GX (the worker
# does, with GX's optional Spark, SQL and Google integrations left out).
JUDGED_ELSEWHERE = """
import json, sys
from potato_assets.lib import contract_workers, contracts
from potato_assets.lib.lake.datasets import current
contracts.start_workers(2)
result = contracts.run_contract_dataset("bronze_weight", current(sys.argv[1]), processes=2)
(worker,) = contract_workers._WORKERS
worker.submit(contract_workers.imported, ["great_expectations", "pyspark", "sqlalchemy", "google.cloud"])
print(json.dumps({
    "here": "great_expectations" in sys.modules,
    "worker": worker.reply()[1],
    "success": result.success,
    "rows": result.rows,
}))
"""


def test_below_the_threshold_the_calling_process_never_imports_gx(sample_tables, tmp_path):
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_weight"], 4)
    out = subprocess.run(
        [sys.executable, "-c", JUDGED_ELSEWHERE, str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=300,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {
        "here": False,
        "worker": {"great_expectations": True, "pyspark": False, "sqlalchemy": False, "google.cloud": False},
        "success": True,
        "rows": ref.row_count,
    }


def test_an_unbatchable_suite_is_refused_the_same_before_any_worker_starts(
    sample_tables, tmp_path, no_worker_may_start
):
    suite = contracts.load_suite("bronze_weight")
    suite["expectations"][4] = {
        "type": "expect_column_values_to_be_unique",
        "kwargs": {"column": "date"},
        "meta": {"rule": "unique_dates"},
    }
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_weight"], 4)
    messages = []
    for processes in (1, 2):
        with pytest.raises(contracts.ContractError) as refused:
            contracts.run_contract_dataset(suite, ref, batch_rows=100, processes=processes, min_split_batches=1)
        messages.append(str(refused.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("contract bronze_weight.json, expectation 5 (unique_dates): a unique rule")


def test_an_error_in_either_process_is_the_one_process_error(sample_tables, tmp_path):
    """A part file gone under the check: every process fails on it; the error is the one a single
    process raises (the whole suite is judged once more in the caller's process)."""
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_nutrition"], 4)
    last = max(ref.files, key=lambda f: f.bucket)
    (tmp_path / "ds" / f"{VERSION_PREFIX}{ref.version}" / last.path).unlink()
    errors = []
    for processes in (1, 2):
        with pytest.raises(Exception) as failed:
            contracts.run_contract_dataset(
                "bronze_nutrition", ref, batch_rows=300, processes=processes, min_split_batches=1
            )
        errors.append((type(failed.value), str(failed.value)))
    assert errors[0] == errors[1]
    assert "the file is missing although the manifest lists it" in errors[0][1]
    # the worker is still there for the next contract
    good = write_dataset(tmp_path / "good", sample_tables["bronze_nutrition"], 4)
    assert_split_same("bronze_nutrition", good, batch_rows=300)


def test_a_worker_that_dies_fails_the_check_in_seconds_and_the_next_run_gets_a_new_one(sample_tables, tmp_path):
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_nutrition"], 8)
    assert len(contracts.dataset_batches(ref, [], 20)) > 100  # many seconds of work in each process
    killed: dict[str, float] = {}

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [w for w in list(contract_workers._WORKERS) if w.busy]
            if busy:
                time.sleep(0.5)
                killed["pid"] = busy[0].pid
                killed["at"] = time.monotonic()
                os.kill(busy[0].pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    try:
        with pytest.raises(contracts.ContractWorkerDied) as died:
            contracts.run_contract_dataset("bronze_nutrition", ref, batch_rows=20, **SPLIT)
    finally:
        killer.join()
    assert time.monotonic() - killed["at"] < 10
    assert str(died.value) == (
        f"contract bronze_nutrition: the contract worker process (pid {killed['pid']}) was killed by SIGKILL "
        "before it replied, so the check was not judged (the next contract run starts a new worker)."
    )
    again = assert_split_same("bronze_nutrition", ref, batch_rows=300)
    assert again.success
    assert killed["pid"] not in [w.pid for w in contract_workers._WORKERS]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# A parent whose worker is busy for ten minutes.
ORPHAN = """
import time
from potato_assets.lib import contract_workers
(worker,) = contract_workers.workers(1)
worker.submit(time.sleep, 600)
print(worker.pid, flush=True)
time.sleep(600)
"""


def test_a_worker_ends_when_its_parent_is_killed():
    """Mid-task too: its lifeline pipe closes with the parent."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ)
    )
    try:
        pid = int(parent.stdout.readline())
        assert _running(pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"worker {pid} outlived its killed parent by 10 s")


def test_the_caller_does_its_meanwhile_work_while_a_worker_judges_and_its_errors_change_nothing(
    sample_tables, tmp_path
):
    ref = write_dataset(tmp_path / "ds", sample_tables["bronze_weight"], 4)
    one = contracts.run_contract_dataset("bronze_weight", ref)
    worker_busy: list[bool] = []

    def meanwhile() -> None:
        worker_busy.append(any(w.busy for w in contract_workers._WORKERS))

    def failing() -> None:
        raise RuntimeError("a warm-up that failed")

    assert contracts.run_contract_dataset("bronze_weight", ref, processes=2, meanwhile=meanwhile) == one
    assert worker_busy == [True]
    assert contracts.run_contract_dataset("bronze_weight", ref, processes=2, meanwhile=failing) == one
    # one process, or a split (this process has its own share): no meanwhile
    contracts.run_contract_dataset("bronze_weight", ref, processes=1, meanwhile=meanwhile)
    contracts.run_contract_dataset("bronze_weight", ref, batch_rows=100, meanwhile=meanwhile, **SPLIT)
    assert worker_busy == [True]
