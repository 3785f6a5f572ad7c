"""Fixtures only; what test modules import lives in helpers.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


from potato_assets_tests.helpers import SAMPLE_DIR, SEED_DIR, SEED_DIR_ENV, free_port, study_tables  # noqa: E402


@pytest.fixture(autouse=True)
def _children_can_be_terminated():
    """Something in the suite leaves SIGTERM ignored in this process, and children inherit an
    ignored signal: Dagster's compute-log `tail` then ignores the SIGTERM that ends it, so every
    run on a test instance waited 2 x 30 s for it (and left it running), and servers the tests
    start ignore terminate(). Each test starts with the default."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    if not (SEED_DIR / "Potato_tidy.csv").exists():
        message = f"the seed study is not at {SEED_DIR}"
        if os.environ.get(SEED_DIR_ENV):  # asked for explicitly (CI): missing data is a failure
            pytest.fail(f"{message} ({SEED_DIR_ENV} names it)")
        pytest.skip(f"{message} (../shared beside the checkout, or set {SEED_DIR_ENV})")
    return SEED_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="module")
def sample_tables(sample_dir):
    """The sample's bronze and silver tables as the assets make them (helpers.study_tables)."""
    return study_tables(sample_dir)


@pytest.fixture(scope="module")
def seed_tables(seed_dir):
    """The seed study's bronze and silver tables as the assets make them."""
    return study_tables(seed_dir)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's standalone server on loopback, with the standard AWS environment pointing at it.

    Yields a boto3 S3 client. Real HTTP: s3fs and boto3 read AWS_ENDPOINT_URL themselves.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    try:
        yield boto3.client("s3")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def spark_state(tmp_path_factory):
    """The state folder of one local Spark cluster the Spark tests share (starting one costs a
    minute or more); stopped when the session ends. Modules start it with spark_cluster()."""
    from potato_assets.lib.engine import spark_cluster as sc
    from potato_assets_tests.helpers import spark_cluster_missing

    reason = spark_cluster_missing()
    if reason:
        pytest.skip(f"no local Spark cluster: {reason}")
    state = tmp_path_factory.mktemp("spark")
    yield state
    sc.stop_cluster(state)
