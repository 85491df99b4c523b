"""Synthetic candles: the same numbers whatever the paging, OHLC-consistent, Binance-aligned."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

from cryptoflow_exchange_sim import RandomWalkMarket, running_simulator

from .binance_client import Candle, binance_client, fetch_all_ohlcv, get_json

DAY_MS = 86_400_000
START_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
SYMBOLS = ["BTC/USDT", "ETH/BTC"]


def _market(seed: int = 42, end_ms: int | None = START_MS + DAY_MS) -> RandomWalkMarket:
    return RandomWalkMarket(SYMBOLS, seed=seed, start_ms=START_MS, end_ms=end_ms)


async def _one_day_of_minutes(market: RandomWalkMarket, page_limit: int, symbol: str = "BTC/USDT") -> list[Candle]:
    async with running_simulator(market) as base_url, binance_client(base_url) as exchange:
        return await fetch_all_ohlcv(exchange, symbol, "1m", since=START_MS, page_limit=page_limit)


async def test_lists_the_configured_symbols() -> None:
    async with running_simulator(_market()) as base_url, binance_client(base_url) as exchange:
        markets = await exchange.load_markets()

    assert set(markets) == set(SYMBOLS)
    assert markets["ETH/BTC"]["id"] == "ETHBTC"


async def test_same_candles_across_pages_and_restarts() -> None:
    first = await _one_day_of_minutes(_market(), page_limit=1000)
    second = await _one_day_of_minutes(_market(), page_limit=240)

    assert len(first) == 1440
    assert [candle[0] for candle in first] == list(range(START_MS, START_MS + DAY_MS, 60_000))
    assert first == second


async def test_seed_and_symbol_change_the_walk() -> None:
    async with running_simulator(_market(seed=1)) as one, running_simulator(_market(seed=2)) as two:
        params = {"symbol": "BTCUSDT", "interval": "1h", "startTime": str(START_MS)}
        _, seed_one = await get_json(one, "/api/v3/klines", params)
        _, seed_two = await get_json(two, "/api/v3/klines", params)
        _, other_symbol = await get_json(one, "/api/v3/klines", {**params, "symbol": "ETHBTC"})

    assert len(seed_one) == len(seed_two) == 24
    assert seed_one != seed_two
    assert [row[4] for row in seed_one] != [row[4] for row in other_symbol]


async def test_candles_are_ohlc_consistent_and_continuous() -> None:
    market = _market(end_ms=START_MS + 400 * DAY_MS)
    by_timeframe: dict[str, list[Candle]] = {}
    async with running_simulator(market) as base_url, binance_client(base_url) as exchange:
        for timeframe in ["1s", "1m", "5m", "1h", "4h", "1d", "3d", "1w", "1M"]:
            by_timeframe[timeframe] = await exchange.fetch_ohlcv("ETH/BTC", timeframe, since=START_MS, limit=300)

    for timeframe, candles in by_timeframe.items():
        assert candles, timeframe
        for timestamp, open_, high, low, close, volume in candles:
            assert 0 < low <= min(open_, close) <= max(open_, close) <= high, (timeframe, timestamp)
            assert volume >= 0
        # The price is one function of time, so each close is the next candle's open.
        for before, after in pairwise(candles):
            assert before[4] == after[1], (timeframe, after[0])


async def test_open_times_follow_binance_calendar() -> None:
    market = _market(end_ms=START_MS + 400 * DAY_MS)
    async with running_simulator(market) as base_url, binance_client(base_url) as exchange:
        weeks = await exchange.fetch_ohlcv("BTC/USDT", "1w", since=START_MS)
        months = await exchange.fetch_ohlcv("BTC/USDT", "1M", since=START_MS)

    week_starts = [datetime.fromtimestamp(candle[0] / 1000, tz=UTC) for candle in weeks]
    month_starts = [datetime.fromtimestamp(candle[0] / 1000, tz=UTC) for candle in months]
    assert all(moment.weekday() == 0 and moment.hour == 0 for moment in week_starts)
    assert [(moment.year, moment.month, moment.day) for moment in month_starts[:3]] == [
        (2024, 1, 1),
        (2024, 2, 1),
        (2024, 3, 1),
    ]
    assert len(months) == 14  # 400 days from 2024-01-01 reach into February 2025


async def test_the_forming_candle_is_served_last() -> None:
    now = START_MS + 150_000
    market = RandomWalkMarket(["BTC/USDT"], seed=42, start_ms=START_MS)
    async with running_simulator(market, clock=lambda: now) as base_url:
        _, minutes = await get_json(base_url, "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"})
        _, hours = await get_json(base_url, "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h"})
        _, server_time = await get_json(base_url, "/api/v3/time")

    assert [row[0] for row in minutes] == [START_MS, START_MS + 60_000, START_MS + 120_000]
    assert minutes[-1][6] == START_MS + 179_999 > now
    assert [row[0] for row in hours] == [START_MS]
    assert server_time == {"serverTime": now}


async def test_a_forming_candle_keeps_its_open_and_settles_on_close() -> None:
    clock = {"now": START_MS + 30_000}
    market = RandomWalkMarket(["BTC/USDT"], seed=42, start_ms=START_MS)
    params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(START_MS), "limit": "1"}
    async with running_simulator(market, clock=lambda: clock["now"]) as base_url:
        _, forming = await get_json(base_url, "/api/v3/klines", params)
        clock["now"] = START_MS + 10 * 60_000
        _, closed = await get_json(base_url, "/api/v3/klines", params)

    assert forming[0][1] == closed[0][1]
    assert float(forming[0][5]) < float(closed[0][5])
