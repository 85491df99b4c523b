"""The simulator's answers have the shape of the exchanges' real recorded answers
(tests/fixtures/exchanges, from ccxt's static response tests), and ccxt parses them into the
same fields it parsed the real ones into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptoflow_exchange_sim import RandomWalkMarket, running_simulator

from .clients import EXCHANGES, ccxt_client, http_get, recorded

START_MS = 1_704_067_200_000
NOW_MS = START_MS + 86_400_000 + 90_000
MARKET = RandomWalkMarket(["BTC/USDT"], seed=11, start_ms=START_MS)
SINCE = START_MS + 3_600_000

# The simulator's request for the same thing each recorded entry asked for.
REQUESTS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("binance", "fetchOHLCV"): (
        "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1h", "startTime": str(SINCE), "limit": "3"},
    ),
    ("binance", "fetchOrderBook"): ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "2"}),
    ("binance", "fetchTicker"): ("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}),
    ("binance", "fetchTrades"): ("/api/v3/aggTrades", {"symbol": "BTCUSDT", "limit": "1"}),
    ("bybit", "fetchOHLCV"): (
        "/v5/market/kline", {"category": "spot", "symbol": "BTCUSDT", "interval": "60", "start": str(SINCE), "limit": "3"},
    ),
    ("bybit", "fetchOrderBook"): ("/v5/market/orderbook", {"category": "spot", "symbol": "BTCUSDT", "limit": "2"}),
    ("bybit", "fetchTicker"): ("/v5/market/tickers", {"category": "spot", "symbol": "BTCUSDT"}),
    ("bybit", "fetchTrades"): ("/v5/market/recent-trade", {"category": "spot", "symbol": "BTCUSDT", "limit": "1"}),
    ("gate", "fetchOHLCV"): ("/api/v4/spot/candlesticks", {"currency_pair": "BTC_USDT", "interval": "1h", "limit": "1"}),
    ("gate", "fetchTicker"): ("/api/v4/spot/tickers", {"currency_pair": "BTC_USDT"}),
    ("gate", "fetchTrades"): ("/api/v4/spot/trades", {"currency_pair": "BTC_USDT", "limit": "1"}),
}  # fmt: skip
# Keys a recorded entry has only because it was recorded on a contract market, not spot.
CONTRACT_ONLY = {"indexPrice", "markPrice", "prevPrice1h", "openInterest", "openInterestValue", "fundingRate",
                 "nextFundingTime", "predictedDeliveryPrice", "basisRate", "deliveryFeeRate", "deliveryTime", "basis"}  # fmt: skip
SPOT_ONLY = {"usdIndexPrice"}


def shape(value: Any) -> Any:
    """Keys and nesting kept, scalars reduced to their kind. ccxt's fixtures store some integers
    as strings, so an integer and a string are one kind; a float (never sent) is another."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(item, dict | list) for item in value):
            return ["records", shape(value[0])]  # records: the first stands for all
        return [shape(item) for item in value]  # a positional row
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "float"
    if isinstance(value, int | str):
        return "value"
    return type(value).__name__


def drop_keys(value: Any, keys: set[str]) -> Any:
    if isinstance(value, dict):
        return {key: drop_keys(item, keys) for key, item in value.items() if key not in keys}
    if isinstance(value, list):
        return [drop_keys(item, keys) for item in value]
    return value


@pytest.fixture(scope="module")
async def walk_url() -> AsyncIterator[str]:
    async with running_simulator(MARKET, clock=lambda: NOW_MS, exchanges=EXCHANGES) as base_url:
        yield base_url


@pytest.fixture(scope="module")
async def clients(walk_url: str) -> AsyncIterator[dict[str, Any]]:
    async with (
        ccxt_client("binance", walk_url) as binance,
        ccxt_client("bybit", walk_url) as bybit,
        ccxt_client("gate", walk_url) as gate,
    ):
        yield {"binance": binance, "bybit": bybit, "gate": gate}


@pytest.mark.parametrize(("exchange_id", "method"), sorted(REQUESTS))
async def test_raw_answer_has_the_recorded_shape(walk_url: str, exchange_id: str, method: str) -> None:
    path, params = REQUESTS[(exchange_id, method)]
    status, body = await http_get(walk_url, path, params)
    real = recorded(exchange_id, method)["httpResponse"]

    assert status == 200
    if (exchange_id, method) == ("bybit", "fetchTicker"):
        # Recorded on a linear contract; a spot ticker lacks the contract fields and adds usdIndexPrice.
        real, body = drop_keys(real, CONTRACT_ONLY), drop_keys(body, SPOT_ONLY)
    assert shape(body) == shape(real)


def _filled(parsed: Any) -> Any:
    """Which unified fields ccxt filled in (not None), record by record."""
    if isinstance(parsed, list):
        return [_filled(item) for item in parsed[:1]]
    if isinstance(parsed, dict):
        return sorted(key for key, value in parsed.items() if value is not None and key != "info")
    return type(parsed).__name__


@pytest.mark.parametrize(("exchange_id", "method"), sorted(REQUESTS))
async def test_ccxt_fills_the_same_fields_as_from_the_real_answer(
    clients: dict[str, Any], exchange_id: str, method: str
) -> None:
    entry = recorded(exchange_id, method)
    exchange = clients[exchange_id]
    if method == "fetchOHLCV":
        parsed = await exchange.fetch_ohlcv("BTC/USDT", "1h", since=SINCE, limit=entry["input"][3])
    elif method == "fetchOrderBook":
        parsed = await exchange.fetch_order_book("BTC/USDT", entry["input"][1])
    elif method == "fetchTicker":
        parsed = await exchange.fetch_ticker("BTC/USDT")
    else:
        parsed = await exchange.fetch_trades("BTC/USDT", limit=entry["input"][2])

    expected = entry["parsedResponse"]
    if method == "fetchOHLCV":
        assert [[type(value) in (int, float) for value in row] for row in parsed] == [[True] * 6] * len(expected)
        return
    if (exchange_id, method) == ("bybit", "fetchTicker"):
        expected = {key: value for key, value in expected.items() if key not in CONTRACT_ONLY}
    assert _filled(parsed) == _filled(expected)
