"""The three landing CSVs of a synthetic cohort of any size, written chunk by chunk.

The cohort comes from :func:`potato_assets.study.synthetic.synthetic_cohort_chunks`; each chunk's
rows are appended to the three files, so memory stays bounded by one chunk (and one stream
block) whatever the number of subjects. The bytes equal ``study.synthetic.write_cohort``'s for the
same spec, whatever the chunk size. Each file is written to a temp sibling and moved into place
only after the last chunk: a failed run leaves the previous files as they were.

CLI (bench sizes; prints sizes, time, MB/s and peak RSS)::

    python -m potato_assets.lib.synthetic_landing --subjects 1000000 --out /tmp/bench-landing/n1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path

from potato_assets.study import schema
from potato_assets.study.synthetic import (
    CSV_WRITE_OPTIONS,
    STREAM_BLOCK_SUBJECTS,
    CohortSpec,
    landing_arrow_table,
    synthetic_cohort_chunks,
)

__all__ = ["main", "write_cohort_streaming"]


def write_cohort_streaming(
    spec: CohortSpec, directory: str | os.PathLike[str], chunk_subjects: int = STREAM_BLOCK_SUBJECTS
) -> dict[str, Path]:
    """Write ``spec``'s three landing CSVs into ``directory`` (created if needed), appending
    ``chunk_subjects`` subjects at a time. Returns file name -> written path."""
    import pyarrow.csv as pa_csv

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {f.file_name: out / f.file_name for f in schema.LANDING_FILES}
    temps = {name: out / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp" for name in paths}
    options = pa_csv.WriteOptions(**CSV_WRITE_OPTIONS)
    try:
        with ExitStack() as stack:
            handles = {name: stack.enter_context(open(temps[name], "xb")) for name in paths}
            for landing in schema.LANDING_FILES:
                handles[landing.file_name].write((",".join(landing.columns) + "\n").encode("utf-8"))
            for chunk in synthetic_cohort_chunks(spec, chunk_subjects):
                for landing in schema.LANDING_FILES:
                    table = landing_arrow_table(chunk[landing.file_name], landing)
                    if table.num_rows:
                        pa_csv.write_csv(table, handles[landing.file_name], write_options=options)
                del chunk, table  # the next chunk is built without this one alive
        for name, path in paths.items():
            os.replace(temps[name], path)
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    return paths


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = {f.name: f.default for f in fields(CohortSpec)}
    parser = argparse.ArgumentParser(
        prog="python -m potato_assets.lib.synthetic_landing",
        description="Write a seeded synthetic cohort's three landing CSVs, chunk by chunk.",
    )
    parser.add_argument("--subjects", type=int, default=defaults["n_subjects"])
    parser.add_argument("--weeks", type=int, default=defaults["n_weeks"])
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--chunk-subjects", type=int, default=STREAM_BLOCK_SUBJECTS)
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    spec = CohortSpec(n_subjects=args.subjects, n_weeks=args.weeks, seed=args.seed)
    t0 = time.perf_counter()
    paths = write_cohort_streaming(spec, args.out, args.chunk_subjects)
    elapsed = time.perf_counter() - t0
    total = 0
    for path in paths.values():
        size = path.stat().st_size
        total += size
        print(f"{path}  ({size:,} bytes)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{spec.n_subjects:,} subjects x {spec.n_weeks} weeks, seed {spec.seed}, chunks of {args.chunk_subjects:,}: "
        f"{elapsed:.1f} s, {total / 1e6:,.0f} MB, {total / 1e6 / elapsed:.1f} MB/s, peak RSS {peak_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
