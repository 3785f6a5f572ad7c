"""The one redaction rule: URLs lose their userinfo and credential parameters, known secrets are
masked in free text, log records and the alert, lineage and Pushgateway paths never quote them."""

from __future__ import annotations

import base64
import logging

import pytest

from potato_assets.lib import redact
from potato_assets.lib.observe import alerts, lineage, telemetry
from potato_assets_tests.helpers import LoopbackReceiver, free_port


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://user:tok3n-xyz@host:5000/p", "http://host:5000/p"),
        ("https://ghp_onlyatoken@github.com/o/r.git", "https://github.com/o/r.git"),
        ("postgresql+psycopg2://mlflow:s3cr3t@db:5432/mlflow", "postgresql+psycopg2://db:5432/mlflow"),
        ("http://h/x?token=abc&page=2", "http://h/x?token=***&page=2"),
        ("http://h/x?api_key=abc&API-KEY=d&apikey=e", "http://h/x?api_key=***&API-KEY=***&apikey=***"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        (
            "https://acct.blob.core.windows.net/c/b?sv=2022&sig=abc%3D",
            "https://acct.blob.core.windows.net/c/b?sv=2022&sig=***",
        ),
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc", "http://127.0.0.1:5000/#/experiments/1/runs/abc"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_uri(uri, shown):
    assert redact.redact_uri(uri) == shown


def test_free_text_loses_urls_credentials_and_bare_query_tokens():
    text = (
        "POST http://u:pw-secret1@127.0.0.1:1/api/v1/lineage failed: "
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api/v1/lineage?api_key=k-secret2"
    )
    shown = redact.redact_text(text, secrets=())
    assert "pw-secret1" not in shown and "k-secret2" not in shown and "u:" not in shown
    assert "http://127.0.0.1:1/api/v1/lineage" in shown and "api_key=***" in shown


def test_secret_values_from_the_environment_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "lineage-key-123456")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:alice-pass-99@mlflow:5000")
    monkeypatch.setenv("POTATO_ALERT_WEBHOOK_URL", "https://hooks.example/services/T0/B0/XYZSECRETPATH")
    monkeypatch.setenv("PWD", "/some/ordinary/folder")
    secrets = redact.environment_secrets()
    assert {"lineage-key-123456", "alice-pass-99", "https://hooks.example/services/T0/B0/XYZSECRETPATH"} <= set(secrets)
    assert "/some/ordinary/folder" not in secrets
    text = "nonnumeric port: 'alice-pass-99@mlflow:5000'; Bearer lineage-key-123456; hook XYZSECRETPATH"
    shown = redact.redact_text(f"{text} https://hooks.example/services/T0/B0/XYZSECRETPATH")
    assert "alice-pass-99" not in shown and "lineage-key-123456" not in shown
    assert "https://hooks.example/services/T0/B0/XYZSECRETPATH" not in shown


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks(caplog):
    logger = redact.get_logger("potato_assets.test_redact")
    assert redact.get_logger("potato_assets.test_redact").filters.count(redact._FILTER) == 1
    with caplog.at_level(logging.WARNING, logger="potato_assets.test_redact"):
        logger.warning("cannot reach %s", "http://u:arg-secret-1@h/")
        try:
            raise RuntimeError("boom at http://u:exc-secret-2@h/?token=exc-secret-3")
        except RuntimeError:
            logger.exception("failed")
    output = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "cannot reach http://h/" in output
    for secret in ("arg-secret-1", "exc-secret-2", "exc-secret-3"):
        assert secret not in output


def test_the_json_log_formatter_redacts_every_field():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "see http://u:json-secret-1@h/", None, None)
    record.potato_fields = {"message": "again http://u:json-secret-1@h/?token=json-secret-2", "run_id": None}
    line = telemetry.JsonLogFormatter().format(record)
    assert "json-secret-1" not in line and "json-secret-2" not in line


def test_a_webhook_with_userinfo_authenticates_and_its_failures_quote_no_secret():
    receiver = LoopbackReceiver()
    try:
        port = receiver.url.rsplit(":", 1)[1]
        status = alerts.post_webhook(f"http://hook:hook-pass-77@127.0.0.1:{port}/h?token=q-88", {"text": "x"})
        assert status == 200
        [(method, path, auth)] = receiver.requests
        assert auth == "Basic " + base64.b64encode(b"hook:hook-pass-77").decode()
    finally:
        receiver.close()
    with pytest.raises(alerts.AlertDeliveryError) as caught:
        alerts.post_webhook(f"http://hook:hook-pass-77@127.0.0.1:{free_port()}/h?token=q-secret-88", {"text": "x"})
    assert "hook-pass-77" not in str(caught.value) and "q-secret-88" not in str(caught.value)


def test_pushgateway_userinfo_becomes_basic_auth_and_is_not_logged(caplog):
    receiver = LoopbackReceiver()
    try:
        port = receiver.url.rsplit(":", 1)[1]
        obs = [telemetry.observation(telemetry.RUNS, 1, dagster_job="j", status="success")]
        assert telemetry.push_observations(f"http://pg:pg-pass-55@127.0.0.1:{port}", obs)
        assert {auth for _, _, auth in receiver.requests} == {"Basic " + base64.b64encode(b"pg:pg-pass-55").decode()}
    finally:
        receiver.close()
    with caplog.at_level(logging.WARNING):
        assert not telemetry.push_observations(f"http://pg:pg-pass-55@127.0.0.1:{free_port()}", obs)
    assert "pg-pass-55" not in caplog.text and "127.0.0.1" in caplog.text


def test_an_unreachable_lineage_endpoint_is_logged_without_credentials(caplog):
    url = f"http://ol:ol-pass-66@127.0.0.1:{free_port()}/?api_key=ol-query-77"
    emitter = lineage.HttpLineageEmitter(url, timeout=1)
    job = lineage.JobRun(namespace="ns", name="job", run_id="0b1c7f6e-0000-4000-8000-000000000000", job_type="JOB")
    with caplog.at_level(logging.WARNING):
        emitter.emit(lineage.build_run_event(lineage.START, job))
    assert emitter.failures == 1
    assert "ol-pass-66" not in caplog.text and "ol-query-77" not in caplog.text
    assert "127.0.0.1" in caplog.text
