"""Shared test helpers: where the data is, free ports, landing copies, the project's definitions
materialised with temp resources, the CLI, loopback servers, OpenLineage schema validation.
Fixtures live in conftest.py; everything a test module imports lives here."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from potato_assets.defs.resources import build_resources
from potato_assets.lib.lake import storage
from potato_assets.settings import Settings, normalize_uri
from potato_assets.study.schema import FOOD_CATEGORIES, LANDING_FILES, NUTRITION_FILE, WEIGHT_FILE

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "potato_assets" / "sample_data"
# The seed study's three CSVs (potato-weight-nutrition, MIT): ../shared beside the checkout, or
# wherever POTATO_SEED_STUDY_DIR says (CI checks the seed project out at a pinned commit).
SEED_DIR_ENV = "POTATO_SEED_STUDY_DIR"
SEED_DIR = Path(os.environ.get(SEED_DIR_ENV) or REPO.parent / "shared" / "data" / "seed-study")
# The OpenLineage spec's JSON schemas: ../shared beside the checkout, or POTATO_OPENLINEAGE_SPEC_DIR.
OPENLINEAGE_SPEC_DIR = Path(
    os.environ.get("POTATO_OPENLINEAGE_SPEC_DIR") or REPO.parent / "shared" / "openlineage-spec"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_landing(src: Path, dst: Path, names: tuple[str, ...] | None = None) -> Path:
    """Copy the study's landing files (or only `names`) from `src` into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names if names is not None else tuple(spec.file_name for spec in LANDING_FILES):
        shutil.copy(src / name, dst / name)
    return dst


def load_defs() -> dg.Definitions:
    from potato_assets.definitions import defs

    return defs()


def settings_for(landing: str | Path, lake: str | Path) -> Settings:
    return Settings(lake_uri=normalize_uri(str(lake)), landing_uri=normalize_uri(str(landing)))


def resources_for(landing: str | Path, lake: str | Path, overrides: dict | None = None) -> dict:
    """The project's resources on temp locations; experiment tracking off unless overridden."""
    from potato_assets.defs.resources import ExperimentTracker

    return {
        **build_resources(settings_for(landing, lake)),
        "experiment_tracker": ExperimentTracker(tracking_uri="", enabled=False),
        **(overrides or {}),
    }


def materialize_all(
    landing: str | Path,
    lake: str | Path,
    *,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    resources: dict | None = None,
) -> dg.ExecuteInProcessResult:
    defs = load_defs()
    return dg.materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        resources=resources_for(landing, lake, resources),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def read_table(lake_uri: str, key: str) -> pd.DataFrame:
    """The stored table of asset ``key`` ("silver/weekly_features"): a bucketed dataset read
    whole, in key order (subject, then week) where it has those columns, or a parquet object."""
    from potato_assets.lib.lake import datasets

    root = storage.join(normalize_uri(lake_uri), key)
    ref = datasets.current(root)
    if ref is None:
        return storage.read_parquet(storage.to_upath(root + ".parquet"))
    table = ref.read()
    order = [c for c in ("subject_id", "week", "date", "source_line") if c in table.columns]
    return table.sort_values(order, kind="stable", ignore_index=True) if order else table


def edit_nutrition(landing: Path, lake: Path) -> None:
    """Re-categorise one subject-week's beans entries: that week's beans flag in the modelling
    table flips, nothing about weights does."""
    lake_uri = lake.as_uri()
    modeling = read_table(lake_uri, "silver/modeling_dataset")
    weekly = read_table(lake_uri, "silver/weekly_features")
    subject, week = modeling.loc[modeling["beans_week"] == 1, ["subject_id", "week"]].iloc[0]
    start = weekly.loc[(weekly["subject_id"] == subject) & (weekly["week"] == week), "week_start"].iloc[0]
    path = landing / NUTRITION_FILE
    food = pd.read_csv(path, dtype=str, keep_default_na=False)
    dates = pd.to_datetime(food["date"], errors="coerce")
    rows = (
        (food["subject_id"] == str(subject))
        & (dates >= start)
        & (dates < start + pd.Timedelta(days=7))
        & (food["category"] == "beans")
    )
    assert rows.any()
    food.loc[rows, "category"] = "vegetables"
    food.to_csv(path, index=False)


