"""Silver tables (libs/contracts silver.py) as Polars schemas."""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import ColumnType, SilverTable

POLARS_TYPES: dict[ColumnType, pl.DataType] = {
    ColumnType.TEXT: pl.String(),
    ColumnType.INT: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.BOOL: pl.Boolean(),
    ColumnType.TIMESTAMP: pl.Datetime("ms", "UTC"),
}


def polars_schema(table: SilverTable) -> dict[str, pl.DataType]:
    return {name: POLARS_TYPES[kind] for name, kind in table.columns}
