"""Silver column types (cryptoflow_contracts.silver.ColumnType) as Polars types: one mapping for
every stage that reads or writes silver with Polars (the transformer, the warehouse loader).

Not imported by the package root: it needs polars, which only those stages install.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import ColumnType

POLARS_TYPES: dict[ColumnType, pl.DataType] = {
    ColumnType.TEXT: pl.String(),
    ColumnType.INT: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.BOOL: pl.Boolean(),
    ColumnType.TIMESTAMP: pl.Datetime("ms", "UTC"),
}

__all__ = ["POLARS_TYPES"]
