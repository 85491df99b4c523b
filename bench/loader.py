"""Loader benchmark: the warehouse-loader's load path vs raw COPY vs per-row ORM inserts.

Same OHLCV rows for every contender (ROWS, default 1M; 50 symbols of 1m candles), on one
PostgreSQL with durable settings (fsync and synchronous_commit on) — started here with
cryptoflow_cli.servers.start_postgres, or a scratch database on DATABASE_URL's server.

* loader: `upsert.load_batch` exactly as the service calls it, per silver batch of BATCH_ROWS
  (default 100k) rows: dedup/sort, partitions, ledger claim, series locks and ids, binary COPY,
  series and ledger updates, one transaction per batch; into the real partitioned, primary-keyed,
  constrained `ohlcv_data` (decision 0026).
* loader re-load: the same rows again as new batches (every row conflicts, none changed): the
  temp-table + INSERT … ON CONFLICT path.
* raw COPY: the same rows as the loader receives them (silver columns, plus the batch id every
  loaded row carries, in the loader's BatchReady-id format), same batches, encoded and streamed
  exactly as the loader does (`copy_binary.stream`), into an unindexed, unpartitioned table
  without constraints — the ceiling, and the denominator of loader_vs_copy. For reference: the
  same into tables with only a primary key (the loader's, and the old natural text key), and CSV
  from Polars.
* ORM: SQLModel objects added one by one, commit every 10 rows, on ORM_ROWS (default 20k) of
  the rows (a million would take an hour); reported as rows/s like the others.
* binary COPY (server side only): the raw table's rows as binary COPY vs CSV, to see whether
  binary would help PostgreSQL's parsing.

Each of loader, re-load and raw COPY runs BENCH_REPEAT (3) times, interleaved, on a truncated table, and the
fastest run counts. Prints a table and, last, `loader_vs_copy=<ratio> loader_vs_orm=<ratio> loader_rows_per_s=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import polars as pl
from cryptoflow_cli.servers import start_postgres
from cryptoflow_contracts import BatchReady, Dataset
from cryptoflow_contracts.silver import ColumnType
from cryptoflow_warehouse_loader import copy_binary
from cryptoflow_warehouse_loader.migrations import migrate, sqlalchemy_url
from cryptoflow_warehouse_loader.tables import PG_TYPES, TABLES
from cryptoflow_warehouse_loader.upsert import CSV_DATETIME_FORMAT, load_batch
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, Session, SQLModel

T0_MS = 1_704_067_200_000  # 2024-01-01
SYMBOLS = 50
# Durable (fsync, synchronous_commit and full_page_writes stay on), sized like a small server.
SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
OHLCV = TABLES["ohlcv"]


class BenchCandle(SQLModel, table=True):
    __tablename__ = "bench_orm_ohlcv"
    exchange: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    timeframe: str = Field(primary_key=True)
    ts: datetime = Field(primary_key=True)
    open: float
    high: float
    low: float
    close: float
    volume: float
    resampled: bool
    final: bool
    source_event_id: str
    batch_id: str


@dataclass
class Result:
    name: str
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def candles(rows: int) -> pl.DataFrame:
    """Deterministic pseudo-random walk-ish candles, sorted like silver (by symbol, ts)."""
    per_symbol = -(-rows // SYMBOLS)
    i = pl.int_range(0, rows, eager=True)
    noise = (i.hash(7) % 10_000).cast(pl.Float64) / 10_000
    base = 100.0 + (i.cast(pl.Float64) / 500).sin() * 10 + noise
    return pl.DataFrame(
        {
            "exchange": pl.repeat("binance", rows, eager=True),
            "symbol": "SYM" + (i // per_symbol).cast(pl.String) + "/USDT",
            "timeframe": pl.repeat("1m", rows, eager=True),
            "ts": pl.from_epoch((i % per_symbol) * 60_000 + T0_MS, time_unit="ms").dt.replace_time_zone("UTC"),
            "open": base,
            "high": base + 1.0 + noise,
            "low": base - 1.0 - noise,
            "close": base + noise - 0.5,
            "volume": noise * 100,
            "resampled": pl.repeat(False, rows, eager=True),
            "final": pl.repeat(True, rows, eager=True),
            "source_event_id": "RawSnapshot-" + (i // 1000).cast(pl.String),
        }
    )


def to_csv(frame: pl.DataFrame, columns: list[str]) -> bytes:
    """The columns as CSV from Polars (floats in shortest round-trip form), for reference."""
    buffer = io.BytesIO()
    frame.select(columns).write_csv(buffer, include_header=False, datetime_format=CSV_DATETIME_FORMAT)
    return buffer.getvalue()


def chunks(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(offset, size) for offset in range(0, frame.height, size)]


def batch_event(name: str, rows: int) -> BatchReady:
    return BatchReady(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        exchange="binance",
        lake_url="file:///bench",
        key=f"silver/ohlcv/bench/{name}.parquet",
        sha256="0" * 64,
        rows=rows,
        quarantined_rows=0,
        min_ts=None,
        max_ts=None,
        source_key=f"bronze/ohlcv/bench/{name}.ndjson.zst",
        source_event_id=f"ObjectWritten-{name}",
        quality_score=1.0,
    )


async def bench_loader(url: str, batches: list[pl.DataFrame], label: str, prefix: str) -> Result:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for n, frame in enumerate(batches):
            await load_batch(conn, OHLCV, frame, batch_event(f"{prefix}-{n}", frame.height))
        return Result(label, sum(f.height for f in batches), time.perf_counter() - started)
    finally:
        await conn.close()


# What the loader receives: the silver columns, and the batch id every loaded row carries.
RAW_COLUMNS: list[tuple[str, ColumnType]] = [*OHLCV.silver.columns, ("batch_id", ColumnType.TEXT)]
SERIES_ID = ("series_id", ColumnType.INT)
# Reference tables with a primary key and nothing else: what the index alone costs.
RAW_KEYS = {"primary key": "(series_id, ts)", "text primary key": "(exchange, symbol, timeframe, ts)"}


def with_series_ids(batches: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """The batches with a series id (one per symbol here), made before timing, for the reference
    table keyed on it."""
    return [
        b.with_columns(pl.col("symbol").str.extract(r"SYM(\d+)").cast(pl.Int64).alias("series_id")) for b in batches
    ]


async def bench_raw_copy(url: str, batches: list[pl.DataFrame], fmt: str, *, key: str | None = None) -> Result:
    """The same rows, per batch, into a bare table: binary encoded and streamed exactly as the
    loader does (`copy_binary.stream`), or CSV from Polars for reference. Without `key`: the
    silver rows as they arrive, into a table without index or constraint — the limit. With `key`
    (of RAW_KEYS): a table with only that primary key (plus series_id when it is in the key)."""
    columns = [*RAW_COLUMNS, SERIES_ID] if key and "series_id" in RAW_KEYS[key] else RAW_COLUMNS
    names = [name for name, _ in columns]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS raw_ohlcv")
        await conn.execute(f"CREATE TABLE raw_ohlcv ({', '.join(f'{n} {PG_TYPES[k]}' for n, k in columns)})")
        if key:
            await conn.execute(f"ALTER TABLE raw_ohlcv ADD PRIMARY KEY {RAW_KEYS[key]}")
        await conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for n, frame in enumerate(batches):
            # The batch id a loaded row carries, in the loader's format (a BatchReady event id).
            rows = frame.with_columns(pl.lit(batch_event(f"raw-{n}", frame.height).event_id).alias("batch_id"))
            if fmt == "binary":
                source: AsyncIterator[bytes] | io.BytesIO = copy_binary.stream(rows, columns)
            else:
                source = io.BytesIO(to_csv(rows, names))
            await conn.copy_to_table("raw_ohlcv", source=source, columns=names, format=fmt)
        seconds = time.perf_counter() - started
        table = f"table with only the {key} {RAW_KEYS[key]}" if key else "unindexed table"
        return Result(f"raw COPY ({fmt}) into {table}", sum(f.height for f in batches), seconds)
    finally:
        await conn.close()


async def bench_copy_formats(url: str, rows: int) -> list[Result]:
    """Server-side parse cost only: the same rows as CSV and as binary COPY, bytes prepared beforehand."""
    conn = await asyncpg.connect(url)
    try:
        binary, csv = io.BytesIO(), io.BytesIO()
        await conn.copy_from_table("raw_ohlcv", output=binary, format="binary")
        await conn.copy_from_table("raw_ohlcv", output=csv, format="csv")
        results = []
        for name, data, fmt in (("CSV", csv, "csv"), ("binary", binary, "binary")):
            await conn.execute("CREATE TABLE copy_format_probe (LIKE raw_ohlcv)")
            data.seek(0)
            started = time.perf_counter()
            await conn.copy_to_table("copy_format_probe", source=data, format=fmt)
            results.append(Result(f"server-side COPY FROM, {name} (bytes ready)", rows, time.perf_counter() - started))
            await conn.execute("DROP TABLE copy_format_probe")
        return results
    finally:
        await conn.close()


def bench_orm(url: str, frame: pl.DataFrame) -> Result:
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        SQLModel.metadata.create_all(engine, tables=[BenchCandle.__table__])  # type: ignore[attr-defined]
        records = frame.with_columns(pl.lit("orm").alias("batch_id")).to_dicts()
        started = time.perf_counter()
        with Session(engine) as session:
            for n, record in enumerate(records, start=1):
                session.add(BenchCandle(**record))
                if n % 10 == 0:
                    session.commit()
            session.commit()
        return Result("ORM (SQLModel), commit every 10 rows", len(records), time.perf_counter() - started)
    finally:
        engine.dispose()


@contextmanager
def database() -> Iterator[str]:
    """A scratch database on DATABASE_URL's server, or a server of our own (durable settings)."""
    if server_url := os.environ.get("DATABASE_URL"):
        name = f"cryptoflow_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
        try:
            yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
        finally:
            asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    with tempfile.TemporaryDirectory(prefix="cryptoflow-bench-") as tmp:
        with start_postgres(Path(tmp) / "pgdata", settings=SERVER_SETTINGS) as server:
            yield server.url


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def render(results: list[Result], loader: Result, copy: Result, orm: Result, copy_csv: Result) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'benchmark':<{width}}  {'rows':>9}  {'seconds':>8}  {'rows/s':>10}  {'vs raw COPY':>11}"]
    for r in results:
        lines.append(
            f"{r.name:<{width}}  {r.rows:>9}  {r.seconds:>8.2f}  {r.rows_per_s:>10.0f}  {r.rows_per_s / copy.rows_per_s:>11.2f}"
        )
    lines.append(f"(loader vs raw COPY of Polars CSV: {loader.rows_per_s / copy_csv.rows_per_s:.2f})")
    lines.append(
        f"loader_vs_copy={loader.rows_per_s / copy.rows_per_s:.2f} "
        f"loader_vs_orm={loader.rows_per_s / orm.rows_per_s:.1f} "
        f"loader_rows_per_s={loader.rows_per_s:.0f}"
    )
    return "\n".join(lines)


