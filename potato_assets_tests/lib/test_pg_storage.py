"""The production instance's storage block, without a database: it validates against the pooled
storage's schema and builds a psycopg2 URL with SSL required (the live cluster tests are in
test_postgres_e2e.py)."""

from __future__ import annotations

import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster_postgres.utils import pg_url_from_config

from potato_assets.lib.pg_storage import POOL_DEFAULTS, PooledPostgresStorage, _pool_of
from potato_assets_tests.helpers import REPO

PG_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "5433",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "p@ss:word",
    "DAGSTER_COMPUTE_LOG_BUCKET": "logs",
}


def production_storage(monkeypatch) -> dict:
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    raw = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    instance = process_config(dagster_instance_config_schema(), raw)
    assert instance.success, instance.errors
    custom = raw["storage"]["custom"]
    assert (custom["module"], custom["class"]) == ("potato_assets.lib.pg_storage", "PooledPostgresStorage")
    storage = process_config(PooledPostgresStorage.config_type(), custom["config"])
    assert storage.success, storage.errors
    return storage.value


def test_the_storage_block_builds_a_psycopg2_url_with_ssl_required(monkeypatch):
    config = production_storage(monkeypatch)
    assert pg_url_from_config(config) == (
        "postgresql+psycopg2://dagster:p%40ss%3Aword@db.internal:5433/dagster?sslmode=require"
    )


def test_pool_settings_come_from_the_file_and_default_where_absent(monkeypatch):
    config = production_storage(monkeypatch)
    assert _pool_of(config) == {"pool_size": 1, "max_overflow": 4, "pool_recycle_seconds": 1800}
    assert _pool_of({}) == POOL_DEFAULTS
    assert _pool_of({"pool": {"pool_size": 3}})["pool_size"] == 3
