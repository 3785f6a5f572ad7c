"""Silver checks: each table's data contract, blocking, so no gold asset is fitted on a broken one."""

import dagster as dg

from potato_assets.defs.contract_checks import contract_check

SILVER_TABLES = ("study_calendar", "subject_trajectories", "weekly_features", "modeling_dataset")

contract_checks = [
    contract_check(dg.AssetKey(["silver", name]), f"silver_{name}", blocking=True) for name in SILVER_TABLES
]
