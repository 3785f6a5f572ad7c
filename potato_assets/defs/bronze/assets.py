"""Bronze: each landing CSV kept as-is (every column and value), typed, with ingestion columns.

One step ingests the three files together so that a file-level defect in any of them fails the
step before anything is written: the lake keeps the last good snapshot of all three.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from potato_assets.defs.common import CODE_VERSION, LAKE_POOL, OWNERS, DataFrame, LakeDataset, freshness_policy
from potato_assets.defs.resources import LakeDatasets, LandingZone
from potato_assets.lib.lake import storage
from potato_assets.lib.lake.datasets import LAYOUT, LAYOUT_KEY
from potato_assets.study.schema import FIBER, LANDING_FILES, WEIGHT

QUARANTINE_KEY = dg.AssetKey(["bronze", "quarantine"])


def landing_key(asset_name: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", asset_name])


def bronze_key(asset_name: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", asset_name])


@dg.multi_observable_source_asset(
    name="observe_landing",
    specs=[
        dg.AssetSpec(
            landing_key(spec.asset_name),
            description=f"{spec.file_name} as it arrives in the landing zone (POTATO_LANDING_URI).",
            group_name="landing",
            kinds={"csv"},
            owners=OWNERS,
            metadata={"file_name": spec.file_name},
        )
        for spec in LANDING_FILES
    ],
)
def observe_landing(landing: LandingZone) -> Iterator[dg.ObserveResult]:
    """Data version of each landing file = its content hash, the same version its bronze table
    carries: an unchanged file leaves everything downstream up to date."""
    for spec in LANDING_FILES:
        raw = landing.read_bytes(spec.file_name)
        yield dg.ObserveResult(
            asset_key=landing_key(spec.asset_name),
            data_version=dg.DataVersion(storage.sha256_hex(raw)[:16]),
            metadata={"uri": landing.uri(spec.file_name), "size_bytes": len(raw)},
        )


BRONZE: dict[str, Any] = dict(
    group_name="bronze",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    freshness_policy=freshness_policy(),
)


@dg.multi_asset(
    name="ingest_landing",
    pool=LAKE_POOL,
    outs={
        **{
            bronze_key(spec.asset_name).to_python_identifier(): dg.AssetOut(
                key=bronze_key(spec.asset_name),
                description=(
                    f"{spec.file_name} ingested as-is: every column and value, parsed to the study "
                    "types, plus source_file, source_line (header = line 1) and ingested_at. "
                    "Rows with defects go to bronze/quarantine instead. Stored as a dataset in "
                    "subject buckets."
                ),
                dagster_type=LakeDataset,
                metadata={LAYOUT_KEY: LAYOUT},
                **BRONZE,
            )
            for spec in LANDING_FILES
        },
        QUARANTINE_KEY.to_python_identifier(): dg.AssetOut(
            key=QUARANTINE_KEY,
            description=(
                "Row-level defects of the landing files, one record per offending cell: "
                "source_file, line (header = line 1), column, value, reason."
            ),
            dagster_type=DataFrame,
            **BRONZE,
        ),
    },
    deps=[landing_key(spec.asset_name) for spec in LANDING_FILES],
    internal_asset_deps={
        **{
            bronze_key(spec.asset_name).to_python_identifier(): {landing_key(spec.asset_name)} for spec in LANDING_FILES
        },
        QUARANTINE_KEY.to_python_identifier(): {landing_key(spec.asset_name) for spec in LANDING_FILES},
    },
)
def ingest_landing(
    context: dg.AssetExecutionContext, landing: LandingZone, lake_datasets: LakeDatasets
) -> Iterator[dg.MaterializeResult]:
    import contextlib

    import pandas as pd

    from potato_assets.study.ingest import (
        FileDefect,
        IngestResult,
        parse_landing_csv,
        quarantine_label_contradictions,
    )

    ingested_at = pd.Timestamp.now(tz="UTC")
    results: dict[str, tuple[IngestResult, str]] = {}
    # Parse everything before yielding anything: one bad file writes nothing at all. read_bytes
    # reads only regular files inside the landing zone, up to POTATO_MAX_LANDING_BYTES.
    for spec in LANDING_FILES:
        raw = landing.read_bytes(spec.file_name)
        try:
            result = parse_landing_csv(raw, spec, source_file=spec.file_name, ingested_at=ingested_at)
        except FileDefect as exc:
            raise dg.Failure(description=str(exc)) from None
        results[spec.asset_name] = (result, storage.sha256_hex(raw))
    # A row whose date and week label contradict its subject's calendar (set by most of its
    # rows in both labelled files) is quarantined by name; the rest goes on.
    moved = quarantine_label_contradictions(results[WEIGHT.asset_name][0], results[FIBER.asset_name][0])
    if moved:
        context.log.warning(f"{moved} row(s) quarantined: their week label contradicts their subject's calendar")

    # Every table's parts are written before any is committed: a failure while writing leaves
    # all three as the last good run wrote them.
    refs = {}
    with contextlib.ExitStack() as stack:
        writers = {
            spec.asset_name: stack.enter_context(lake_datasets.writer(bronze_key(spec.asset_name)))
            for spec in LANDING_FILES
        }
        for spec in LANDING_FILES:
            writers[spec.asset_name].write_table(results[spec.asset_name][0].rows)
        for spec in LANDING_FILES:
            refs[spec.asset_name] = writers[spec.asset_name].commit(results[spec.asset_name][1][:16])

    for spec in LANDING_FILES:
        result, digest = results[spec.asset_name]
        context.log.info(
            f"{spec.file_name}: {result.rows_read} rows read, {len(result.rows)} kept, "
            f"{result.rows_quarantined} quarantined, {result.exact_duplicates_dropped} exact duplicates dropped"
        )
        for note in result.notes:
            context.log.warning(f"{spec.file_name}: {note}.")
        # MaterializeResult, not Output: Output's data_version parameter is beta (and warns).
        yield dg.MaterializeResult(
            asset_key=bronze_key(spec.asset_name),
            value=refs[spec.asset_name],
            data_version=dg.DataVersion(digest[:16]),
            metadata={
                "source_uri": landing.uri(spec.file_name),
                "source_sha256": digest,
                "encoding": result.encoding,
                # What decoding and header cleaning did beyond plain reading (empty: nothing).
                "ingest_notes": dg.MetadataValue.json(list(result.notes)),
                "rows_read": result.rows_read,
                "rows_quarantined": result.rows_quarantined,
                "quarantine_share": float(result.quarantine_share),
                "exact_duplicates_dropped": result.exact_duplicates_dropped,
            },
        )
    quarantine = pd.concat([r.quarantine for r, _ in results.values()], ignore_index=True)
    yield dg.MaterializeResult(
        asset_key=QUARANTINE_KEY,
        value=quarantine,
        data_version=dg.DataVersion(storage.sha256_hex("".join(d for _, d in results.values()).encode())[:16]),
        metadata={f"rows_quarantined/{name}": r.rows_quarantined for name, (r, _) in results.items()},
    )
