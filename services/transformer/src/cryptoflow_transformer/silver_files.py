"""Silver Parquet files: written with their schema version, read back upgraded to the current schema.

Every file carries `cryptoflow.schema_version` (and `cryptoflow.table`) in its Parquet metadata.
`read_silver` accepts any version up to the current one: a column the file lacks is filled with the
default silver.py declares for it (how a column added later stays readable in older files); a file
of a newer version than this code knows, or lacking a column with no default, is refused by name.
A file without the metadata key predates versioning and is read as version 0.
"""

from __future__ import annotations

import io

import polars as pl
from cryptoflow_contracts import SILVER_SCHEMA_VERSION
from cryptoflow_contracts.silver import SCHEMA_VERSION_METADATA_KEY, TABLE_METADATA_KEY, SilverTable

from .schemas import polars_schema


class SilverSchemaError(Exception):
    """A silver file this code cannot upgrade to the current schema."""


def to_parquet(frame: pl.DataFrame, table: str) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(
        buffer,
        compression="zstd",
        statistics=True,
        metadata={SCHEMA_VERSION_METADATA_KEY: str(SILVER_SCHEMA_VERSION), TABLE_METADATA_KEY: table},
    )
    return buffer.getvalue()


def schema_version(data: bytes) -> int:
    metadata = pl.read_parquet_metadata(io.BytesIO(data))
    return int(metadata.get(SCHEMA_VERSION_METADATA_KEY, "0"))


def read_silver(data: bytes, table: SilverTable) -> pl.DataFrame:
    """A silver file of any known version, as a frame with exactly the table's current columns and types."""
    version = schema_version(data)
    if version > SILVER_SCHEMA_VERSION:
        raise SilverSchemaError(
            f"silver file of schema version {version}; this reader knows up to {SILVER_SCHEMA_VERSION}"
        )
    return upgrade(pl.read_parquet(io.BytesIO(data)), table, version)


def upgrade(frame: pl.DataFrame, table: SilverTable, version: int) -> pl.DataFrame:
    schema = polars_schema(table)
    missing = [name for name in table.column_names if name not in frame.columns]
    undefaulted = [name for name in missing if name not in table.defaults]
    if undefaulted:
        raise SilverSchemaError(
            f"{table.name} file of schema version {version} lacks {undefaulted}, which have no default"
        )
    filled = frame.with_columns(pl.lit(table.defaults[name], dtype=schema[name]).alias(name) for name in missing)
    return filled.select(table.column_names).cast(pl.Schema(schema))
