"""OpenTelemetry traces/metrics/logs over OTLP/HTTP, Pushgateway pushes, and JSON log lines.

Off unless configured: OTLP needs OTEL_EXPORTER_OTLP_ENDPOINT (the SDK's own variable), the
Pushgateway needs POTATO_PUSHGATEWAY_URL. The OpenTelemetry and prometheus-client packages are
imported only when one of them is set, so importing this module costs nothing.

Metric names are spelled here once, exactly as Prometheus stores them: the collector's
OTLP->Prometheus translation appends the unit suffix (`_seconds`) and `_total` for counters only
when a name lacks them, so these names arrive unchanged on both paths and the dashboards and alert
rules in observability/ query exactly these.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from potato_assets.lib.redact import get_logger, redact_text, redact_uri, strip_userinfo

log = get_logger(__name__)

SERVICE_NAME = "potato_assets"
PUSHGATEWAY_JOB = "potato_assets"
EXPORT_TIMEOUT_SECONDS = 2.0

RUNS = "potato_runs_total"
RUN_FAILURES = "potato_run_failures_total"
RUN_DURATION = "potato_run_duration_seconds"
ASSET_DURATION = "potato_asset_duration_seconds"
ROWS_PROCESSED = "potato_rows_processed_total"
CHECK_EVALUATIONS = "potato_check_evaluations_total"
CHECK_FAILURES = "potato_check_failures_total"
FRESHNESS_LAG = "potato_freshness_lag_seconds"
LAST_MATERIALIZATION = "potato_asset_last_materialization_timestamp_seconds"
# Recorded outside runs by the freshness sensor (lib/observe/alerts.py -> record_metric), not by a run.
ASSET_STALE = "potato_asset_stale"
OUTSIDE_RUNS = frozenset({FRESHNESS_LAG, ASSET_STALE})

DURATION_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter, histogram or gauge
    unit: str
    description: str
    labels: tuple[str, ...]


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec(
            RUNS,
            "counter",
            "1",
            "Dagster runs finished, by job and status",
            ("dagster_job", "status"),
        ),
        MetricSpec(RUN_FAILURES, "counter", "1", "Dagster runs that failed", ("dagster_job",)),
        MetricSpec(RUN_DURATION, "histogram", "s", "Wall time of a Dagster run", ("dagster_job", "status")),
        MetricSpec(
            ASSET_DURATION,
            "histogram",
            "s",
            "Wall time of a step that materialises assets",
            ("step", "layer", "status"),
        ),
        MetricSpec(
            ROWS_PROCESSED,
            "counter",
            "1",
            "Rows read (direction=in) and written (out) per asset",
            ("asset_key", "layer", "direction"),
        ),
        MetricSpec(
            CHECK_EVALUATIONS,
            "counter",
            "1",
            "Asset check evaluations by outcome",
            ("asset_key", "check_name", "blocking", "outcome"),
        ),
        MetricSpec(
            CHECK_FAILURES,
            "counter",
            "1",
            "Asset checks that did not pass",
            ("asset_key", "check_name", "severity", "blocking"),
        ),
        MetricSpec(
            FRESHNESS_LAG,
            "gauge",
            "s",
            "Seconds since an asset was last materialised",
            ("asset_key", "layer"),
        ),
        # unit "" not "1": the collector would append `_ratio` to a gauge in unit "1"
        MetricSpec(ASSET_STALE, "gauge", "", "1 while an asset is stale, else 0", ("asset_key",)),
        MetricSpec(
            LAST_MATERIALIZATION,
            "gauge",
            "s",
            "Unix time of an asset's last materialisation",
            ("asset_key", "layer"),
        ),
    )
}


@dataclass(frozen=True)
class Observation:
    name: str
    value: float
    labels: Mapping[str, str]


def observation(name: str, value: float, **labels: str) -> Observation:
    spec = METRICS.get(name)
    if spec is None:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    if set(labels) != set(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, got {sorted(labels)}")
    return Observation(name, float(value), {k: str(v) for k, v in labels.items()})


# --- trace ids -------------------------------------------------------------------------------


def trace_id_for_run(run_id: str) -> int:
    """A Dagster run id is a UUID: its 128 bits are the run's trace id, so logs, traces and the
    Dagster UI join on it even where no span was ever exported."""
    return uuid.UUID(run_id).int


def format_trace_id(trace_id: int) -> str:
    return f"{trace_id:032x}"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; `run_id` and `trace_id` on every line (null outside a run)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "potato_fields", None) or {}
        run_id = fields.get("run_id")
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": fields.get("message", record.getMessage()),
            "run_id": run_id,
            "trace_id": fields.get("trace_id") or (format_trace_id(trace_id_for_run(run_id)) if run_id else None),
        }
        doc.update({k: v for k, v in fields.items() if k not in doc and v is not None})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(doc, default=str))


# --- OpenTelemetry -----------------------------------------------------------------------------


def otlp_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        if (env.get(name) or "").strip():
            return env[name].strip()
    return None


class Telemetry:
    """Tracer, meter and logger providers exporting OTLP/HTTP; one per process."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        timeout = min(
            EXPORT_TIMEOUT_SECONDS,
            float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or 10_000) / 1000,
        )
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})

        class RunTraceIds(RandomIdGenerator):
            """The next root span takes the run's trace id (see trace_id_for_run)."""

            pending: int | None = None

            def generate_trace_id(self) -> int:
                value, self.pending = self.pending, None
                return value if value is not None else super().generate_trace_id()

        self._ids = RunTraceIds()
        self._lock = threading.Lock()
        self.tracer_provider = TracerProvider(resource=resource, id_generator=self._ids)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=timeout)))
        self.tracer = self.tracer_provider.get_tracer("potato_assets")
        views = [
            View(
                instrument_name=m.name,
                aggregation=ExplicitBucketHistogramAggregation(boundaries=DURATION_BUCKETS),
            )
            for m in METRICS.values()
            if m.kind == "histogram"
        ]
        # Batch runs flush at their end; the periodic export is only a safety net for long runs.
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(timeout=timeout), export_interval_millis=60_000)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
        meter = self.meter_provider.get_meter("potato_assets")
        self._instruments: dict[str, Any] = {}
        for m in METRICS.values():
            make: Any = {
                "counter": meter.create_counter,
                "histogram": meter.create_histogram,
                "gauge": meter.create_gauge,
            }[m.kind]
            self._instruments[m.name] = make(m.name, unit=m.unit, description=m.description)
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(timeout=timeout)))
        self.otel_logger = self.logger_provider.get_logger("potato_assets")

    def start_run_span(self, run_id: str, name: str, attributes: Mapping[str, Any]) -> Any:
        with self._lock:
            self._ids.pending = trace_id_for_run(run_id)
            return self.tracer.start_span(name, attributes=dict(attributes))

    def start_child_span(self, parent: Any, name: str, attributes: Mapping[str, Any]) -> Any:
        from opentelemetry import trace

        ctx = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=ctx, attributes=dict(attributes))

    def record(self, obs: Observation) -> None:
        instrument = self._instruments[obs.name]
        kind = METRICS[obs.name].kind
        if kind == "counter":
            instrument.add(obs.value, attributes=dict(obs.labels))
        elif kind == "histogram":
            instrument.record(obs.value, attributes=dict(obs.labels))
        else:
            instrument.set(obs.value, attributes=dict(obs.labels))

    def log(self, record: logging.LogRecord, body: str, span: Any, attributes: Mapping[str, Any]) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import SeverityNumber

        severity = {
            logging.DEBUG: SeverityNumber.DEBUG,
            logging.INFO: SeverityNumber.INFO,
            logging.WARNING: SeverityNumber.WARN,
            logging.ERROR: SeverityNumber.ERROR,
            logging.CRITICAL: SeverityNumber.FATAL,
        }.get(record.levelno, SeverityNumber.INFO)
        self.otel_logger.emit(
            timestamp=int(record.created * 1e9),
            context=trace.set_span_in_context(span) if span is not None else None,
            severity_number=severity,
            severity_text=record.levelname,
            body=body,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )

    def flush(self, timeout_seconds: float = 5.0) -> None:
        millis = int(timeout_seconds * 1000)
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            try:
                provider.force_flush(millis)
            except Exception as exc:  # telemetry never fails a run
                log.warning("OpenTelemetry flush failed: %s", exc)


