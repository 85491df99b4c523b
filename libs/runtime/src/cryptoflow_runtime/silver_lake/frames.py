"""Live silver files as Polars frames: the table's current columns, and each row's lineage.

Lineage says where a row was written first, which orders the versions of one key the way the
loader's arrival order does: `_written_ns` (when the store wrote its batch file), `_silver_key`
(that batch file) and `_row` (its row in the file). A batch file's lineage comes from the listing;
a compacted file keeps its rows' lineage as columns, so compaction changes no reader's answer.
"""

from __future__ import annotations

import asyncio
import io

import polars as pl
from cryptoflow_contracts import SILVER_SCHEMA_VERSION
from cryptoflow_contracts.silver import SCHEMA_VERSION_METADATA_KEY, TABLE_METADATA_KEY, SilverTable

from ..lake import Lake
from ..silver_types import POLARS_TYPES
from .live_files import LiveSilverFile

SILVER_KEY, WRITTEN_NS, ROW = "_silver_key", "_written_ns", "_row"
LINEAGE_SCHEMA: dict[str, pl.DataType] = {SILVER_KEY: pl.String(), WRITTEN_NS: pl.Int64(), ROW: pl.Int64()}
LINEAGE_COLUMNS = tuple(LINEAGE_SCHEMA)
_READS = 8  # files fetched at once


class SilverFileError(ValueError):
    """A silver file this code cannot read as its table (newer schema, missing column, other table)."""


def table_schema(table: SilverTable) -> dict[str, pl.DataType]:
    return {name: POLARS_TYPES[kind] for name, kind in table.columns}


def file_metadata(data: bytes) -> dict[str, str]:
    return dict(pl.read_parquet_metadata(io.BytesIO(data)))


def upgraded(frame: pl.DataFrame, table: SilverTable, version: int) -> pl.DataFrame:
    """The table's current columns in order and type; a column the file predates gets its default."""
    schema = table_schema(table)
    missing = [name for name in table.column_names if name not in frame.columns]
    undefaulted = [name for name in missing if name not in table.defaults]
    if undefaulted:
        raise SilverFileError(f"{table.name} file of schema version {version} lacks {undefaulted}, with no default")
    filled = frame.with_columns(pl.lit(table.defaults[name], dtype=schema[name]).alias(name) for name in missing)
    return filled.select(table.column_names).cast(pl.Schema(schema))


def read_file_rows(data: bytes, table: SilverTable, file: LiveSilverFile) -> pl.DataFrame:
    """The file's rows as the table's current columns plus lineage."""
    metadata = file_metadata(data)
    version = int(metadata.get(SCHEMA_VERSION_METADATA_KEY, "0"))
    if version > SILVER_SCHEMA_VERSION:
        raise SilverFileError(f"{file.key}: schema version {version}; this reader knows up to {SILVER_SCHEMA_VERSION}")
    stored_table = metadata.get(TABLE_METADATA_KEY)
    if stored_table is not None and stored_table != table.name:
        raise SilverFileError(f"{file.key}: a file of table {stored_table!r}, read as {table.name!r}")
    frame = pl.read_parquet(io.BytesIO(data))
    rows = upgraded(frame, table, version)
    if file.compacted:
        lineage = frame.select(pl.col(name).cast(dtype) for name, dtype in LINEAGE_SCHEMA.items())
    else:
        lineage = pl.DataFrame(
            {
                SILVER_KEY: pl.Series([file.key] * frame.height, dtype=pl.String()),
                WRITTEN_NS: pl.Series([file.written_ns] * frame.height, dtype=pl.Int64()),
                ROW: pl.int_range(frame.height, dtype=pl.Int64(), eager=True),
            }
        )
    return pl.concat([rows, lineage], how="horizontal")


def empty_rows(table: SilverTable) -> pl.DataFrame:
    return pl.DataFrame(schema={**table_schema(table), **LINEAGE_SCHEMA})


async def read_live_rows(lake: Lake, files: list[LiveSilverFile], table: SilverTable) -> pl.DataFrame:
    """Every row of the files (all versions of a key), with lineage; raises ObjectMissingError
    when a file vanished (see live_files.read_with_retry)."""
    gate = asyncio.Semaphore(_READS)

    async def read(file: LiveSilverFile) -> pl.DataFrame:
        async with gate:
            data = await lake.get(file.key)
        return read_file_rows(data, table, file)

    frames = await asyncio.gather(*(read(file) for file in files))
    return pl.concat([empty_rows(table), *frames]) if frames else empty_rows(table)
