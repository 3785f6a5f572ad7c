"""Work is skipped where nothing changed: the landing sensor's run selects what depends on the
landing files whose content changed, the automation conditions (evaluated as the daemon's
automation sensor does, on an ephemeral instance) add nothing after it and rerun a bumped code
version with its downstream in one request, and the landing sensor records each landing file's
content version."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from potato_assets.defs import automation
from potato_assets.defs.bronze.assets import ingest_landing
from potato_assets.lib.lake import landing as landing_scan
from potato_assets.lib.lake import storage
from potato_assets.settings import Settings
from potato_assets.study.schema import FIBER_FILE, LANDING_FILES, NUTRITION_FILE, WEIGHT_FILE
from potato_assets_tests.helpers import (
    copy_landing,
    edit_nutrition,
    load_defs,
    materialize_all,
    resources_for,
    sensor_tick,
)

ALL_FILES = (NUTRITION_FILE, WEIGHT_FILE, FIBER_FILE)
NUTRITION = dg.AssetKey(["bronze", "nutrition"])


class Automation:
    """The project's definitions on one instance and lake, evaluated tick by tick."""

    def __init__(self, instance: dg.DagsterInstance, landing: Path, lake: Path):
        self.defs = load_defs()
        self.instance, self.landing, self.lake = instance, landing, lake
        self.graph = self.defs.resolve_asset_graph()
        self.cursor = None
        self.landing_sensor = automation.build_landing_sensor(
            Settings(lake_uri="file:///unused", landing_uri="file:///unused")
        )
        self.sensor_cursor: str | None = None

    def tick(self) -> set[str]:
        """One automation evaluation: the asset keys it requests."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            k.to_user_string()
            for k in self.graph.get_all_asset_keys()
            if self.graph.get(k).is_materializable and result.get_num_requested(k) > 0
        }

    def run(self, selection: dg.AssetSelection) -> None:
        """Materialise a selection with its checks, as a run of that selection would."""
        result = dg.materialize(
            [*self.defs.assets, *(self.defs.asset_checks or [])],
            selection=selection,
            resources=resources_for(self.landing, self.lake),
            instance=self.instance,
        )
        assert result.success

    def ingest(self) -> None:
        """A bronze refresh by hand (UI, CLI): ingest_landing (all four bronze tables) alone."""
        self.run(dg.AssetSelection.assets(ingest_landing))

    def landing_change(self) -> set[str]:
        """Two landing sensor ticks on the landing folder as it is now (a file must hold still
        between two looks), its observations recorded and its run request run as the daemon
        would: the asset keys that run selected (empty: no run)."""
        requests = []
        for _ in range(2):
            result, self.sensor_cursor = sensor_tick(
                self.landing_sensor, self.instance, self.sensor_cursor, self.landing.as_uri()
            )
            for event in result.asset_events:
                self.instance.report_runless_asset_event(event)
            requests += result.run_requests
        assert len(requests) <= 1, requests
        if not requests:
            return set()
        self.run(dg.AssetSelection.assets(*requests[0].asset_selection))
        return {k.to_user_string() for k in requests[0].asset_selection}

    def follow(self, max_rounds: int = 8) -> list[set[str]]:
        """Tick, run what was requested, repeat until a tick requests nothing."""
        rounds = []
        for _ in range(max_rounds):
            requested = self.tick()
            rounds.append(requested)
            if not requested:
                return rounds
            self.run(dg.AssetSelection.assets(*requested))
        pytest.fail(f"automation did not settle: {rounds}")

    def deploy_code_version(self, key: str, code_version: str) -> None:
        """The same definitions with one asset's code version bumped, as after a deploy."""
        target = dg.AssetKey(key.split("/"))

        def bump(spec: dg.AssetSpec) -> dg.AssetSpec:
            return spec.replace_attributes(code_version=code_version) if spec.key == target else spec

        assets = [
            a.map_asset_specs(bump) if isinstance(a, dg.AssetsDefinition) and target in a.keys else a
            for a in self.defs.assets or []
        ]
        self.defs = dg.Definitions(assets=assets, asset_checks=self.defs.asset_checks, resources=self.defs.resources)
        self.graph = self.defs.resolve_asset_graph()
        assert self.graph.get(target).code_version == code_version

    def downstream_of(self, key: dg.AssetKey) -> set[str]:
        keys = dg.AssetSelection.assets(key).downstream(include_self=False).resolve(self.graph)
        return {k.to_user_string() for k in keys}

    def version(self, key: str) -> str | None:
        event = self.instance.get_latest_materialization_event(dg.AssetKey(key.split("/")))
        return event.tags.get("dagster/data_version") if event else None


