"""Every dataset's job on every exchange publishes ccxt's result as returned, byte for byte.

The jobs reason with typed views of a page (validation.py); what they publish must still be
ccxt's own objects, untouched, so a snapshot's payload (and its event id) never depends on them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cryptoflow_contracts import Dataset, RawSnapshot, timeframe_ms
from cryptoflow_exchange_sim import EXCHANGES as SIMULATED
from cryptoflow_exchange_sim import RandomWalkMarket, running_simulator
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.ohlcv import OhlcvJob
from cryptoflow_extractor.snapshots import OrderBookJob, TickerJob
from cryptoflow_extractor.trades import TradesJob

from .conftest import Recorder, make_session

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NOW_MS = START_MS + 2 * 86_400_000 + 30_500  # two days in, a 1m candle half formed
HOUR = timeframe_ms("1h")
EXCHANGES = SIMULATED


def published(snapshot: RawSnapshot) -> bytes:
    return orjson.dumps(orjson.loads(snapshot.to_json())["payload"])


def as_json(value: Any) -> bytes:
    return orjson.dumps(value)


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_every_job_publishes_what_ccxt_returned(exchange_id: str, checkpoints: CheckpointStore) -> None:
    market = RandomWalkMarket(["BTC/USDT", "ETH/BTC"], seed=7, start_ms=START_MS)
    recorder = Recorder()
    async with running_simulator(market, clock=lambda: NOW_MS, exchanges=EXCHANGES) as url:
        session = make_session(url, recorder, exchange_id)
        exchange = session.exchange
        try:
            await exchange.load_markets()
            ohlcv = OhlcvJob(session, "BTC/USDT", "1h", START_MS, None, 200, checkpoints)
            counts = {
                Dataset.OHLCV: await ohlcv.catch_up(now_ms=lambda: NOW_MS),
                Dataset.TICKER: await TickerJob(session, "BTC/USDT").catch_up(now_ms=lambda: NOW_MS),
                Dataset.ORDERBOOK: await OrderBookJob(session, "ETH/BTC", 20).catch_up(now_ms=lambda: NOW_MS),
                Dataset.TRADES: await TradesJob(session, "BTC/USDT", None, 1000, checkpoints).catch_up(
                    now_ms=lambda: NOW_MS
                ),
            }
            # The same calls again, straight through ccxt: the clock is frozen, so the same answers.
            candles = await exchange.fetch_ohlcv("BTC/USDT", "1h", START_MS, 1000)
            ticker = await exchange.fetch_ticker("BTC/USDT")
            book = await exchange.fetch_order_book("ETH/BTC", 20)
            trades = await exchange.fetch_trades("BTC/USDT", None, 1000)
        finally:
            await exchange.close()

    assert recorder.dead_letters == [] and recorder.gaps == []
    by_dataset: dict[Dataset, list[RawSnapshot]] = {}
    for snapshot in recorder.snapshots:
        by_dataset.setdefault(snapshot.dataset, []).append(snapshot)

    closed = [c for c in candles if c[0] + HOUR <= NOW_MS]
    assert counts[Dataset.OHLCV] == len(closed) == 48
    published_candles = [row for s in by_dataset[Dataset.OHLCV] for row in orjson.loads(published(s))]
    assert as_json(published_candles) == as_json(closed)
    assert by_dataset[Dataset.OHLCV][0].first_ts == START_MS

    (ticker_snapshot,) = by_dataset[Dataset.TICKER]
    assert published(ticker_snapshot) == as_json(ticker)
    if ticker["timestamp"] is not None:
        assert ticker_snapshot.first_ts == ticker_snapshot.last_ts == ticker["timestamp"]

    (book_snapshot,) = by_dataset[Dataset.ORDERBOOK]
    assert published(book_snapshot) == as_json(book)

    trade_snapshots = by_dataset[Dataset.TRADES]
    published_trades = [trade for s in trade_snapshots for trade in orjson.loads(published(s))]
    assert counts[Dataset.TRADES] == len(published_trades) == len(trades) > 0
    by_id = {trade["id"]: trade for trade in trades}
    assert all(as_json(trade) == as_json(by_id[trade["id"]]) for trade in published_trades)
    assert trade_snapshots[0].first_ts == min(t["timestamp"] for t in trades)
    assert trade_snapshots[-1].last_ts == max(t["timestamp"] for t in trades)
