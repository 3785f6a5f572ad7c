"""Names, owners and policies shared by the asset layers."""

import os
from datetime import timedelta
from typing import TYPE_CHECKING, overload

import dagster as dg

from potato_assets.settings import get_settings


@overload
def from_environment(env_name: str, value: str) -> str: ...
@overload
def from_environment(env_name: str, value: str | None) -> str | None: ...
def from_environment(env_name: str, value: str | None) -> str | None:
    """A setting that may carry credentials (a URL's userinfo, a token), as resource config.

    Dagster stores a resource's config in every run's job snapshot and shows it in the UI; given
    as dg.EnvVar (a str), only the variable's name is stored and the step reads the value itself.
    """
    if value and (os.environ.get(env_name) or "").strip() == value:
        return dg.EnvVar(env_name)
    return value


def _is_data_frame(_context: dg.TypeCheckContext, value: object) -> bool:
    import pandas as pd  # loaded already whenever a step runs

    return isinstance(value, pd.DataFrame)


if TYPE_CHECKING:
    from pandas import DataFrame
else:
    # Asset and check signatures say `DataFrame`: type checkers see pandas' class, Dagster this
    # type, which imports pandas only when a value is checked. Loading the definitions (every
    # code-server, daemon and CLI start) then skips importing pandas, ~0.6 s. The science modules
    # under lib/ import pandas, so the defs import them inside the functions that use them.
    DataFrame = dg.DagsterType(
        name="DataFrame",
        type_check_fn=_is_data_frame,
        description="A pandas DataFrame, stored as a parquet table in the lake.",
    )

# Set on the runs of the checks-only jobs (defs/checks_job.py): checks then judge the lake alone,
# not the instance's record of a materialisation that may describe another lake.
LAKE_CHECKS_TAG = "potato/lake_checks"

OWNERS = ["team:data-engineering"]
SCIENCE_OWNERS = ["team:analytics"]

# Bumped when an asset's code changes what it produces, so unchanged assets show as up to date.
CODE_VERSION = "1"

# Tags Dagster writes and reads on asset events (no public constant): an event's data version
# (`dg.ObserveResult(data_version=...)` writes it, AssetObservation.data_version reads it) and,
# on a materialisation, each input's data version under `{INPUT_DATA_VERSION_TAG}/{input key}`.
DATA_VERSION_TAG = "dagster/data_version"
INPUT_DATA_VERSION_TAG = "dagster/input_data_version"


def freshness_policy() -> dg.FreshnessPolicy:
    """Bronze and gold must have been materialised within POTATO_FRESHNESS_HOURS (default 26 h: a
    daily refresh plus slack); the daemon evaluates it and the UI shows it."""
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=get_settings().freshness_hours))


# Every step that writes the lake claims a slot in this Dagster concurrency pool; dagster.yaml
# limits each pool to one slot, so two runs (queued, or in-process from the CLI) never write the
# lake at the same time.
LAKE_POOL = "lake"

# Silver and gold rebuild when an input's DATA VERSION changed (content hashes from landing to
# silver; gold's versions follow from its inputs' and code versions), not on every upstream run:
# a landing change reruns only what depends on the changed content. Like eager(), but with
# data_version_changed() in place of any_deps_updated(). `.since(HANDLED)` (what eager's
# since_last_handled() is) keeps a change that arrives while a dependency still runs until this
# asset is requested or materialised. Runs only once the upstream blocking checks passed: bad
# bronze never propagates.
INPUTS_CHANGED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).with_label(
    "any_dep_data_version_changed"
)
HANDLED = (
    dg.AutomationCondition.newly_requested()
    | dg.AutomationCondition.newly_updated()
    | dg.AutomationCondition.initial_evaluation()
).with_label("handled")
DOWNSTREAM_AUTOMATION = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.code_version_changed() | INPUTS_CHANGED).since(
        HANDLED
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("inputs_changed")