def best(results: list[Result]) -> Result:
    """The fastest of the repetitions: the machine may be shared; noise only ever slows a run down."""
    return min(results, key=lambda r: r.seconds)


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE ohlcv_data, batches, series")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    frame = candles(args.rows)
    batches = chunks(frame, args.batch_rows)
    raw_batches = with_series_ids(batches)
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    print(
        f"loader benchmark: {args.rows} OHLCV rows in batches of {args.batch_rows}; ORM on {args.orm_rows} rows; "
        f"best of {repeat} runs"
    )
    with database() as url:
        await asyncio.to_thread(migrate, url)
        loads, reloads, copies = [], [], []
        for n in range(repeat):
            await reset(url)
            loads.append(await bench_loader(url, batches, "loader (append path: COPY into ohlcv)", f"a{n}"))
            reloads.append(await bench_loader(url, batches, "loader re-load (upsert path, no change)", f"b{n}"))
            copies.append(await bench_raw_copy(url, batches, "binary"))
        loader, reload, copy = best(loads), best(reloads), best(copies)
        keyed = [await bench_raw_copy(url, raw_batches, "binary", key=key) for key in RAW_KEYS]
        copy_csv = await bench_raw_copy(url, batches, "csv")
        formats = await bench_copy_formats(url, args.rows)
        orm = await asyncio.to_thread(bench_orm, url, frame.head(args.orm_rows))
    print(render([loader, reload, copy, *keyed, copy_csv, *formats, orm], loader, copy, orm, copy_csv))
