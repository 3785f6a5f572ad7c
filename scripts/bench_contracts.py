"""Contracts at any size: peak memory and time of the bronze fiber contract on a synthetic
bucketed dataset, batch by batch (lib/contracts.run_contract_dataset) or as one frame.

    python scripts/bench_contracts.py make --rows 10000000 --dir /tmp/fiber10m
    python scripts/bench_contracts.py run --dir /tmp/fiber10m --batch-rows 2000000
    python scripts/bench_contracts.py run --dir /tmp/fiber10m --whole
    python scripts/bench_contracts.py overhead

Each ``run`` is one process (peak RSS from getrusage is per process): run them one at a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def make(rows: int, directory: str, buckets: int) -> None:
    """A fiber table as bronze ingest makes it: ~12 rows per subject-week, 84 days per subject."""
    import numpy as np
    import pandas as pd

    from potato_assets.lib.lake.datasets import DatasetWriter

    days = 84
    subjects = -(-rows // days)
    rng = np.random.default_rng(16)
    with DatasetWriter(directory, buckets) as writer:
        # One bucket at a time: bounded memory while writing, subjects b, b+buckets, ...
        for bucket in range(buckets):
            ids = np.arange(bucket if bucket else buckets, subjects + 1, buckets)
            if not len(ids):
                continue
            n = len(ids) * days
            subject = np.repeat(ids, days)
            day = np.tile(np.arange(days), len(ids))
            frame = pd.DataFrame(
                {
                    "subject_id": pd.array(subject, dtype="Int64"),
                    "date": pd.Timestamp("2024-01-01") + pd.to_timedelta(day, unit="D"),
                    "week": pd.array(day // 7 + 1, dtype="Int64"),
                    "total_calories": rng.normal(2200, 300, n).round(),
                    "total_fiber_g": rng.gamma(4, 6, n).round(1),
                    "source_file": pd.array(["Potato_fiber_daily.csv"] * n, dtype="string[pyarrow]"),
                    "source_line": (subject - 1) * days + day + 2,
                    "ingested_at": pd.Timestamp("2024-06-01", tz="UTC"),
                }
            )
            writer.write(bucket, frame)
        ref = writer.commit()
    print(json.dumps({"rows": ref.row_count, "buckets": ref.buckets, "files": len(ref.files)}))


def run(directory: str, batch_rows: int | None) -> None:
    from potato_assets.lib import contracts
    from potato_assets.lib.lake import datasets

    ref = datasets.current(directory)
    assert ref is not None, f"no dataset at {directory}"
    suite = contracts.load_suite("bronze_fiber")
    contracts._runner()  # GX imported and its context made before the clock starts
    start = time.perf_counter()
    if batch_rows is None:
        result = contracts.run_contract(suite, ref.read())
    else:
        result = contracts.run_contract_dataset(suite, ref, batch_rows=batch_rows)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": result.rows,
                "batch_rows": batch_rows or "whole",
                "batches": result.batches,
                "seconds": round(seconds, 1),
                "s_per_million_rows": round(seconds / result.rows * 1e6, 2),
                "peak_rss_mb": round(peak_mb),
                "success": result.success,
            }
        )
    )


def overhead(batches: int) -> None:
    """Seconds per GX validation of the fiber suite on a tiny batch (fixed cost per batch)."""
    import pandas as pd

    from potato_assets.lib import contracts

    frame = pd.DataFrame(
        {
            "subject_id": pd.array([1] * 10, dtype="Int64"),
            "date": pd.date_range("2024-01-01", periods=10),
            "week": pd.array([1] * 7 + [2] * 3, dtype="Int64"),
            "total_calories": [2000.0] * 10,
            "total_fiber_g": [30.0] * 10,
            "source_file": "f.csv",
            "source_line": range(2, 12),
            "ingested_at": pd.Timestamp("2024-06-01", tz="UTC"),
        }
    )
    frames = [frame.assign(subject_id=pd.array([i] * 10, dtype="Int64")) for i in range(1, batches + 1)]
    contracts.run_contract_batches("bronze_fiber", frames[:2])  # warm
    start = time.perf_counter()
    contracts.run_contract_batches("bronze_fiber", frames)
    per_batch = (time.perf_counter() - start) / batches
    start = time.perf_counter()
    contracts.run_contract("bronze_fiber", frame)
    single = time.perf_counter() - start
    print(json.dumps({"s_per_batch": round(per_batch, 3), "s_per_single_run": round(single, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("make", "run", "overhead"))
    parser.add_argument("--dir", default="/tmp/bench-fiber")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--buckets", type=int, default=32)
    parser.add_argument("--batch-rows", type=int, default=None)
    parser.add_argument("--whole", action="store_true")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    if args.what == "make":
        make(args.rows, args.dir, args.buckets)
    elif args.what == "run":
        from potato_assets.lib.contracts import BATCH_ROWS

        run(args.dir, None if args.whole else (args.batch_rows or BATCH_ROWS))
    else:
        overhead(args.batches)


if __name__ == "__main__":
    main()
