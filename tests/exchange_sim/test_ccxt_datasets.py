"""Each exchange x dataset, read through ccxt's unmodified classes, equals what the market defines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest
from cryptoflow_exchange_sim import (
    INTERVALS,
    KlineWindow,
    RandomWalkMarket,
    TradeWindow,
    book_snapshot,
    running_simulator,
    ticker_snapshot,
)

from .clients import EXCHANGES, ccxt_client

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NOW_MS = START_MS + 2 * 86_400_000 + 30_500  # two days in, the 1m candle half formed
MINUTE = INTERVALS["1m"]
MARKET = RandomWalkMarket(["BTC/USDT", "ETH/BTC"], seed=7, start_ms=START_MS)
MARKET_IDS = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "gate": "BTC_USDT"}


@pytest.fixture(scope="module")
async def clients() -> AsyncIterator[dict[str, Any]]:
    """One ccxt instance per exchange for the module, markets loaded once."""
    async with (
        running_simulator(MARKET, clock=lambda: NOW_MS, exchanges=EXCHANGES) as base_url,
        ccxt_client("binance", base_url) as binance,
        ccxt_client("bybit", base_url) as bybit,
        ccxt_client("gate", base_url) as gate,
    ):
        exchanges = {"binance": binance, "bybit": bybit, "gate": gate}
        for exchange in exchanges.values():
            await exchange.load_markets()
        yield exchanges


def _floats(klines: list) -> list[list[float]]:  # type: ignore[type-arg]
    return [[kline.open_time, *(float(value) for value in kline[1:6])] for kline in klines]


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_load_markets(clients: dict[str, Any], exchange_id: str) -> None:
    exchange = clients[exchange_id]
    markets = exchange.markets

    assert set(markets) == {"BTC/USDT", "ETH/BTC"}
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["active"]) == (
        MARKET_IDS[exchange_id], "BTC", "USDT", True, True,
    )  # fmt: skip


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_ohlcv_with_since_and_limit(clients: dict[str, Any], exchange_id: str) -> None:
    since = START_MS + 100 * 60_000
    exchange = clients[exchange_id]
    minutes = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=50)
    hours = await exchange.fetch_ohlcv("ETH/BTC", "1h", since=START_MS, limit=24)

    assert minutes == _floats(MARKET.klines("BTCUSDT", MINUTE, KlineWindow(since, None, 50), NOW_MS))
    assert hours == _floats(MARKET.klines("ETHBTC", INTERVALS["1h"], KlineWindow(START_MS, None, 24), NOW_MS))


@pytest.mark.parametrize(("exchange_id", "default_limit"), [("binance", 500), ("bybit", 200), ("gate", 1000)])
async def test_ohlcv_without_since_ends_with_the_forming_candle(
    clients: dict[str, Any], exchange_id: str, default_limit: int
) -> None:
    exchange = clients[exchange_id]
    candles = await exchange.fetch_ohlcv("BTC/USDT", "1m")

    assert candles == _floats(MARKET.klines("BTCUSDT", MINUTE, KlineWindow(None, None, default_limit), NOW_MS))
    assert candles[-1][0] == MINUTE.floor(NOW_MS)


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_ticker(clients: dict[str, Any], exchange_id: str) -> None:
    exchange = clients[exchange_id]
    ticker = await exchange.fetch_ticker("BTC/USDT")

    expected = ticker_snapshot(MARKET, "BTCUSDT", NOW_MS)
    assert expected.close_time == MINUTE.floor(NOW_MS) - 1  # the last closed minute
    assert ticker["symbol"] == "BTC/USDT"
    assert ticker["last"] == float(expected.last)
    assert (ticker["bid"], ticker["ask"]) == (float(expected.bid.price), float(expected.ask.price))
    assert ticker["bid"] < ticker["last"] < ticker["ask"]
    assert (ticker["high"], ticker["low"]) == (float(expected.high), float(expected.low))
    assert ticker["baseVolume"] == float(expected.volume)
    assert ticker["quoteVolume"] == float(expected.quote_volume)
    if exchange_id == "gate":
        # Gate sends no open, no sizes and no time; ccxt derives open from change_percentage.
        assert ticker["percentage"] == float(f"{expected.change_ratio() * 100:.2f}")
        assert (ticker["bidVolume"], ticker["askVolume"], ticker["timestamp"]) == (None, None, None)
        return
    assert ticker["open"] == float(expected.open)
    assert (ticker["bidVolume"], ticker["askVolume"]) == (float(expected.bid.size), float(expected.ask.size))
    assert ticker["timestamp"] == (expected.close_time if exchange_id == "binance" else None)


@pytest.mark.parametrize(("exchange_id", "depth"), [("binance", 20), ("bybit", 50), ("gate", 20)])
async def test_order_book(clients: dict[str, Any], exchange_id: str, depth: int) -> None:
    exchange = clients[exchange_id]
    book = await exchange.fetch_order_book("ETH/BTC", depth)

    expected = book_snapshot(MARKET, "ETHBTC", depth, NOW_MS)
    assert book["bids"] == [[float(level.price), float(level.size)] for level in expected.bids]
    assert book["asks"] == [[float(level.price), float(level.size)] for level in expected.asks]
    assert len(book["bids"]) == len(book["asks"]) == depth
    assert all(high[0] > low[0] for high, low in pairwise(book["bids"]))
    assert all(low[0] < high[0] for low, high in pairwise(book["asks"]))
    last = float(ticker_snapshot(MARKET, "ETHBTC", NOW_MS).last)
    assert book["bids"][0][0] < last < book["asks"][0][0]
    assert book["timestamp"] == (None if exchange_id == "binance" else NOW_MS)
    assert book["nonce"] == (None if exchange_id == "bybit" else expected.update_id)


@pytest.mark.parametrize(("exchange_id", "limit"), [("binance", 200), ("bybit", 60), ("gate", 200)])
async def test_recent_trades(clients: dict[str, Any], exchange_id: str, limit: int) -> None:
    exchange = clients[exchange_id]
    trades = await exchange.fetch_trades("BTC/USDT", limit=limit)

    expected = MARKET.trades("BTCUSDT", TradeWindow(limit=limit, newest_first=True), NOW_MS)
    assert len(expected) == limit
    assert [(t["id"], t["timestamp"], t["price"], t["amount"], t["side"]) for t in trades] == [
        (str(e.id), e.time_ms, float(e.price), float(e.qty), "sell" if e.is_buyer_maker else "buy") for e in expected
    ]
    assert trades[-1]["timestamp"] < MINUTE.floor(NOW_MS)  # the forming minute has no public trades yet