_TELEMETRY: Telemetry | None = None
_TELEMETRY_LOCK = threading.Lock()


def telemetry_from_env(environ: Mapping[str, str] | None = None) -> Telemetry | None:
    """The process's Telemetry when an OTLP endpoint is configured, else None (and no imports)."""
    global _TELEMETRY
    if otlp_endpoint(environ) is None:
        return None
    with _TELEMETRY_LOCK:
        if _TELEMETRY is None:
            _TELEMETRY = Telemetry()
        return _TELEMETRY


# --- Prometheus Pushgateway ------------------------------------------------------------------


def build_registry(observations: Iterable[Observation]) -> Any:
    """A fresh prometheus-client registry holding one run's observations (no `_created` series)."""
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    made: dict[str, Any] = {}
    for obs in observations:
        spec = METRICS[obs.name]
        metric = made.get(obs.name)
        if metric is None:
            if spec.kind == "counter":
                metric = Counter(spec.name, spec.description, spec.labels, registry=registry)
            elif spec.kind == "histogram":
                metric = Histogram(
                    spec.name,
                    spec.description,
                    spec.labels,
                    registry=registry,
                    buckets=DURATION_BUCKETS,
                )
            else:
                metric = Gauge(spec.name, spec.description, spec.labels, registry=registry)
            made[obs.name] = metric
        child: Any = metric.labels(**obs.labels)
        if spec.kind == "counter":
            child.inc(obs.value)
        elif spec.kind == "histogram":
            child.observe(obs.value)
        else:
            child.set(obs.value)
    return registry