# --- the real CLI, as a user or CI runs it ----------------------------------------------------

DAGSTER = Path(sys.executable).with_name("dagster")
MATERIALIZE_ALL = [str(DAGSTER), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"]


def cli_home(tmp_path: Path) -> Path:
    """A fresh DAGSTER_HOME whose instance configuration is the repository's dagster.yaml."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def cli_env(home: Path, landing: str | Path, lake: str | Path, **extra: str) -> dict[str, str]:
    """The process environment for a CLI run; MLflow tracks into the home, not the repository."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "POTATO_LANDING_URI": str(landing),
        "POTATO_LAKE_URI": str(lake),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        **extra,
    }


def run_cli(env: dict[str, str], cwd: Path, cmd: list[str] = MATERIALIZE_ALL, timeout: float = 600):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def sensor_tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None, landing_uri: str):
    """One evaluation of a landing-watching sensor on ``instance``: (result, its new cursor)."""
    from potato_assets.defs.resources import LandingZone

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"landing": LandingZone(landing_uri=landing_uri)},
        repository_def=load_defs().get_repository_def(),
    )
    result = sensor.evaluate_tick(context)
    return result, result.cursor


def graphql(base_url: str, query: str, timeout: float = 30) -> dict:
    """A query to a running dagster-webserver's GraphQL endpoint; GraphQL errors fail the test."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


class LoopbackReceiver:
    """An HTTP server on 127.0.0.1 that accepts every POST and keeps (path, body, gunzipped): the
    far end of webhooks and of the OpenLineage and OTLP exporters. ``status``, ``delay`` (seconds
    before answering) and ``response`` (a JSON body) shape its answer."""

    def __init__(self, status: int = 200, delay: float = 0.0, response: bytes = b"") -> None:
        import gzip
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.posts: list[tuple[str, bytes]] = []
        # (method, path, Authorization header) of every request, PUTs (the Pushgateway's) included.
        self.requests: list[tuple[str, str, str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.posts.append((self.path, body))
                receiver.requests.append((self.command, self.path, self.headers.get("Authorization")))
                time.sleep(delay)
                self.send_response(status)
                if response:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(response)

            do_PUT = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str | None = None) -> list[bytes]:
        return [b for p, b in self.posts if path is None or p == path]

    def json(self, path: str | None = None) -> list:
        import json

        return [json.loads(b) for b in self.bodies(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- OpenLineage events against the official schemas --------------------------------------------


@cache
def _registry():
    import pytest
    from referencing import Registry, Resource

    if not (OPENLINEAGE_SPEC_DIR / "OpenLineage.json").exists():
        pytest.skip(f"the OpenLineage spec is not at {OPENLINEAGE_SPEC_DIR}")
    resources = []
    for path in [OPENLINEAGE_SPEC_DIR / "OpenLineage.json", *sorted((OPENLINEAGE_SPEC_DIR / "facets").glob("*.json"))]:
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def _facet_schema_id(file_name: str) -> str:
    return json.loads((OPENLINEAGE_SPEC_DIR / "facets" / file_name).read_text())["$id"]


def _validate(instance: dict, ref: str) -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        {"$ref": ref}, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def validate_event(event: dict) -> list[str]:
    """Validate a RunEvent and each of its facets against its own schema in facets/.

    Returns the facet names validated, so callers can assert which facets were present.
    """
    _validate(event, "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent")
    facet_groups = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for ds in event.get("inputs", []):
        facet_groups += [ds.get("facets", {}), ds.get("inputFacets", {})]
    for ds in event.get("outputs", []):
        facet_groups += [ds.get("facets", {}), ds.get("outputFacets", {})]
    seen = []
    for group in facet_groups:
        for name, facet in group.items():
            url = facet["_schemaURL"]
            document, _, pointer = url.partition("#")
            file_name = document.rpartition("/")[2]
            assert (OPENLINEAGE_SPEC_DIR / "facets" / file_name).exists(), f"facet {name}: no local schema for {url}"
            schema_id = _facet_schema_id(file_name)
            doc = json.loads((OPENLINEAGE_SPEC_DIR / "facets" / file_name).read_text())
            assert name in doc["properties"], f"facet key {name!r} is not the one {file_name} defines"
            _validate({name: facet}, schema_id)  # the facet file's root: {"<key>": <facet>}
            _validate(facet, f"{schema_id}#{pointer}")
            seen.append(name)
    return seen


def committed(lake: Path, key: str) -> bool:
    """Whether asset ``key`` ("bronze/weight") has a committed dataset in the local lake."""
    return (lake / key / "_current.json").is_file()


def rewrite_table(lake_uri: str, key: str, table: pd.DataFrame) -> None:
    """Commit ``table`` as the new version of dataset ``key``, behind Dagster's back."""
    from potato_assets.lib.lake import datasets

    root = storage.join(normalize_uri(lake_uri), key)
    ref = datasets.current(root)
    assert ref is not None, f"{key} has no dataset to rewrite"
    with datasets.DatasetWriter(root, ref.buckets) as writer:
        writer.write_table(table)
        writer.commit()


