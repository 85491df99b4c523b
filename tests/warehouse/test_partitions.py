"""Monthly partitions are created on demand before COPY; retention drops whole old months."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import polars as pl
from cryptoflow_warehouse_loader import partitions
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

from .support import DATASET, sample
from .test_marts import batch


async def partition_names(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1",
        table,
    )
    return [r["relname"] for r in rows]


async def test_partitions_on_demand_and_retention(warehouse: asyncpg.Connection) -> None:
    for name, table in TABLES.items():
        stored = table.storage
        assert await partition_names(warehouse, stored) == []
        # 2024-03-01 + 0, 50 000 and 100 000 minutes: March, April and May.
        rows = pl.concat([sample(name, 2, symbol="PART/USDT", start=start) for start in (0, 50_000, 100_000)])
        event = batch(f"{name}-parts", rows.height, 1.0).model_copy(update={"table": name, "dataset": DATASET[name]})
        await load_batch(warehouse, table, rows, event)
        assert await partition_names(warehouse, stored) == [f"{stored}_202403", f"{stored}_202404", f"{stored}_202405"]

    # A cutoff inside May keeps May (not over yet) and drops March and April with their rows.
    dropped = await partitions.drop_before(warehouse, "trades_data", datetime(2024, 5, 15, tzinfo=UTC))
    assert dropped == ["trades_data_202403", "trades_data_202404"]
    assert await partition_names(warehouse, "trades_data") == ["trades_data_202405"]
    assert await warehouse.fetchval("SELECT count(*) FROM trades") == 2
    assert await partitions.drop_before(warehouse, "trades_data", datetime(2024, 5, 15, tzinfo=UTC)) == []
    assert await warehouse.fetchval("SELECT count(*) FROM ohlcv") == 6  # other tables untouched


async def test_existing_partitions_are_not_recreated(warehouse: asyncpg.Connection) -> None:
    first = datetime(2024, 1, 10, tzinfo=UTC)
    assert await partitions.ensure_months(warehouse, "ohlcv_data", first, datetime(2024, 2, 2, tzinfo=UTC)) == 2
    assert await partitions.ensure_months(warehouse, "ohlcv_data", first, first) == 0
