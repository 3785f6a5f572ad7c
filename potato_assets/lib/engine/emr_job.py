"""The Spark job that builds one silver table on a classic SparkSession (EMR Serverless, or
`spark-submit` to any cluster), reporting back to the Dagster step over Dagster Pipes.

It runs ``spark.build_on``, the code path of the Connect engine: the same SQL, types and
bucketed write, into the staging folder of the dataset version the step opened. It reads each
input by the version the step names (that version's manifest, through Spark), writes nothing but
the staging folder, and reports the checks' and counts' rows as the materialisation's metadata;
the step then adopts the files (DatasetWriter.adopt) and commits, or aborts. Runnable as a file::

    spark-submit --py-files potato_job.zip emr_job.py --table study_calendar --buckets 32 \\
        --staging s3://lake/silver/study_calendar/v-<new>/_staging-emr-serverless \\
        --input weight=s3://lake/bronze/weight@<version> --input fiber=s3://lake/bronze/fiber@<version> \\
        --before calendar_contradictions

It imports pyspark, dagster-pipes, sqlglot and the standard library only (scripts/spark_job_bundle.py
packs what it needs), and needs Python 3.11 or later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from potato_assets.lib.engine.spark import SparkInput

# The materialisation's metadata the job reports and the step reads.
FINDINGS_KEY = "silver/findings"
WRITTEN_KEY = "silver/written"
MIN_PYTHON = (3, 11)


def job_arguments(
    table: str,
    inputs: Mapping[str, tuple[str, str]],
    staging_uri: str,
    *,
    buckets: int,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
) -> list[str]:
    """The job's command line: ``inputs`` maps each relation to (dataset root, version);
    ``before``/``after`` name queries of study/silver.NAMED_QUERIES."""
    arguments = ["--table", table, "--buckets", str(buckets), "--staging", staging_uri]
    for name, (root, version) in inputs.items():
        arguments += ["--input", f"{name}={root}@{version}"]
    for name in before:
        arguments += ["--before", name]
    for name in after:
        arguments += ["--after", name]
    return arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emr_job.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="the silver table (study/silver.QUERIES)")
    parser.add_argument("--buckets", type=int, required=True, help="subject buckets of the dataset")
    parser.add_argument("--staging", required=True, help="the folder to write the parts into")
    parser.add_argument("--input", action="append", default=[], help="relation=dataset root@version")
    parser.add_argument("--before", action="append", default=[], help="a check that stops the table")
    parser.add_argument("--after", action="append", default=[], help="a count over the table")
    return parser


def _input_locations(values: Sequence[str]) -> dict[str, tuple[str, str]]:
    locations = {}
    for value in values:
        name, sep, location = value.partition("=")
        root, at, version = location.rpartition("@")
        if not (sep and at and name and root and version):
            raise SystemExit(f"--input {value!r} is not relation=dataset root@version")
        locations[name] = (root.rstrip("/"), version)
    return locations


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    """One small file through the cluster's Hadoop file system (on EMR: its S3 support). Not
    spark.read: file sources skip names starting with "_", such as _manifest.json."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None, "a classic SparkSession (the job's) has a JVM"
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).open(path)
    try:
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def read_input(spark: SparkSession, root: str, version: str, columns: Sequence[str]) -> SparkInput:
    """The committed version ``version`` of the dataset at ``root`` as a SparkInput: its
    manifest lists its files and types."""
    from potato_assets.lib.engine.spark import SparkInput
    from potato_assets.lib.lake.datasets import MANIFEST_NAME, VERSION_PREFIX, manifest_listing

    version_uri = f"{root}/{VERSION_PREFIX}{version}"
    manifest_uri = f"{version_uri}/{MANIFEST_NAME}"
    paths, arrow_types = manifest_listing(read_bytes(spark, manifest_uri), manifest_uri, version)
    return SparkInput.of(version_uri, paths, arrow_types, columns)


def build(spark: SparkSession, argv: Sequence[str]) -> tuple[list[list[list[dict[str, Any]]]], bool]:
    """The table of the command line ``argv`` built on ``spark`` (spark.build_on)."""
    from potato_assets.lib.engine.spark import SESSION_CONF, build_on
    from potato_assets.study.silver import NAMED_QUERIES, QUERIES

    args = _parser().parse_args(argv)
    if args.table not in QUERIES:
        raise SystemExit(f"--table {args.table!r} is none of {', '.join(QUERIES)}")
    unknown = [n for n in args.before + args.after if n not in NAMED_QUERIES]
    if unknown:
        raise SystemExit(f"no query named {', '.join(unknown)} in study/silver.NAMED_QUERIES")
    query = QUERIES[args.table]
    locations = _input_locations(args.input)
    missing = [name for name in query.reads if name not in locations]
    if missing:
        raise SystemExit(f"silver {args.table} reads {', '.join(missing)}: no --input names it")
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    inputs = {name: read_input(spark, *locations[name], columns) for name, columns in query.reads.items()}
    return build_on(
        spark,
        query,
        inputs,
        args.staging,
        buckets=args.buckets,
        before=[NAMED_QUERIES[n] for n in args.before],
        after=[NAMED_QUERIES[n] for n in args.after],
    )


def plain_rows(found: list[list[list[dict[str, Any]]]]) -> list[list[list[dict[str, Any]]]]:
    """The rows as JSON takes them; the queries return whole numbers and text only, so anything
    else is a changed query, refused rather than turned into text."""
    for per_query in found:
        for rows in per_query:
            for row in rows:
                for column, value in row.items():
                    if value is not None and not isinstance(value, int | float | str):
                        raise TypeError(f"column {column} returned a {type(value).__name__}, which JSON does not carry")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    if sys.version_info < MIN_PYTHON:
        raise SystemExit(
            f"this job needs Python {'.'.join(map(str, MIN_PYTHON))} or later, not {sys.version.split()[0]}"
        )
    from dagster_pipes import open_dagster_pipes
    from pyspark.sql import SparkSession

    argv = list(sys.argv[1:] if argv is None else argv)
    with open_dagster_pipes() as pipes:
        spark = SparkSession.builder.getOrCreate()
        try:
            found, written = build(spark, argv)
        finally:
            spark.stop()
        pipes.log.info(f"{'wrote' if written else 'did not write'} the table ({' '.join(argv[:2])})")
        pipes.report_asset_materialization(
            metadata={
                FINDINGS_KEY: {"raw_value": plain_rows(found), "type": "json"},
                WRITTEN_KEY: {"raw_value": written, "type": "bool"},
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
