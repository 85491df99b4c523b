"""Stream jobs against the simulator's websockets, read through ccxt pro, with real JetStream KV.

What a stream job publishes to RAW must be the exchange's trade log exactly — across a dropped
connection and a stall — and its order books must be the exchange's true book at the sequence
number they carry, never crossed, resynchronised after every injected gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cryptoflow_contracts import Dataset
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket
from cryptoflow_exchange_sim.live import LiveMarket
from cryptoflow_exchange_sim.market import TradeWindow
from cryptoflow_exchange_sim.server import Simulator
from cryptoflow_exchange_sim.stream_faults import StreamFault
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.metrics import STREAM_RECONNECTS, STREAM_RESYNCS
from cryptoflow_extractor.ohlcv import OhlcvJob
from cryptoflow_extractor.stream_books import BookStream
from cryptoflow_extractor.stream_candles import CandlesStream
from cryptoflow_extractor.stream_trades import TradesStream
from cryptoflow_extractor.streaming import StreamJob
from cryptoflow_extractor.trades import TradesJob

from .conftest import Recorder, make_session

STREAMED = ("binance", "bybit", "gate")
SIM_NAMES = {"binance": "binance", "bybit": "bybit", "gate": "gate"}
SYMBOL = "BTC/USDT"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


# A busy stretch of the walk (seed 11: 84, 90 and 83 trades a minute per unit of scale from here),
# so the trade tests see the same market whenever they run: the exchange's clock starts there.
BUSY_MS = 1_767_225_600_000 + 29 * 60_000 + 5_000
TRADE_SCALE = 10  # ~14 trades/s: a stall's hole stays under Bybit's 60 REST-reachable trades


@contextlib.asynccontextmanager
async def live_simulator(
    faults: list[StreamFault], trade_scale: int = TRADE_SCALE
) -> AsyncIterator[tuple[str, LiveMarket, Callable[[], int]]]:
    offset = BUSY_MS - wall_ms()

    def clock() -> int:
        return wall_ms() + offset

    walk = RandomWalkMarket(
        [SYMBOL, "ETH/USDT"], seed=11, start_ms=BUSY_MS - 3_600_000, trade_scale=trade_scale, live_trades=True
    )
    market = LiveMarket(walk, 100)
    simulator = Simulator(market, clock=clock, exchanges=list(SIM_NAMES.values()), stream_faults=faults)
    url = await simulator.start()
    try:
        yield url, market, clock
    finally:
        await simulator.stop()


def per_exchange(fault: StreamFault, exchanges: tuple[str, ...] = STREAMED) -> list[StreamFault]:
    """The fault once for each exchange: each exchange's streams meet it, on their own count."""
    return [dataclasses.replace(fault, exchange=SIM_NAMES[exchange_id]) for exchange_id in exchanges]


async def each_exchange(exchanges: tuple[str, ...], check: Callable[[str], Awaitable[None]]) -> None:
    """`check` for every exchange at once (the streams run side by side against one simulator:
    most of a stream test is waiting for the market); the first failure is raised, naming its
    exchange."""
    results = await asyncio.gather(*(check(exchange_id) for exchange_id in exchanges), return_exceptions=True)
    for exchange_id, result in zip(exchanges, results, strict=True):
        if isinstance(result, BaseException):
            result.add_note(f"exchange: {exchange_id}")
            raise result


