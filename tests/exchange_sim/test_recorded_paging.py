"""Recorded candles and trades, paged through ccxt the way each exchange pages: nothing lost,
nothing doubled, gaps left as gaps."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from cryptoflow_exchange_sim import CsvCandleMarket, Trade, running_simulator
from cryptoflow_exchange_sim.binance import aggregate

from .clients import CANDLES, EXCHANGES, TRADES, ccxt_client

with (CANDLES / "XRPETH-1m.csv").open(newline="") as _handle:
    CANDLE_ROWS = list(csv.reader(_handle))
with (TRADES / "XRPETH-trades.csv").open(newline="") as _handle:
    TRADE_ROWS = [
        Trade(int(row[0]), row[1], row[2], row[3], int(row[4]), row[5] == "true") for row in csv.reader(_handle)
    ]
EXPECTED_CANDLES = [[int(row[0]), *(float(value) for value in row[1:6])] for row in CANDLE_ROWS]
FIRST_OPEN, LAST_OPEN = EXPECTED_CANDLES[0][0], EXPECTED_CANDLES[-1][0]
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
async def recorded_all_url() -> AsyncIterator[str]:
    async with running_simulator(CsvCandleMarket(CANDLES, TRADES), exchanges=EXCHANGES) as base_url:
        yield base_url


async def _page_by_last_candle(exchange: Any, limit: int) -> list[list[float]]:
    """Binance and Bybit: the oldest `limit` candles from `since`; an empty page is the end."""
    candles: list[list[float]] = []
    since = 0
    while True:
        page = await exchange.fetch_ohlcv("XRP/ETH", "1m", since=since, limit=limit)
        if not page:
            return candles
        candles.extend(page)
        since = int(page[-1][0]) + 1


async def _page_by_window(exchange: Any, limit: int) -> list[list[float]]:
    """Gate: ccxt asks for the `limit`-slot window [since, since + (limit-1) * 1m]; a window can be
    empty inside a long gap, so the cursor moves by whole windows up to the known end."""
    candles: list[list[float]] = []
    since = FIRST_OPEN
    while since <= LAST_OPEN:
        candles.extend(await exchange.fetch_ohlcv("XRP/ETH", "1m", since=since, limit=limit))
        since += limit * MINUTE_MS
    return candles


@pytest.mark.parametrize(("exchange_id", "limit"), [("binance", 1000), ("bybit", 1000), ("bybit", 333), ("gate", 1000)])
async def test_ohlcv_paging_returns_every_recorded_candle(recorded_all_url: str, exchange_id: str, limit: int) -> None:
    async with ccxt_client(exchange_id, recorded_all_url) as exchange:
        if exchange_id == "gate":
            candles = await _page_by_window(exchange, limit)
        else:
            candles = await _page_by_last_candle(exchange, limit)

    assert candles == EXPECTED_CANDLES
    assert sum(1 for before, after in pairwise(candles) if after[0] - before[0] != MINUTE_MS) == 676


async def test_binance_agg_trades_paged_by_from_id(recorded_all_url: str) -> None:
    expected = aggregate(TRADE_ROWS)
    trades: list[dict[str, Any]] = []
    from_id = 0
    async with ccxt_client("binance", recorded_all_url) as exchange:
        while page := await exchange.fetch_trades("XRP/ETH", limit=1000, params={"fromId": from_id}):
            trades.extend(page)
            from_id = int(page[-1]["id"]) + 1

    assert len(expected) == 12415  # 12,477 trades, some filled at one time, price and side
    assert [t["id"] for t in trades] == [str(group[0].id) for group in expected]
    assert [(t["timestamp"], t["price"]) for t in trades] == [(g[0].time_ms, float(g[0].price)) for g in expected]
    assert [t["info"]["q"] for t in trades] == [str(sum(Decimal(x.qty) for x in g)) for g in expected]
    assert [(t["info"]["f"], t["info"]["l"]) for t in trades] == [(g[0].id, g[-1].id) for g in expected]


async def test_binance_historical_trades_paged_by_from_id(recorded_all_url: str) -> None:
    trades: list[dict[str, Any]] = []
    params: dict[str, Any] = {"fetchTradesMethod": "publicGetHistoricalTrades", "fromId": TRADE_ROWS[0].id}
    async with ccxt_client("binance", recorded_all_url) as exchange:
        # ccxt sends X-MBX-APIKEY on historicalTrades and refuses to call it without a key;
        # the simulator accepts any key.
        exchange.apiKey = "simulator"
        while page := await exchange.fetch_trades("XRP/ETH", limit=1000, params=params):
            trades.extend(page)
            params["fromId"] = int(page[-1]["id"]) + 1

    assert [(t["id"], t["timestamp"], t["price"], t["amount"], t["side"]) for t in trades] == [
        (str(r.id), r.time_ms, float(r.price), float(r.qty), "sell" if r.is_buyer_maker else "buy") for r in TRADE_ROWS
    ]
    assert [t["info"]["qty"] for t in trades] == [row.qty for row in TRADE_ROWS]  # recorded text, verbatim


async def test_binance_agg_trades_paged_by_since(recorded_all_url: str) -> None:
    """ccxt turns `since` into a one-hour [startTime, startTime + 1h] window. A full page may end
    inside a millisecond, so the next page starts at that millisecond and repeats are dropped by id;
    a short page means the hour is done."""
    start, end = TRADE_ROWS[0].time_ms, TRADE_ROWS[0].time_ms + 4 * 3_600_000
    expected = [g for g in aggregate(TRADE_ROWS) if start <= g[0].time_ms <= end]
    seen: dict[str, dict[str, Any]] = {}
    since = start
    async with ccxt_client("binance", recorded_all_url) as exchange:
        while since <= end:
            page = await exchange.fetch_trades("XRP/ETH", since=since, limit=200)
            seen.update((t["id"], t) for t in page if t["timestamp"] <= end)
            since = page[-1]["timestamp"] if len(page) == 200 else since + 3_600_000 + 1

    assert sorted(seen, key=int) == [str(g[0].id) for g in expected]


async def test_gate_trades_paged_by_last_id_both_ways(recorded_all_url: str) -> None:
    forward: list[dict[str, Any]] = []
    last_id = 0
    async with ccxt_client("gate", recorded_all_url) as exchange:
        while page := await exchange.fetch_trades(
            "XRP/ETH", limit=1000, params={"last_id": last_id, "reverse": "false"}
        ):
            forward.extend(page)
            last_id = int(page[-1]["id"])
        backward: list[dict[str, Any]] = []
        last_id = TRADE_ROWS[-1].id + 1
        for _ in range(3):
            page = await exchange.fetch_trades("XRP/ETH", limit=500, params={"last_id": last_id, "reverse": "true"})
            backward = page + backward
            last_id = int(page[0]["id"])

    assert [(t["id"], t["timestamp"], t["price"], t["amount"]) for t in forward] == [
        (str(r.id), r.time_ms, float(r.price), float(r.qty)) for r in TRADE_ROWS
    ]
    assert [t["id"] for t in backward] == [str(r.id) for r in TRADE_ROWS[-1500:]]


async def test_gate_trades_by_time_range_and_page(recorded_all_url: str) -> None:
    start_s = TRADE_ROWS[0].time_ms // 1000
    end_s = start_s + 3600
    expected = [r for r in TRADE_ROWS if start_s * 1000 <= r.time_ms <= end_s * 1000 + 999]
    pages = []
    async with ccxt_client("gate", recorded_all_url) as exchange:
        for page_number in (1, 2, 3):
            params = {"from": start_s, "to": end_s, "page": page_number}
            pages.append(await exchange.fetch_trades("XRP/ETH", limit=100, params=params))

    # Pages count from the newest trade in the range, like Gate's.
    assert [t["id"] for t in pages[0]] == [str(r.id) for r in expected[-100:]]
    assert [t["id"] for t in pages[1]] == [str(r.id) for r in expected[-200:-100]]
    assert [t["id"] for t in pages[2]] == [str(r.id) for r in expected[-300:-200]]


async def test_bybit_serves_only_the_newest_60(recorded_all_url: str) -> None:
    async with ccxt_client("bybit", recorded_all_url) as exchange:
        trades = await exchange.fetch_trades("XRP/ETH", limit=1000)

    assert [t["id"] for t in trades] == [str(r.id) for r in TRADE_ROWS[-60:]]
