"""Candles → resampled candles and indicators in the warehouse, through all four services."""

from __future__ import annotations

import math
from itertools import pairwise

from .harness import Pipeline
from .test_end_to_end import MINUTE, SYMBOLS, T0, N, simulator_candles, start_random_walk

FIVE = 5 * MINUTE


def resample(candles: list[list[float]]) -> dict[int, tuple[float, ...]]:
    """Independent 1m → 5m: open first, high max, low min, close last, volume sum."""
    buckets: dict[int, list[list[float]]] = {}
    for candle in candles:
        buckets.setdefault(int(candle[0]) // FIVE * FIVE, []).append(candle)
    return {
        ts: (rows[0][1], max(r[2] for r in rows), min(r[3] for r in rows), rows[-1][4], math.fsum(r[5] for r in rows))
        for ts, rows in buckets.items()
        if len(rows) == 5
    }


def wilder_rsi(closes: list[float], n: int = 14) -> list[float | None]:
    changes = [b - a for a, b in pairwise(closes)]
    out: list[float | None] = [None] * len(closes)
    gain = sum(max(c, 0.0) for c in changes[:n]) / n
    loss = sum(max(-c, 0.0) for c in changes[:n]) / n
    out[n] = 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)
    for i in range(n, len(changes)):
        gain = (gain * (n - 1) + max(changes[i], 0.0)) / n
        loss = (loss * (n - 1) + max(-changes[i], 0.0)) / n
        out[i + 1] = 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)
    return out


async def test_resampled_candles_and_indicators_reach_the_warehouse(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    pipe.extra_env.update({"TRANSFORMER_RESAMPLE_TO": "5m", "TRANSFORMER_INDICATORS": "true"})
    pipe.start_all()

    seen: list[tuple[int, int, int]] = []

    async def complete() -> bool:
        native = await pipe.fetchval("SELECT count(*) FROM ohlcv WHERE timeframe = '1m'", default=0)
        resampled = await pipe.fetchval("SELECT count(*) FROM ohlcv WHERE resampled AND final", default=0)
        indicators = await pipe.fetchval("SELECT count(*) FROM indicators WHERE timeframe = '1m'", default=0)
        seen.append((native, resampled, indicators))
        return seen[-1] == (2 * N, 2 * N // 5, 2 * N)

    try:
        await pipe.wait_for("native, resampled and indicator rows", complete, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"(native, resampled, indicators) last seen {seen[-1:]}") from exc
    assert pipe.sim_url
    for symbol, market_id in SYMBOLS.items():
        served = await simulator_candles(pipe.sim_url, market_id, T0, N)
        expected = resample(served)  # type: ignore[arg-type]
        rows = await pipe.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts, open, high, low, close, volume FROM ohlcv "
            "WHERE symbol = $1 AND timeframe = '5m' AND resampled ORDER BY ts",
            symbol,
        )
        assert len(rows) == len(expected) == N // 5
        for row in rows:
            want = expected[row["ts"]]
            assert [row["open"], row["high"], row["low"], row["close"]] == list(want[:4])
            assert math.isclose(row["volume"], want[4], rel_tol=1e-12)

        rsi = wilder_rsi([float(c[4]) for c in served])  # type: ignore[arg-type]
        stored = await pipe.fetch(
            "SELECT rsi_14 FROM indicators WHERE symbol = $1 AND timeframe = '1m' ORDER BY ts", symbol
        )
        assert len(stored) == N
        for got, want_rsi in zip((r["rsi_14"] for r in stored), rsi, strict=True):
            if want_rsi is None:
                assert got is None
            else:
                assert math.isclose(got, want_rsi, rel_tol=1e-9)
