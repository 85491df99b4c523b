"""Trades, tickers and books as the markets define them, before any wire format."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from cryptoflow_exchange_sim import (
    INTERVALS,
    CsvCandleMarket,
    KlineWindow,
    RandomWalkMarket,
    TradeWindow,
    book_snapshot,
    ticker_snapshot,
)
from cryptoflow_exchange_sim.random_walk import TRADE_STEP
from hypothesis import given, settings
from hypothesis import strategies as st

from .clients import CANDLES, TRADES

START_MS = 1_704_067_200_000
NOW_MS = START_MS + 3 * 3_600_000 + 12_345
MINUTE = INTERVALS["1m"]
WALK = RandomWalkMarket(["BTC/USDT"], seed=5, start_ms=START_MS)
LIVE_WALK = RandomWalkMarket(["BTC/USDT"], seed=5, start_ms=START_MS, live_trades=True)
RECORDED = CsvCandleMarket(CANDLES, TRADES)


def test_random_walk_trades_rebuild_each_closed_minute() -> None:
    candles = WALK.klines("BTCUSDT", MINUTE, KlineWindow(START_MS, None, 1000), NOW_MS)
    trades = WALK.trades("BTCUSDT", TradeWindow(start_ms=START_MS, limit=100_000), NOW_MS)
    by_minute: dict[int, list] = {}  # type: ignore[type-arg]
    for trade in trades:
        by_minute.setdefault(MINUTE.floor(trade.time_ms), []).append(trade)

    closed = [candle for candle in candles if candle.close_time < NOW_MS]
    assert len(closed) == len(candles) - 1 == 180
    assert sorted(by_minute) == [candle.open_time for candle in closed]
    for candle in closed:
        minute = by_minute[candle.open_time]
        prices = [Decimal(trade.price) for trade in minute]
        assert len(minute) == candle.trade_count >= 5
        assert (minute[0].price, minute[-1].price) == (candle.open, candle.close)
        assert (max(prices), min(prices)) == (Decimal(candle.high), Decimal(candle.low))
        assert sum(Decimal(trade.qty) for trade in minute) == Decimal(candle.volume)
        assert all(Decimal(trade.qty) > 0 for trade in minute)
        assert [trade.id for trade in minute] == [candle.open_time // 60_000 * 100 + k for k in range(len(minute))]
    assert all(a.id < b.id and a.time_ms < b.time_ms for a, b in pairwise(trades))


def test_random_walk_trade_windows_agree() -> None:
    everything = WALK.trades("BTCUSDT", TradeWindow(limit=100_000), NOW_MS)
    middle = everything[1000]

    assert WALK.trades("BTCUSDT", TradeWindow(from_id=middle.id, limit=5), NOW_MS) == everything[1000:1005]
    assert (
        WALK.trades("BTCUSDT", TradeWindow(to_id=middle.id, limit=5, newest_first=True), NOW_MS) == everything[995:1000]
    )
    assert WALK.trades("BTCUSDT", TradeWindow(limit=7, newest_first=True, skip=3), NOW_MS) == everything[-10:-3]
    window = TradeWindow(start_ms=middle.time_ms, end_ms=middle.time_ms, limit=5)
    assert WALK.trades("BTCUSDT", window, NOW_MS) == [middle]
    stats = WALK.trade_stats("BTCUSDT", START_MS, NOW_MS, NOW_MS)
    assert (stats.count, stats.first_id, stats.last_id, stats.last) == (
        len(everything), everything[0].id, everything[-1].id, everything[-1],
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    now=st.integers(START_MS, NOW_MS),
    back=st.integers(-60_000, 400_000),
    length=st.integers(0, 400_000),
    from_index=st.none() | st.integers(0, 20_000),
    limit=st.integers(1, 3000),
    live=st.booleans(),
)
def test_a_trade_window_is_the_plain_filter_of_every_trade(
    now: int, back: int, length: int, from_index: int | None, limit: int, live: bool
) -> None:
    """Windows skip into a minute by bisection (a live stream asks for its last 10 ms every 10 ms):
    whatever the bounds, the answer is what filtering every public trade gives."""
    walk = LIVE_WALK if live else WALK
    public = walk.trades("BTCUSDT", TradeWindow(limit=1_000_000), now)
    from_id = public[min(from_index, len(public) - 1)].id if public and from_index is not None else None
    window = TradeWindow(start_ms=now - back, end_ms=now - back + length, from_id=from_id, limit=limit)
    assert walk.trades("BTCUSDT", window, now) == [t for t in public if window.admits(t)][:limit]


def test_recorded_trades_are_served_verbatim() -> None:
    trades = RECORDED.trades("XRPETH", TradeWindow(limit=20_000), 2**62)
    lines = (TRADES / "XRPETH-trades.csv").read_text().splitlines()

    assert len(trades) == 12_477
    assert [
        ",".join([str(t.id), t.price, t.qty, t.quote_qty, str(t.time_ms), str(t.is_buyer_maker).lower()])
        for t in trades
    ] == lines
    assert RECORDED.trades("ADABTC", TradeWindow(), 2**62) == []
    # Trades recorded after "now" are not public yet.
    assert RECORDED.trades("XRPETH", TradeWindow(limit=20_000), trades[99].time_ms)[-1].time_ms == trades[99].time_ms


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("1,0.1,2,0.2,1000\n", "6 trade columns"),
        ("1,0.1,2,0.2,1000,maybe\n", "true or false"),
        ("2,0.1,2,0.2,1000,true\n1,0.1,2,0.2,1001,true\n", "ids must strictly increase"),
        ("1,0.1,2,0.2,1000,true\n2,0.1,2,0.2,999,true\n", "must not decrease"),
        ("1,abc,2,0.2,1000,true\n", "expected a number"),
    ],
)
def test_unusable_trade_files_are_refused(tmp_path: Path, content: str, complaint: str) -> None:
    (tmp_path / "BTCUSDT-trades.csv").write_text(content)

    with pytest.raises(ValueError, match=complaint):
        CsvCandleMarket(tmp_path)


def test_trade_files_in_a_second_directory(tmp_path: Path) -> None:
    (tmp_path / "candles").mkdir()
    (tmp_path / "trades").mkdir()
    (tmp_path / "candles" / "BTCUSDT-1m.csv").write_text("60000,1,2,0.5,1.5,10\n")
    (tmp_path / "trades" / "ETHBTC-trades.csv").write_text("7,0.05,1,0.05,60001,false\n")
    (tmp_path / "trades" / "BTCUSDT-1m.csv").write_text("")

    with pytest.raises(ValueError, match=r"BTCUSDT-trades\.csv"):
        CsvCandleMarket(tmp_path / "candles", tmp_path / "trades")
    (tmp_path / "trades" / "BTCUSDT-1m.csv").unlink()
    market = CsvCandleMarket(tmp_path / "candles", tmp_path / "trades")
    assert [listing.symbol_id for listing in market.listings()] == ["BTCUSDT", "ETHBTC"]
    assert [trade.id for trade in market.trades("ETHBTC", TradeWindow(), 10**6)] == [7]
    with pytest.raises(ValueError, match="does not exist"):
        CsvCandleMarket(tmp_path / "candles", tmp_path / "nowhere")


def test_ticker_covers_the_24h_before_the_last_closed_candle() -> None:
    now = START_MS + 2 * 86_400_000 + 5_000
    ticker = ticker_snapshot(WALK, "BTCUSDT", now)
    candles = WALK.klines("BTCUSDT", MINUTE, KlineWindow(now - 86_400_000 - 5_000, now - 60_001, 2000), now)

    assert len(candles) == 1440
    assert (ticker.open_time, ticker.close_time) == (candles[0].open_time, candles[-1].close_time)
    assert ticker.open == Decimal(candles[0].open)
    assert ticker.last == Decimal(candles[-1].close)
    assert ticker.high == max(Decimal(c.high) for c in candles)
    assert ticker.low == min(Decimal(c.low) for c in candles)
    assert ticker.volume == sum(Decimal(c.volume) for c in candles)
    assert ticker.trades.count == sum(c.trade_count for c in candles)
    assert ticker.prev_close == Decimal(candles[0].open)  # a random walk is continuous
    assert ticker.bid.price < ticker.last < ticker.ask.price


def test_recorded_ticker_and_book_use_the_last_recorded_candle() -> None:
    ticker = ticker_snapshot(RECORDED, "XRPETH", 2**62)
    book = book_snapshot(RECORDED, "XRPETH", 5000, 2**62)
    book_at_start = book_snapshot(RECORDED, "XRPETH", 5, 1_570_752_000_000 + 60_000)

    in_window = [t for t in RECORDED.trades("XRPETH", TradeWindow(limit=20_000), 2**62)
                 if ticker.open_time <= t.time_ms <= ticker.close_time]  # fmt: skip

    assert ticker.last == Decimal("0.00152787")
    assert ticker.close_time == 1_570_965_599_999
    assert ticker.open_time == ticker.close_time + 1 - 86_400_000
    assert (ticker.trades.count, ticker.trades.first_id, ticker.trades.last_id) == (
        len(in_window), in_window[0].id, 13_532_283,
    )  # fmt: skip
    assert len(book.asks) == len(book.bids) == 5000
    assert all(a.price > b.price for a, b in pairwise(book.bids))
    assert all(a.price < b.price for a, b in pairwise(book.asks))
    assert book.bids[-1].price > 0
    assert (book_at_start.bids[0].price, book_at_start.asks[0].price) == (Decimal("0.00141404"), Decimal("0.00141432"))
    assert book_snapshot(RECORDED, "XRPETH", 5, 0).bids == ()  # nothing has closed yet


async def test_a_minute_made_ahead_in_steps_is_that_minute_and_lets_the_event_loop_run() -> None:
    """A streaming simulator makes the next minute's trades ahead, a few hundred at a time, so its
    feeds keep sending meanwhile (made at once, ten busy minutes held them up for a second)."""
    busy = RandomWalkMarket(["BTC/USDT"], seed=5, start_ms=START_MS, trade_scale=100, live_trades=True)
    minute = START_MS + 30 * 60_000
    others = 0

    async def another_feed() -> None:
        nonlocal others
        while True:
            others += 1
            await asyncio.sleep(0)

    feed = asyncio.create_task(another_feed())
    await asyncio.sleep(0)
    await busy.prepare_minute("BTCUSDT", minute)
    feed.cancel()
    made_now = RandomWalkMarket(["BTC/USDT"], seed=5, start_ms=START_MS, trade_scale=100, live_trades=True)
    expected = made_now.trades("BTCUSDT", TradeWindow(start_ms=minute, end_ms=minute + 59_999, limit=10**6), 2**62)
    assert len(expected) > 4 * TRADE_STEP
    assert busy.trades("BTCUSDT", TradeWindow(start_ms=minute, end_ms=minute + 59_999, limit=10**6), 2**62) == expected
    assert others >= 4 * len(expected) // TRADE_STEP  # the loop ran between the steps of each pass
