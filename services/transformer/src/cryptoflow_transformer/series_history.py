"""A series' native, closed candles as silver holds them: what a late batch recomputes from.

A forming candle (`final` false) is not history: the closed one replaces it (derived.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from cryptoflow_contracts import Dataset, symbol_token, timeframe_ms
from cryptoflow_contracts.silver import OHLCV
from cryptoflow_runtime import Lake
from cryptoflow_runtime.silver_lake import SILVER_KEY, LiveSilverFile, read_live_rows, read_with_retry

from .series import CANDLE_SCHEMA

RESAMPLED_PREFIX = "resampled-"
# The extractor asks for at most this many candles per snapshot (EXTRACTOR_PAGE_LIMIT ≤ 1000), and a
# snapshot is filed under the date of its first candle: a candle can sit in a partition up to this
# many candles older than itself.
MAX_CANDLES_PER_SNAPSHOT = 1000


def symbol_prefix(exchange: str, symbol: str) -> str:
    return f"silver/{Dataset.OHLCV.value}/exchange={exchange}/symbol={symbol_token(symbol)}/"


def partition_date(key: str) -> str:
    for part in key.split("/"):
        if part.startswith("date="):
            return part.removeprefix("date=")
    return ""


async def candles_after(lake: Lake, exchange: str, symbol: str, timeframe: str, after_ts: int | None) -> pl.DataFrame:
    """Native, closed candles (CANDLE_SCHEMA + `key`) of the series with ts > after_ts (None: all of them).

    Read from the live silver files (a compacted partition's one file instead of its batch files);
    `key` is the batch file a candle was written in, also when compaction has moved it since.
    """
    oldest = ""
    if after_ts is not None:
        reach = timedelta(milliseconds=MAX_CANDLES_PER_SNAPSHOT * timeframe_ms(timeframe))
        oldest = (datetime.fromtimestamp(after_ts / 1000, UTC) - reach).strftime("%Y-%m-%d")

    async def read(live: list[LiveSilverFile]) -> pl.DataFrame:
        # Resampled candles are never history: skip their batch files unread.
        files = [
            f
            for f in live
            if partition_date(f.key) >= oldest
            and (f.compacted or not f.key.rsplit("/", 1)[-1].startswith(RESAMPLED_PREFIX))
        ]
        return await read_live_rows(lake, files, OHLCV)

    rows = await read_with_retry(lake, symbol_prefix(exchange, symbol), read)
    candles = rows.filter((pl.col("timeframe") == timeframe) & ~pl.col("resampled") & pl.col("final")).select(
        *candle_columns(), pl.col(SILVER_KEY).alias("key")
    )
    return candles.filter(pl.col("ts_ms") > after_ts) if after_ts is not None else candles


def candle_columns() -> list[pl.Expr]:
    return [
        pl.col("ts").dt.epoch("ms").alias("ts_ms"),
        *[pl.col(c) for c in ["open", "high", "low", "close", "volume"]],
        pl.col("source_event_id"),
    ]


def merged(history: pl.DataFrame, batch: pl.DataFrame) -> pl.DataFrame:
    """One candle per ts, sorted: the batch's own version wins (it arrived last); among older copies,
    the one in the lexically greatest silver key (arbitrary, but the same every time)."""
    older = history.filter(~pl.col("ts_ms").is_in(batch["ts_ms"].implode())).sort("key", "ts_ms")
    older = older.unique(subset=["ts_ms"], keep="last").drop("key")
    return pl.concat([older.select(CANDLE_SCHEMA.names()), batch.select(CANDLE_SCHEMA.names())]).sort("ts_ms")
