from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; POTATO_SEED_STUDY for a checkout elsewhere (a git worktree).
SEED_DIR = Path(os.environ.get("POTATO_SEED_STUDY") or REPO.parent / "shared" / "data" / "seed-study")
SAMPLE_DIR = REPO / "potato_assets" / "sample_data"


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    if not (SEED_DIR / "Potato_tidy.csv").exists():
        pytest.skip(
            f"the seed study is not at {SEED_DIR} (expected ../shared beside the checkout, or POTATO_SEED_STUDY)"
        )
    return SEED_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
