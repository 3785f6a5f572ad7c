"""Steps run in the run's own process, one after another, and a run that writes the lake holds
it from its first step to its last.

Measured on the 2-core reference machine (README, "Performance"): a process per step spends
more time re-importing Dagster, pandas and the project than the steps take, even forked from a
preloaded forkserver. Runs stay isolated from each other: each run is its own process.

The lake is held per RUN, not per step: with a slot per step, two runs started together took
turns step by step, and one run's gold could be fitted on silver the other run wrote. The run
queue (UI, sensors, schedule) keeps a second lake-writing run queued while one is in progress
(`concurrency.pools.granularity: run` in dagster.yaml), but `dagster asset materialize` does not
pass the queue; so this executor itself claims the `lake` pool's slot in the instance database
before the first step and frees it after the last, however the run was launched. A run waiting
for the slot says which run holds it.
"""

import time
from collections.abc import Iterator

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.instance.config import PoolGranularity

from potato_assets.defs.common import LAKE_POOL

# The pseudo step under which a run holds the lake (shown as such in the UI's pool page).
WHOLE_RUN = "whole_run"
# How often a waiting run asks again; Dagster's own claim loop backs off to 15 s, too slow here.
POLL_SECONDS = (0.5, 2.0)
WAITING = "waiting for the lake"
HOLDING = "holds the lake"


def _event(context: PlanOrchestrationContext, message: str) -> DagsterEvent:
    return DagsterEvent.engine_event(context, message, EngineEventData())


def _writes_the_lake(execution_plan: ExecutionPlan) -> bool:
    return any(execution_plan.get_step_by_key(key).pool == LAKE_POOL for key in execution_plan.step_keys_to_execute)


def _free_slots_of_ended_runs(instance: dg.DagsterInstance, holders: set[str], run_id: str) -> None:
    """A run that ended without freeing its slot (killed between claim and free) must not hold
    the lake forever; the daemon's run monitoring does the same after a delay."""
    for holder in holders - {run_id}:
        run = instance.get_run_by_id(holder)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(holder)


class LakeHeldExecutor(dg.Executor):
    """The in-process executor, inside a claim of the `lake` pool for the whole run."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        instance = plan_context.instance
        storage = instance.event_log_storage
        if not _writes_the_lake(execution_plan) or not storage.supports_global_concurrency_limits:
            yield from _releasing_between_steps(self._inner.execute(plan_context, execution_plan))
            return
        pools = instance.get_concurrency_config().pool_config
        if pools.default_pool_limit is not None:
            try:
                storage.initialize_concurrency_limit_to_default(LAKE_POOL)
            except Exception:
                # Another process (the daemon's queue, another run) created the pool first: Dagster
                # then retries inside the failed transaction, which Postgres refuses. The pool exists.
                if LAKE_POOL not in storage.get_concurrency_keys():
                    raise
        if pools.pool_granularity != PoolGranularity.RUN or storage.get_concurrency_info(LAKE_POOL).limit is None:
            # With per-step slots the run's own steps would wait for the slot the run holds.
            yield _event(
                plan_context,
                f"not holding the lake for the whole run: this instance needs a limit for pool "
                f"'{LAKE_POOL}' and concurrency.pools.granularity: run (see dagster.yaml); runs may interleave",
            )
            yield from _releasing_between_steps(self._inner.execute(plan_context, execution_plan))
            return

        run_id = plan_context.run_id
        try:
            status = storage.claim_concurrency_slot(LAKE_POOL, run_id, WHOLE_RUN)
            announced: set[str] | None = None
            started = time.monotonic()
            while not status.is_claimed:
                holders = storage.get_concurrency_info(LAKE_POOL).active_run_ids - {run_id}
                if holders != announced:
                    yield _event(
                        plan_context, f"{WAITING} (pool '{LAKE_POOL}'), held by run {', '.join(sorted(holders))}"
                    )
                    announced = holders
                _free_slots_of_ended_runs(instance, holders, run_id)
                time.sleep(min(max(status.sleep_interval or 0.0, POLL_SECONDS[0]), POLL_SECONDS[1]))
                status = storage.claim_concurrency_slot(LAKE_POOL, run_id, WHOLE_RUN)
            yield _event(
                plan_context,
                f"{HOLDING} (pool '{LAKE_POOL}') until its last step"
                + (f", after waiting {time.monotonic() - started:.1f} s" if announced is not None else ""),
            )
            yield from _releasing_between_steps(self._inner.execute(plan_context, execution_plan))
        finally:
            # Frees the slot, or the place in line of a run that stopped while waiting.
            storage.free_concurrency_slot_for_step(run_id, WHOLE_RUN)


def _releasing_between_steps(events: Iterator[DagsterEvent]) -> Iterator[DagsterEvent]:
    """Steps run one after another in this process: each ended step's freed memory goes back to
    the system before the next starts, so a step's peak does not stack on what the ones before
    it freed but the allocators kept (lib/process.release_freed_memory; ~1 ms a step)."""
    from potato_assets.lib.process import release_freed_memory

    for event in events:
        yield event
        if event.is_step_success or event.is_step_failure:
            release_freed_memory()


def _create(init_context: dg.InitExecutorContext) -> dg.Executor:
    create_in_process = dg.in_process_executor.executor_creation_fn
    assert create_in_process is not None
    return LakeHeldExecutor(create_in_process(init_context))


# The in-process executor's own config (retries, ...) and requirements, around the lake claim.
in_process_lake_held = dg.ExecutorDefinition(
    name="in_process_lake_held",
    config_schema=dg.in_process_executor.config_schema.as_field(),
    requirements=dg.in_process_executor.get_requirements,
    executor_creation_fn=_create,
    description="In-process execution that holds the lake (pool 'lake') from the run's first step to its last.",
)


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=in_process_lake_held)
