"""Monthly partitions are created on demand before COPY; retention drops whole old months."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import polars as pl
from cryptoflow_warehouse_loader import partitions
from cryptoflow_warehouse_loader.config import WarehouseLoaderSettings
from cryptoflow_warehouse_loader.maintenance import Maintenance
from cryptoflow_warehouse_loader.runs import RunTracker
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch
from cryptoflow_warehouse_loader.warehouse import Warehouse
from faststream.nats import NatsBroker

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


async def test_the_loaders_retention_drops_old_months_of_the_tables_it_names(warehouse_url: str) -> None:
    """WAREHOUSE_LOADER_RETENTION_* name the tables readers know (`trades`); the months dropped are
    those of the table the rows are stored in."""
    conn = await asyncpg.connect(warehouse_url)
    try:
        for name in ("trades", "ohlcv"):
            rows = pl.concat([sample(name, 2, symbol="KEEP/USDT", start=start) for start in (0, 50_000, 100_000)])
            event = batch(f"{name}-old", rows.height, 1.0).model_copy(update={"table": name, "dataset": DATASET[name]})
            await load_batch(conn, TABLES[name], rows, event)
    finally:
        await conn.close()
    # 2024-05-01 is more than `days` ago for any days < today - 2024-05-01: March and April go.
    days = (datetime.now(UTC) - datetime(2024, 5, 1, tzinfo=UTC)).days - 1
    settings = WarehouseLoaderSettings(
        database_url=warehouse_url, lake_url="file:///unused", retention_days=days, retention_tables="trades"
    )
    warehouse = Warehouse(settings)
    await warehouse.open()
    tracker = RunTracker("warehouse-loader")
    try:
        await Maintenance(settings, warehouse, NatsBroker(), tracker).retention()
        async with warehouse.pool.acquire() as conn:
            assert await partition_names(conn, "trades_data") == ["trades_data_202405"]
            assert await conn.fetchval("SELECT count(*) FROM trades") == 2
            assert len(await partition_names(conn, "ohlcv_data")) == 3  # not named: untouched
    finally:
        await warehouse.close()
    assert (tracker.errors, tracker.counts["partitions_dropped"]) == (0, 2)
