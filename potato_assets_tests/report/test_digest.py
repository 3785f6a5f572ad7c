"""The report's bounded digests equal the whole-table numbers and do not depend on the bucket split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from potato_assets.report import digest, figures


def trajectories(n_subjects: int = 400, weeks: int = 9, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(1, n_subjects + 1), weeks)
    week = np.tile(np.arange(0, weeks), n_subjects)
    weight = 90 + rng.normal(0, 5, n_subjects)[subject - 1] - 0.3 * week + rng.normal(0, 0.4, subject.size)
    frame = pd.DataFrame({"subject_id": subject, "week": week, "weight_kg": weight})
    frame.loc[rng.random(len(frame)) < 0.1, "weight_kg"] = np.nan
    first = frame.groupby("subject_id")["weight_kg"].transform("first")
    frame["delta_kg_from_baseline"] = frame["weight_kg"] - first
    frame["fiber_g_week"] = rng.gamma(4, 40, len(frame))
    frame["delta_kg_next"] = rng.normal(0, 1, len(frame))
    return frame


def split(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    b = frame["subject_id"].to_numpy() % n
    return [frame[b == k] for k in range(n)]


def test_profile_counts_every_bucket():
    t = trajectories()
    profile = digest.profile_frames(split(t, 6))
    assert profile == digest.TableProfile.of(t)
    assert (profile.rows, profile.subjects, profile.week_min, profile.week_max) == (len(t), 400, 0.0, 8.0)
    assert profile.missing_weight == int(t["weight_kg"].isna().sum())


def test_weekly_statistics_are_those_of_the_whole_table_in_any_split():
    t = trajectories()
    y = digest.baseline_change(t)
    whole = figures._grouped_mean_ci(y["_y"], y["week"])
    for n in (1, 3, 32):
        weekly = digest.trajectory_sample(split(t, n)).weekly
        np.testing.assert_allclose(weekly["count"], whole["count"])
        np.testing.assert_allclose(weekly["mean"], whole["mean"], rtol=1e-12)
        np.testing.assert_allclose(weekly["std"], whole["std"], rtol=1e-10)


def test_samples_depend_on_the_subjects_only():
    t = trajectories(n_subjects=900)
    a = digest.trajectory_sample(split(t, 1), max_subjects=50)
    b = digest.trajectory_sample(split(t, 32), max_subjects=50)
    assert a.subjects == b.subjects == 900 and a.sampled_subjects == b.sampled_subjects == 50
    pd.testing.assert_frame_equal(a.lines.reset_index(drop=True), b.lines.reset_index(drop=True))
    f1 = digest.fiber_sample(split(t, 1), max_subjects=40)
    f32 = digest.fiber_sample(split(t, 32), max_subjects=40)
    assert f1.sampled_subjects == f32.sampled_subjects == 40
    key = ["fiber_g_week", "delta_kg_next"]
    pd.testing.assert_frame_equal(
        f1.points.sort_values(key).reset_index(drop=True), f32.points.sort_values(key).reset_index(drop=True)
    )
    # Means and ranges are over every row, not the sample.
    assert f32.rows == len(t)
    assert np.isclose(f32.x_mean, t["fiber_g_week"].mean(), rtol=1e-12)
    assert f32.y_range == (t["delta_kg_next"].min(), t["delta_kg_next"].max())


def test_a_small_table_is_not_sampled():
    t = trajectories(n_subjects=20)
    assert not digest.fiber_sample([t]).sampled
    assert len(digest.fiber_sample([t]).points) == len(t)
    sample = digest.trajectory_sample(split(t, 4))
    assert sample.sampled_subjects == sample.subjects == 20
