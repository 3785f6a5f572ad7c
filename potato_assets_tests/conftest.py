from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SEED_DIR = REPO.parent / "shared" / "data" / "seed-study"
SAMPLE_DIR = REPO / "potato_assets" / "sample_data"


@pytest.fixture(scope="session")
def seed_dir() -> Path:
    if not (SEED_DIR / "Potato_tidy.csv").exists():
        pytest.skip(f"the seed study is not at {SEED_DIR} (expected ../shared beside the checkout)")
    return SEED_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR
