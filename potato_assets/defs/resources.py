"""Every resource, built from settings in one place: the lake IO manager, lake files, the landing
zone, the silver engine, the contract engine, the experiment tracker and the alert sink."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from potato_assets.defs.common import (
    DATA_FRAME_TYPE_NAME,
    DATA_VERSION_TAG,
    LAKE_DATASET_TYPE_NAME,
    from_environment,
)
from potato_assets.lib.engine.embedded import DEFAULT_MEMORY_LIMIT
from potato_assets.lib.lake import storage
from potato_assets.lib.observe import alerts
from potato_assets.settings import DEFAULT_LAKE_BUCKETS, DEFAULT_MAX_LANDING_BYTES, Settings, get_settings
from potato_assets.study.schema import column_description

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from upath import UPath

    from potato_assets.lib.contracts import ContractResult
    from potato_assets.lib.lake.datasets import DatasetRef, DatasetWriter
    from potato_assets.report.digest import FiberSample
    from potato_assets.study.fitting import ModelFit


def column_schema(df: pd.DataFrame) -> dg.TableSchema:
    """Each column's name, pandas type and meaning (study/schema.py COLUMN_DESCRIPTIONS)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(c), type=str(t), description=column_description(str(c)))
            for c, t in df.dtypes.items()
        ]
    )


def dataset_column_schema(schema: pa.Schema) -> dg.TableSchema:
    """The same as `column_schema` for a dataset's arrow schema: the pandas types readers get."""
    return column_schema(schema.empty_table().to_pandas())


TABLE_EXTENSION = ".parquet"


def dataset_root(lake_uri: str, key: dg.AssetKey) -> str:
    """Where the bucketed dataset of asset `a/b/c` lives: `{lake}/a/b/c/` (lib/lake/datasets.py)."""
    return storage.join(lake_uri, *key.path)


class LakeParquetIOManager(dg.UPathIOManager):
    """Two kinds of values. A pandas DataFrame: asset `a/b/c` <-> `{lake}/a/b/c.parquet`, written
    atomically (lib/lake/storage.py). A DatasetRef: the asset wrote and committed its bucketed
    dataset `{lake}/a/b/c/` itself (LakeDatasets.writer); the IO manager checks it is the current
    version and records its metadata, and downstream inputs get the current ref, no data read
    (or the whole table when the input is typed DataFrame)."""

    extension = TABLE_EXTENSION

    def __init__(self, base_path: UPath, lake_uri: str) -> None:
        super().__init__(base_path=base_path)
        self.lake_uri = lake_uri

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        from potato_assets.lib.lake.datasets import DatasetRef

        if isinstance(obj, DatasetRef):
            self._record_dataset(context, obj)
        else:
            super().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        if context.has_asset_key and not context.has_asset_partitions:
            ref = self._current_dataset(context)
            if ref is not None:
                return self._dataset_input(context, ref)
        return super().load_input(context)

    def _record_dataset(self, context: dg.OutputContext, ref: DatasetRef) -> None:
        from potato_assets.lib.lake import datasets

        if not context.has_asset_key or context.has_asset_partitions:
            raise dg.Failure(description=f"a lake dataset ({ref.root}) is the output of an unpartitioned asset only")
        name = context.asset_key.to_user_string()
        root = dataset_root(self.lake_uri, context.asset_key)
        if ref.root.rstrip("/") != root:
            raise dg.Failure(description=f"{name} returned the dataset at {ref.root}, but its own is {root}")
        try:
            committed = datasets.current(root)
        except datasets.DatasetError as exc:
            raise dg.Failure(description=f"{name}: {exc}") from None
        if committed is None or committed.version != ref.version:
            now = committed.version if committed else "none"
            raise dg.Failure(
                description=f"{name} returned version {ref.version} of {root}, but the committed one is {now}:"
                " return what DatasetWriter.commit() gave"
            )
        context.log.debug(f"{name}: dataset version {ref.version} at {ref.version_uri}")
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(ref.row_count),
                "dagster/column_schema": dataset_column_schema(ref.schema),
                "dagster/uri": dg.MetadataValue.text(ref.version_uri),
                "lake/version": dg.MetadataValue.text(ref.version),
                "lake/buckets": dg.MetadataValue.int(ref.buckets),
                "lake/files": dg.MetadataValue.int(len(ref.files)),
                "lake/data_version": dg.MetadataValue.text(ref.data_version),
            }
        )

    def _current_dataset(self, context: dg.InputContext) -> DatasetRef | None:
        """The upstream's committed dataset, if it is stored as one (it declared LakeDataset, or
        it declared nothing and a dataset pointer exists); None: a parquet table."""
        from potato_assets.lib.lake import datasets

        declared = _upstream_type_name(context)
        if declared not in (None, LAKE_DATASET_TYPE_NAME):
            return None
        name = context.asset_key.to_user_string()
        root = dataset_root(self.lake_uri, context.asset_key)
        try:
            ref = datasets.current(root)
        except datasets.DatasetError as exc:
            raise dg.Failure(description=f"{name} cannot be read: {exc}") from None
        if ref is None and declared == LAKE_DATASET_TYPE_NAME:
            raise dg.Failure(description=f"{name} has no committed dataset at {root}: materialise it first")
        return ref

    def _dataset_input(self, context: dg.InputContext, ref: DatasetRef) -> Any:
        if context.dagster_type.unique_name != DATA_FRAME_TYPE_NAME:
            return ref
        # An input typed DataFrame gets the whole table (small tables, gold): the same `columns`
        # metadata as a parquet input.
        columns = (context.definition_metadata or {}).get("columns")
        try:
            return ref.read(columns=columns)
        except storage.MissingColumns as exc:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} cannot be read as asked: {exc}"
            ) from None

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        import pandas as pd

        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return a pandas DataFrame, got {type(obj).__name__}"
            )
        storage.write_bytes_atomic(path, storage.parquet_bytes(obj))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        # An input may ask for some columns only (AssetIn metadata {"columns": [...]}): less to
        # decode, e.g. the free-text food column nobody downstream reads.
        columns = (context.definition_metadata or {}).get("columns")
        try:
            return storage.read_parquet(path, columns=columns)
        except storage.MissingColumns as exc:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} cannot be read as asked: {exc}"
            ) from None

    def make_directory(self, path: UPath) -> None:
        # Object stores have no directories; local ones are made by the atomic write.
        return None

    def get_metadata(self, context: dg.OutputContext, obj: pd.DataFrame) -> dict[str, Any]:
        return {
            "dagster/row_count": dg.MetadataValue.int(len(obj)),
            "dagster/column_schema": column_schema(obj),
        }


class LakeIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet IO manager on the lake root: a local folder (file://) or s3://bucket/prefix."""

    lake_uri: str

    def create_io_manager(self, context: dg.InitResourceContext) -> LakeParquetIOManager:
        # Built once per run (steps run in the run's process, defs/executor.py) by every run that
        # writes the lake: the place to say, once, that lineage and telemetry will not happen.
        if context.instance is not None and context.log is not None:
            from potato_assets.lib.observe.handler import missing_handler_warning

            warning = missing_handler_warning(context.instance)
            if warning:
                context.log.warning(warning)
        return LakeParquetIOManager(base_path=storage.to_upath(self.lake_uri), lake_uri=self.lake_uri)


def _upstream_type_name(context: dg.InputContext) -> str | None:
    """The Dagster type the upstream output declared; None when it declared none (Any) or when
    Dagster does not say (the upstream is not part of this run, or is a source asset): then a
    dataset pointer decides."""
    try:
        name = context.upstream_output.dagster_type.unique_name  # type: ignore[union-attr]
    except Exception:  # Dagster raises DagsterInvariantViolationError when it was not provided
        return None
    return None if name == "Any" else name


class LakeDatasets(dg.ConfigurableResource):
    """The bucketed datasets of bronze and silver assets: `{lake}/<asset key path>/`.

    An asset writes its dataset bucket by bucket, commits and returns the ref::

        with lake_datasets.writer(key) as writer:
            for bucket, rows in ...:
                writer.write(bucket, rows)
            return writer.commit(data_version)
    """

    lake_uri: str
    buckets: int = DEFAULT_LAKE_BUCKETS

    def root(self, key: dg.AssetKey) -> str:
        return dataset_root(self.lake_uri, key)

    def writer(self, key: dg.AssetKey, *, schema: pa.Schema | None = None) -> DatasetWriter:
        from potato_assets.lib.lake.datasets import DatasetWriter

        return DatasetWriter(self.root(key), self.buckets, schema=schema)

    def current(self, key: dg.AssetKey) -> DatasetRef | None:
        from potato_assets.lib.lake import datasets

        return datasets.current(self.root(key))


def spark_label(remote: str) -> str:
    """``spark (sc://host:port)``: a Spark Connect server for the UI, never its URL's parameters
    (a token may be one)."""
    from potato_assets.lib.engine.spark import without_parameters

    return f"spark ({without_parameters(remote)})"


class SilverEngine(dg.ConfigurableResource):
    """Where silver's SQL (study/silver.py) runs (lib/engine/): ``embedded``, DuckDB in the step's
    own process, a batch of subject buckets at a time; ``spark``, the Spark Connect server at
    ``spark_remote``, whose cluster reads and writes the datasets; or ``emr-serverless``, one
    Spark job per table on that EMR Serverless application, submitted over Dagster Pipes
    (POTATO_ENGINE, POTATO_SPARK_REMOTE, POTATO_EMR_*)."""

    kind: str = "embedded"
    spark_remote: str | None = None
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    # Input rows per batch; unset: lib/engine/buckets.DEFAULT_BATCH_ROWS shared by the workers.
    batch_rows: int | None = None
    # Batches computed at once by the embedded engine (POTATO_SILVER_WORKERS).
    workers: int = 1
    emr_application_id: str | None = None
    emr_execution_role_arn: str | None = None
    emr_job_code_uri: str | None = None
    emr_log_group: str | None = None

    def label(self) -> str:
        """Which engine, for the UI: the Connect server's host and port, never its parameters
        (a token may be one); the EMR Serverless application's id."""
        if self.kind == "spark" and self.spark_remote:
            return spark_label(self.spark_remote)
        if self.kind == "emr-serverless":
            return f"emr-serverless ({self.emr_application_id})"
        return self.kind

    def engine(self, context: dg.AssetExecutionContext | None = None) -> Any:
        """The engine for one step; ``context`` is the step's (emr-serverless: its jobs report
        to it over Pipes)."""
        if self.kind == "spark":
            if not self.spark_remote:
                raise dg.Failure(description="the spark engine needs POTATO_SPARK_REMOTE (sc://host:port)")
            from potato_assets.lib.engine.spark import SparkEngine

            return SparkEngine(self.spark_remote)
        if self.kind == "emr-serverless":
            from potato_assets.lib.engine.spark_job import EmrServerlessJobs, SparkJobEngine

            emr = (self.emr_application_id, self.emr_execution_role_arn, self.emr_job_code_uri, self.emr_log_group)
            if context is None:
                raise dg.Failure(description="the emr-serverless engine runs inside an asset's step only")
            if not all(emr):
                raise dg.Failure(
                    description="the emr-serverless engine needs POTATO_EMR_APPLICATION_ID, "
                    "POTATO_EMR_EXECUTION_ROLE_ARN, POTATO_EMR_JOB_CODE_URI and POTATO_EMR_LOG_GROUP"
                )
            jobs = EmrServerlessJobs(*emr)  # type: ignore[arg-type]
            return SparkJobEngine(self.kind, context, jobs.submit)
        if self.kind != "embedded":
            raise dg.Failure(description=f"silver engine {self.kind!r} is none of embedded, spark, emr-serverless")
        from potato_assets.lib.engine.embedded import EmbeddedEngine

        return EmbeddedEngine(memory_limit=self.memory_limit, batch_rows=self.batch_rows, workers=self.workers)


class ContractEngine(dg.ConfigurableResource):
    """Where the contract checks judge a bucketed dataset (POTATO_CONTRACT_ENGINE): ``step``, GX
    on pandas in the step's worker processes (``processes``, POTATO_CONTRACT_PROCESSES; see
    lib/contracts.run_contract_dataset), bucket batch by batch; or ``spark``, GX's Spark engine
    on the Connect server at ``spark_remote`` (silver's), whose cluster reads the dataset's
    files: only metrics and a few examples come back.

    In the step, the workers start with any run that has a contract check, before its first
    step (Dagster sets a run's resources up at its start), so GX's seconds-long import overlaps
    ingest on the other core instead of delaying the first check; they end after the run's last
    contract check (its step keys are known at the start), so the steps after it have their
    memory."""

    kind: str = "step"
    spark_remote: str | None = None
    # POTATO_CONTRACT_PROCESSES, for the step.
    processes: int = 1
    _checks_left: set[str] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from potato_assets.defs.contract_checks import contract_check_steps
        from potato_assets.lib import contracts

        if self.kind != "step":
            return
        steps = context.run.step_keys_to_execute if context.run else None
        # Unknown (None): the workers stay until the process ends, as they would without this.
        self._checks_left = None if steps is None else set(steps) & contract_check_steps()
        if self._checks_left != set():
            contracts.start_workers(self.processes)

    def label(self) -> str:
        """Where, for the UI: the Connect server's host and port, never its parameters."""
        if self.kind == "spark" and self.spark_remote:
            return spark_label(self.spark_remote)
        return self.kind

    def judge(
        self, suite: dict[str, Any], ref: DatasetRef, step_key: str, warm_imports: Sequence[str] = ()
    ) -> ContractResult:
        """The suite's result on ``ref``, for the contract check running as step ``step_key``.
        ``warm_imports``: modules the run's later steps load anyway, imported by this process
        while a worker judges the whole suite (it would only wait)."""
        from potato_assets.lib import contracts
        from potato_assets.lib.process import preload

        if self.kind == "step":
            try:
                warm_up = (lambda: preload(*warm_imports)) if warm_imports else None
                return contracts.run_contract_dataset(suite, ref, processes=self.processes, meanwhile=warm_up)
            finally:
                if self._checks_left is not None:
                    self._checks_left.discard(step_key)
                    if not self._checks_left:
                        contracts.stop_workers()
        if self.kind != "spark" or not self.spark_remote:
            raise dg.Failure(
                description=f"contract engine {self.kind!r} needs to be step, or spark with POTATO_SPARK_REMOTE"
            )
        from potato_assets.lib.engine import EngineUnreachable
        from potato_assets.lib.engine.spark import SparkEngine

        engine = SparkEngine(self.spark_remote)
        try:
            return engine.contract(suite, ref)
        except EngineUnreachable as exc:
            raise dg.Failure(description=f"contract {suite['name']} could not run on Spark: {exc}.") from None
        finally:
            engine.close()


class LakeFiles(dg.ConfigurableResource):
    """Non-table lake objects (reports, figures) under the same lake root."""

    lake_uri: str

    def uri(self, relative: str) -> str:
        return storage.join(self.lake_uri, relative)

    def write_bytes(self, relative: str, data: bytes) -> str:
        target = self.uri(relative)
        storage.write_bytes_atomic(storage.to_upath(target), data)
        return target

    def read_bytes(self, relative: str) -> bytes:
        return storage.read_bytes(storage.to_upath(self.uri(relative)))

    def table_uri(self, key: dg.AssetKey) -> str:
        """Where the lake IO manager keeps the table of asset ``key``."""
        return self.uri("/".join(key.path) + TABLE_EXTENSION)

    def table_rows(self, key: dg.AssetKey) -> int:
        """Row count of the stored table, from its dataset manifest or its parquet footer (the
        table is not loaded)."""
        from potato_assets.lib.lake import datasets

        ref = datasets.current(dataset_root(self.lake_uri, key))
        if ref is not None:
            return ref.row_count
        return storage.parquet_row_count(storage.to_upath(self.table_uri(key)))


class LandingZone(dg.ConfigurableResource):
    """Where the study's CSV exports arrive: a local folder or an s3:// prefix.

    Only regular files inside the zone, at most `max_bytes` long, are read (lib/lake/landing.py):
    every reader (sensor, schedule, CLI, UI) goes through `read_bytes`."""

    landing_uri: str
    max_bytes: int = DEFAULT_MAX_LANDING_BYTES

    def uri(self, file_name: str) -> str:
        return storage.join(self.landing_uri, file_name)

    def chunks(self, file_name: str) -> Iterator[bytes]:
        """The file's bytes in chunks (bounded memory), with the same checks and messages as
        `read_bytes`."""
        from potato_assets.lib.lake.landing import landing_chunks

        with self._refusals(file_name):
            yield from landing_chunks(self.landing_uri, file_name, self.max_bytes)

    def digest(self, file_name: str) -> tuple[str, int]:
        """The file's sha256 (hex) and size, streamed: a multi-GB export is never held whole."""
        import hashlib

        sha, size = hashlib.sha256(), 0
        for chunk in self.chunks(file_name):
            sha.update(chunk)
            size += len(chunk)
        return sha.hexdigest(), size

    def read_bytes(self, file_name: str) -> bytes:
        from potato_assets.lib.lake.landing import read_landing_bytes

        with self._refusals(file_name):
            return read_landing_bytes(self.landing_uri, file_name, self.max_bytes)

    @contextlib.contextmanager
    def _refusals(self, file_name: str) -> Iterator[None]:
        """A missing, refused or unreadable landing file as one plain sentence naming it."""
        from potato_assets.lib.lake.landing import LandingRefused

        try:
            yield
        except FileNotFoundError:
            raise dg.Failure(
                description=f"{file_name} was not found in the landing zone ({self.uri(file_name)})."
            ) from None
        except LandingRefused as exc:
            raise dg.Failure(description=str(exc)) from None
        except OSError as exc:
            raise dg.Failure(
                description=f"{file_name} in the landing zone cannot be read ({exc.strerror or exc})."
            ) from None


# --- experiment tracking -----------------------------------------------------------------------
# Each gold model fit becomes one MLflow run. A thin ConfigurableResource on MlflowClient
# (lib/tracking.py), not dagster-mlflow: its `mlflow_tracking` is a legacy op-style resource that
# opens ONE run per Dagster run in ONE experiment through MLflow's global fluent state, and connects
# when the resource is initialised (an unreachable store would fail the step before the fit). Here
# every fit gets its own run in its model's experiment, and tracking is a side channel that can
# fail without failing the models.

MODELING_KEY = dg.AssetKey(["silver", "modeling_dataset"])


class ExperimentTracker(dg.ConfigurableResource):
    """Logs model fits to MLflow (and the DynamoDB run index when `index_table` is set)."""

    tracking_uri: str
    artifact_root: str | None = None
    index_table: str | None = None
    # True: a tracking failure fails the model asset (POTATO_MLFLOW_REQUIRED).
    required: bool = False
    # False: nothing is logged (tests and runs that want no tracking store at all).
    enabled: bool = True

    def track_fit(
        self,
        context: dg.AssetExecutionContext,
        asset_key: dg.AssetKey,
        fit: ModelFit,
        modeling: pd.DataFrame | FiberSample | None = None,
    ) -> dict[str, Any]:
        """Log one fit; returns metadata for the model's materialisation.

        A failure is logged as one warning line and reported as `tracking_status: failed`,
        unless `required`, in which case it raises dg.Failure.
        """
        if not self.enabled:
            return {"tracking_status": "disabled"}
        from potato_assets.lib import tracking
        from potato_assets.lib.redact import redact_text, redact_uri

        started = time.monotonic()
        try:
            record = tracking.fit_record(
                fit,
                dagster_run_id=context.run.run_id,
                root_run_id=context.run.root_run_id,
                asset_key=asset_key.to_user_string(),
                code_version=context.assets_def.code_versions_by_key.get(asset_key),
                data_version=_latest_data_version(context, MODELING_KEY),
                figures=_figures(context, fit, modeling),
            )
            target = tracking.TrackingTarget(self.tracking_uri.strip(), self.artifact_root, self.index_table)
            run = tracking.log_fit(target, record)
        except Exception as error:  # any store/network/credential error: the fit itself is fine
            first_line = str(error).splitlines()[0][:300] if str(error) else ""
            message = redact_text(f"{type(error).__name__}: {first_line}")
            where = redact_uri(self.tracking_uri)
            seconds = time.monotonic() - started
            if self.required:
                raise dg.Failure(
                    description=(
                        f"{fit.name}: experiment tracking is required (POTATO_MLFLOW_REQUIRED=true)"
                        f" but logging the fit to MLflow at {where} failed after {seconds:.1f} s:"
                        f" {message}"
                    ),
                    metadata={"tracking_status": "failed", "tracking_error": message},
                ) from None  # the cause's text quotes the tracking URI, credentials included
            context.log.warning(
                f"{fit.name}: experiment tracking failed after {seconds:.1f} s ({message}); "
                f"the model is materialised without an MLflow run"
            )
            return {"tracking_status": "failed", "tracking_error": message, "tracking_uri": where}
        metadata: dict[str, Any] = {
            "tracking_status": "tracked",
            "mlflow_experiment": run.experiment_name,
            "mlflow_experiment_id": run.experiment_id,
            "mlflow_run_id": run.run_id,
            "mlflow_run": f"runs:/{run.run_id}",
            "mlflow_artifact_uri": run.artifact_uri,
            "mlflow_run_reused": run.reused,
            "mlflow_run_indexed": run.index_item is not None,
        }
        if run.run_url:
            metadata["mlflow_run_url"] = dg.MetadataValue.url(run.run_url)
        return metadata


def _latest_data_version(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str | None:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


def _figures(
    context: dg.AssetExecutionContext, fit: ModelFit, modeling: pd.DataFrame | FiberSample | None
) -> dict[str, bytes]:
    """This fit's fiber slope over the data (the modelling table or its FiberSample), when at hand."""
    if modeling is None:
        return {}
    from potato_assets.report import figures

    try:
        return {"fiber_vs_weight_change": figures.fiber_vs_weight_change_png(modeling, {fit.name: fit.coefficients})}
    except Exception as error:  # a figure is a nice-to-have in the run, never a reason to fail it
        context.log.debug(f"{fit.name}: no figure for the MLflow run ({type(error).__name__}: {error})")
        return {}


# --- alerting ----------------------------------------------------------------------------------


class AlertSink(dg.ConfigurableResource):
    """Where alerts go besides the logs: a webhook (POTATO_ALERT_WEBHOOK_URL), if set."""

    webhook_url: str | None = None
    timeout_seconds: float = alerts.DEFAULT_WEBHOOK_TIMEOUT_SECONDS

    def report(
        self,
        event: dict[str, Any],
        metric: tuple[str, float, dict[str, str]] | None,
        log: alerts.LogSink | None = None,
    ) -> alerts.Outcome:
        return alerts.report(
            event,
            metric=metric,
            webhook_url=self.webhook_url.strip() if self.webhook_url else None,
            timeout=self.timeout_seconds,
            log=log,
        )


# --- built from settings ---------------------------------------------------------------------------


def build_tracker(settings: Settings) -> ExperimentTracker:
    return ExperimentTracker(
        tracking_uri=from_environment("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
        artifact_root=settings.mlflow_artifact_root,
        index_table=settings.mlflow_index_table,
        required=settings.mlflow_required,
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    return {
        "io_manager": LakeIOManager(lake_uri=settings.lake_uri),
        "lake": LakeFiles(lake_uri=settings.lake_uri),
        "lake_datasets": LakeDatasets(lake_uri=settings.lake_uri, buckets=settings.lake_buckets),
        "silver_engine": SilverEngine(
            kind=settings.engine,
            # A Connect URL may carry a token (sc://host:port/;token=...): kept out of run config.
            spark_remote=from_environment("POTATO_SPARK_REMOTE", settings.spark_remote),
            workers=settings.silver_workers,
            emr_application_id=settings.emr_application_id,
            emr_execution_role_arn=settings.emr_execution_role_arn,
            emr_job_code_uri=settings.emr_job_code_uri,
            emr_log_group=settings.emr_log_group,
        ),
        "contract_engine": ContractEngine(
            kind=settings.contract_engine,
            spark_remote=from_environment("POTATO_SPARK_REMOTE", settings.spark_remote),
            processes=settings.contract_processes,
        ),
        "landing": LandingZone(landing_uri=settings.landing_uri, max_bytes=settings.max_landing_bytes),
        "experiment_tracker": build_tracker(settings),
        "alerts_sink": AlertSink(webhook_url=from_environment("POTATO_ALERT_WEBHOOK_URL", settings.alert_webhook_url)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(get_settings()))
