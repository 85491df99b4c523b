"""Bronze objects for transformer tests, made the way the pipeline makes them.

RawSnapshots → the lake-writer's own build_objects → a real lake → the ObjectWritten it would publish.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from cryptoflow_contracts import Dataset, ObjectWritten, RawSnapshot
from cryptoflow_lake_writer.objects import build_objects
from cryptoflow_runtime import Lake

FIXTURES = Path(__file__).parent.parent / "fixtures"
CANDLES = FIXTURES / "candles" / "binance"
CCXT_PARSED = FIXTURES / "ccxt_parsed" / "binance.json"


def ccxt_parsed(method: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(CCXT_PARSED.read_text())[method]
    return entries


def recorded_candles(name: str) -> pl.DataFrame:
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    return pl.read_csv(CANDLES / name, has_header=False, schema=schema)


def snapshot(
    dataset: Dataset,
    payload: Any,
    *,
    symbol: str = "BTC/USDT",
    first_ts: int | None = None,
    last_ts: int | None = None,
    timeframe: str | None = None,
    exchange: str = "binance",
    fetched_ms: int | None = None,
) -> RawSnapshot:
    when = fetched_ms or (first_ts if first_ts is not None else 1_710_000_000_000)
    return RawSnapshot(
        dataset=dataset,
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        fetched_at=datetime.fromtimestamp(when / 1000 + 1, UTC),
        request={"symbol": symbol},
        payload=payload,
        first_ts=first_ts,
        last_ts=last_ts if last_ts is not None else first_ts,
    )


async def write_bronze(lake: Lake, snapshots: list[RawSnapshot]) -> list[ObjectWritten]:
    """Store the snapshots as the lake-writer would; the events it would announce them with."""
    events = []
    for obj in build_objects(snapshots):
        await lake.put(obj.key, obj.data)
        events.append(obj.announcement(lake.url))
    return events


def candle_pages(frame: pl.DataFrame, symbol: str, timeframe: str, sizes: list[int]) -> list[RawSnapshot]:
    """The candles as consecutive OHLCV snapshots of the given page sizes (cycled)."""
    pages = []
    start = 0
    index = 0
    rows = frame.rows()
    while start < len(rows):
        size = sizes[index % len(sizes)]
        page = [list(row) for row in rows[start : start + size]]
        pages.append(
            snapshot(Dataset.OHLCV, page, symbol=symbol, timeframe=timeframe, first_ts=page[0][0], last_ts=page[-1][0])
        )
        start += size
        index += 1
    return pages
