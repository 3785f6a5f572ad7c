"""A real `dagster asset materialize` run, observed: OpenLineage to a loopback server, OTLP/HTTP to
another, metrics to a real Pushgateway scraped by a real Prometheus (Debian packages; skipped
where absent). One run serves every test here; the configuration is the repository's dagster.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from potato_assets.lib.observe import telemetry
from potato_assets_tests.helpers import (
    MATERIALIZE_ALL,
    REPO,
    LoopbackReceiver,
    cli_home,
    free_port,
    read_table,
    validate_event,
)

OBSERVABILITY = REPO / "observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
ALERT_RULES = OBSERVABILITY / "prometheus" / "alerts.yml"


# OpenLineage and OTLP endpoints answer 200 with a JSON body.
ENDPOINT_ANSWER = b"{}"


def _wait_http(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.2)


@dataclass
class ObservedRun:
    lake: Path
    lineage: LoopbackReceiver
    otlp: LoopbackReceiver
    run_id: str
    stderr: str
    pushgateway: str | None = None
    prometheus: str | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)


def _start_prometheus_stack(tmp: Path) -> tuple[str, str, list[subprocess.Popen]] | None:
    pushgateway_bin = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    prometheus_bin = shutil.which("prometheus")
    if not (pushgateway_bin and prometheus_bin):
        return None
    pg_port, prom_port = free_port(), free_port()
    pg = subprocess.Popen(
        [pushgateway_bin, f"--web.listen-address=127.0.0.1:{pg_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{pg_port}']\n"
    )
    prom = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pg_url, prom_url = f"http://127.0.0.1:{pg_port}", f"http://127.0.0.1:{prom_port}"
    _wait_http(f"{pg_url}/-/ready", pg)
    _wait_http(f"{prom_url}/-/ready", prom)
    return pg_url, prom_url, [pg, prom]


@pytest.fixture(scope="module")
def observed(tmp_path_factory, sample_dir):
    tmp = tmp_path_factory.mktemp("observed")
    # The repository's own instance config: this is what wires the handler into every run.
    home = cli_home(tmp)
    lineage_rx, otlp_rx = LoopbackReceiver(response=ENDPOINT_ANSWER), LoopbackReceiver(response=ENDPOINT_ANSWER)
    stack = _start_prometheus_stack(tmp)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POTATO_", "OTEL_", "OPENLINEAGE_"))},
        "DAGSTER_HOME": str(home),
        "POTATO_LAKE_URI": str(tmp / "lake"),
        "POTATO_LANDING_URI": str(sample_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "OPENLINEAGE_URL": lineage_rx.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_rx.url,
        "POTATO_LOG_FORMAT": "json",
    }
    if stack:
        env["POTATO_PUSHGATEWAY_URL"] = stack[0]
    try:
        proc = subprocess.run(
            MATERIALIZE_ALL,
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_ids = set(re.findall(r'"run_id": "([0-9a-f-]{36})"', proc.stderr))
        assert len(run_ids) == 1, f"expected one run in the JSON log lines, found {run_ids}"
        run = ObservedRun(tmp / "lake", lineage_rx, otlp_rx, run_ids.pop(), proc.stderr)
        if stack:
            run.pushgateway, run.prometheus, run.processes = stack
        yield run
    finally:
        for p in stack[2] if stack else []:
            p.terminate()
            p.wait(timeout=10)
        lineage_rx.close()
        otlp_rx.close()


# --- OpenLineage ------------------------------------------------------------------------------


def _events(run: ObservedRun) -> list[dict]:
    return [json.loads(b) for b in run.lineage.bodies("/api/v1/lineage")]


@pytest.mark.e2e
def test_every_lineage_event_and_facet_validates(observed):
    events = _events(observed)
    assert events, "no OpenLineage events arrived"
    seen = set()
    for event in events:
        seen.update(validate_event(event))
    assert {
        "parent",
        "schema",
        "dataSource",
        "outputStatistics",
        "columnLineage",
        "dataQualityAssertions",
    } <= seen


@pytest.mark.e2e
def test_each_job_run_starts_once_then_completes_once(observed):
    by_run: dict[str, list[str]] = {}
    for event in _events(observed):
        by_run.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert by_run[observed.run_id] == ["START", "COMPLETE"]
    assert all(types == ["START", "COMPLETE"] for types in by_run.values()), by_run


@pytest.mark.e2e
def test_lineage_edges_join_landing_to_bronze_to_silver_to_gold(observed):
    completes = [e for e in _events(observed) if e["eventType"] == "COMPLETE" and e["outputs"]]
    written = {(o["namespace"], o["name"]): e["job"]["name"] for e in completes for o in e["outputs"]}
    edges = set()
    for e in completes:
        for i in e["inputs"]:
            key = (i["namespace"], i["name"])
            if key[1].endswith(".csv"):
                edges.add(("landing", e["job"]["name"]))
            else:  # every lake input is a dataset some job of this run wrote, named identically
                assert key in written, f"{e['job']['name']} reads {key}, which no job wrote"
                edges.add((written[key], e["job"]["name"]))
    layer = lambda job: job.split(".")[0]  # noqa: E731
    layer_edges = {(layer(a), layer(b)) for a, b in edges}
    assert {("landing", "bronze"), ("bronze", "silver"), ("silver", "gold")} <= layer_edges
    # per-asset jobs carry their own upstreams: bronze/weight reads only the weigh-in file
    weight = next(e for e in completes if e["job"]["name"] == "bronze.weight")
    assert [Path(i["name"]).name for i in weight["inputs"]] == ["Potato_tidy.csv"]
    # every job's parent is the Dagster run
    assert all(e["run"]["facets"]["parent"]["run"]["runId"] == observed.run_id for e in completes)


@pytest.mark.e2e
def test_output_facets_describe_the_written_tables(observed):
    lake_uri = observed.lake.as_uri()
    checked = 0
    for e in _events(observed):
        if e["eventType"] != "COMPLETE":
            continue
        for out in e["outputs"]:
            if out["name"].endswith((".png", ".md", ".html")):  # tables only: objects and datasets
                continue
            relative = out["name"].split("/lake/", 1)[1].removesuffix(".parquet")
            table = read_table(lake_uri, relative)
            assert out["namespace"] == "file"
            assert out["outputFacets"]["outputStatistics"]["rowCount"] == len(table)
            assert [f["name"] for f in out["facets"]["schema"]["fields"]] == [str(c) for c in table.columns]
            assert out["facets"]["dataSource"]["uri"].startswith("file://")
            checked += 1
    assert checked >= 10
    modeling = next(
        e for e in _events(observed) if e["eventType"] == "COMPLETE" and e["job"]["name"] == "silver.modeling_dataset"
    )
    lineage = modeling["outputs"][0]["facets"]["columnLineage"]["fields"]
    source = lineage["fiber_g_week"]["inputFields"][0]
    assert (source["name"].endswith("silver/weekly_features"), source["field"]) == (
        True,
        "fiber_g_sum",
    )
    assert (source["namespace"], source["name"]) in {(i["namespace"], i["name"]) for i in modeling["inputs"]}


@pytest.mark.e2e
def test_check_outcomes_ride_on_the_input_side(observed):
    from potato_assets_tests.helpers import load_defs

    checks = load_defs().resolve_asset_graph().asset_check_keys
    if not checks:
        pytest.skip("the definitions declare no asset checks")
    check_jobs = [e for e in _events(observed) if e["eventType"] == "COMPLETE" and ".check." in e["job"]["name"]]
    names = {e["job"]["name"] for e in check_jobs}
    assert names == {f"{'.'.join(c.asset_key.path)}.check.{c.name}" for c in checks}
    for e in check_jobs:
        (dataset,) = e["inputs"]
        (assertion,) = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
        assert assertion["assertion"] == e["job"]["name"].rsplit(".", 1)[1]
        assert isinstance(assertion["success"], bool)


# --- OTLP ---------------------------------------------------------------------------------------


def _spans(run: ObservedRun) -> list:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for body in run.otlp.bodies("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    return spans


def _attrs(item) -> dict:
    def value(v):
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind)

    return {a.key: value(a.value) for a in item.attributes}


def _otlp_metrics(run: ObservedRun) -> dict[str, object]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    metrics = {}
    for body in run.otlp.bodies("/v1/metrics"):
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    metrics[m.name] = m
    return metrics


@pytest.mark.e2e
def test_otlp_has_a_span_per_step_under_the_run_span(observed):
    spans = _spans(observed)
    run_hex = observed.run_id.replace("-", "")
    (root,) = [s for s in spans if s.name.startswith("run ")]
    assert root.trace_id.hex() == run_hex and _attrs(root)["dagster.run_id"] == observed.run_id
    steps = {_attrs(s)["dagster.step_key"]: s for s in spans if s.name.startswith("step ")}
    assert {"ingest_landing", "fit_models"} <= set(steps)
    for span in steps.values():
        attrs = _attrs(span)
        assert span.trace_id.hex() == run_hex and span.parent_span_id == root.span_id
        assert attrs["dagster.run_id"] == observed.run_id and "dagster.partition" in attrs
        assert {
            "potato.rows_in",
            "potato.rows_out",
            "potato.checks_passed",
            "potato.checks_failed",
        } <= set(attrs)
    ingest = _attrs(steps["ingest_landing"])
    assert set(ingest["dagster.asset_keys"]) == {
        "bronze/weight",
        "bronze/fiber",
        "bronze/nutrition",
        "bronze/quarantine",
    }
    expected_rows = sum(
        len(read_table(observed.lake.as_uri(), f"bronze/{n}")) for n in ("weight", "fiber", "nutrition", "quarantine")
    )
    assert ingest["potato.rows_out"] == expected_rows


@pytest.mark.e2e
def test_otlp_carries_the_pipeline_metrics(observed):
    metrics = _otlp_metrics(observed)
    run_level = set(telemetry.METRICS) - telemetry.OUTSIDE_RUNS
    assert run_level <= set(metrics)
    rows = metrics[telemetry.ROWS_PROCESSED].sum.data_points
    out = {(_attrs(p)["asset_key"]): p.as_double or p.as_int for p in rows if _attrs(p)["direction"] == "out"}
    assert out["silver/modeling_dataset"] == len(read_table(observed.lake.as_uri(), "silver/modeling_dataset"))


@pytest.mark.e2e
def test_every_log_line_carries_run_id_and_trace_id(observed):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    run_hex = observed.run_id.replace("-", "")
    records = []
    for body in observed.otlp.bodies("/v1/logs"):
        for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
            for sl in rl.scope_logs:
                records.extend(sl.log_records)
    assert len(records) > 50
    for r in records:
        assert r.trace_id.hex() == run_hex
        doc = json.loads(r.body.string_value)
        assert doc["run_id"] == observed.run_id and doc["trace_id"] == run_hex
    json_lines = [json.loads(line) for line in observed.stderr.splitlines() if line.startswith("{")]
    assert len(json_lines) > 50
    assert all(d["run_id"] == observed.run_id and d["trace_id"] == run_hex for d in json_lines)


# --- Prometheus ----------------------------------------------------------------------------------


def _need_prometheus(run: ObservedRun) -> None:
    if run.prometheus is None:
        pytest.skip(
            "Debian's prometheus and prometheus-pushgateway are not installed "
            "(apt-get install prometheus prometheus-pushgateway)"
        )


def _query(run: ObservedRun, expr: str) -> list[dict]:
    url = f"{run.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    doc = json.load(urllib.request.urlopen(url, timeout=10))
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _query_eventually(run: ObservedRun, expr: str, seconds: float = 30) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        result = _query(run, expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _prometheus_names(run: ObservedRun) -> set[str]:
    _query_eventually(run, telemetry.RUNS)
    doc = json.load(urllib.request.urlopen(f"{run.prometheus}/api/v1/label/__name__/values", timeout=10))
    return {n for n in doc["data"] if n.startswith("potato_")}


@pytest.mark.e2e
def test_prometheus_scrapes_the_runs_metrics_from_the_pushgateway(observed):
    _need_prometheus(observed)
    (runs,) = _query_eventually(observed, f'{telemetry.RUNS}{{status="success"}}')
    assert runs["metric"]["dagster_job"] == "__ASSET_JOB" and float(runs["value"][1]) == 1
    (rows,) = _query(observed, f'{telemetry.ROWS_PROCESSED}{{asset_key="bronze/weight",direction="out"}}')
    assert float(rows["value"][1]) == len(read_table(observed.lake.as_uri(), "bronze/weight"))
    gold = _query(observed, f'{telemetry.LAST_MATERIALIZATION}{{layer="gold"}}')
    assert len(gold) >= 4 and all(abs(float(g["value"][1]) - time.time()) < 3600 for g in gold)
    assert _query(observed, f"{telemetry.ASSET_DURATION}_count")


def _otlp_prometheus_name(metric) -> str:
    """The collector's OTLP->Prometheus name: dots to underscores, unit suffix, `_total` on sums."""
    name = metric.name.replace(".", "_")
    unit = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}.get(metric.unit)
    if metric.WhichOneof("data") == "gauge" and metric.unit == "1":
        unit = "ratio"
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    if metric.WhichOneof("data") == "sum" and metric.sum.is_monotonic and not name.endswith("_total"):
        name += "_total"
    return name


