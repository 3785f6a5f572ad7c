"""OpenLineage run events for the lake's datasets, and where they are sent.

One naming scheme on both sides of every edge (OpenLineage's dataset naming spec): the namespace is
the storage location's scheme and authority (`file`, `s3://bucket`), the name is the object's
path (`/abs/path/lake/silver/weekly_features.parquet`, `prefix/bronze/weight.parquet`). A job that
writes an object and the job that reads it therefore name it identically, and Marquez joins them.

No Dagster here: the caller says what ran, what it read and wrote. openlineage-python is imported
only when an event is built or sent, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

from potato_assets.lib.redact import get_logger, redact_text, redact_uri

log = get_logger(__name__)

PRODUCER = "https://github.com/potato-study/potato_assets"
DEFAULT_JOB_NAMESPACE = "potato_assets"
# Marquez must never hold up a run: one short attempt per event, no retries.
DEFAULT_TIMEOUT_SECONDS = 2.0
# After a failed send, stay quiet this long before trying again (the run goes on meanwhile).
RETRY_AFTER_SECONDS = 300.0

START, COMPLETE, FAIL = "START", "COMPLETE", "FAIL"


@dataclass(frozen=True)
class DatasetRef:
    namespace: str
    name: str


def dataset_ref(uri: str) -> DatasetRef:
    """'file:///a/b.csv' -> (file, /a/b.csv); 's3://bucket/k/b.csv' -> (s3://bucket, k/b.csv)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return DatasetRef("file", parts.path)
    if parts.scheme and parts.netloc:
        return DatasetRef(f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/"))
    raise ValueError(f"{uri!r} is not a file:// or scheme://authority/path storage URI")


def storage_root(uri: str) -> str:
    """The storage location a dataset lives in, for the dataSource facet ('file:///', 's3://bucket')."""
    parts = urlsplit(uri)
    return "file:///" if parts.scheme == "file" else f"{parts.scheme}://{parts.netloc}"


def step_run_id(parent_run_id: str, job_name: str) -> str:
    """A stable run id for one job inside a Dagster run, so START and COMPLETE share it."""
    return str(uuid.uuid5(uuid.UUID(parent_run_id), job_name))


@dataclass(frozen=True)
class Assertion:
    """One data-quality check's outcome on a dataset (the dataQualityAssertions facet)."""

    name: str
    success: bool
    column: str | None = None
    severity: str | None = None
    description: str | None = None


@dataclass
class DatasetInfo:
    """What is known about one dataset at the time an event is built; None means unknown."""

    uri: str
    columns: Sequence[tuple[str, str]] | None = None
    rows: int | None = None
    # output column -> [(input dataset URI, input column)]
    column_lineage: Mapping[str, Sequence[tuple[str, str]]] | None = None
    assertions: Sequence[Assertion] | None = None

    @property
    def ref(self) -> DatasetRef:
        return dataset_ref(self.uri)


@dataclass(frozen=True)
class ParentRun:
    namespace: str
    name: str
    run_id: str


@dataclass
class JobRun:
    """One OpenLineage job run: an asset, an asset check or the Dagster run itself."""

    namespace: str
    name: str
    run_id: str
    job_type: str  # ASSET, ASSET_CHECK or JOB
    inputs: Sequence[DatasetInfo] = field(default_factory=list)
    outputs: Sequence[DatasetInfo] = field(default_factory=list)
    parent: ParentRun | None = None
    description: str | None = None


def _dataset_facets(info: DatasetInfo) -> dict[str, Any]:
    from openlineage.client.generated import column_lineage_dataset as cl
    from openlineage.client.generated import datasource_dataset, schema_dataset

    ref = info.ref
    facets: dict[str, Any] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(name=ref.namespace, uri=storage_root(info.uri))
    }
    if info.columns is not None:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in info.columns]
        )
    if info.column_lineage:
        fields = {}
        for out_col, sources in info.column_lineage.items():
            inputs = []
            for src_uri, src_col in sources:
                src = dataset_ref(src_uri)
                inputs.append(cl.InputField(namespace=src.namespace, name=src.name, field=src_col))
            fields[out_col] = cl.Fields(inputFields=inputs)
        facets["columnLineage"] = cl.ColumnLineageDatasetFacet(fields=fields)
    return facets


