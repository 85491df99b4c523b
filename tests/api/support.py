"""Helpers of the API tests: the API served by uvicorn in a thread of the test process, a login
role in cryptoflow_reader, keys, and rows loaded with the loader's own code."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import polars as pl
import uvicorn
from cryptoflow_api.app import create_app
from cryptoflow_api.config import ApiSettings
from cryptoflow_api.keys import create_key
from cryptoflow_runtime.lake import FileLake
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch
from warehouse.support import put_batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(settings: ApiSettings) -> Iterator[str]:
    """The API on a free port, in a thread with its own event loop; its base URL."""
    port = free_port()
    settings = settings.model_copy(update={"http_port": port, "http_host": "127.0.0.1"})
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    base = f"http://127.0.0.1:{port}"
    # Ready: PostgreSQL answers and the live relay is connected (it connects in the background).
    while not (server.started and httpx.get(f"{base}/readyz").status_code == 200):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not become ready")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


@asynccontextmanager
async def reader_login(warehouse_url: str) -> AsyncIterator[str]:
    """A URL of a throwaway LOGIN role in cryptoflow_reader, as an operator would create."""
    admin = await asyncpg.connect(warehouse_url)
    name = f"test_api_reader_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE cryptoflow_reader')
    parts = urlsplit(warehouse_url)
    try:
        yield parts._replace(netloc=f"{name}@{parts.hostname}:{parts.port}").geturl()
    finally:
        # Connections of the API may linger a moment after it stopped.
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name)
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE "{name}"')
        await admin.close()


async def new_key(warehouse_url: str, name: str = "test", **options: Any) -> str:
    conn = await asyncpg.connect(warehouse_url)
    try:
        _, key = await create_key(conn, name, **options)
    finally:
        await conn.close()
    return key


async def load(warehouse_url: str, lake_dir: Path, table: str, rows: pl.DataFrame, name: str) -> None:
    """Load silver rows with the loader's own code (the way they reach the warehouse)."""
    lake = FileLake(f"file://{lake_dir}")
    conn = await asyncpg.connect(warehouse_url)
    try:
        batch = await put_batch(lake, table, rows, f"{name}-{uuid.uuid4().hex[:6]}")
        await load_batch(conn, TABLES[table], rows, batch)
    finally:
        await conn.close()


def settings(database_url: str, nats_url: str = "nats://127.0.0.1:1", **overrides: Any) -> ApiSettings:
    return ApiSettings(database_url=database_url, nats_url=nats_url, key_cache_s=0, **overrides)


async def in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


async def generate_candles(
    warehouse_url: str, lake_dir: Path, rows: int, *, symbol: str = "GEN/USDT", timeframe: str = "1m"
) -> None:
    """`rows` one-minute candles of one series, made by PostgreSQL itself (generate_series): the
    loader loads the first, so the series, its batch and the ledger are the loader's own."""
    from warehouse.support import T0, sample

    first = sample("ohlcv", 1, symbol=symbol).with_columns(pl.lit(timeframe).alias("timeframe"))
    await load(warehouse_url, lake_dir, "ohlcv", first, f"gen-{symbol.replace('/', '-')}")
    conn = await asyncpg.connect(warehouse_url)
    try:
        series_id, batch_no = await conn.fetchrow(
            "SELECT s.series_id, b.batch_no FROM series s JOIN batches b ON b.batch_id = s.last_batch_id "
            "WHERE s.table_name = 'ohlcv' AND s.symbol = $1 AND s.timeframe = $2",
            symbol,
            timeframe,
        )
        last = T0 + timedelta(minutes=rows)
        await conn.fetchval("SELECT cryptoflow_ensure_month_partitions('ohlcv_data'::regclass, $1, $2)", T0, last)
        await conn.execute(
            """
            INSERT INTO ohlcv_data (series_id, batch_no, ts, open, high, low, close, volume, quote_volume, trade_count,
                                    resampled, final, source_event_id, loaded_at, version)
            SELECT $1, $2, $3::timestamptz + i * interval '1 minute', p, p + 1, p - 1, p + 0.5, i % 977, (i % 977) * p, i % 101,
                   false, true, 'generated', now(), 1
            FROM generate_series(1, $4 - 1) AS i, LATERAL (SELECT 100 + (i % 1000) / 8.0::float8 AS p) AS price
            """,
            series_id,
            batch_no,
            T0,
            rows,
        )
        await conn.execute(
            "UPDATE series SET last_ts = $1, rows_received = $2 WHERE series_id = $3", last, rows, series_id
        )
        await conn.execute("ANALYZE ohlcv_data")
    finally:
        await conn.close()