def test_only_what_depends_on_changed_content_reruns(sample_dir, tmp_path):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    copy_landing(sample_dir, landing)
    with dg.DagsterInstance.ephemeral() as instance:
        auto = Automation(instance, landing, lake)
        materialize_all(landing, lake, instance=instance)
        # The daemon's first tick sets the baseline and requests nothing.
        assert auto.tick() == set()
        bronze = {k.to_user_string() for k in auto.graph.get_all_asset_keys() if k.path[0] == "bronze"}

        # The sensor's first look at files bronze ingested unobserved: one re-ingest anchors
        # them; bronze keeps its versions, so that run is bronze alone and nothing follows.
        versions = {k: auto.version(k) for k in ("bronze/nutrition", "bronze/quarantine")}
        assert auto.landing_change() == bronze
        assert {k: auto.version(k) for k in versions} == versions
        assert auto.follow() == [set()]
        # The same files again: no run.
        assert auto.landing_change() == set()

        # One subject-week's food entries edited: ONE run takes the change to gold, with what
        # reads food entries and nothing else; the automation sensor then has nothing to add.
        edit_nutrition(landing, lake)
        rebuilt = auto.landing_change()
        assert auto.version("bronze/nutrition") != versions["bronze/nutrition"]
        assert rebuilt == bronze | auto.downstream_of(NUTRITION)
        assert "gold/reports/model_report" in rebuilt
        unaffected = auto.downstream_of(dg.AssetKey(["bronze", "weight"])) - rebuilt
        assert {"silver/study_calendar", "silver/subject_trajectories"} <= unaffected
        # The figures and the report are published as one set after the models (a blocked run
        # publishes none of them), so the trajectories figure is redrawn with the new models.
        assert "gold/figures/subject_trajectories" in rebuilt
        assert auto.follow() == [set()]

        # A food entry's protein changed: no silver column reads it. The run still covers what
        # depends on the food entries (the selection is made before anything is computed), and
        # weekly_features recomputes to the same content under the same version.
        weekly_version = auto.version("silver/weekly_features")
        food = pd.read_csv(landing / NUTRITION_FILE, dtype=str, keep_default_na=False)
        food.loc[0, "protein_g"] = str(float(food.loc[0, "protein_g"]) + 1.0)
        food.to_csv(landing / NUTRITION_FILE, index=False)
        assert auto.landing_change() == rebuilt
        assert auto.version("silver/weekly_features") == weekly_version
        assert auto.follow() == [set()]

        # A deploy bumps weekly_features' code version: one request reruns it and everything
        # downstream of it, in one run; the calendar and the trajectories stay put.
        auto.deploy_code_version("silver/weekly_features", "2")
        weekly = dg.AssetKey(["silver", "weekly_features"])
        assert auto.follow() == [{"silver/weekly_features"} | auto.downstream_of(weekly), set()]
        assert auto.version("silver/weekly_features") == weekly_version
        # ...and a tick later, with the new code version recorded, it stays put.
        assert auto.tick() == set()


# --- the landing sensor records each file's content version ---------------------------------


def observed_versions(result) -> dict[str, str]:
    return {e.asset_key.to_user_string(): e.data_version for e in result.asset_events}


@pytest.fixture
def landing_sensor():
    return automation.build_landing_sensor(Settings(lake_uri="file:///unused", landing_uri="file:///unused"))


def content_version(path: Path) -> str:
    return storage.sha256_hex(path.read_bytes())[:16]


@pytest.mark.parametrize("where", ["disk", "s3"])
def test_landing_sensor_records_content_versions_once_per_change(where, landing_sensor, sample_dir, tmp_path, request):
    landing = tmp_path / "landing"
    copy_landing(sample_dir, landing)
    if where == "s3":
        s3 = request.getfixturevalue("moto_s3")
        bucket = f"landing-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/in"

        def sync():
            for name in ALL_FILES:
                s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=(landing / name).read_bytes())
    else:
        uri = landing.as_uri()

        def sync():
            pass

    sync()
    expected = {f"landing/{spec.asset_name}": content_version(landing / spec.file_name) for spec in LANDING_FILES}
    with dg.DagsterInstance.ephemeral() as instance:
        result, cursor = sensor_tick(landing_sensor, instance, None, uri)
        assert observed_versions(result) == {}, "a file seen once may still be growing"
        result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
        assert observed_versions(result) == expected
        assert len(result.run_requests) == 1
        # The same content: ticks go by, nothing recorded (the event log does not grow).
        sync()
        for _ in range(2):
            result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
            assert observed_versions(result) == {}

        with open(landing / FIBER_FILE, "a") as fh:
            fh.write((sample_dir / FIBER_FILE).read_text().splitlines()[1] + "\n")
        sync()
        result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
        assert observed_versions(result) == {}, "not settled yet"
        result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
        assert observed_versions(result) == {"landing/fiber": content_version(landing / FIBER_FILE)}
        assert [r.tags["potato/changed_files"] for r in result.run_requests] == [FIBER_FILE]
        result, cursor = sensor_tick(landing_sensor, instance, cursor, uri)
        assert observed_versions(result) == {}


def test_cursor_keeps_recorded_versions_and_reads_older_cursors():
    cursor = landing_scan.LandingCursor(
        seen={"a.csv": landing_scan.Seen(3, 1.5, "etag:x")},
        ingested={"a.csv": "etag:x"},
        versions={"a.csv": ("etag:x", "0123456789abcdef")},
    )
    assert landing_scan.LandingCursor.from_json(cursor.to_json()) == cursor
    older = json.loads(cursor.to_json())
    del older["versions"]
    restored = landing_scan.LandingCursor.from_json(json.dumps(older))
    assert restored.versions == {} and restored.ingested == cursor.ingested
