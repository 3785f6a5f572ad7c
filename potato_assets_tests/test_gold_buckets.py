"""Gold on silver tables handed over as bucketed references: the models, figures and report read
them a group of whole buckets at a time (``iter_bucket_groups``), never as one table, and give the whole-table numbers."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from potato_assets.defs.gold.assets import (
    fiber_vs_weight_change_figure,
    fit_models,
    model_report,
    subject_trajectories_figure,
)
from potato_assets.study.models import MODELS
from potato_assets_tests.helpers import read_table, resources_for

BUCKETS = 7


class BucketedTable:
    """Test stand-in for lib/lake/datasets.DatasetRef: ``iter_bucket_groups`` (here one bucket a
    group) only, no whole-table read."""

    def __init__(self, frame: pd.DataFrame, buckets: int = BUCKETS) -> None:
        self._frame, self.buckets = frame, buckets
        self.calls: list[list[str]] = []
        self.largest_frame = 0

    def iter_bucket_groups(self, columns=None):
        columns = list(self._frame.columns if columns is None else columns)
        self.calls.append(columns)
        bucket = self._frame["subject_id"].to_numpy() % self.buckets
        for b in range(self.buckets):
            part = self._frame.loc[bucket == b, columns].reset_index(drop=True)
            self.largest_frame = max(self.largest_frame, len(part))
            yield part


def panel(n_subjects: int = 560, weeks: int = 8, seed: int = 21) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(1, n_subjects + 1), weeks)
    week = np.tile(np.arange(1, weeks + 1), n_subjects)
    keep = rng.random(subject.size) > 0.1  # missed weeks
    subject, week = subject[keep], week[keep]
    fiber = rng.gamma(5, 35, subject.size)
    u = rng.normal(0, 0.5, n_subjects)[subject - 1]
    frame = pd.DataFrame(
        {
            "subject_id": subject,
            "week": week,
            "fiber_g_week": fiber,
            "kcal_week_thousands": rng.normal(14, 2, subject.size),
            "beans_week": (rng.random(subject.size) < 0.4).astype(float),
            "potato_week": (rng.random(subject.size) < 0.6).astype(float),
        }
    )
    frame["delta_kg_next"] = u - 0.004 * fiber + rng.normal(0, 0.7, subject.size)
    frame["weight_kg"] = 90 + u + frame.groupby("subject_id")["delta_kg_next"].cumsum()
    return frame


def test_gold_reads_silver_bucket_by_bucket_and_matches_the_whole_table_fits(tmp_path: Path):
    table = panel()
    trajectories = table[["subject_id", "week", "weight_kg"]].copy()
    trajectories["delta_kg_from_baseline"] = trajectories["weight_kg"] - trajectories.groupby("subject_id")[
        "weight_kg"
    ].transform("first")
    modeling_ref, trajectories_ref = BucketedTable(table), BucketedTable(trajectories)

    @dg.asset(key=["silver", "modeling_dataset"], io_manager_key="refs")
    def given_modeling():
        return modeling_ref

    @dg.asset(key=["silver", "subject_trajectories"], io_manager_key="refs")
    def given_trajectories():
        return trajectories_ref

    lake = tmp_path / "lake"
    result = dg.materialize(
        [
            given_modeling,
            given_trajectories,
            fit_models,
            fiber_vs_weight_change_figure,
            subject_trajectories_figure,
            model_report,
        ],
        resources={**resources_for(tmp_path / "landing", lake), "refs": dg.InMemoryIOManager()},
    )
    assert result.success
    # Every read went through iter_bucket_groups with named columns; no frame held the whole table.
    assert modeling_ref.calls and all(modeling_ref.calls)
    assert trajectories_ref.calls and all(trajectories_ref.calls)
    assert modeling_ref.largest_frame < len(table) / 3
    for spec in MODELS:
        got = read_table(lake.as_uri(), f"gold/models/{spec.name}").set_index("term")
        ref = spec.fit(table).coefficients.set_index("term")
        rtol = 1e-6 if spec.has_variance_components else 1e-9
        np.testing.assert_allclose(got["estimate"], ref["estimate"], rtol=rtol)
        np.testing.assert_allclose(got["std_error"], ref["std_error"], rtol=rtol)
    report = (lake / "gold" / "reports" / "model_report.md").read_text()
    assert f"Modelling data: {len(table)} rows (subject-weeks), {table['subject_id'].nunique()} subjects" in report
    assert f"Trajectories: {len(trajectories)} subject-weeks from {trajectories['subject_id'].nunique()}" in report
    assert (lake / "gold" / "figures" / "fiber_vs_weight_change.png").stat().st_size > 1000
    assert (lake / "gold" / "figures" / "subject_trajectories.png").stat().st_size > 1000


@pytest.mark.e2e
def test_tracked_fits_log_their_figure_from_the_bucketed_sample(tmp_path: Path):
    from potato_assets.defs.resources import ExperimentTracker

    ref = BucketedTable(panel(n_subjects=60))

    @dg.asset(key=["silver", "modeling_dataset"], io_manager_key="refs")
    def given_modeling():
        return ref

    tracker = ExperimentTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", required=True)
    result = dg.materialize(
        [given_modeling, fit_models],
        resources={
            **resources_for(tmp_path / "landing", tmp_path / "lake"),
            "refs": dg.InMemoryIOManager(),
            "experiment_tracker": tracker,
        },
    )
    assert result.success
    assert len(ref.calls) == 1  # the fits and the tracker's figure sample share one pass
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    for spec in MODELS:
        meta = result.asset_materializations_for_node("fit_models")
        found = [m for m in meta if m.asset_key == dg.AssetKey(["gold", "models", spec.name])]
        assert found[0].metadata["tracking_status"].value == "tracked"
        run_id = found[0].metadata["mlflow_run_id"].value
        artifacts = [a.path for a in client.list_artifacts(run_id, "figures")]
        assert artifacts == ["figures/fiber_vs_weight_change.png"], artifacts
