"""Steps run in the run's own process, one after another.

Measured on the 2-core reference machine (README, "Performance"): a process per step spends
more time re-importing Dagster, pandas and the project than the steps take, even forked from a
preloaded forkserver. Runs stay isolated from each other: each run is its own process.
"""

import dagster as dg


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
