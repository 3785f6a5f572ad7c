"""Checks-only jobs: every asset check (or one layer's) against the tables already in the lake.

A job that selects checks and no assets runs just the check steps; each loads its asset (and its
`additional_ins`) through the lake IO manager, which only reads, so the run materialises nothing
and writes nothing to the lake (POTATO_LAKE_URI, local or s3://). It is an ordinary run on the
instance: results show in the UI under each asset's checks, and in the console.

`python -m potato_assets.lake_checks` (`make checks`) runs one with `dagster job execute` and
prints the verdict of every check; a blocking check failing with ERROR also fails its step.

Left out: the gold `experiment_tracking` checks. They judge whether a materialisation reached
MLflow, a fact about a run and not about the lake's data, so a checks-only run has nothing to
judge them on.
"""

from typing import TYPE_CHECKING

import dagster as dg

from potato_assets.defs.common import LAKE_CHECKS_TAG
from potato_assets.defs.gold.tracking_checks import tracking_checks

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

LAYERS = ("bronze", "silver", "gold")
JOB_PREFIX = "lake_checks"
# Checks about a materialisation, not the stored data (see the module docstring).
RUN_ONLY_CHECKS = dg.AssetSelection.checks(*tracking_checks)


def job_name(layer: str | None = None) -> str:
    if layer is not None and layer not in LAYERS:
        raise ValueError(f"layer {layer!r} is not one of {', '.join(LAYERS)}")
    return JOB_PREFIX if layer is None else f"{JOB_PREFIX}_{layer}"


def lake_checks_selection(layer: str | None = None) -> dg.AssetSelection:
    """The checks of every asset (or of one layer's group), without the assets themselves."""
    checks: dg.AssetSelection = dg.AssetSelection.all_asset_checks()
    if layer is not None:
        # A group selects its assets and their checks; the intersection keeps the checks only.
        checks = checks & dg.AssetSelection.groups(layer)
    return checks - RUN_ONLY_CHECKS


def lake_checks_job(layer: str | None = None) -> "UnresolvedAssetJobDefinition":
    scope = "every layer" if layer is None else f"the {layer} layer"
    return dg.define_asset_job(
        name=job_name(layer),
        selection=lake_checks_selection(layer),
        tags={LAKE_CHECKS_TAG: layer or "all"},
        description=(
            f"Runs the asset checks of {scope} against the tables already in the lake "
            "(POTATO_LAKE_URI) without materialising anything; `make checks` runs it and prints "
            "each verdict. Leaves out experiment_tracking (a fact about a materialisation)."
        ),
    )


@dg.definitions
def checks_jobs() -> dg.Definitions:
    return dg.Definitions(jobs=[lake_checks_job(None), *(lake_checks_job(layer) for layer in LAYERS)])
