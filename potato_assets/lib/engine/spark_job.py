"""Silver as one Spark job per table, submitted over Dagster Pipes (the job: emr_job.py).

The Dagster step stays a thin client: it opens the new dataset version, submits the job with
the inputs' committed versions and the version's staging folder, waits, reads the checks' rows
the job reported, and adopts the files it wrote (DatasetWriter.adopt), reading only their
footers. A job that fails, is cancelled or reports nothing raises EngineJobFailed; the writer is
then aborted, so the previous version stays current.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from potato_assets.lib.engine import EngineJobFailed
from potato_assets.lib.engine.emr_job import FINDINGS_KEY, WRITTEN_KEY, job_arguments

if TYPE_CHECKING:
    import dagster as dg

    from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
    from potato_assets.study.silver import SilverQuery

# (the asset's context, the table, the job's arguments) -> the completed Pipes invocation.
Submit = Callable[[Any, str, list[str]], "dg.PipesClientCompletedInvocation"]

JOB_ENTRY = "emr_job.py"
JOB_PACKAGE = "potato_job.zip"


def query_names(queries: Sequence[str]) -> list[str]:
    """The names (study/silver.NAMED_QUERIES) of check and count queries given as SQL."""
    from potato_assets.study.silver import NAMED_QUERIES

    by_sql = {sql: name for name, sql in NAMED_QUERIES.items()}
    unnamed = [sql for sql in queries if sql not in by_sql]
    if unnamed:
        raise ValueError(f"a Spark job runs named queries only; not in study/silver.NAMED_QUERIES: {unnamed[0][:80]!r}")
    return [by_sql[sql] for sql in queries]


class SparkJobEngine:
    """Builds each silver table with one Spark job that ``submit`` runs over Dagster Pipes."""

    def __init__(self, name: str, context: Any, submit: Submit) -> None:
        self.name = name
        self.context = context
        self.submit = submit

    def build(
        self,
        query: SilverQuery,
        inputs: Mapping[str, DatasetRef],
        writer: DatasetWriter,
        *,
        buckets: int,
        before: Sequence[str] = (),
        after: Sequence[str] = (),
    ) -> list[list[list[dict[str, Any]]]]:
        """The query's table written by the job into ``writer`` (adopted, not committed), and per
        ``before``/``after`` query its rows, as the other engines return them."""
        staging = writer.staging_uri(self.name)
        arguments = job_arguments(
            query.table,
            {name: (inputs[name].root, inputs[name].version) for name in query.reads},
            staging,
            buckets=buckets,
            before=query_names(before),
            after=query_names(after),
        )
        invocation = self.submit(self.context, query.table, arguments)
        metadata: dict[str, Any] = {}
        for result in invocation.get_results(implicit_materializations=False):
            metadata.update(result.metadata or {})
        if FINDINGS_KEY not in metadata or WRITTEN_KEY not in metadata:
            raise EngineJobFailed("its Spark job ended without reporting a result over Dagster Pipes")
        found = _value(metadata[FINDINGS_KEY])
        if len(found) != len(before) + len(after):
            raise EngineJobFailed(
                f"its Spark job reported {len(found)} query results, not the {len(before) + len(after)} asked for"
            )
        if _value(metadata[WRITTEN_KEY]):
            writer.adopt(staging)
        return found

    def close(self) -> None:
        """Nothing to release: each job ended with its table."""


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


@dataclass(frozen=True)
class EmrServerlessJobs:
    """Submits the silver job (``{job_code_uri}/emr_job.py`` with ``potato_job.zip`` on the
    Python path) to an EMR Serverless application with Dagster Pipes' PipesEMRServerlessClient:
    context goes in as the driver's environment, messages come back through the job's
    CloudWatch log group, and a cancelled Dagster run cancels the job run."""

    application_id: str
    execution_role_arn: str
    job_code_uri: str
    log_group: str

    def start_job_run_params(self, table: str, arguments: list[str]) -> dict[str, Any]:
        from potato_assets.lib.engine.spark import job_tag

        code = self.job_code_uri.rstrip("/")
        return {
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "name": job_tag(table),
            "jobDriver": {
                "sparkSubmit": {
                    "entryPoint": f"{code}/{JOB_ENTRY}",
                    "entryPointArguments": arguments,
                    "sparkSubmitParameters": f"--py-files {code}/{JOB_PACKAGE}",
                }
            },
            # Pipes reads the job's messages from the driver's stdout stream in this group.
            "configurationOverrides": {
                "monitoringConfiguration": {
                    "cloudWatchLoggingConfiguration": {"enabled": True, "logGroupName": self.log_group}
                }
            },
        }

    def submit(self, context: Any, table: str, arguments: list[str]) -> dg.PipesClientCompletedInvocation:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
        from dagster_aws.pipes import PipesCloudWatchMessageReader, PipesEMRServerlessClient

        emr = boto3.client("emr-serverless")
        started: dict[str, Any] = {}
        # The client keeps the job run id to itself: remember it to word a failure.
        emr.meta.events.register("after-call.emr-serverless.StartJobRun", lambda parsed, **_: started.update(parsed))
        client = PipesEMRServerlessClient(
            client=emr, message_reader=PipesCloudWatchMessageReader(client=boto3.client("logs"))
        )
        try:
            return client.run(context=context, start_job_run_params=self.start_job_run_params(table, arguments))
        except (ClientError, BotoCoreError) as error:
            raise EngineJobFailed(f"EMR Serverless refused or lost the job run: {error}") from None
        except RuntimeError:
            if "jobRunId" not in started:
                raise
            run = emr.get_job_run(applicationId=self.application_id, jobRunId=started["jobRunId"])["jobRun"]
            details = (run.get("stateDetails") or "").strip().splitlines()
            raise EngineJobFailed(
                f"the EMR Serverless job run {started['jobRunId']} ended {run['state']}"
                + (f": {details[0]}" if details else "")
            ) from None
