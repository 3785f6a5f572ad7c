"""Operational alerts: one structured JSON event, one metric, and an optional webhook post.

Plain functions, no Dagster. The sensors in defs/automation.py call `report` for freshness
changes and failed runs. Metrics go through `record_metric` only, so the telemetry layer can
export them without touching the callers.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from potato_assets.lib.redact import get_logger, redact_text, strip_userinfo

LOGGER = get_logger("potato_assets.alerts")
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 5.0

# Metric names (Prometheus style; the telemetry layer may map them to OTel instruments).
ASSET_STALE = "potato_asset_stale"  # gauge per asset: 1 stale, 0 fresh
FRESHNESS_LAG = "potato_freshness_lag_seconds"  # gauge per asset: seconds since last materialised
RUN_FAILURES = "potato_run_failures_total"  # counter per job
ALERT_DELIVERY_FAILURES = "potato_alert_delivery_failures_total"  # counter


class LogSink(Protocol):
    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


def record_metric(name: str, value: float, attributes: Mapping[str, str], log: LogSink | None = None) -> dict:
    """The one place alerting emits metrics: a structured log line, and the staleness gauge also
    goes to OTLP / the Pushgateway when configured. Run failures are not forwarded: each run
    already reports its own failure (labelled by job), and a pushed copy would never reset."""
    record = {"metric": name, "value": float(value), "attributes": dict(attributes)}
    (log or LOGGER).info(json.dumps(record, sort_keys=True))
    if name in (ASSET_STALE, FRESHNESS_LAG) and "asset_key" in attributes:
        from potato_assets.lib.observe import telemetry
        from potato_assets.settings import load_settings

        telemetry.record_metric(
            name,
            value,
            {k: attributes[k] for k in ("asset_key", "layer") if k in attributes},
            pushgateway_url=load_settings().pushgateway_url,
        )
    return record


def structured_event(event: str, message: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "message": message,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        **fields,
    }


class AlertDeliveryError(RuntimeError):
    pass


def post_webhook(url: str, payload: Mapping[str, Any], timeout: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS) -> int:
    """POST JSON to the webhook; any non-2xx answer, refusal or timeout is an AlertDeliveryError."""
    body = json.dumps(payload, default=str).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "potato-assets-alerts"}
    # urllib cannot use userinfo (it would read `user:pass@host` as a host and quote it in errors).
    url, credentials = strip_userinfo(url)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(f"webhook answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertDeliveryError(redact_text(f"webhook unreachable: {reason}")) from None


@dataclass(frozen=True)
class Outcome:
    event: dict[str, Any]
    delivered: bool | None  # None: no webhook configured
    error: str | None = None


def report(
    event: dict[str, Any],
    *,
    metric: tuple[str, float, Mapping[str, str]] | None,
    webhook_url: str | None,
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
    log: LogSink | None = None,
) -> Outcome:
    """Log the event, record its metric, post it to the webhook if one is set.

    A webhook that fails is logged and counted, not raised: alerts for other assets and runs in
    the same sensor tick still go out, and the sensor's cursor still moves on.
    """
    sink = log or LOGGER
    sink.warning(json.dumps(event, sort_keys=True, default=str))
    if metric is not None:
        record_metric(*metric, log=sink)
    if not webhook_url:
        return Outcome(event, None)
    try:
        post_webhook(webhook_url, {"text": event["message"], "event": event}, timeout=timeout)
    except AlertDeliveryError as exc:
        failure = structured_event("alert_delivery_failed", str(exc), alert=event["event"])
        sink.warning(json.dumps(failure, sort_keys=True))
        record_metric(ALERT_DELIVERY_FAILURES, 1, {"alert": str(event["event"])}, log=sink)
        return Outcome(event, False, str(exc))
    return Outcome(event, True)
