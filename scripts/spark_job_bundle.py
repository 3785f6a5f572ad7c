"""`make spark-job-bundle`: the silver Spark job as the two files EMR Serverless is given.

    build/spark-jobs/emr_job.py      the entry point (potato_assets/lib/engine/emr_job.py)
    build/spark-jobs/potato_job.zip  on the job's Python path (--py-files): the project's
                                     modules and the pure-Python libraries the job imports
                                     besides pyspark (sqlglot, dagster-pipes), from this .venv

Upload both to POTATO_EMR_JOB_CODE_URI (under the lake's spark-jobs/ prefix, which the job role
reads), e.g. `aws s3 cp --recursive build/spark-jobs/ s3://<lake>/spark-jobs/<release>/`.
Only Python files go in: the job imports no compiled library but pyspark's own.

Usage: python scripts/spark_job_bundle.py [--out build/spark-jobs]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENTRY = REPO / "potato_assets" / "lib" / "engine" / "emr_job.py"
PACKAGES = ("potato_assets", "sqlglot", "dagster_pipes")
ENTRY_NAME, PACKAGE_NAME = "emr_job.py", "potato_job.zip"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed in {sys.prefix}: run make setup")
    return Path(next(iter(spec.submodule_search_locations)))


def build(out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    entry = out / ENTRY_NAME
    shutil.copyfile(ENTRY, entry)
    package = out / PACKAGE_NAME
    tmp = package.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in PACKAGES:
            root = package_dir(name)
            for path in sorted(root.rglob("*.py")):
                archive.write(path, path.relative_to(root.parent).as_posix())
    tmp.replace(package)
    return entry, package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "spark-jobs")
    args = parser.parse_args()
    for path in build(args.out):
        print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
