"""The executor holds the lake for the whole run: a run waits while another run holds the `lake`
pool's slot, says which run holds it, takes the slot when it is free and frees it at its end; a
slot left by a run that ended is taken back."""

from __future__ import annotations

import threading
import time
import uuid

import dagster as dg
import pytest

from potato_assets.defs.common import LAKE_POOL
from potato_assets.defs.executor import HOLDING, WAITING, WHOLE_RUN, in_process_lake_held

RUN_POOLS = {"concurrency": {"pools": {"default_limit": 1, "granularity": "run"}}}


@dg.asset(pool=LAKE_POOL)
def lake_table() -> int:
    return 1


def lake_job() -> dg.JobDefinition:
    job = dg.define_asset_job("lake_job", selection=[lake_table])
    return dg.Definitions(assets=[lake_table], jobs=[job], executor=in_process_lake_held).resolve_job_def("lake_job")


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        e.dagster_event.message or ""
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"
    ]


def hold_the_lake(instance: dg.DagsterInstance) -> dg.DagsterRun:
    holder = dg.DagsterRun(job_name="holder", run_id=uuid.uuid4().hex, status=dg.DagsterRunStatus.STARTED)
    instance.add_run(holder)
    instance.event_log_storage.initialize_concurrency_limit_to_default(LAKE_POOL)
    assert instance.event_log_storage.claim_concurrency_slot(LAKE_POOL, holder.run_id, WHOLE_RUN).is_claimed
    return holder


# Generous: a loaded CI machine takes tens of seconds to start a run in a thread.
JOIN_SECONDS = 300


def start_run(instance: dg.DagsterInstance) -> tuple[threading.Thread, list]:
    results: list = []

    def run() -> None:
        with dg.execute_job(dg.reconstructable(lake_job), instance=instance) as result:
            results.append(result.success)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def waiting_run(instance: dg.DagsterInstance, holder: dg.DagsterRun, thread: threading.Thread) -> str:
    deadline = time.monotonic() + JOIN_SECONDS
    while time.monotonic() < deadline and thread.is_alive():
        for run in instance.get_runs():
            if run.run_id != holder.run_id and any(WAITING in m for m in engine_messages(instance, run.run_id)):
                return run.run_id
        time.sleep(0.2)
    pytest.fail("no run waited for the lake")


def test_a_run_waits_for_the_run_holding_the_lake(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=RUN_POOLS) as instance:
        holder = hold_the_lake(instance)
        thread, results = start_run(instance)
        run_id = waiting_run(instance, holder, thread)
        time.sleep(1.5)
        assert (
            thread.is_alive()
            and not instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
        )
        assert any(holder.run_id in m for m in engine_messages(instance, run_id) if WAITING in m)

        instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
        thread.join(timeout=JOIN_SECONDS)
        assert not thread.is_alive(), "the run did not finish"
        assert results == [True]
        assert any(HOLDING in m for m in engine_messages(instance, run_id))
        info = instance.event_log_storage.get_concurrency_info(LAKE_POOL)
        assert info.claimed_slots == [] and info.pending_steps == []


def test_a_slot_left_by_a_run_that_ended_is_taken_back(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=RUN_POOLS) as instance:
        holder = hold_the_lake(instance)
        instance.report_run_failed(holder)  # ended without freeing its slot (killed)
        thread, results = start_run(instance)
        thread.join(timeout=JOIN_SECONDS)
        assert not thread.is_alive(), "the run did not finish"
        assert results == [True]
        assert instance.event_log_storage.get_concurrency_info(LAKE_POOL).claimed_slots == []


def test_per_step_slots_are_not_held_for_the_whole_run(tmp_path):
    """With `granularity: op` the run's own steps would wait for the slot the run holds: the
    executor says so and leaves the slots to the steps."""
    op_pools = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=op_pools) as instance:
        thread, results = start_run(instance)
        thread.join(timeout=JOIN_SECONDS)
        assert not thread.is_alive(), "the run did not finish"
        assert results == [True]
        (run,) = instance.get_runs()
        assert any("not holding the lake" in m for m in engine_messages(instance, run.run_id))


@dg.asset
def first_table() -> int:
    return 1


@dg.asset
def second_table(first_table: int) -> int:
    return first_table + 1


def two_step_job() -> dg.JobDefinition:
    job = dg.define_asset_job("two_steps", selection=[first_table, second_table])
    return dg.Definitions(
        assets=[first_table, second_table], jobs=[job], executor=in_process_lake_held
    ).resolve_job_def("two_steps")


def test_freed_memory_goes_back_after_every_step(monkeypatch):
    from potato_assets.lib import process

    released: list[int] = []
    monkeypatch.setattr(process, "release_freed_memory", lambda: released.append(1))
    with (
        dg.instance_for_test() as instance,
        dg.execute_job(dg.reconstructable(two_step_job), instance=instance) as result,
    ):
        assert result.success
    assert len(released) == 2
