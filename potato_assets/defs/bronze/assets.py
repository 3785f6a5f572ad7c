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
from potato_assets.study.schema import LANDING_FILES

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
        sha256, size_bytes = landing.digest(spec.file_name)
        yield dg.ObserveResult(
            asset_key=landing_key(spec.asset_name),
            data_version=dg.DataVersion(sha256[:16]),
            metadata={"uri": landing.uri(spec.file_name), "size_bytes": size_bytes},
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
    """Two phases, in bounded memory whatever the files' size. A: each file streams in batches
    (decoded, typed, row defects quarantined) into staging: in memory while the rows are few,
    else subject buckets in a local scratch folder (defs/bronze/staging.py). B: per bucket, the
    rules that need all of a subject's rows (duplicates, label contradictions), into the lake's
    new versions. A file-level defect anywhere fails the step
    before anything is committed: the lake keeps the last good snapshot of all three."""
    import contextlib
    import functools
    import gc
    import shutil
    import tempfile

    import pandas as pd

    from potato_assets.defs.bronze.staging import Staging
    from potato_assets.lib.process import release_freed_memory
    from potato_assets.study.ingest import FileDefect
    from potato_assets.study.ingest_stream import FileTotals, finish_bucket, stream_landing_csv

    ingested_at = pd.Timestamp.now(tz="UTC")
    buckets = lake_datasets.buckets
    scratch = tempfile.mkdtemp(prefix="potato-bronze-")
    staging = Staging(scratch, buckets)
    try:
        totals: dict[str, FileTotals] = {}
        quarantine: dict[str, list[pd.DataFrame]] = {spec.file_name: [] for spec in LANDING_FILES}
        for spec in LANDING_FILES:
            # landing.chunks reads only regular files inside the landing zone, up to
            # POTATO_MAX_LANDING_BYTES; the stream reads the file twice (encoding, then rows).
            stream = stream_landing_csv(
                functools.partial(landing.chunks, spec.file_name),
                spec,
                source_file=spec.file_name,
                ingested_at=ingested_at,
            )
            try:
                for batch in stream:
                    staging.add(spec.file_name, batch.rows, stream.size_bytes)
                    if len(batch.quarantine):
                        quarantine[spec.file_name].append(batch.quarantine)
            except FileDefect as exc:
                raise dg.Failure(description=str(exc)) from None
            staging.close(spec.file_name)
            release_freed_memory()
            totals[spec.asset_name] = FileTotals.of(stream)

        # Every table's parts are written before any is committed: a failure while writing
        # leaves all three as the last good run wrote them.
        refs, moved = {}, 0
        with contextlib.ExitStack() as stack:
            writers = {
                spec.asset_name: stack.enter_context(lake_datasets.writer(bronze_key(spec.asset_name)))
                for spec in LANDING_FILES
            }
            for bucket, rows_by_file in staging.groups():
                result = finish_bucket(rows_by_file)
                moved += result.label_contradictions
                for spec in LANDING_FILES:
                    totals[spec.asset_name].add(result)
                    writers[spec.asset_name].write(bucket, result.rows[spec.file_name])
                for file_name, found in result.quarantine.groupby("source_file", sort=False):
                    quarantine[str(file_name)].append(found)
                del rows_by_file, result
            release_freed_memory()
            for spec in LANDING_FILES:
                refs[spec.asset_name] = writers[spec.asset_name].commit(totals[spec.asset_name].sha256[:16])
    finally:
        staging.discard()
        shutil.rmtree(scratch, ignore_errors=True)
    # Reference cycles among the phases' objects held 94 MB of Arrow buffers at 100k subjects
    # until a collection: collect them here, once, so that the executor's release at the step's
    # end (defs/executor.py) hands their memory back rather than leave it under the next steps.
    gc.collect()
    # A row whose date and week label contradict its subject's calendar (set by most of its
    # rows in both labelled files) is quarantined by name; the rest goes on.
    if moved:
        context.log.warning(f"{moved} row(s) quarantined: their week label contradicts their subject's calendar")

    for spec in LANDING_FILES:
        total = totals[spec.asset_name]
        kept = refs[spec.asset_name].row_count
        context.log.info(
            f"{spec.file_name}: {total.rows_read} rows read, {kept} kept, "
            f"{total.rows_quarantined} quarantined, {total.exact_duplicates_dropped} exact duplicates dropped"
        )
        for note in total.notes:
            context.log.warning(f"{spec.file_name}: {note}.")
        # MaterializeResult, not Output: Output's data_version parameter is beta (and warns).
        yield dg.MaterializeResult(
            asset_key=bronze_key(spec.asset_name),
            value=refs[spec.asset_name],
            data_version=dg.DataVersion(total.sha256[:16]),
            metadata={
                "source_uri": landing.uri(spec.file_name),
                "source_sha256": total.sha256,
                "encoding": total.encoding,
                # What decoding and header cleaning did beyond plain reading (empty: nothing).
                "ingest_notes": dg.MetadataValue.json(list(total.notes)),
                "rows_read": total.rows_read,
                "rows_quarantined": total.rows_quarantined,
                "quarantine_share": float(total.quarantine_share),
                "exact_duplicates_dropped": total.exact_duplicates_dropped,
            },
        )

    records: list[pd.DataFrame] = [
        pd.concat(quarantine[spec.file_name], ignore_index=True).sort_values(["line"], kind="stable")
        for spec in LANDING_FILES
        if quarantine[spec.file_name]
    ]
    from potato_assets.study.ingest import QUARANTINE_COLUMNS

    table: pd.DataFrame = pd.concat(records, ignore_index=True) if records else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    digests = "".join(totals[spec.asset_name].sha256 for spec in LANDING_FILES)
    yield dg.MaterializeResult(
        asset_key=QUARANTINE_KEY,
        value=table,
        data_version=dg.DataVersion(storage.sha256_hex(digests.encode())[:16]),
        metadata={
            f"rows_quarantined/{spec.asset_name}": totals[spec.asset_name].rows_quarantined for spec in LANDING_FILES
        },
    )
