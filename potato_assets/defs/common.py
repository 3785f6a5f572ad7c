"""Names, owners and policies shared by the asset layers."""

from datetime import timedelta

import dagster as dg

from potato_assets.settings import load_settings

SETTINGS = load_settings()

OWNERS = ["team:data-engineering"]
SCIENCE_OWNERS = ["team:analytics"]

# Bumped when an asset's code changes what it produces, so unchanged assets show as up to date.
CODE_VERSION = "1"

# Bronze and gold must have been materialised within the window (default 26 h: a daily refresh
# plus slack); the daemon evaluates it and the UI shows it.
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=SETTINGS.freshness_hours))

# Every step that writes the lake claims a slot in this Dagster concurrency pool; dagster.yaml
# limits each pool to one slot, so two runs (queued, or in-process from the CLI) never write the
# lake at the same time.
LAKE_POOL = "lake"

# Downstream layers follow a successful upstream refresh, but only once the upstream blocking
# checks passed: bad bronze never propagates.
DOWNSTREAM_AUTOMATION = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
