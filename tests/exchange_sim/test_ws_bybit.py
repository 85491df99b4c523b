"""Bybit's v5 public spot websocket, as ccxt pro's unmodified bybit class reads it.

Every test starts its own simulator on a live random walk (`LiveMarket`, 100 ms ticks) and
compares what ccxt built with what the market says: the trades, the book at the tick of the last
delta ccxt applied, the final candle, the 24h ticker. Raw frames are recorded on their way into
ccxt (`handle_message`), so the tests can also read Bybit's own fields (`u`, `confirm`). The
candle test runs on a clock set 2.5 s before a minute boundary, so a candle closes within it.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import ccxt.pro as ccxtpro
import pytest
from ccxt.base.errors import NetworkError
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket, Simulator, TradeWindow, ticker_snapshot
from cryptoflow_exchange_sim.live import LiveMarket
from cryptoflow_exchange_sim.stream_faults import StreamFault

from .clients import SPOT_ONLY_OPTIONS

SYMBOL = "BTC/USDT"
SYMBOL_ID = "BTCUSDT"
SEED = 11
TICK_MS = 100
WS_PATH = "/v5/public/spot"


@dataclass
class Running:
    market: LiveMarket
    simulator: Simulator
    base_url: str
    offset_ms: int

    def now(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


@asynccontextmanager
async def simulated(offset_ms: int = 0, stream_faults: Iterable[StreamFault] = ()) -> AsyncIterator[Running]:
    """A bybit simulator whose clock runs `offset_ms` ahead of the wall clock."""

    def clock() -> int:
        return time.time_ns() // 1_000_000 + offset_ms

    walk = RandomWalkMarket([SYMBOL], SEED, clock() - 3_600_000, trade_scale=20, live_trades=True)
    market = LiveMarket(walk, TICK_MS)
    simulator = Simulator(market, clock=clock, exchanges=["bybit"], stream_faults=stream_faults)
    base_url = await simulator.start()
    try:
        yield Running(market, simulator, base_url, offset_ms)
    finally:
        await simulator.stop()


def rehost(value: Any, base_url: str) -> Any:
    """The extractor's rule, for websocket URLs too: the simulator's host, the exchange's path."""
    if isinstance(value, str) and value.startswith(("http://", "https://", "ws://", "wss://")):
        parts, base = urlsplit(value), urlsplit(base_url)
        scheme = "ws" if parts.scheme.startswith("ws") else base.scheme
        return urlunsplit((scheme, base.netloc, parts.path, parts.query, parts.fragment))
    if isinstance(value, dict):
        return {key: rehost(item, base_url) for key, item in value.items()}
    return value


@asynccontextmanager
async def bybit_pro(base_url: str, keep_alive_ms: int | None = None) -> AsyncIterator[tuple[Any, list[dict[str, Any]]]]:
    """ccxt pro's bybit on the simulator, and the list every frame it receives is appended to
    (before ccxt handles it). `keep_alive_ms` replaces ccxt's 18 s between pings."""
    exchange = ccxtpro.bybit({"enableRateLimit": False, "options": copy.deepcopy(SPOT_ONLY_OPTIONS)})
    if keep_alive_ms is not None:
        exchange.streaming = {**exchange.streaming, "keepAlive": keep_alive_ms}
    exchange.urls["api"] = rehost(exchange.urls["api"], base_url)
    exchange.timeout_on_exit = 0
    frames: list[dict[str, Any]] = []
    handle = exchange.handle_message

    def record(client: Any, message: Any) -> None:
        if isinstance(message, dict):
            frames.append(message)
        handle(client, message)

    # Read when ccxt creates its websocket client, i.e. at the first watch.
    exchange.handle_message = record
    try:
        await exchange.load_markets()
        yield exchange, frames
    finally:
        await exchange.close()


def topic_frames(frames: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if str(frame.get("topic", "")).startswith(prefix)]


def as_float_levels(levels: Iterable[Any]) -> list[list[float]]:
    return [[float(level.price), float(level.size)] for level in levels]