def lake_bytes(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


def set_field(path: Path, line: int, column: str, value: str, *, raw: bool = False) -> None:
    """Overwrite one field on a physical line (header = line 1) of a simple CSV.

    A value with a comma is quoted, as a spreadsheet writes it, unless ``raw``.
    """
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = f'"{value}"' if "," in value and not raw else value
    lines[line - 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


class Processes:
    """Started processes, each in its own process group, all stopped on teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Whatever the leader left behind in its group (run workers).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, processes: Processes, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, proc in processes.procs.items():
            if proc.poll() is not None:
                tail = processes.log(name)[-3000:]
                pytest.fail(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(interval)
    logs = "\n".join(f"--- {n}\n{processes.log(n)[-2500:]}" for n in processes.procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


class Webhook(LoopbackReceiver):
    """An alert webhook at `{server}/hook`; `.json()` is what was POSTed to it."""

    @property
    def url(self) -> str:
        return super().url + "/hook"


def landing_with_bad_weights(sample_dir: Path, target: Path, n_bad: int) -> Path:
    target.mkdir(parents=True)
    for spec in LANDING_FILES:
        shutil.copy(sample_dir / spec.file_name, target / spec.file_name)
    lines = (target / WEIGHT_FILE).read_text().splitlines(keepends=True)
    for i in range(1, n_bad + 1):
        fields = lines[i].split(",")
        fields[3] = "abc"
        lines[i] = ",".join(fields)
    (target / WEIGHT_FILE).write_text("".join(lines))
    return target


# --- an object store that goes away: moto behind a loopback TCP relay that can be killed ------

RELAY = r"""
import socket, sys, threading, time
listen_port, target_port, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
METHODS = (b"PUT ", b"POST ", b"GET ", b"HEAD ", b"DELETE ")

def pump(src, dst, upstream):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if upstream:
                if data.startswith(METHODS):
                    print(data.split(b"\r\n", 1)[0].decode("latin-1"), flush=True)
                time.sleep(delay)  # a slow link: uploads take long enough to be cut
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
print("ready", flush=True)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
"""


class Relay:
    """A loopback TCP relay in its own process, printing each request line it forwards."""

    def __init__(self, port: int, target_port: int, delay: float) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RELAY, str(port), str(target_port), str(delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        assert self.lines.get(timeout=30) == "ready"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_for(self, prefix: str, timeout: float, proc: subprocess.Popen) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    raise AssertionError(f"the run ended (rc={proc.returncode}) before {prefix!r}") from None
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no request {prefix!r} within {timeout} s")

    def seen(self, prefix: str) -> bool:
        """Whether any request forwarded so far starts with prefix (drains the queue)."""
        found = False
        while not self.lines.empty():
            found |= self.lines.get().startswith(prefix)
        return found

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def study_tables(landing_dir: Path) -> dict[str, pd.DataFrame]:
    """Bronze and silver tables of a landing folder, keyed by suite name (bronze_fiber, ...), built
    with the study code alone (no Dagster, no lake)."""
    from potato_assets.study import calendar, features
    from potato_assets.study.ingest import parse_landing_csv
    from potato_assets.study.schema import LANDING_FILES

    now = pd.Timestamp("2024-06-01", tz="UTC")
    bronze = {
        spec.asset_name: parse_landing_csv(
            (landing_dir / spec.file_name).read_bytes(), spec, source_file=spec.file_name, ingested_at=now
        ).rows
        for spec in LANDING_FILES
    }
    calendars = calendar.subject_calendars(bronze["weight"], bronze["fiber"])
    trajectories = features.subject_trajectories(bronze["weight"], calendars)
    weeks = features.study_weeks(bronze["weight"], calendars)
    weekly, _ = features.weekly_features(bronze["fiber"], bronze["nutrition"], weeks, calendars)
    modeling, _ = features.modeling_dataset(trajectories, weekly)
    silver = {
        "study_calendar": calendars,
        "subject_trajectories": trajectories,
        "weekly_features": weekly,
        "modeling_dataset": modeling,
    }
    return {f"bronze_{k}": v for k, v in bronze.items()} | {f"silver_{k}": v for k, v in silver.items()}


def spark_cluster_missing() -> str | None:
    """Why a local Spark cluster cannot start here (no pyspark, no Java 17), or None."""
    from potato_assets.lib.engine import spark_cluster

    try:
        spark_cluster.spark_home()
    except spark_cluster.SparkClusterError as error:
        return str(error)
    return spark_cluster.java_missing_reason()


def spark_cluster(state: Path):
    """The shared local cluster in ``state``, started unless it runs (a test that stops it, such
    as test_spark_cluster's, leaves the next module to start it again)."""
    from potato_assets.lib.engine import spark_cluster as sc

    return sc.start_cluster(state, workers=2, worker_memory="1g", executor_memory="512m")


# --- tables for the silver SQL and the batched contracts (shared by several test modules) ---


def messy_bronze(seed: int, subjects: int = 40) -> dict[str, pd.DataFrame]:
    """Bronze-shaped tables with what real logs have: missing weights and daily values, gaps in
    weeks, subjects with one weigh-in or none, daily rows and food entries outside the study's
    weeks or of subjects without weigh-ins, dates before week 1, unknown-to-calendar subjects."""
    rng = np.random.default_rng(seed)
    weight, fiber, food = [], [], []
    for subject in range(1, subjects + 1):
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 60)))
        weeks = sorted(rng.choice(np.arange(1, 13), size=int(rng.integers(0, 13)), replace=False).tolist())
        for week in weeks:
            day = start + pd.Timedelta(days=7 * (week - 1) + int(rng.integers(0, 7)))
            kg = np.nan if rng.random() < 0.2 else round(float(rng.normal(80, 8)), 2)
            weight.append((subject, day, week, kg))
        for week in range(1, 14):
            for _ in range(int(rng.integers(0, 8))):
                day = start + pd.Timedelta(days=7 * (week - 1) + int(rng.integers(0, 7)))
                kcal = np.nan if rng.random() < 0.15 else round(float(rng.normal(2000, 300)), 1)
                fib = np.nan if rng.random() < 0.15 else round(float(rng.normal(25, 6)), 1)
                fiber.append((subject, day, week, kcal, fib))
        for _ in range(int(rng.integers(0, 60))):
            day = start + pd.Timedelta(days=int(rng.integers(-10, 95)))
            food.append((subject, day, str(rng.choice(FOOD_CATEGORIES))))
    # Food entries of a subject nobody weighed (no calendar).
    food.append((subjects + 5, pd.Timestamp("2024-02-01"), "potato"))
    w = pd.DataFrame(weight, columns=["subject_id", "date", "week", "weight_kg"])
    f = pd.DataFrame(fiber, columns=["subject_id", "date", "week", "total_calories", "total_fiber_g"])
    n = pd.DataFrame(food, columns=["subject_id", "date", "category"])
    # Daily rows keep the calendar consistent: their dates follow the same starts as the weigh-ins.
    out = {"weight": w, "fiber": f, "nutrition": n}
    for name, t in out.items():
        t["subject_id"] = t["subject_id"].astype("Int64")
        if "week" in t:
            t["week"] = t["week"].astype("Int64")
        t["source_line"] = np.arange(2, len(t) + 2, dtype="int64")
        if name == "nutrition":
            t["category"] = t["category"].astype("string")
        # File order is not key order.
        out[name] = t.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return out


