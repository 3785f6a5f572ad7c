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


# The Dagster type names below; the lake IO manager reads an input by what its upstream declared.
DATA_FRAME_TYPE_NAME = "DataFrame"
LAKE_DATASET_TYPE_NAME = "LakeDataset"


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
        name=DATA_FRAME_TYPE_NAME,
        type_check_fn=_is_data_frame,
        description="A pandas DataFrame, stored as a parquet table in the lake.",
    )


def _is_dataset_ref(_context: dg.TypeCheckContext, value: object) -> bool:
    from potato_assets.lib.lake.datasets import DatasetRef

    return isinstance(value, DatasetRef)


if TYPE_CHECKING:
    from potato_assets.lib.lake.datasets import DatasetRef as LakeDataset
else:
    # What bronze and silver assets return and take: a reference to a committed, subject-bucketed
    # dataset in the lake (lib/lake/datasets.py), never the rows themselves.
    LakeDataset = dg.DagsterType(
        name=LAKE_DATASET_TYPE_NAME,
        type_check_fn=_is_dataset_ref,
        description=(
            "A committed version of a subject-bucketed parquet dataset in the lake"
            " ({lake}/<asset>/v-<version>/bucket=NN/part-NNNNN.parquet); a reference, not the rows."
        ),
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

# The landing sensor's run takes a landing change to gold by itself (defs/automation.py). The
# automation sensor covers what no landing file announces: a deploy that bumps an asset's code
# version, an asset gone missing, and a bronze refresh started by hand (UI, CLI). An asset is
# requested when one of those happened since it was last requested or materialised
# (`.since(HANDLED)`, what eager()'s since_last_handled() is), and ALSO whenever an asset it
# depends on is requested on the same tick (`will_be_requested()`): a request carries everything
# downstream of the change in ONE run instead of one layer per tick. Runs only once upstream
# blocking checks passed (or are part of the same run, where a failed blocking check skips
# what depends on it): bad bronze never propagates. `data_version_changed()` (content hashes
# from landing to silver) rather than `any_deps_updated()`: an input recomputed to the same
# content triggers nothing. Inside a landing run, each asset's own materialisation resets its
# triggers (its timestamp is later than its inputs'), so no second run follows.
INPUTS_CHANGED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).with_label(
    "any_dep_data_version_changed"
)
HANDLED = (
    dg.AutomationCondition.newly_requested()
    | dg.AutomationCondition.newly_updated()
    | dg.AutomationCondition.initial_evaluation()
).with_label("handled")
UPSTREAM_REQUESTED = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label(
    "any_dep_requested_this_tick"
)
DOWNSTREAM_AUTOMATION = (
    (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.code_version_changed() | INPUTS_CHANGED).since(
            HANDLED
        )
        | UPSTREAM_REQUESTED
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("inputs_changed")


# What gold's fits and figures import lazily (statsmodels: MixedLM on small panels and scipy's
# laws for every fit; matplotlib's Agg canvas): loaded and frozen (lib/process.preload) before the
# first fit, and earlier by a run's process that would only wait while a contract worker judges
# silver (defs/silver/checks.py). linearmodels is the tests' reference only.
MODEL_LIBRARIES = ("statsmodels.api",)
FIGURE_LIBRARIES = ("matplotlib.figure", "matplotlib.backends.backend_agg")