async def test_trades_are_the_markets() -> None:
    # ccxt pings every 200 ms and gives up on a connection after 400 ms without a pong (100 ms, as it
    # was, dropped the connection on a loaded CI machine, and the trades of the reconnect with it).
    async with simulated() as running, bybit_pro(running.base_url, keep_alive_ms=200) as (exchange, frames):
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline or not received:
            received.extend(await asyncio.wait_for(exchange.watch_trades(SYMBOL), 5))
        now = running.now()

    ids = [int(trade["id"]) for trade in received]
    assert len(ids) >= 2
    assert ids == sorted(ids)
    window = TradeWindow(from_id=ids[0], to_id=ids[-1] + 1, limit=1_000_000)
    expected = running.market.trades(SYMBOL_ID, window, now)
    got = [(t["id"], t["price"], t["amount"], t["side"], t["timestamp"], t["symbol"]) for t in received]
    want = [
        (str(t.id), float(t.price), float(t.qty), "sell" if t.is_buyer_maker else "buy", t.time_ms, SYMBOL)
        for t in expected
    ]
    assert got == want
    trade_frame = topic_frames(frames, "publicTrade.")[0]
    assert trade_frame["topic"] == "publicTrade.BTCUSDT"
    assert trade_frame["type"] == "snapshot"
    assert set(trade_frame["data"][0]) == {"T", "s", "S", "v", "p", "i", "BT"}
    pongs = [frame for frame in frames if frame.get("ret_msg") == "pong"]
    assert len(pongs) >= 5  # 2 s of pings every 200 ms, each answered
    assert all(pong["success"] and pong["op"] == "ping" for pong in pongs)


async def test_book_is_the_true_book_at_the_last_update() -> None:
    async with simulated() as running, bybit_pro(running.base_url) as (exchange, frames):
        while len(topic_frames(frames, "orderbook.")) < 16:
            book = await asyncio.wait_for(exchange.watch_order_book(SYMBOL, 50), 5)
        # No await since: the book holds exactly the frames recorded so far.
        books = topic_frames(frames, "orderbook.")
        bids = [list(level) for level in book["bids"]]
        asks = [list(level) for level in book["asks"]]

    assert books[0]["type"] == "snapshot"
    assert {frame["type"] for frame in books[1:]} == {"delta"}
    ticks = [frame["data"]["u"] for frame in books]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    last = books[-1]
    assert last["topic"] == "orderbook.50.BTCUSDT"
    truth = running.market.book_at(SYMBOL_ID, last["data"]["u"])
    assert last["data"]["seq"] == truth.update_id
    top = truth.top(50)
    assert len(top.bids) == len(top.asks) == 50
    assert bids == as_float_levels(top.bids)
    assert asks == as_float_levels(top.asks)


async def test_a_closed_candle_is_final_and_the_markets() -> None:
    wall = time.time_ns() // 1_000_000
    offset_ms = (57_500 - wall % 60_000) % 60_000  # the simulated clock starts 2.5 s before a minute
    async with simulated(offset_ms) as running, bybit_pro(running.base_url) as (exchange, frames):

        def confirmed() -> list[dict[str, Any]]:
            return [kline for frame in topic_frames(frames, "kline.") for kline in frame["data"] if kline["confirm"]]

        while not confirmed():
            candles = await asyncio.wait_for(exchange.watch_ohlcv(SYMBOL, "1m"), 5)
        final = confirmed()[0]
        now = running.now()

    assert topic_frames(frames, "kline.")[0]["topic"] == "kline.1.BTCUSDT"
    assert final["interval"] == "1"
    assert final["end"] == final["start"] + 59_999 < now
    (kline,) = running.market.klines(SYMBOL_ID, INTERVALS["1m"], KlineWindow(final["start"], final["start"], 1), now)
    want = [
        kline.open_time,
        *(float(value) for value in (kline.open, kline.high, kline.low, kline.close, kline.volume)),
    ]
    assert [candle for candle in candles if candle[0] == final["start"]] == [want]
    assert final["turnover"] == kline.quote_volume


async def test_ticker_is_the_24h_ticker() -> None:
    async with simulated() as running, bybit_pro(running.base_url) as (exchange, frames):
        ticker = await asyncio.wait_for(exchange.watch_ticker(SYMBOL), 5)

    expected = ticker_snapshot(running.market, SYMBOL_ID, ticker["timestamp"])
    assert ticker["symbol"] == SYMBOL
    assert ticker["last"] == float(expected.last)
    assert ticker["open"] == float(expected.open)
    assert ticker["high"] == float(expected.high)
    assert ticker["low"] == float(expected.low)
    assert ticker["baseVolume"] == float(expected.volume)
    assert ticker["quoteVolume"] == float(expected.quote_volume)
    assert ticker["percentage"] == float((expected.change_ratio() * 100).quantize(Decimal("0.01")))
    (frame,) = topic_frames(frames, "tickers.")
    assert set(frame["data"]) == {
        "symbol",
        "lastPrice",
        "highPrice24h",
        "lowPrice24h",
        "prevPrice24h",
        "volume24h",
        "turnover24h",
        "price24hPcnt",
        "usdIndexPrice",
    }