CONTRACT_SUITES = (
    "bronze_fiber",
    "bronze_nutrition",
    "bronze_weight",
    "silver_study_calendar",
    "silver_subject_trajectories",
    "silver_weekly_features",
    "silver_modeling_dataset",
)


def set_cells(df: pd.DataFrame, rows: list[int], column: str, values: list) -> pd.DataFrame:
    df = df.copy()
    df.loc[df.index[rows], column] = values
    return df


def nulls_in_half(df: pd.DataFrame, column: str) -> pd.DataFrame:
    df = df.copy()
    df.loc[df.index[: len(df) // 2], column] = None
    return df


# Broken tables: (suite, the sample table broken one way, rules that must fail).
BROKEN_TABLES: dict[str, tuple[str, Callable[[pd.DataFrame], pd.DataFrame], set[str]]] = {
    "out_of_range": (
        "bronze_weight",
        lambda d: set_cells(d, [3, 10, 200, 401], "weight_kg", [500.0, 12.0, 301.0, 29.0]),
        {"weight_kg_range"},
    ),
    "nulls": (
        "bronze_weight",
        lambda d: set_cells(d.astype({"week": "Int64"}), [0, 77, 300], "week", [pd.NA] * 3),
        set(),
    ),
    "null_subjects": (
        "bronze_fiber",
        lambda d: set_cells(d.astype({"subject_id": "Int64"}), [1, 2, 500], "subject_id", [pd.NA] * 3),
        {"subject_id_present"},
    ),
    "duplicates": (
        "bronze_fiber",
        lambda d: pd.concat([d, d.iloc[[5, 6, 700]], d.iloc[[5]]], ignore_index=True),
        {"one_row_per_subject_day"},
    ),
    "duplicate_weeks": (
        "bronze_weight",
        lambda d: set_cells(d, [1, 2, 100, 101], "week", [1, 1, 5, 5]),
        {"one_row_per_subject_week"},
    ),
    "wrong_type": ("bronze_weight", lambda d: d.astype({"weight_kg": "string"}), {"weight_kg_numeric"}),
    "missing_column": ("bronze_fiber", lambda d: d.drop(columns=["total_fiber_g"]), {"required_columns"}),
    "mostly_failed": ("bronze_weight", lambda d: nulls_in_half(d, "weight_kg"), {"weight_kg_present"}),
    "vocabulary": (
        "bronze_nutrition",
        lambda d: set_cells(d, [0, 40, 900], "category", ["chips", "Potato", None]),
        {"category_known", "category_present"},
    ),
    "few_subjects": (
        "silver_modeling_dataset",
        lambda d: set_cells(d[d["subject_id"].isin(d["subject_id"].unique()[:3])], [0], "fiber_g_week", [np.nan]),
        {"enough_subjects_to_fit", "fiber_g_week_present"},
    ),
    "duplicate_subject": (
        "silver_study_calendar",
        lambda d: pd.concat([d, d.iloc[[0, 3]]], ignore_index=True),
        {"one_row_per_subject"},
    ),
    "empty": ("bronze_weight", lambda d: d.iloc[:0], {"not_empty"}),
}


def write_dataset(root, df: pd.DataFrame, buckets: int):
    from potato_assets.lib.lake.datasets import DatasetWriter

    with DatasetWriter(str(root), buckets) as writer:
        writer.write_table(df)
        return writer.commit()
