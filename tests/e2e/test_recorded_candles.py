"""Real Binance candles, served from recorded files, land in ohlcv value for value, gaps kept."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import polars as pl

from .harness import Pipeline

FIXTURES = Path(__file__).parent.parent / "fixtures" / "candles" / "binance"
FILES = {("XRP/ETH", "1m"): "XRPETH-1m.csv", ("ADA/BTC", "5m"): "ADABTC-5m.csv"}


def recorded(name: str) -> pl.DataFrame:
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    return pl.read_csv(FIXTURES / name, has_header=False, schema=schema)


async def test_recorded_candles_land_value_for_value_with_real_gaps_left_as_gaps(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    pipe.start_simulator(["--data", str(FIXTURES)])
    pipe.extra_env.update(
        {
            "EXTRACTOR_SYMBOLS": "XRP/ETH,ADA/BTC",
            "EXTRACTOR_TIMEFRAMES": "1m,5m",
            "EXTRACTOR_SINCE": "2018-01-10T00:00:00Z",
        }
    )
    pipe.start_all()
    expected = {key: recorded(name) for key, name in FILES.items()}
    total = sum(frame.height for frame in expected.values())

    async def all_loaded() -> bool:
        return await pipe.ohlcv_count() == total

    await pipe.wait_for(f"{total} recorded candles in ohlcv", all_loaded, timeout=120)

    for (symbol, timeframe), frame in expected.items():
        rows = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
            "WHERE exchange = 'binance' AND symbol = $1 AND timeframe = $2 ORDER BY ts",
            symbol,
            timeframe,
        )
        assert [tuple(r.values()) for r in rows] == frame.rows(), f"{symbol} {timeframe} differs from the recording"
        step = 60_000 if timeframe == "1m" else 300_000
        holes = sum(1 for a, b in pairwise(frame["ts"]) if b - a != step)
        assert holes > 0, "the recording has real gaps; they must stay gaps"
    # Nothing invented for the timeframes that have no recording.
    assert (
        await pipe.fetchval(
            "SELECT count(*) FROM ohlcv WHERE (symbol, timeframe) IN (('XRP/ETH', '5m'), ('ADA/BTC', '1m'))"
        )
        == 0
    )
