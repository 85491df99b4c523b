"""Helpers for warehouse tests: valid silver rows for every table, batches in a real lake, and a
running loader process to publish them to."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import nats
import orjson
import polars as pl
from cryptoflow_contracts import SILVER_TABLES, BatchReady, Dataset, Stream
from cryptoflow_contracts.silver import SCHEMA_VERSION_METADATA_KEY, SILVER_SCHEMA_VERSION
from cryptoflow_runtime import ensure_streams
from cryptoflow_runtime.lake import FileLake, sha256_hex
from cryptoflow_runtime.silver_types import POLARS_TYPES
from cryptoflow_warehouse_loader.tables import TABLES
from e2e.harness import Pipeline

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DATASET = {
    "ohlcv": Dataset.OHLCV,
    "tickers": Dataset.TICKER,
    "order_books": Dataset.ORDERBOOK,
    "trades": Dataset.TRADES,
    "indicators": Dataset.OHLCV,
    "market_snapshots": Dataset.MARKET_SNAPSHOT,
    "aggregator_prices": Dataset.AGGREGATOR_PRICE,
    "agg_trades": Dataset.AGG_TRADES,
    "aggregator_candles": Dataset.AGGREGATOR_CANDLE,
}
# Per table: a value column an update changes, and a column value no warehouse table accepts.
UPDATE_COLUMN = {
    "ohlcv": "close",
    "tickers": "last",
    "order_books": "amount",
    "trades": "amount",
    "indicators": "macd",
    "market_snapshots": "price_usd",
    "aggregator_prices": "price_usd",
    "agg_trades": "amount",
    "aggregator_candles": "close",
}
VIOLATION = {
    "ohlcv": ("low", 1e9),  # low above high
    "tickers": ("bid", -1.0),  # negative price
    "order_books": ("side", "middle"),  # neither bid nor ask
    "trades": ("price", 0.0),  # not positive
    "indicators": ("rsi_14", 150.0),  # RSI is 0..100
    "market_snapshots": ("price_usd", -1.0),  # not positive
    "aggregator_prices": ("price_usd", 0.0),  # not positive
    "agg_trades": ("price", 0.0),  # not positive
    "aggregator_candles": ("low", 1e9),  # low above high
}
CONSTRAINT = {
    "ohlcv": "ohlcv_high_not_below_low",
    "tickers": "tickers_prices_positive",
    "order_books": "order_books_side",
    "trades": "trades_price_positive",
    "indicators": "indicators_rsi_range",
    "market_snapshots": "market_snapshots_price_positive",
    "aggregator_prices": "aggregator_prices_price_positive",
    "agg_trades": "agg_trades_price_positive",
    "aggregator_candles": "aggregator_candles_high_not_below_low",
}


def sample(table: str, n: int, *, symbol: str = "BTC/USDT", exchange: str = "binance", start: int = 0) -> pl.DataFrame:
    """n valid rows of a silver table, keys start..start+n-1 (one per minute), in silver's types."""
    i = pl.int_range(start, start + n, eager=True)
    price = 100.0 + i.cast(pl.Float64) / 8
    values: dict[str, Any] = {
        "exchange": pl.repeat(exchange, n, eager=True),
        "symbol": pl.repeat(symbol, n, eager=True),
        "timeframe": pl.repeat("1m", n, eager=True),
        "ts": pl.from_epoch(int(T0.timestamp() * 1000) + i * 60_000, time_unit="ms").dt.replace_time_zone("UTC"),
        "source_event_id": "RawSnapshot-" + i.cast(pl.String),
    }
    by_table: dict[str, dict[str, Any]] = {
        "ohlcv": {
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price + 0.5,
            "volume": i.cast(pl.Float64) + 0.25,
            "quote_volume": (i.cast(pl.Float64) + 0.25) * price,
            "trade_count": i + 3,
            "taker_buy_base_volume": (i.cast(pl.Float64) + 0.25) / 2,
            "taker_buy_quote_volume": (i.cast(pl.Float64) + 0.25) * price / 2,
            "resampled": pl.repeat(False, n, eager=True),
            "final": pl.repeat(True, n, eager=True),
        },
        "tickers": {
            "bid": price,
            "ask": price + 0.01,
            "last": price,
            "high": price + 2,
            "low": price - 2,
            "base_volume": price * 10,
            "quote_volume": price * 1000,
        },
        "order_books": {
            "side": pl.repeat("bid", n, eager=True),
            "level": pl.repeat(0, n, eager=True),
            "price": price,
            "amount": price / 100,
            "sequence": i + 1_000_000,
            "resynced": i == start,
        },
        "trades": {
            "trade_id": "t" + i.cast(pl.String),
            "price": price,
            "amount": price / 1000,
            "side": pl.repeat("buy", n, eager=True),
            "maker_side": pl.repeat("sell", n, eager=True),
        },
        "indicators": {
            "rsi_14": pl.repeat(55.5, n, eager=True),
            "macd": price / 1000,
            "macd_signal": price / 2000,
            "macd_hist": price / 4000,
            "bb_mid": price,
            "bb_upper": price + 3,
            "bb_lower": price - 3,
            "vwap": price,
        },
        "market_snapshots": {
            "asset_symbol": pl.repeat("BTC", n, eager=True),
            "name": pl.repeat("Bitcoin", n, eager=True),
            "price_usd": price,
            "market_cap_usd": price * 19_000_000,
            "volume_24h_usd": price * 1000,
            "circulating_supply": pl.repeat(19_000_000.0, n, eager=True),
            "total_supply": pl.repeat(19_500_000.0, n, eager=True),
            "max_supply": pl.repeat(21_000_000.0, n, eager=True),
            "rank": pl.repeat(1, n, eager=True),
            "pct_change_24h": i.cast(pl.Float64) / 100,
        },
        "agg_trades": {
            "agg_id": "a" + i.cast(pl.String),
            "price": price,
            "amount": price / 1000,
            "first_trade_id": "t" + (i * 3).cast(pl.String),
            "last_trade_id": "t" + (i * 3 + 2).cast(pl.String),
            "side": pl.repeat("sell", n, eager=True),
            "maker_side": pl.repeat("buy", n, eager=True),
        },
        "aggregator_prices": {
            "price_usd": price,
            "market_cap_usd": price * 19_000_000,
            "volume_24h_usd": price * 1000,
        },
        "aggregator_candles": {
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price + 0.5,
            "volume": price * 1000,
            "market_cap": price * 19_000_000,
        },
    }
    values.update(by_table[table])
    silver = SILVER_TABLES[table]
    return pl.DataFrame({name: values[name] for name in silver.column_names}).cast(
        {name: POLARS_TYPES[kind] for name, kind in silver.columns}  # type: ignore[misc]
    )


