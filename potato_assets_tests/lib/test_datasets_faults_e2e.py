"""Real faults while a dataset version is written: the writing process is SIGKILLed among its part
files, and the object store (moto over HTTP, behind a loopback relay) goes away mid-upload.
Either way the pointer still names the previous version, which reads back equal, and the next
commit removes what the failed writer left. Real processes, signals and sockets, no fakes."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from potato_assets.lib.lake.datasets import DatasetWriteFailed, DatasetWriter, current, split_by_bucket
from potato_assets_tests.helpers import REPO, Relay, free_port

pytestmark = pytest.mark.e2e
BUCKETS = 4


def cohort(n_subjects: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(1, n_subjects + 1), 3)
    return pd.DataFrame({"subject_id": ids, "week": np.tile([1, 2, 3], n_subjects), "x": rng.random(len(ids))})


def commit(root: str, df: pd.DataFrame):
    with DatasetWriter(root, BUCKETS) as writer:
        for bucket, rows in split_by_bucket(df, BUCKETS):
            writer.write(bucket, rows)
        return writer.commit()


# A writer that takes its time: many parts per bucket, then (never reached) a commit.
BIG_WRITER = """
import sys
import numpy as np, pandas as pd
from potato_assets.lib.lake.datasets import DatasetWriter
rng = np.random.default_rng(7)
with DatasetWriter(sys.argv[1], int(sys.argv[2])) as writer:
    print(writer.version, flush=True)
    for part in range(100_000):
        bucket = part % writer.buckets
        ids = np.arange(bucket or writer.buckets, 400_000, writer.buckets)
        writer.write(bucket, pd.DataFrame({"subject_id": ids, "week": 1, "x": rng.random(len(ids))}))
    writer.commit()
"""


def test_sigkill_among_the_part_files_leaves_the_previous_version_current(tmp_path):
    folder = tmp_path / "lake" / "bronze" / "weigh_ins"
    root = folder.as_uri()
    previous = cohort(500, seed=1)
    good = commit(root, previous)

    proc = subprocess.Popen(
        [sys.executable, "-c", BIG_WRITER, root, str(BUCKETS)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        version = proc.stdout.readline().strip()
        assert version, "the writer did not start"
        orphan = folder / f"v-{version}"
        deadline = time.monotonic() + 120
        while len(list(orphan.glob("bucket=*/part-*.parquet"))) < 6:
            assert proc.poll() is None, f"the writer ended (rc={proc.returncode}) before it was caught writing"
            assert time.monotonic() < deadline, "the writer wrote no parts in time"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # The killed version is on disk, parts and all, but nothing points at it.
    assert orphan.is_dir() and not (orphan / "_manifest.json").exists()
    after = current(root)
    assert after == good
    pd.testing.assert_frame_equal(after.read(), good.read())
    pd.testing.assert_frame_equal(
        after.read().sort_values(["subject_id", "week"], ignore_index=True),
        previous.sort_values(["subject_id", "week"], ignore_index=True),
    )
    # The next commit removes the orphan and keeps the version it replaces.
    new = commit(root, cohort(200, seed=2))
    assert not orphan.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["_current.json", f"v-{good.version}", f"v-{new.version}"]
    )


def test_the_object_store_going_away_mid_upload_leaves_the_previous_version_current(moto_s3, monkeypatch):
    import s3fs

    moto_s3.create_bucket(Bucket="cut")
    root = "s3://cut/lake/silver/weekly_features"
    previous = cohort(300, seed=3)
    s3fs.S3FileSystem.clear_instance_cache()
    good = commit(root, previous)
    moto_endpoint = os.environ["AWS_ENDPOINT_URL"]
    moto_port = int(moto_endpoint.rsplit(":", 1)[1])

    relay_port = free_port()
    relay = Relay(relay_port, moto_port, delay=0.02)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay_port}")
    s3fs.S3FileSystem.clear_instance_cache()  # new clients read the relay's endpoint
    cut = threading.Event()
    writer = DatasetWriter(root, BUCKETS)
    part_prefix = f"PUT /cut/lake/silver/weekly_features/v-{writer.version}/"

    def cut_after_some_parts() -> None:
        uploads = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and uploads < 5:
            try:
                line = relay.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            uploads += line.startswith(part_prefix)
        relay.kill()
        cut.set()

    watcher = threading.Thread(target=cut_after_some_parts, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with (
            pytest.raises(DatasetWriteFailed, match=f"{root}/v-{writer.version}/bucket=0.*: the upload failed"),
            writer,
        ):
            for part in range(10_000):
                bucket = part % BUCKETS
                ids = np.arange(bucket or BUCKETS, 40_000, BUCKETS)
                writer.write(bucket, pd.DataFrame({"subject_id": ids, "week": 1, "x": np.random.random(len(ids))}))
            writer.commit()
    finally:
        relay.kill()
        watcher.join(timeout=30)
    assert cut.is_set(), "the relay was not cut during the part uploads"
    print(f"the writer failed {time.monotonic() - started:.1f} s after it started")

    # Back on the store itself: the pointer still names the previous version, which reads back.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    after = current(root)
    assert after == good
    pd.testing.assert_frame_equal(
        after.read().sort_values(["subject_id", "week"], ignore_index=True),
        previous.sort_values(["subject_id", "week"], ignore_index=True),
    )
    assert not moto_s3.list_multipart_uploads(Bucket="cut").get("Uploads")
    # The next commit removes whatever parts of the cut version reached the store.
    new = commit(root, cohort(100, seed=4))
    keys = {o["Key"] for o in moto_s3.list_objects_v2(Bucket="cut")["Contents"]}
    assert {k.split("/")[3] for k in keys} == {"_current.json", f"v-{good.version}", f"v-{new.version}"}
