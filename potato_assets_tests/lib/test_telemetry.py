"""Telemetry pieces: metric names and labels, Pushgateway registries, JSON log lines, off = free."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import pytest

from potato_assets.lib.observe import telemetry

RUN_ID = "a429554c-36b3-4c99-a8b1-8a3786e087d1"


def test_metric_names_already_carry_their_prometheus_suffixes():
    for spec in telemetry.METRICS.values():
        assert spec.name.startswith("potato_")
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        if spec.unit == "s":
            assert spec.name.endswith("_seconds"), spec.name
        assert not (spec.kind == "gauge" and spec.unit == "1"), f"{spec.name} would gain _ratio"
        assert "job" not in spec.labels  # Prometheus' own target label; ours is dagster_job


def test_observation_refuses_unknown_metrics_and_wrong_labels():
    with pytest.raises(ValueError, match="unknown metric 'potato_nope'"):
        telemetry.observation("potato_nope", 1)
    with pytest.raises(ValueError, match="takes labels"):
        telemetry.observation(telemetry.RUNS, 1, dagster_job="j")


def test_registry_exposes_exactly_the_declared_names():
    from prometheus_client import generate_latest

    obs = [
        telemetry.observation(telemetry.RUNS, 1, dagster_job="j", status="success"),
        telemetry.observation(telemetry.ASSET_DURATION, 2.0, step="s", layer="bronze", status="success"),
        telemetry.observation(telemetry.ROWS_PROCESSED, 7, asset_key="bronze/weight", layer="bronze", direction="out"),
        telemetry.observation(telemetry.ROWS_PROCESSED, 5, asset_key="bronze/weight", layer="bronze", direction="out"),
        telemetry.observation(telemetry.LAST_MATERIALIZATION, 1.7e9, asset_key="gold/x", layer="gold"),
    ]
    text = generate_latest(telemetry.build_registry(obs)).decode()
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert samples == {
        "potato_runs_total",
        "potato_asset_duration_seconds_bucket",
        "potato_asset_duration_seconds_sum",
        "potato_asset_duration_seconds_count",
        "potato_rows_processed_total",
        "potato_asset_last_materialization_timestamp_seconds",
    }
    assert 'potato_rows_processed_total{asset_key="bronze/weight",direction="out",layer="bronze"} 12.0' in text


def test_trace_id_is_the_run_id():
    assert telemetry.format_trace_id(telemetry.trace_id_for_run(RUN_ID)) == RUN_ID.replace("-", "")


def test_json_log_lines_carry_run_id_and_trace_id():
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.potato_fields = {"run_id": RUN_ID, "step_key": "ingest_landing", "span_id": None}
    doc = json.loads(telemetry.JsonLogFormatter().format(record))
    assert doc["message"] == "hello world" and doc["run_id"] == RUN_ID
    assert doc["trace_id"] == RUN_ID.replace("-", "") and doc["step_key"] == "ingest_landing"
    assert "span_id" not in doc
    plain = json.loads(telemetry.JsonLogFormatter().format(logging.LogRecord("x", 30, __file__, 1, "m", (), None)))
    assert plain["run_id"] is None and plain["trace_id"] is None and plain["level"] == "WARNING"


def test_unreachable_pushgateway_is_reported_not_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    obs = [telemetry.observation(telemetry.RUN_FAILURES, 1, dagster_job="j")]
    started = time.monotonic()
    assert telemetry.push_observations(f"http://127.0.0.1:{port}", obs) is False
    assert time.monotonic() - started < 5


def test_off_means_no_imports_and_no_output():
    code = (
        "import sys, logging\n"
        "from potato_assets.definitions import defs\n"
        "defs()\n"
        "from potato_assets.lib.observe import telemetry\n"
        "assert telemetry.telemetry_from_env({}) is None\n"
        "labels = {'asset_key': 'gold/x', 'layer': 'gold'}\n"
        "telemetry.record_metric(telemetry.FRESHNESS_LAG, 5.0, labels)\n"
        "from potato_assets.lib.observe.handler import ObservabilityHandler\n"
        "h = ObservabilityHandler()\n"
        "r = logging.LogRecord('dagster', 10, 'f', 1, 'm', (), None)\n"
        f"r.dagster_meta = {{'run_id': '{RUN_ID}', 'dagster_event': None}}\n"
        "h.handle(r)\n"
        "heavy = ('opentelemetry', 'openlineage', 'prometheus_client')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("POTATO_", "OTEL_", "OPENLINEAGE_"))}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_record_metric_reaches_a_real_pushgateway(tmp_path):
    import shutil
    import urllib.request

    from potato_assets_tests.helpers import free_port

    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("Debian's prometheus-pushgateway is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "pushgateway did not start"
                time.sleep(0.2)
        telemetry.record_metric(
            telemetry.ASSET_STALE,
            1,
            {"asset_key": "gold/reports/model_report"},
            pushgateway_url=url,
        )
        text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        (line,) = [x for x in text.splitlines() if x.startswith(telemetry.ASSET_STALE + "{")]
        assert 'asset_key="gold/reports/model_report"' in line and line.endswith(" 1")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
