"""Silver checks: each table's data contract, blocking, so no gold asset is fitted on a broken one."""

import dagster as dg

from potato_assets.defs.common import FIGURE_LIBRARIES, MODEL_LIBRARIES
from potato_assets.defs.contract_checks import contract_check

SILVER_TABLES = ("study_calendar", "subject_trajectories", "weekly_features", "modeling_dataset")
# The last two checks before gold: gold's libraries load while a contract worker judges them. Not
# earlier: they would sit in the run's memory through weekly_features, silver's largest step.
WARMING_GOLD = ("weekly_features", "modeling_dataset")

contract_checks = [
    contract_check(
        dg.AssetKey(["silver", name]),
        f"silver_{name}",
        blocking=True,
        warm_imports=(*MODEL_LIBRARIES, *FIGURE_LIBRARIES) if name in WARMING_GOLD else (),
    )
    for name in SILVER_TABLES
]