def key_columns(table: str) -> list[str]:
    return list(TABLES[table].natural_key)


def parquet(frame: pl.DataFrame, table: str) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(
        buffer,
        metadata={SCHEMA_VERSION_METADATA_KEY: str(SILVER_SCHEMA_VERSION), "cryptoflow.table": table},
    )
    return buffer.getvalue()


async def put_batch(
    lake: FileLake, table: str, frame: pl.DataFrame, name: str, *, exchange: str = "binance", quality: float = 1.0
) -> BatchReady:
    """Write a silver Parquet to the lake and describe it as the transformer would."""
    data = parquet(frame, table)
    symbol = frame["symbol"][0].replace("/", "-") if "symbol" in frame.columns and frame.height else "BTC-USDT"
    key = f"silver/{table}/exchange={exchange}/symbol={symbol}/{name}.parquet"
    await lake.put(key, data)
    ts = frame["ts"].dt.epoch("ms")
    return BatchReady(
        dataset=DATASET[table],
        table=table,
        exchange=exchange,
        lake_url=lake.url,
        key=key,
        sha256=sha256_hex(data),
        rows=frame.height,
        quarantined_rows=0,
        min_ts=int(ts.min()) if frame.height else None,  # type: ignore[arg-type]
        max_ts=int(ts.max()) if frame.height else None,  # type: ignore[arg-type]
        source_key=f"bronze/{table}/exchange={exchange}/{name}.ndjson.zst",
        source_event_id=f"ObjectWritten-{name}",
        quality_score=quality,
    )


@dataclass
class LoaderStack:
    """A warehouse-loader process on its own NATS, database and file lake."""

    pipe: Pipeline
    lake: FileLake
    published: dict[str, int] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.pipe.database_url

    async def publish(self, subject: str, payload: bytes, msg_id: str, stream: str) -> int:
        nc = await nats.connect(self.pipe.nats_url)
        try:
            ack = await nc.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, stream=stream)
        finally:
            await nc.close()
        self.published[stream] = max(self.published.get(stream, 0), ack.seq)
        return int(ack.seq)

    async def publish_batch(self, batch: BatchReady, msg_id: str | None = None) -> int:
        return await self.publish(
            batch.subject(),
            batch.to_json(),
            msg_id or batch.event_id,
            Stream.SILVER.value,
        )

    async def settled(
        self, stream: str = Stream.SILVER.value, durable: str = "warehouse-loader", timeout: float = 60
    ) -> None:
        """Wait until the loader acked (loaded or dead-lettered) everything published to `stream`."""
        target = self.published.get(stream, 0)
        nc = await nats.connect(self.pipe.nats_url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    info = await js.consumer_info(stream, durable)
                    if info.ack_floor.stream_seq >= target:
                        return
                except nats.js.errors.NotFoundError:
                    pass
                await asyncio.sleep(0.1)
        finally:
            await nc.close()
        raise AssertionError(f"loader did not settle {stream} up to {target}\n{self.pipe.logs()}")

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.data) for m in await self.pipe.stream_messages(Stream.DLQ.value)]

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.pipe.fetch(sql, *args)


async def create_streams(nats_url: str) -> None:
    """The platform's streams, as any service creates them at start (to publish before one runs)."""
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


async def create_database(server_url: str) -> str:
    """A new database on the server of `server_url`; its URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


async def loader_pipeline(root: Path, nats_url: str, database_url: str) -> Pipeline:
    """A pipeline for a loader (fast maintenance, alert rules off) on its own database and file
    lake under `root`; the loader is not started yet."""
    workdir = root / "pipeline"
    workdir.mkdir()
    return Pipeline(
        nats_url=nats_url,
        database_url=await create_database(database_url),
        lake_url=f"file://{root / 'lake'}",
        workdir=workdir,
        extra_env={
            "WAREHOUSE_LOADER_MAINTENANCE_INTERVAL_S": "0.3",
            "WAREHOUSE_LOADER_RUN_REPORT_INTERVAL_S": "1",
            "WAREHOUSE_LOADER_ALERT_RULES": "[]",
            "WAREHOUSE_LOADER_MAX_DELIVER": "3",
        },
    )