async def test_a_dropped_trades_connection_is_a_network_error() -> None:
    drop = StreamFault("drop", "bybit", "trades")
    async with simulated(stream_faults=[drop]) as running, bybit_pro(running.base_url) as (exchange, _):
        with pytest.raises(NetworkError):
            for _ in range(100):
                await asyncio.wait_for(exchange.watch_trades(SYMBOL), 5)
        assert running.simulator.streams.plan.snapshot()[0]["used"] == 1


async def test_a_skipped_book_frame_is_a_gap_in_u() -> None:
    skip = StreamFault("skip", "bybit", "orderbook", after=5)
    async with simulated(stream_faults=[skip]) as running, bybit_pro(running.base_url) as (exchange, frames):
        while len(topic_frames(frames, "orderbook.")) < 10:
            await asyncio.wait_for(exchange.watch_order_book(SYMBOL, 50), 5)
        books = topic_frames(frames, "orderbook.")

    assert running.simulator.streams.plan.snapshot()[0]["used"] == 1
    ticks = [frame["data"]["u"] for frame in books]
    steps = [after - before for before, after in itertools.pairwise(ticks)]
    # The snapshot and four deltas pass, the fifth delta is lost.
    assert steps[:5] == [1, 1, 1, 1, 2]
    assert set(steps[5:]) == {1}


async def test_control_messages_are_answered_bybits_way() -> None:
    async with (
        simulated() as running,
        aiohttp.ClientSession() as session,
        session.ws_connect(running.base_url.replace("http", "ws", 1) + WS_PATH) as ws,
    ):

        async def ask(request: dict[str, Any]) -> dict[str, Any]:
            await ws.send_str(json.dumps(request))
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            return reply

        pong = await ask({"op": "ping", "req_id": "7"})
        assert {key: pong[key] for key in ("success", "ret_msg", "op", "req_id")} == {
            "success": True,
            "ret_msg": "pong",
            "op": "ping",
            "req_id": "7",
        }
        assert pong["conn_id"]
        for topic, ret_msg in [
            ("publicTrade.NOPEUSDT", "Invalid symbol :[publicTrade.NOPEUSDT]"),
            ("kline.2.BTCUSDT", "error:handler not found,topic:kline.2.BTCUSDT"),
            ("orderbook.500.BTCUSDT", "error:handler not found,topic:orderbook.500.BTCUSDT"),
            ("trades.BTCUSDT", "error:handler not found,topic:trades.BTCUSDT"),
        ]:
            refused = await ask({"op": "subscribe", "args": [topic], "req_id": "8"})
            assert (refused["success"], refused["ret_msg"], refused["op"], refused["req_id"]) == (
                False,
                ret_msg,
                "subscribe",
                "8",
            )
        too_many = await ask({"op": "subscribe", "args": ["tickers.BTCUSDT"] * 11})
        assert (too_many["success"], too_many["ret_msg"]) == (False, "args size >10")
        bad_op = await ask({"op": "dance"})
        assert (bad_op["success"], bad_op["op"]) == (False, "dance")

        subscribed = await ask({"op": "subscribe", "args": ["tickers.BTCUSDT"], "req_id": "9"})
        assert (subscribed["success"], subscribed["ret_msg"], subscribed["op"]) == (True, "", "subscribe")
        pushed = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert (pushed["topic"], pushed["type"], pushed["data"]["symbol"]) == ("tickers.BTCUSDT", "snapshot", SYMBOL_ID)
        await ws.send_str(json.dumps({"op": "unsubscribe", "args": ["tickers.BTCUSDT"], "req_id": "10"}))
        # A push may already be on its way; after the answer nothing more comes.
        while (reply := json.loads(await asyncio.wait_for(ws.receive_str(), 5))).get("op") != "unsubscribe":
            assert reply["topic"] == "tickers.BTCUSDT"
        assert (reply["success"], reply["req_id"]) == (True, "10")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive_str(), 1.2)