def push_observations(url: str, observations: Iterable[Observation], *, per_asset: Iterable[str] = ()) -> bool:
    """Push one run's metrics to the Pushgateway; False (logged) when it cannot be reached.

    The run's metrics replace the previous run's in the group {job="potato_assets"}. Metrics named
    in `per_asset` go to a group per asset instead, so a run that refreshes only some assets keeps
    the others' last values (e.g. last-materialisation times for the stale-gold alert).
    """
    from prometheus_client import push_to_gateway

    url, handler = _pushgateway_target(url)
    per_asset = set(per_asset)
    run_level = []
    by_asset: dict[str, list[Observation]] = {}
    for obs in observations:
        if obs.name in per_asset:
            by_asset.setdefault(obs.labels["asset_key"], []).append(obs)
        else:
            run_level.append(obs)
    try:
        push_to_gateway(
            url,
            job=PUSHGATEWAY_JOB,
            registry=build_registry(run_level),
            timeout=EXPORT_TIMEOUT_SECONDS,
            handler=handler,
        )
        for asset_key, items in by_asset.items():
            push_to_gateway(
                url,
                job=PUSHGATEWAY_JOB,
                grouping_key={"asset_key": asset_key},
                registry=build_registry(items),
                timeout=EXPORT_TIMEOUT_SECONDS,
                handler=handler,
            )
        return True
    except Exception as exc:  # metrics are best-effort: never fail a run for them
        log.warning("metrics could not be pushed to the Pushgateway at %s: %s", redact_uri(url), redact_text(str(exc)))
        return False


def record_metric(
    name: str, value: float, attributes: Mapping[str, str], *, pushgateway_url: str | None = None
) -> None:
    """One observation from outside a run (e.g. the freshness sensor): OTLP and/or Pushgateway.

    A no-op (no imports) when neither is configured.
    """
    obs = observation(name, value, **dict(attributes))
    telemetry = telemetry_from_env()
    if telemetry is not None:
        telemetry.record(obs)
        telemetry.flush(EXPORT_TIMEOUT_SECONDS)
    if pushgateway_url:
        from prometheus_client import push_to_gateway

        grouping = {k: obs.labels[k] for k in ("asset_key",) if k in obs.labels}
        url, handler = _pushgateway_target(pushgateway_url)
        try:
            push_to_gateway(
                url,
                job=f"{PUSHGATEWAY_JOB}_{obs.name}",
                grouping_key=grouping,
                registry=build_registry([obs]),
                timeout=EXPORT_TIMEOUT_SECONDS,
                handler=handler,
            )
        except Exception as exc:
            log.warning("metric %s could not be pushed to %s: %s", name, redact_uri(url), redact_text(str(exc)))


def _pushgateway_target(url: str) -> tuple[str, Any]:
    """The gateway without userinfo, and a handler sending that userinfo as HTTP basic auth.

    urllib cannot use credentials in a URL: it takes `user:pass@host` for a host and port, and
    its error message then quotes the password.
    """
    from prometheus_client.exposition import basic_auth_handler, default_handler

    bare, credentials = strip_userinfo(url)
    if credentials is None:
        return bare, default_handler
    user, password = credentials

    def handler(url: str, method: str, timeout: float | None, headers: list, data: bytes) -> Any:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return bare, handler