def build_run_event(
    event_type: str,
    job: JobRun,
    *,
    event_time: float | None = None,
    error_message: str | None = None,
    error_stack: str | None = None,
) -> RunEvent:
    """START / COMPLETE / FAIL for `job`, with inputs, outputs and their facets."""
    from datetime import datetime

    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.generated import (
        data_quality_assertions_dataset as dq,
    )
    from openlineage.client.generated import (
        documentation_job,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
    )

    if event_type not in (START, COMPLETE, FAIL):
        raise ValueError(f"event type {event_type!r} is not one of START, COMPLETE, FAIL")
    run_facets: dict[str, Any] = {}
    if job.parent is not None:
        p = job.parent
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=p.run_id),
            job=parent_run.Job(namespace=p.namespace, name=p.name),
            root=parent_run.Root(
                run=parent_run.RootRun(runId=p.run_id),
                job=parent_run.RootJob(namespace=p.namespace, name=p.name),
            ),
        )
    if event_type == FAIL and error_message:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error_message, programmingLanguage="python", stackTrace=error_stack
        )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DAGSTER", jobType=job.job_type)
    }
    if job.description:
        job_facets["documentation"] = documentation_job.DocumentationJobFacet(description=job.description)

    inputs = []
    for info in job.inputs:
        input_facets: dict[str, Any] = {}
        if info.assertions:
            input_facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(
                assertions=[
                    dq.Assertion(
                        assertion=a.name,
                        success=a.success,
                        column=a.column,
                        severity=a.severity,
                        name=a.name,
                        description=a.description,
                    )
                    for a in info.assertions
                ]
            )
        ref = info.ref
        inputs.append(
            InputDataset(
                namespace=ref.namespace,
                name=ref.name,
                facets=_dataset_facets(info),
                inputFacets=input_facets,
            )
        )
    outputs = []
    for info in job.outputs:
        output_facets: dict[str, Any] = {}
        if info.rows is not None:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=int(info.rows)
            )
        ref = info.ref
        outputs.append(
            OutputDataset(
                namespace=ref.namespace,
                name=ref.name,
                facets=_dataset_facets(info),
                outputFacets=output_facets,
            )
        )
    when = datetime.fromtimestamp(time.time() if event_time is None else event_time, tz=UTC)
    return RunEvent(
        eventType=getattr(RunState, event_type),
        eventTime=when.isoformat(timespec="milliseconds"),
        run=Run(runId=job.run_id, facets=run_facets),
        job=Job(namespace=job.namespace, name=job.name, facets=job_facets),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )


def event_json(event: RunEvent) -> str:
    from openlineage.client.serde import Serde

    return Serde.to_json(event)


class LineageEmitter(Protocol):
    def emit(self, event: RunEvent) -> None: ...

    def close(self) -> None: ...


class NoopLineageEmitter:
    """OPENLINEAGE_URL unset: nothing built into requests, nothing sent, nothing printed."""

    enabled = False

    def emit(self, event: RunEvent) -> None:
        return None

    def close(self) -> None:
        return None


class HttpLineageEmitter:
    """Sends events to Marquez (or any OpenLineage HTTP endpoint) with openlineage-python's client.

    One attempt per event with a short timeout; after a failure the emitter logs once and stays
    quiet for RETRY_AFTER_SECONDS, so an unreachable Marquez costs a run at most one timeout.
    """

    enabled = True

    def __init__(
        self,
        url: str,
        *,
        endpoint: str = "api/v1/lineage",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        api_key: str | None = None,
    ) -> None:
        from openlineage.client import OpenLineageClient
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        params: dict[str, Any] = {
            "url": url,
            "endpoint": endpoint,
            "timeout": timeout,
            "retry": {"total": 0, "connect": 0, "read": 0, "status": 0},
        }
        if api_key:
            params["auth"] = {"type": "api_key", "apiKey": api_key}
        # For log lines only; the client keeps the URL as given (requests sends its userinfo as auth).
        self.url = redact_uri(url.rstrip("/") + "/" + endpoint.lstrip("/"))
        self._client = OpenLineageClient(transport=HttpTransport(HttpConfig.from_dict(params)))
        self._quiet_until = 0.0
        self.failures = 0

    def emit(self, event: RunEvent) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._client.emit(event)
        except Exception as exc:  # lineage is best-effort: never fail the run for it
            self.failures += 1
            self._quiet_until = time.monotonic() + RETRY_AFTER_SECONDS
            log.warning(
                "OpenLineage events could not be sent to %s (%s: %s); lineage off for %.0f s",
                self.url,
                type(exc).__name__,
                redact_text(str(exc)),
                RETRY_AFTER_SECONDS,
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.transport.close()


def emitter_from_env(environ: Mapping[str, str] | None = None) -> LineageEmitter:
    """OPENLINEAGE_URL (+ OPENLINEAGE_ENDPOINT, OPENLINEAGE_API_KEY), the client's own variables."""
    env = os.environ if environ is None else environ
    url = (env.get("OPENLINEAGE_URL") or "").strip()
    if not url:
        return NoopLineageEmitter()
    return HttpLineageEmitter(
        url,
        endpoint=(env.get("OPENLINEAGE_ENDPOINT") or "api/v1/lineage").strip(),
        api_key=(env.get("OPENLINEAGE_API_KEY") or "").strip() or None,
    )


def job_namespace(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("OPENLINEAGE_NAMESPACE") or "").strip() or DEFAULT_JOB_NAMESPACE
