"""Candles flow from the simulator to PostgreSQL through all four services, as OS processes."""

from __future__ import annotations

import io
import os

import aiohttp
import polars as pl
import zstandard
from cryptoflow_runtime.lake import open_lake

from .harness import S3_ENV, Pipeline

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
N = 300
SYMBOLS = {"BTC/USDT": "BTCUSDT", "ETH/USDT": "ETHUSDT"}


async def simulator_candles(sim_url: str, market_id: str, start: int, count: int) -> list[list[object]]:
    """What the simulator serves, read straight from its klines endpoint (Binance wire format)."""
    candles: list[list[object]] = []
    async with aiohttp.ClientSession() as session:
        since = start
        while len(candles) < count:
            params = {"symbol": market_id, "interval": "1m", "startTime": since, "limit": 1000}
            async with session.get(f"{sim_url}/api/v3/klines", params=params) as response:
                page = await response.json()
            if not page:
                break
            candles += [[row[0], *(float(v) for v in row[1:6])] for row in page]
            since = page[-1][0] + MINUTE
    return candles[:count]


def start_random_walk(pipe: Pipeline, extra: list[str] | None = None) -> None:
    pipe.start_simulator(
        [
            "--symbols",
            ",".join(SYMBOLS),
            "--seed",
            "7",
            "--start",
            str(T0),
            "--end",
            str(T0 + N * MINUTE),
            *(extra or []),
        ]
    )
    pipe.extra_env.update(
        {
            "EXTRACTOR_SYMBOLS": ",".join(SYMBOLS),
            "EXTRACTOR_TIMEFRAMES": "1m",
            "EXTRACTOR_SINCE": "2024-01-01T00:00:00Z",
            "EXTRACTOR_PAGE_LIMIT": "100",
        }
    )


async def assert_ohlcv_equals_simulator(pipe: Pipeline, skip: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
    assert pipe.sim_url
    for symbol, market_id in SYMBOLS.items():
        served = await simulator_candles(pipe.sim_url, market_id, T0, N)
        assert len(served) == N
        expected = [c for c in served if (symbol, c[0]) not in skip]
        rows = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts, open, high, low, close, volume "
            "FROM ohlcv WHERE exchange = 'binance' AND symbol = $1 AND timeframe = '1m' ORDER BY ts",
            symbol,
        )
        assert [list(r.values()) for r in rows] == expected


async def test_candles_reach_ohlcv_through_all_four_services(pipeline: Pipeline) -> None:
    start_random_walk(pipeline)
    pipeline.start_all()
    await pipeline.wait_for(f"{2 * N} rows in ohlcv", lambda: _count_is(pipeline, 2 * N))

    await assert_ohlcv_equals_simulator(pipeline)
    assert (
        await pipeline.fetchval("SELECT count(*) FROM ohlcv WHERE batch_id NOT IN (SELECT batch_id FROM batches)") == 0
    )

    os.environ.update(S3_ENV)
    lake = await open_lake(pipeline.lake_url, pipeline.s3_endpoint_url)
    try:
        bronze = await lake.list("bronze/ohlcv/exchange=binance/")
        assert {k.split("/")[3] for k in bronze} == {"symbol=BTC-USDT", "symbol=ETH-USDT"}
        raw_candles = 0
        for key in bronze:
            ndjson = zstandard.ZstdDecompressor().decompress(await lake.get(key), max_output_size=1 << 30)
            raw_candles += pl.read_ndjson(io.BytesIO(ndjson))["payload"].list.len().sum()
        assert raw_candles >= 2 * N
        silver = await lake.list("silver/ohlcv/")
        frames = [pl.read_parquet(io.BytesIO(await lake.get(key))) for key in silver]
        silver_rows = pl.concat(frames).unique(subset=["symbol", "ts"])
        assert silver_rows.height == 2 * N
    finally:
        await lake.close()


async def _count_is(pipe: Pipeline, n: int) -> bool:
    return await pipe.ohlcv_count() == n