def _exported_names(run: ObservedRun) -> set[str]:
    names = set()
    for metric in _otlp_metrics(run).values():
        base = _otlp_prometheus_name(metric)
        names |= (
            {base + s for s in ("_bucket", "_sum", "_count")} if metric.WhichOneof("data") == "histogram" else {base}
        )
    if run.prometheus is not None:
        names |= _prometheus_names(run)
    return names


def _queries() -> list[tuple[str, str]]:
    import yaml

    found = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        panels = [p for top in doc["panels"] for p in [top, *top.get("panels", [])]]
        for panel in panels:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus":
                    found.append((f"{path.name}: {panel['title']}", target["expr"]))
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found.append((f"alerts.yml: {rule['alert']}", rule["expr"]))
    return found


@pytest.mark.e2e
def test_dashboards_and_alerts_query_only_metrics_a_run_exported(observed):
    assert DASHBOARDS, "no Grafana dashboards under observability/grafana/dashboards"
    exported = _exported_names(observed)
    queries = _queries()
    assert len(queries) >= 10
    for where, expr in queries:
        used = set(re.findall(r"\bpotato_[a-z0-9_]+", expr))
        assert used, f"{where}: queries no pipeline metric: {expr}"
        assert used <= exported, f"{where}: {sorted(used - exported)} never exported by a real run"
        if observed.prometheus is not None:  # and Prometheus accepts each query
            _query(observed, expr)


