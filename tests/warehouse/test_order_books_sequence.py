"""Revision 0010: order_books' `sequence` and `resynced` in the warehouse, for rows loaded before it
and after, and from silver files written before the columns existed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import polars as pl
from cryptoflow_contracts import BatchReady, Dataset
from cryptoflow_warehouse_loader.migrations import current_revision, migrate
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch

from .support import sample
from .test_schema import downgrade, schema_differences

BOOKS = TABLES["order_books"]


def event(name: str, rows: int) -> BatchReady:
    return BatchReady(
        dataset=Dataset.ORDERBOOK, table="order_books", exchange="binance", lake_url="file:///x",
        key=f"silver/orderbook/{name}.parquet", sha256="0" * 64, rows=rows, quarantined_rows=0, min_ts=None,
        max_ts=None, source_key=f"bronze/orderbook/{name}", source_event_id=f"ObjectWritten-{name}",
        quality_score=1.0,
    )  # fmt: skip


async def stored(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch("SELECT ts, sequence, resynced FROM order_books ORDER BY ts")
    return [tuple(r) for r in rows]


async def test_sequence_and_resynced_are_added_kept_and_defaulted(warehouse_url: str) -> None:
    conn = await asyncpg.connect(warehouse_url)
    try:
        books = sample("order_books", 3)
        await load_batch(conn, BOOKS, books, event("before", 3))
        # Rows loaded before 0010: after it, no sequence, not resynced.
        await asyncio.to_thread(downgrade, warehouse_url, "0009")
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'order_books'"
        )
        assert not {"sequence", "resynced"} & {c["column_name"] for c in columns}
        assert await asyncio.to_thread(migrate, warehouse_url) == ["0010", "0011", "0012"]
        ts = books["ts"].to_list()
        assert await stored(conn) == [(t, None, False) for t in ts]

        # The same books again, now with their sequence and one resynced: an update of each row.
        again = books.with_columns(
            pl.Series("sequence", [7_000_000_001, 7_000_000_001, 2**62], dtype=pl.Int64),
            pl.Series("resynced", [True, False, False]),
        )
        result = await load_batch(conn, BOOKS, again, event("after", 3))
        assert (result.inserted, result.updated) == (0, 3)
        assert await stored(conn) == [
            (ts[0], 7_000_000_001, True),
            (ts[1], 7_000_000_001, False),
            (ts[2], 2**62, False),
        ]

        # A silver file written before the columns existed loads with silver.py's defaults.
        old_file = books.drop("sequence", "resynced").with_columns(pl.col("ts") + timedelta(hours=1))
        assert (await load_batch(conn, BOOKS, old_file, event("old-file", 3))).inserted == 3
        assert (await stored(conn))[3:] == [(t + timedelta(hours=1), None, False) for t in ts]
        # resynced is NOT NULL, like every flag of silver's.
        nullable = await conn.fetchval(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'order_books_data' "
            "AND column_name = 'resynced'"
        )
        assert nullable == "NO"
    finally:
        await conn.close()
    assert await asyncio.to_thread(current_revision, warehouse_url) == "0012"
    assert await asyncio.to_thread(schema_differences, warehouse_url) == []
