"""Silver tables (libs/contracts silver.py) as Polars schemas."""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import SilverTable
from cryptoflow_runtime.silver_types import POLARS_TYPES


def polars_schema(table: SilverTable) -> dict[str, pl.DataType]:
    return {name: POLARS_TYPES[kind] for name, kind in table.columns}
