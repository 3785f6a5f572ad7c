"""Bronze checks: each file's data contract and its quarantine-share gate, both blocking.

Both run on what ingest_landing wrote (the rows kept after quarantine), so a failure stops silver
and gold in the same run and the automation condition keeps them from following later.
"""

from typing import Any

import dagster as dg

from potato_assets.defs.bronze.assets import QUARANTINE_KEY, bronze_key
from potato_assets.defs.common import LAKE_CHECKS_TAG, DataFrame
from potato_assets.defs.contract_checks import OFFENDING_ROWS, contract_check
from potato_assets.defs.resources import LakeFiles
from potato_assets.lib import markdown
from potato_assets.settings import get_settings
from potato_assets.study.schema import LANDING_FILES, LandingFile

EXAMPLE_RECORDS = 10

contract_checks = [
    contract_check(bronze_key(spec.asset_name), f"bronze_{spec.asset_name}", blocking=True, source_file=spec.file_name)
    for spec in LANDING_FILES
]


def _metadata_value(metadata: dict, key: str) -> int | None:
    entry = metadata.get(key)
    return None if entry is None else int(entry.value)


def quarantine_share_check(spec: LandingFile) -> dg.AssetChecksDefinition:
    key = bronze_key(spec.asset_name)
    limit = get_settings().max_quarantine_share

    @dg.asset_check(
        asset=key,
        name="quarantine_share",
        blocking=True,
        additional_ins={"quarantine": dg.AssetIn(QUARANTINE_KEY)},
        description=(
            f"Blocks downstream when more than {limit:.0%} of {spec.file_name}'s rows were quarantined "
            "(POTATO_MAX_QUARANTINE_SHARE): beyond that the export itself is suspect, not a few rows. "
            "Metadata counts the rows read, kept, quarantined (by reason) and exact duplicates dropped."
        ),
    )
    def _quarantine_share(
        context: dg.AssetCheckExecutionContext, quarantine: DataFrame, lake: LakeFiles
    ) -> dg.AssetCheckResult:
        # The counts come from the materialisation that wrote the stored table; the identity
        # kept = read - quarantined - duplicates (and the same quarantined lines as stored) proves
        # they describe this very table, whose rows are counted from its parquet footer (loading
        # a large bronze table to count it cost ~0.7 s at 10k subjects).
        kept = lake.table_rows(key)
        event = context.instance.get_latest_materialization_event(key)
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        rows_read = _metadata_value(metadata, "rows_read")
        rows_quarantined = _metadata_value(metadata, "rows_quarantined")
        duplicates = _metadata_value(metadata, "exact_duplicates_dropped") or 0
        mine = quarantine[quarantine["source_file"] == spec.file_name]
        reasons = mine["reason"].str.replace(r" \(conflicts with [^)]*\)$", "", regex=True).value_counts().sort_index()
        facts: dict[str, Any] = {
            "source_file": spec.file_name,
            "rows_kept": kept,
            "max_quarantine_share": limit,
            "quarantine_records": len(mine),
            "quarantine_reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
            # Landing cells are untrusted: escaped and cut (lib/markdown.py), never raw Markdown.
            "quarantine_examples": dg.MetadataValue.md(
                markdown.table(mine, max_rows=EXAMPLE_RECORDS) if len(mine) else "(none)"
            ),
        }
        if len(mine):
            # The shape every failed check shares (contract_checks.offending_rows): file, line, column, value.
            facts["offending_rows"] = dg.MetadataValue.json(
                [
                    {
                        "file": r["source_file"],
                        "line": int(r["line"]),
                        "column": r["column"],
                        "value": r["value"],
                        "reason": r["reason"],
                    }
                    for r in mine.head(OFFENDING_ROWS).to_dict("records")
                ]
            )
        # Distinct quarantined lines of this file, as ingest counts them (study/ingest.py).
        lake_quarantined = int(mine["line"].nunique())
        recorded = rows_read is not None and rows_quarantined is not None
        if (
            rows_read is not None
            and rows_quarantined is not None
            and rows_quarantined == lake_quarantined
            and rows_read - rows_quarantined - duplicates == kept
        ):
            share = rows_quarantined / rows_read if rows_read else 0.0
            passed = share <= limit
            return dg.AssetCheckResult(
                passed=passed,
                description=(
                    f"{spec.file_name}: {rows_quarantined} of {rows_read} rows quarantined ({share:.1%}), "
                    + ("within" if passed else "more than")
                    + f" the {limit:.0%} allowed."
                ),
                metadata={
                    **facts,
                    "rows_read": rows_read,
                    "rows_quarantined": rows_quarantined,
                    "exact_duplicates_dropped": duplicates,
                    "quarantine_share": float(share),
                    "counted_from": "materialisation",
                },
            )
        if recorded and LAKE_CHECKS_TAG not in context.run.tags:
            # A materialising run's own record disagrees with what it wrote: that is the defect.
            return dg.AssetCheckResult(
                passed=False,
                description=(
                    f"{spec.file_name}: the stored table has {kept} rows but its latest materialisation "
                    f"reports {rows_read} read, {rows_quarantined} quarantined and {duplicates} duplicates "
                    f"dropped (the stored quarantine holds {lake_quarantined} of its lines); the lake and the "
                    "event log disagree, rematerialise bronze."
                ),
                metadata={**facts, "rows_read": rows_read, "rows_quarantined": rows_quarantined},
            )
        # From the lake alone (no record here of the materialisation that wrote this table, e.g.
        # a checks-only run on a lake built elsewhere): the lake does not keep the count of exact
        # duplicates dropped, so rows read >= kept + quarantined and this share is an upper bound.
        share = lake_quarantined / (kept + lake_quarantined) if kept + lake_quarantined else 0.0
        passed = share <= limit
        why = (
            "this instance's latest materialisation describes another table"
            if recorded
            else "this instance has no materialisation of it recording row counts"
        )
        return dg.AssetCheckResult(
            passed=passed,
            description=(
                f"{spec.file_name}: {lake_quarantined} of at least {kept + lake_quarantined} rows quarantined "
                f"(at most {share:.1%}), " + ("within" if passed else "more than") + f" the {limit:.0%} allowed; "
                f"counted from the lake alone ({why}), exact duplicates dropped unknown."
            ),
            metadata={
                **facts,
                "rows_quarantined": lake_quarantined,
                "quarantine_share_upper_bound": float(share),
                "counted_from": "lake",
            },
        )

    return _quarantine_share


quarantine_checks = [quarantine_share_check(spec) for spec in LANDING_FILES]