@pytest.mark.e2e
def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    result = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rules found" in result.stdout


@pytest.mark.e2e
def test_a_failed_run_sends_fail_events_with_the_error(tmp_path, sample_dir):
    landing = tmp_path / "landing"
    shutil.copytree(sample_dir, landing, ignore=shutil.ignore_patterns("*.md"))
    (landing / "Potato_tidy.csv").write_text("just,garbage\n1,2\n")
    home = cli_home(tmp_path)
    receiver = LoopbackReceiver(response=ENDPOINT_ANSWER)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POTATO_", "OTEL_", "OPENLINEAGE_"))},
        "DAGSTER_HOME": str(home),
        "POTATO_LAKE_URI": str(tmp_path / "lake"),
        "POTATO_LANDING_URI": str(landing),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OPENLINEAGE_URL": receiver.url,
    }
    try:
        proc = subprocess.run(
            MATERIALIZE_ALL,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        receiver.close()
    assert proc.returncode != 0
    events = [json.loads(b) for b in receiver.bodies("/api/v1/lineage")]
    for event in events:
        validate_event(event)
    failed = {e["job"]["name"]: e for e in events if e["eventType"] == "FAIL"}
    assert {"bronze.weight", "bronze.fiber", "bronze.nutrition", "bronze.quarantine"} <= set(failed)
    assert (
        "Potato_tidy.csv is missing required column"
        in failed["bronze.weight"]["run"]["facets"]["errorMessage"]["message"]
    )
    run_job = next(name for name, e in failed.items() if "parent" not in e["run"]["facets"])
    assert run_job == "__ASSET_JOB"
    assert not any(e["job"]["name"].startswith(("silver.", "gold.")) for e in events)
