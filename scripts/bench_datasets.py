"""Write and read throughput of a bucketed lake dataset (lib/lake/datasets.py), locally.

    .venv/bin/python scripts/bench_datasets.py --rows 10000000 --buckets 32 --batch 500000

The table has six numeric columns (subject_id int64 and five float64/int64 measures). It is
written as a streaming writer would: batches of --batch rows, each split by bucket into one part
per bucket. Each phase (write, read whole, read bucket by bucket, DuckDB aggregate) runs in a
fresh child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _table(start: int, rows: int, subjects: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(start)
    idx = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "subject_id": (idx % subjects) + 1,
            "week": (idx // subjects) % 12 + 1,
            "weight_kg": rng.normal(80, 8, rows),
            "energy_kcal": rng.normal(2200, 300, rows),
            "fiber_g": rng.gamma(4, 6, rows),
            "steps": rng.integers(0, 20000, rows),
        }
    )


def phase(name: str, root: str, rows: int, buckets: int, batch: int) -> dict:
    import duckdb  # noqa: F401  (imports are not what is measured)
    import pandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from potato_assets.lib.lake import datasets

    started = time.perf_counter()
    out: dict = {"phase": name}
    if name == "write":
        generating = 0.0
        with datasets.DatasetWriter(root, buckets) as writer:
            for start in range(0, rows, batch):
                t = time.perf_counter()
                table = _table(start, min(batch, rows - start), rows // 12)
                generating += time.perf_counter() - t
                for bucket, part in datasets.split_by_bucket(table, buckets):
                    writer.write(bucket, part)
            ref = writer.commit()
        out["files"] = len(ref.files)
        out["generating_seconds"] = generating  # not storage: subtracted below
        started += generating
    elif name == "read":
        ref = datasets.current(root)
        assert ref is not None
        out["rows"] = len(ref.read())
    elif name == "read_buckets":
        ref = datasets.current(root)
        assert ref is not None
        out["rows"] = sum(len(df) for _, df in ref.iter_buckets())
    elif name == "duckdb":
        import duckdb

        ref = datasets.current(root)
        assert ref is not None
        con = duckdb.connect()
        con.register("t", ref.arrow_dataset())
        got = con.execute("SELECT bucket, count(*), avg(weight_kg) FROM t GROUP BY 1").fetchall()
        out["rows"] = sum(r[1] for r in got)
    elif name == "current":
        timings = []
        for _ in range(200):
            t = time.perf_counter()
            datasets.current(root)
            timings.append(time.perf_counter() - t)
        timings.sort()
        out["current_median_ms"] = timings[len(timings) // 2] * 1000
        out["current_max_ms"] = timings[-1] * 1000
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--buckets", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.dir, args.rows, args.buckets, args.batch)))
        return
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-datasets-"))
    root = (folder / "silver" / "bench").as_uri()
    raw_mb = args.rows * 6 * 8 / 1e6
    print(f"{args.rows:,} rows x 6 numeric columns ({raw_mb:.0f} MB in memory), {args.buckets} buckets, at {root}")
    for name in ("write", "read", "read_buckets", "duckdb", "current"):
        cmd = [sys.executable, __file__, "--phase", name, "--dir", root, "--rows", str(args.rows)]
        cmd += ["--buckets", str(args.buckets), "--batch", str(args.batch)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        if "current_median_ms" not in result:
            result["mb_per_s"] = round(raw_mb / result["seconds"], 1)
        print(json.dumps(result))
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"on disk: {on_disk / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