async def run_for(job: StreamJob, seconds: float) -> None:
    task = asyncio.create_task(job.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def reconnects(exchange_id: str, reason: str) -> float:
    return STREAM_RECONNECTS.labels(exchange_id, SYMBOL, Dataset.TRADES.value, reason)._value.get()


def published_trades(recorder: Recorder) -> list[dict[str, Any]]:
    return [trade for snapshot in recorder.snapshots for trade in snapshot.payload]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (StreamFault("drop", channel="trades", after=15), "NetworkError"),
        (StreamFault("stall", channel="trades", after=15, seconds=4), "stall"),
    ],
    ids=["dropped", "stalled"],
)
async def test_streamed_trades_equal_the_trade_log(
    fault: StreamFault, reason: str, checkpoints: CheckpointStore
) -> None:
    async with live_simulator(per_exchange(fault)) as (url, market, clock):
        started = clock()

        async def check(exchange_id: str) -> None:
            recorder = Recorder()
            session = make_session(url, recorder, exchange_id)
            try:
                await session.exchange.load_markets()
                rest = TradesJob(session, SYMBOL, started - 2_000, 1000, checkpoints)
                job = TradesStream(session, SYMBOL, rest, checkpoints, stall_after_s=1.5, batch_max=200, batch_ms=100)
                before = sum(reconnects(exchange_id, r) for r in ("NetworkError", "ExchangeNotAvailable", "stall"))
                await run_for(job, 7.0)
            finally:
                await session.exchange.close()
            trades = published_trades(recorder)
            assert len(trades) > 50, f"only {len(trades)} trades"
            ids = [str(trade["id"]) for trade in trades]
            assert len(ids) == len(set(ids)), "a trade was published twice"
            last_ts = max(trade["timestamp"] for trade in trades)
            window = TradeWindow(start_ms=started - 2_000, end_ms=last_ts, limit=10**6)
            truth = market.trades(market.listings()[0].symbol_id, window, 2**62)
            assert sorted(ids) == sorted(str(trade.id) for trade in truth)
            by_id = {str(trade.id): trade for trade in truth}
            for trade in trades:
                assert float(trade["price"]) == float(by_id[str(trade["id"])].price)
                assert trade["timestamp"] == by_id[str(trade["id"])].time_ms
            # The fault made it reconnect at least once, and the live subject saw the streamed trades.
            after = sum(reconnects(exchange_id, r) for r in ("NetworkError", "ExchangeNotAvailable", "stall"))
            assert after > before and job.connections >= 2
            assert recorder.live and all(update.dataset is Dataset.TRADES for update in recorder.live)
            # Every RAW page of the stream carries the frames its trades came in.
            streamed = [s for s in recorder.snapshots if s.request.get("mode") == "stream"]
            assert streamed and all(s.native and s.native[0].method == "watchTrades" for s in streamed)
            assert all(response.method == "WS" for s in streamed for response in s.native[0].responses)

        await each_exchange(STREAMED, check)


def true_top(
    market: LiveMarket, exchange_id: str, nonce: int, depth: int
) -> tuple[list[list[float]], list[list[float]]]:
    """The simulator's book at the sequence number a published book carries (Bybit's `u` counts
    ticks; Binance's and Gate's update ids are the book's last id)."""
    tick = nonce if exchange_id == "bybit" else market.tick_of_update_id(nonce)
    top = market.book_at(market.listings()[0].symbol_id, tick).top(depth)
    return (
        [[float(level.price), float(level.size)] for level in top.bids],
        [[float(level.price), float(level.size)] for level in top.asks],
    )


BOOK_FAULTS = [
    (StreamFault("skip", channel="orderbook", after=8), "a lost delta"),
    (StreamFault("reorder", channel="orderbook", after=8), "two deltas swapped"),
    (StreamFault("stale_snapshot", lag_ticks=20), "deltas before the snapshot"),
    (StreamFault("cross", channel="orderbook", after=8), "a crossing bid"),
]


@pytest.mark.parametrize(("fault", "what"), BOOK_FAULTS, ids=["skip", "reorder", "stale_snapshot", "cross"])
async def test_streamed_books_equal_the_true_book_and_resync_after_a_fault(fault: StreamFault, what: str) -> None:
    # Bybit's and Gate's (spot.obu) snapshots come in the stream: no REST snapshot to be late.
    exchanges = ("binance",) if fault.kind == "stale_snapshot" else STREAMED
    depth = 10
    async with live_simulator(per_exchange(fault, exchanges)) as (url, market, _):

        async def check(exchange_id: str) -> None:
            recorder = Recorder()
            session = make_session(url, recorder, exchange_id)
            try:
                await session.exchange.load_markets()
                job = BookStream(session, SYMBOL, depth, publish_interval_s=0.3, stall_after_s=5)
                before = resyncs(exchange_id)
                crossed_before = STREAM_RESYNCS.labels(exchange_id, SYMBOL, "crossed")._value.get()
                await run_for(job, 5.0)
            finally:
                await session.exchange.close()
            books = [update.data for update in recorder.live]
            assert len(books) > 20, f"only {len(books)} book updates"
            for book in books:
                assert book["bids"][0][0] < book["asks"][0][0], "a crossed book was published"
                assert (book["bids"], book["asks"]) == true_top(market, exchange_id, book["nonce"], depth), (
                    f"book at {book['nonce']} differs from the simulator's after {what}"
                )
            pages = [snapshot.payload for snapshot in recorder.snapshots]
            assert pages
            assert all((p["bids"], p["asks"]) == true_top(market, exchange_id, p["nonce"], depth) for p in pages)
            assert resyncs(exchange_id) > before, f"{what} did not make the book resync"
            assert any(page["resynced"] for page in pages), "the book after the resync is not marked resynced"
            if fault.kind == "cross":
                assert STREAM_RESYNCS.labels(exchange_id, SYMBOL, "crossed")._value.get() > crossed_before

        await each_exchange(exchanges, check)


