"""Real faults during a materialisation: the run's process is SIGKILLed while it writes a lake
object, and the object store's endpoint (moto over HTTP, behind a loopback TCP relay) goes away
while an upload is in flight. Either way the lake keeps only complete, previous-good objects and
the next run recovers. No fakes: real processes, real signals, real sockets."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from potato_assets.study import synthetic
from potato_assets.study.models import MODEL_NAMES
from potato_assets.study.schema import LANDING_FILES
from potato_assets_tests.helpers import Relay, cli_env, cli_home, free_port, materialize_all, read_table

pytestmark = pytest.mark.e2e
GOLD_TABLES = [f"gold/models/{name}" for name in (*MODEL_NAMES, "model_summary")]
# Big enough that bronze objects take a while to write; small enough to generate in ~1 s.
BIG_COHORT = synthetic.CohortSpec(n_subjects=3000, n_weeks=12, seed=424242)


def fresh_cli_env(tmp_path: Path, landing: str, lake: str, **extra: str) -> dict[str, str]:
    """A CLI environment with a DAGSTER_HOME of its own for each call."""
    run_dir = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    return cli_env(cli_home(run_dir), landing, lake, **extra)


def materialize_cli(env: dict[str, str], cwd: Path, **popen) -> subprocess.Popen:
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.Popen(
        [str(dagster), "asset", "materialize", "-m", "potato_assets.definitions", "--select", "*"],
        env=env,
        cwd=cwd,
        start_new_session=True,
        **popen,
    )


def is_complete(name: str, data: bytes) -> bool:
    """A lake object that a reader can use whole: parquet footers, PNG ends, text decodes."""
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        try:
            pq.read_table(io.BytesIO(data))
        except Exception:
            return False
        return True
    if name.endswith(".png"):
        return data.endswith(b"IEND\xaeB`\x82")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(data) > 0


# ----------------------------------------------------------------------------------------------
# SIGKILL while writing (local lake)
# ----------------------------------------------------------------------------------------------


def visible(objects: dict[str, bytes]) -> dict[str, bytes]:
    """What readers see: a dataset's files only in the version its pointer names (renamed
    `<root>/current/...`, so versions compare by content), every other object as it is. A
    version no pointer names (a killed or cut writer's) is invisible."""
    import json
    import re

    current = {
        name.removesuffix("/_current.json"): "v-" + json.loads(data)["version"]
        for name, data in objects.items()
        if name.endswith("/_current.json")
    }
    out = {}
    for name, data in objects.items():
        found = re.match(r"^(.*)/(v-[^/]+)/(.*)$", name)
        if found and found.group(1) in current:
            if found.group(2) != current[found.group(1)]:
                continue
            name = f"{found.group(1)}/current/{found.group(3)}"
        out[name] = data
    return out


def assert_previous_or_complete(after: dict[str, bytes], previous: dict[str, bytes]) -> None:
    """Bronze may have committed a complete new version before the fault; nothing else changed."""
    unbronze = {k for k in after if not k.startswith("bronze/")}
    assert unbronze == {k for k in previous if not k.startswith("bronze/")}  # nothing half-created
    for name, data in after.items():
        assert data == previous.get(name) or is_complete(name, data), f"{name} is neither previous-good nor complete"
    assert all(after[name] == previous[name] for name in unbronze)


def version_dirs(names: list[str]) -> dict[str, set[str]]:
    """Version folders per dataset root, from object names."""
    import re

    found: dict[str, set[str]] = {}
    for name in names:
        match = re.match(r"^(.*)/(v-[^/]+)/", name)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def lake_objects(lake: Path) -> dict[str, bytes]:
    """Lake objects as readers see them: temporary (hidden) names excluded."""
    return {
        str(p.relative_to(lake)): p.read_bytes()
        for p in sorted(lake.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def temp_files(lake: Path) -> list[Path]:
    """Writes in progress: temporary files beside objects, and dataset version folders that no
    pointer names yet (parts of a new version are written in place, then the pointer)."""
    import json

    found = []
    for folder, dirs, files in os.walk(lake):
        found.extend(Path(folder) / f for f in files if f.endswith(".tmp"))
        pointer = Path(folder) / "_current.json"
        named = None
        if pointer.is_file():
            try:
                named = "v-" + json.loads(pointer.read_text())["version"]
            except (ValueError, KeyError):
                named = None
        found.extend(Path(folder) / d for d in dirs if d.startswith("v-") and d != named and pointer.is_file())
    return found


def kill_while_writing(proc: subprocess.Popen, lake: Path, timeout: float = 300) -> Path:
    """Freeze the run the moment a temporary lake file exists; if it still exists (the write is
    in progress), SIGKILL the run's process group; otherwise let it go on and watch again."""
    deadline = time.monotonic() + timeout
    # Version folders kept from earlier commits are not writes in progress.
    existing = set(temp_files(lake))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc={proc.returncode}) before it was caught writing")
        if set(temp_files(lake)) - existing:
            os.killpg(proc.pid, signal.SIGSTOP)
            in_progress = sorted(set(temp_files(lake)) - existing)
            if in_progress:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return in_progress[0]
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.0005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("no lake write was seen in time")


def test_sigkill_mid_write_leaves_previous_good_objects_and_the_next_run_recovers(sample_dir, tmp_path):
    lake = tmp_path / "lake"
    assert materialize_all(sample_dir, lake).success
    previous = lake_objects(lake)
    previous_gold = {key: read_table(str(lake), key) for key in GOLD_TABLES}
    big = tmp_path / "big"
    synthetic.write_cohort(BIG_COHORT, big)

    proc = materialize_cli(
        fresh_cli_env(tmp_path, str(big), str(lake)),
        tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    temp = kill_while_writing(proc, lake)
    assert proc.returncode == -signal.SIGKILL
    # the temporary name is ".{object}.{pid}.{random}.tmp" beside the object it was replacing
    target_name = str((temp.parent / temp.name[1:].rsplit(".", 3)[0]).relative_to(lake))
    if temp.name.startswith("v-"):  # a version being written: no pointer names it after the kill
        import json

        assert "v-" + json.loads((temp.parent / "_current.json").read_text())["version"] != temp.name
    previous_seen = visible(previous)
    after = visible(lake_objects(lake))
    if target_name in previous:  # an object being replaced (not a part of a new version)
        assert after.get(target_name, lake_objects(lake).get(target_name)) == previous[target_name]
    assert_previous_or_complete(after, previous_seen)

    # The next run (landing fixed back to the sample) recovers and reproduces the good numbers,
    # and its writes clear the temporary file the killed writer left behind.
    assert materialize_all(sample_dir, lake).success
    assert not temp.exists()
    for name, data in lake_objects(lake).items():
        assert is_complete(name, data), name
    # The killed writer's version folder is gone; a dataset keeps its current and previous one.
    assert all(len(v) <= 2 for v in version_dirs(list(lake_objects(lake))).values())
    for key, table in previous_gold.items():
        pd.testing.assert_frame_equal(read_table(str(lake), key), table, check_exact=True)


# ----------------------------------------------------------------------------------------------
# The object store goes away mid-upload (moto over HTTP behind a relay we can kill)
# ----------------------------------------------------------------------------------------------


def s3_objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_object_store_gone_mid_upload_leaves_previous_good_objects_and_the_next_run_recovers(
    moto_s3, sample_dir, tmp_path, monkeypatch
):
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(Bucket=bucket)
    big = tmp_path / "big"
    synthetic.write_cohort(BIG_COHORT, big)
    for spec in LANDING_FILES:
        moto_s3.upload_file(str(sample_dir / spec.file_name), bucket, f"sample/{spec.file_name}")
        moto_s3.upload_file(str(big / spec.file_name), bucket, f"big/{spec.file_name}")
    lake = f"s3://{bucket}/lake"
    assert materialize_all(f"s3://{bucket}/sample", lake).success
    previous = s3_objects(moto_s3, bucket, "lake/")
    previous_gold = {key: read_table(lake, key) for key in GOLD_TABLES}

    moto_port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    relay_port = free_port()
    relay = Relay(relay_port, moto_port, delay=0.05)
    env = fresh_cli_env(
        tmp_path,
        f"s3://{bucket}/big",
        lake,
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay_port}",
        AWS_MAX_ATTEMPTS="2",
        AWS_RETRY_MODE="standard",
    )
    proc = materialize_cli(env, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        request = relay.wait_for(f"PUT /{bucket}/lake/", timeout=300, proc=proc)
        time.sleep(0.3)  # the body is on its way through the slow link
        relay.kill()  # the object store vanishes mid-upload
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, stderr[-2000:]
    cut_key = request.split()[1].split("?")[0].removeprefix(f"/{bucket}/")

    raw_after = s3_objects(moto_s3, bucket, "lake/")
    after, previous_seen = visible(raw_after), visible(previous)
    if cut_key in previous:  # an object being replaced, not a part of a new version
        assert raw_after[cut_key] == previous[cut_key]  # the interrupted upload left the old object whole
    assert_previous_or_complete(
        {k.removeprefix("lake/"): v for k, v in after.items()},
        {k.removeprefix("lake/"): v for k, v in previous_seen.items()},
    )
    assert not moto_s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    # The store comes back on the same address; the next run (through it) recovers.
    import s3fs

    relay = Relay(relay_port, moto_port, delay=0.0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay_port}")
    s3fs.S3FileSystem.clear_instance_cache()  # new clients read the endpoint above
    try:
        assert materialize_all(f"s3://{bucket}/sample", lake).success
        assert relay.seen(f"PUT /{bucket}/lake/")
    finally:
        relay.kill()
        monkeypatch.undo()
        s3fs.S3FileSystem.clear_instance_cache()
    final = s3_objects(moto_s3, bucket, "lake/")
    for name, data in final.items():
        assert is_complete(name, data), name
    assert all(len(v) <= 2 for v in version_dirs(list(final)).values())
    for key, table in previous_gold.items():
        pd.testing.assert_frame_equal(read_table(lake, key), table, check_exact=True)
