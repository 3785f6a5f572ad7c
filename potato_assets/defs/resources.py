"""Resources built from settings: the lake IO manager, lake files, and the landing zone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from potato_assets.lib.lake import storage
from potato_assets.settings import Settings
from potato_assets.study.schema import column_description

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath


def column_schema(df: pd.DataFrame) -> dg.TableSchema:
    """Each column's name, pandas type and meaning (study/schema.py COLUMN_DESCRIPTIONS)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(c), type=str(t), description=column_description(str(c)))
            for c, t in df.dtypes.items()
        ]
    )


TABLE_EXTENSION = ".parquet"


class LakeParquetIOManager(dg.UPathIOManager):
    """Asset `a/b/c` <-> `{lake}/a/b/c.parquet`, written atomically (see lib/lake/storage.py)."""

    extension = TABLE_EXTENSION

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        import pandas as pd

        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return a pandas DataFrame, got {type(obj).__name__}"
            )
        storage.write_bytes_atomic(path, storage.parquet_bytes(obj))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        # An input may ask for some columns only (AssetIn metadata {"columns": [...]}): less to
        # decode, e.g. the free-text food column nobody downstream reads.
        columns = (context.definition_metadata or {}).get("columns")
        try:
            return storage.read_parquet(path, columns=columns)
        except storage.MissingColumns as exc:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} cannot be read as asked: {exc}"
            ) from None

    def make_directory(self, path: UPath) -> None:
        # Object stores have no directories; local ones are made by the atomic write.
        return None

    def get_metadata(self, context: dg.OutputContext, obj: pd.DataFrame) -> dict[str, Any]:
        return {
            "dagster/row_count": dg.MetadataValue.int(len(obj)),
            "dagster/column_schema": column_schema(obj),
        }


class LakeIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet IO manager on the lake root: a local folder (file://) or s3://bucket/prefix."""

    lake_uri: str

    def create_io_manager(self, context: dg.InitResourceContext) -> LakeParquetIOManager:
        # Built once per run (steps run in the run's process, defs/executor.py) by every run that
        # writes the lake: the place to say, once, that lineage and telemetry will not happen.
        if context.instance is not None and context.log is not None:
            from potato_assets.lib.observe.handler import missing_handler_warning

            warning = missing_handler_warning(context.instance)
            if warning:
                context.log.warning(warning)
        return LakeParquetIOManager(base_path=storage.to_upath(self.lake_uri))


class LakeFiles(dg.ConfigurableResource):
    """Non-table lake objects (reports, figures) under the same lake root."""

    lake_uri: str

    def uri(self, relative: str) -> str:
        return storage.join(self.lake_uri, relative)

    def write_bytes(self, relative: str, data: bytes) -> str:
        target = self.uri(relative)
        storage.write_bytes_atomic(storage.to_upath(target), data)
        return target

    def table_uri(self, key: dg.AssetKey) -> str:
        """Where the lake IO manager keeps the table of asset ``key``."""
        return self.uri("/".join(key.path) + TABLE_EXTENSION)

    def table_rows(self, key: dg.AssetKey) -> int:
        """Row count of the stored table, from the parquet footer (the table is not loaded)."""
        return storage.parquet_row_count(storage.to_upath(self.table_uri(key)))


class LandingZone(dg.ConfigurableResource):
    """Where the study's CSV exports arrive: a local folder or an s3:// prefix."""

    landing_uri: str

    def uri(self, file_name: str) -> str:
        return storage.join(self.landing_uri, file_name)

    def read_bytes(self, file_name: str) -> bytes:
        uri = self.uri(file_name)
        try:
            return storage.to_upath(uri).read_bytes()
        except FileNotFoundError:
            raise dg.Failure(description=f"{file_name} was not found in the landing zone ({uri}).") from None


def build_resources(settings: Settings) -> dict[str, Any]:
    return {
        "io_manager": LakeIOManager(lake_uri=settings.lake_uri),
        "lake": LakeFiles(lake_uri=settings.lake_uri),
        "landing": LandingZone(landing_uri=settings.landing_uri),
    }


@dg.definitions
def resources() -> dg.Definitions:
    from potato_assets.defs.common import SETTINGS

    return dg.Definitions(resources=build_resources(SETTINGS))
