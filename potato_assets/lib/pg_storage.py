"""dagster-postgres storage with a connection pool per process.

dagster-postgres builds its engines with ``NullPool``: every event a run writes opens a new
connection (TCP, TLS handshake, SCRAM authentication), about 9 ms on loopback and 14 ms with SSL,
so a sample run spent half its time connecting. Here the run and event-log storages keep a small
pool instead (one idle connection per process, checked with a ping before use and recycled, so a
failover or an idle timeout costs one reconnect). Tables, queries and migrations are
dagster-postgres's own; the webserver still replaces the engine with its own
(``optimize_for_webserver``). Schedule storage, used by the daemon alone, stays as it is.

Configured in deploy/dagster.postgres.yaml as ``storage: custom`` with dagster-postgres's
``postgres_db`` block plus ``pool``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy.pool as db_pool
from dagster import Field, IntSource
from dagster._config.config_schema import UserConfigSchema
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage, PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_config, pg_url_from_config

POOL_DEFAULTS = {"pool_size": 1, "max_overflow": 4, "pool_recycle_seconds": 1800}


def pooled_pg_config() -> UserConfigSchema:
    return {
        **pg_config(),  # type: ignore[dict-item]
        "pool": Field(
            {
                # Idle connections kept per process (each run worker, the daemon, a CLI run).
                "pool_size": Field(IntSource, is_required=False, default_value=POOL_DEFAULTS["pool_size"]),
                # Extra connections for concurrent threads, closed when returned.
                "max_overflow": Field(IntSource, is_required=False, default_value=POOL_DEFAULTS["max_overflow"]),
                # Reconnect after this age (below RDS Proxy / load-balancer idle timeouts).
                "pool_recycle_seconds": Field(
                    IntSource, is_required=False, default_value=POOL_DEFAULTS["pool_recycle_seconds"]
                ),
            },
            is_required=False,
        ),
    }


def _pool_of(config_value: Mapping[str, Any]) -> dict[str, int]:
    return {**POOL_DEFAULTS, **(config_value.get("pool") or {})}


def _pooled_engine(storage: PostgresEventLogStorage | PostgresRunStorage, pool: Mapping[str, int]) -> None:
    """Replace the storage's NullPool engine (tables already created through it)."""
    storage._engine.dispose()  # noqa: SLF001
    storage._engine = create_pg_engine(  # noqa: SLF001
        storage.postgres_url,
        storage._token_provider,  # noqa: SLF001
        isolation_level="AUTOCOMMIT",
        poolclass=db_pool.QueuePool,
        pool_size=pool["pool_size"],
        max_overflow=pool["max_overflow"],
        pool_recycle=pool["pool_recycle_seconds"],
        pool_pre_ping=True,
    )


def _storage_kwargs(inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inst_data": inst_data,
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class _Pooled:
    """dagster-postgres's storage with its engine on a QueuePool (mixed in before the storage)."""

    def __init__(self, *args: Any, pool: Mapping[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pooled_engine(self, pool or POOL_DEFAULTS)  # type: ignore[arg-type]  # self is the storage it is mixed into

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pooled_pg_config()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> Any:
        return cls(**_storage_kwargs(inst_data, config_value), pool=_pool_of(config_value))


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledPostgresStorage(DagsterPostgresStorage):
    """``storage: custom`` for the whole instance: pooled run and event-log storage."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        pool: Mapping[str, int] | None = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        pool = pool or POOL_DEFAULTS
        self._run_storage = PooledPostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider, pool=pool
        )
        self._event_log_storage = PooledPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider, pool=pool
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        # DagsterPostgresStorage.__init__ would build the NullPool storages again.
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return pooled_pg_config()

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        return cls(**_storage_kwargs(inst_data, config_value), pool=_pool_of(config_value))

    # Instance refs (a run worker rebuilding the instance) name these classes, with the same config.
    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return self._data_for(PooledPostgresEventLogStorage)

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return self._data_for(PooledPostgresRunStorage)

    def _data_for(self, klass: type) -> ConfigurableClassData | None:
        if self.inst_data is None:
            return None
        return ConfigurableClassData(__name__, klass.__name__, self.inst_data.config_yaml)