def resyncs(exchange_id: str) -> float:
    return sum(
        STREAM_RESYNCS.labels(exchange_id, SYMBOL, reason)._value.get()
        for reason in ("sequence_gap", "checksum", "crossed", "stall", "reconnect")
    )


async def test_streamed_candles_are_final_once_closed_and_forming_ones_are_marked(checkpoints: CheckpointStore) -> None:
    # The exchange's clock runs behind ours so that one of its minutes closes ~3 s into the test (the
    # job is told the exchange's time, as its REST fill must decide "closed" by it; behind, not
    # ahead: ccxt caps some REST time ranges at its own clock).
    wall = wall_ms()
    behind = (wall % 60_000 - 57_000) % 60_000
    walk = RandomWalkMarket([SYMBOL], seed=5, start_ms=wall - 7_200_000, trade_scale=4, live_trades=True)

    def exchange_clock() -> int:
        return wall_ms() - behind

    simulator = Simulator(LiveMarket(walk, 100), clock=exchange_clock, exchanges=list(SIM_NAMES.values()))
    url = await simulator.start()

    async def check(exchange_id: str) -> None:
        recorder = Recorder()
        session = make_session(url, recorder, exchange_id)
        try:
            await session.exchange.load_markets()
            since = exchange_clock() // 60_000 * 60_000 - 120_000
            rest = OhlcvJob(session, SYMBOL, "1m", since, None, 1000, checkpoints)
            job = CandlesStream(
                session, SYMBOL, "1m", rest, checkpoints, stall_after_s=5, publish_forming=True, clock=exchange_clock
            )
            await run_for(job, 6.0)  # the minute closes while they stream
        finally:
            await session.exchange.close()
        forming = [s for s in recorder.snapshots if not s.final]
        closed = [candle for s in recorder.snapshots if s.final for candle in s.payload]
        assert forming, "no forming candle published"
        assert all(s.request.get("mode") == "stream" and s.native for s in forming)
        closed_ts = [int(candle[0]) for candle in closed]
        assert closed_ts == sorted(set(closed_ts)), "a closed candle published twice"
        served = walk.klines("BTCUSDT", INTERVALS["1m"], KlineWindow(since, closed_ts[-1], 100), 2**62)
        assert closed_ts == [k.open_time for k in served]
        assert [float(c[4]) for c in closed] == [float(k.close) for k in served]
        # Volumes in the base currency, streamed or polled (ccxt's Gate stream parse takes the quote's).
        assert [float(c[5]) for c in closed] == [float(k.volume) for k in served]
        live = [update for update in recorder.live if update.dataset is Dataset.OHLCV]
        assert any(not update.final for update in live)
        # The minute that closed during the stream came from the stream, final, once.
        assert any(s.final and s.request.get("mode") == "stream" for s in recorder.snapshots)

    try:
        await each_exchange(STREAMED, check)
    finally:
        await simulator.stop()


async def test_a_malformed_streamed_trade_is_dead_lettered_and_the_others_keep_flowing(
    checkpoints: CheckpointStore,
) -> None:
    async with live_simulator(per_exchange(StreamFault("corrupt", channel="trades", after=10))) as (url, market, clock):
        started = clock()

        async def check(exchange_id: str) -> None:
            recorder = Recorder()
            session = make_session(url, recorder, exchange_id)
            try:
                await session.exchange.load_markets()
                rest = TradesJob(session, SYMBOL, started - 2_000, 1000, checkpoints)
                job = TradesStream(session, SYMBOL, rest, checkpoints, stall_after_s=5, batch_max=200, batch_ms=100)
                await run_for(job, 4.0)
            finally:
                await session.exchange.close()
            assert len(recorder.dead_letters) == 1, recorder.dead_letters
            letter = recorder.dead_letters[0]
            assert letter.error_type == "InvalidStreamUpdate" and "could not parse a trades frame" in letter.reason
            assert letter.payload and "garbage" in letter.payload
            trades = published_trades(recorder)
            ids = [str(trade["id"]) for trade in trades]
            newest = max(trade["timestamp"] for trade in trades)
            window = TradeWindow(start_ms=started - 2_000, end_ms=newest, limit=10**6)
            truth = {str(t.id) for t in market.trades("BTCUSDT", window, 2**62)}
            assert len(ids) == len(set(ids)) and set(ids) <= truth
            missing = truth - set(ids)
            # Only the corrupted frame's trade(s) are missing (a Bybit frame may carry several), none after it.
            assert 1 <= len(missing) <= 5, missing
            assert max(map(int, missing)) < max(map(int, ids))

        await each_exchange(STREAMED, check)
