"""Gate's spot websocket streams, read through ccxt pro's unmodified `gate` (and `gateeu`) classes,
equal what the live market defines; stream faults break ccxt's order book sync the way they should.

ccxt's `gate` keeps its spot book with the `spot.obu` channel (a full book, then deltas); its
`gateeu` with `spot.order_book_update` deltas and a REST snapshot (`with_id=true`). `gateeu` picks
that channel when its URL names "gateeu", so its rehosted URL keeps the word in a query string
the simulator ignores.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import ccxt.pro as ccxtpro
import pytest
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket, TradeWindow, ticker_snapshot
from cryptoflow_exchange_sim.derived import BookSnapshot
from cryptoflow_exchange_sim.live import LiveMarket
from cryptoflow_exchange_sim.server import Simulator
from cryptoflow_exchange_sim.stream_faults import StreamFault

from .clients import SPOT_ONLY_OPTIONS

SYMBOL, SYMBOL_ID, PAIR = "BTC/USDT", "BTCUSDT", "BTC_USDT"
TICK_MS = 100
MINUTE = INTERVALS["1m"]
WS_PATH = "/ws/v4/"
OBU_DEPTH = 50  # ccxt's default spot level: `ob.BTC_USDT.50`
# `gateeu` starts from a 50-level REST snapshot and applies whole-book deltas: its top 20 is exact.
V1_DEPTH = 20
WALK_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SIM_START_MS = WALK_START_MS + 2 * 3_600_000  # a busy minute: about 20 trades a second
Clock = Callable[[], int]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def clock_from(sim_ms: int) -> Clock:
    """A clock that reads `sim_ms` now and runs at wall speed, so every run sees the same market."""
    offset = sim_ms - wall_ms()
    return lambda: wall_ms() + offset


@dataclass
class Sim:
    market: LiveMarket
    simulator: Simulator
    base_url: str
    clock: Clock


@asynccontextmanager
async def simulated(
    clock: Clock | None = None,
    exchanges: Iterable[str] = ("gate",),
    stream_faults: Iterable[StreamFault] = (),
) -> AsyncIterator[Sim]:
    clock = clock_from(SIM_START_MS + 5_000) if clock is None else clock
    walk = RandomWalkMarket([SYMBOL], seed=11, start_ms=WALK_START_MS, trade_scale=20, live_trades=True)
    market = LiveMarket(walk, TICK_MS)
    simulator = Simulator(market, clock=clock, exchanges=exchanges, stream_faults=stream_faults)
    base_url = await simulator.start()
    try:
        yield Sim(market, simulator, base_url, clock)
    finally:
        await simulator.stop()


def rehost(value: Any, base_url: str) -> Any:
    """Every URL gets the simulator's host and keeps its path: ws(s) → ws, http(s) → http."""
    if isinstance(value, str) and value.startswith(("http://", "https://", "ws://", "wss://")):
        parts, base = urlsplit(value), urlsplit(base_url)
        scheme = "ws" if parts.scheme.startswith("ws") else base.scheme
        return urlunsplit((scheme, base.netloc, parts.path, parts.query, parts.fragment))
    if isinstance(value, dict):
        return {key: rehost(item, base_url) for key, item in value.items()}
    return value


@asynccontextmanager
async def pro_client(base_url: str, exchange_id: str = "gate") -> AsyncIterator[Any]:
    exchange = getattr(ccxtpro, exchange_id)({"enableRateLimit": False, "options": dict(SPOT_ONLY_OPTIONS)})
    exchange.urls["api"] = rehost(exchange.urls["api"], base_url)
    if exchange_id == "gateeu":
        exchange.urls["api"]["spot"] += "?via=gateeu"
    exchange.timeout_on_exit = 0
    try:
        await exchange.load_markets()
        yield exchange
    finally:
        await exchange.close()


def levels(book: BookSnapshot) -> tuple[list[list[float]], list[list[float]]]:
    return (
        [[float(level.price), float(level.size)] for level in book.bids],
        [[float(level.price), float(level.size)] for level in book.asks],
    )


def floats(pushed: list[list[str]]) -> list[list[float]]:
    return [[float(price), float(size)] for price, size in pushed]


def assert_book_is_true(market: LiveMarket, book: Any, depth: int) -> None:
    truth = market.book_at(SYMBOL_ID, market.tick_of_update_id(book["nonce"])).top(depth)
    assert (book["bids"][:depth], book["asks"][:depth]) == levels(truth)


async def watched_book(exchange: Any, updates: int) -> Any:
    book = await exchange.watch_order_book(SYMBOL)
    for _ in range(updates):
        book = await exchange.watch_order_book(SYMBOL)
    return book


async def test_trades_equal_the_market() -> None:
    async with simulated() as sim, pro_client(sim.base_url) as exchange:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline or len(seen) < 5:
            seen.extend(await exchange.watch_trades(SYMBOL))

        first, last = int(seen[0]["id"]), int(seen[-1]["id"])
        window = TradeWindow(from_id=first, to_id=last + 1, limit=100_000)
        expected = sim.market.trades(SYMBOL_ID, window, sim.clock())
        assert [(int(t["id"]), t["timestamp"], t["side"], t["price"], t["amount"]) for t in seen] == [
            (t.id, t.time_ms, "sell" if t.is_buyer_maker else "buy", float(t.price), float(t.qty)) for t in expected
        ]


async def test_order_book_equals_the_true_book_at_its_nonce() -> None:
    # (`gateeu`'s REST-synced book is checked after its faults, below.)
    async with simulated() as sim, pro_client(sim.base_url) as exchange:
        start_nonce = (await exchange.watch_order_book(SYMBOL))["nonce"]
        book = await watched_book(exchange, 10)

        assert book["nonce"] >= start_nonce + 10 * 4
        # spot.obu keeps exactly the top 50 levels.
        assert len(book["bids"]) == len(book["asks"]) == OBU_DEPTH
        assert_book_is_true(sim.market, book, OBU_DEPTH)


async def test_closed_candle_equals_the_market() -> None:
    clock = clock_from(SIM_START_MS + 58_800)  # the simulated minute ends 1.2 s from now
    closing = MINUTE.floor(clock())
    async with (
        simulated(clock) as sim,
        pro_client(sim.base_url) as exchange,
        aiohttp.ClientSession() as session,
        session.ws_connect(sim.base_url + WS_PATH) as ws,
    ):
        await ws.send_json({"id": 1, "time": 0, "channel": "spot.candlesticks", "event": "subscribe",
                            "payload": ["1m", PAIR]})  # fmt: skip
        assert (await ws.receive_json(timeout=5))["result"] == {"status": "success"}
        while (await exchange.watch_ohlcv(SYMBOL, "1m"))[-1][0] <= closing:
            pass
        final = None
        while final is None:
            result = (await ws.receive_json(timeout=5))["result"]
            if result["t"] == str(closing // 1000) and result["w"]:
                final = result

        later = sim.clock() + 60_000
        kline = sim.market.klines(SYMBOL_ID, MINUTE, KlineWindow(closing, closing, 1), later)[0]
        # ccxt reads Gate's `v` (the quote volume) as the candle's volume.
        by_time = {candle[0]: candle for candle in exchange.ohlcvs[SYMBOL]["1m"]}
        assert by_time[closing] == [
            closing, float(kline.open), float(kline.high), float(kline.low), float(kline.close),
            float(kline.quote_volume),
        ]  # fmt: skip
        assert final == {
            "t": str(closing // 1000), "v": kline.quote_volume, "c": kline.close, "h": kline.high, "l": kline.low,
            "o": kline.open, "n": f"1m_{PAIR}", "a": kline.volume, "w": True,
        }  # fmt: skip


async def test_ticker_equals_the_24h_statistics() -> None:
    # Mid-minute, so the ticker's anchor candle cannot change during the test.
    async with simulated(clock_from(SIM_START_MS + 20_000), exchanges=("binance", "bybit", "gate")) as sim:
        async with pro_client(sim.base_url) as exchange:
            ticker = await exchange.watch_ticker(SYMBOL)
        expected = ticker_snapshot(sim.market, SYMBOL_ID, sim.clock())

        assert ticker["symbol"] == SYMBOL
        got = [ticker[key] for key in ("last", "high", "low", "bid", "ask", "baseVolume", "quoteVolume")]
        want = [expected.last, expected.high, expected.low, expected.bid.price, expected.ask.price]
        assert got == [float(value) for value in [*want, expected.volume, expected.quote_volume]]
        assert ticker["percentage"] == float(f"{expected.change_ratio() * 100:.2f}")


async def test_wire_requests_alongside_binance_and_bybit() -> None:
    async with (
        simulated(exchanges=("binance", "bybit", "gate")) as sim,
        aiohttp.ClientSession() as session,
        session.ws_connect(sim.base_url + WS_PATH) as ws,
    ):
        await ws.send_json({"time": 1, "channel": "spot.ping"})
        pong = await ws.receive_json(timeout=5)
        await ws.send_json({"id": 7, "time": 1, "channel": "spot.trades", "event": "subscribe", "payload": ["NO_USDT"]})
        refused = await ws.receive_json(timeout=5)
        await ws.send_json({"id": 8, "time": 1, "channel": "spot.trades", "event": "subscribe", "payload": [PAIR]})
        accepted = await ws.receive_json(timeout=5)
        trade = await ws.receive_json(timeout=5)
        await ws.send_json({"id": 9, "time": 1, "channel": "spot.trades", "event": "unsubscribe", "payload": [PAIR]})
        while (left := await ws.receive_json(timeout=5))["event"] == "update":
            pass

        assert (pong["channel"], pong["result"]) == ("spot.pong", None)
        assert refused["id"] == 7 and refused["result"] == {"status": "fail"}
        assert refused["error"] == {"code": 2, "message": "unknown currency pair: NO_USDT"}
        assert {key: accepted[key] for key in ("id", "channel", "event", "payload", "result")} == {
            "id": 8, "channel": "spot.trades", "event": "subscribe", "payload": [PAIR], "result": {"status": "success"},
        }  # fmt: skip
        assert pong["conn_id"] == refused["conn_id"] == accepted["conn_id"] == left["conn_id"]
        assert (left["id"], left["event"], left["result"]) == (9, "unsubscribe", {"status": "success"})
        result = trade["result"]
        assert (trade["channel"], trade["event"], result["currency_pair"]) == ("spot.trades", "update", PAIR)
        assert Decimal(result["create_time_ms"]) // 1000 == result["create_time"]
        assert result["range"] == f"{result['id']}-{result['id']}"
        # Binance's streams still answer at their own paths.
        async with session.ws_connect(sim.base_url + "/ws") as binance:
            await binance.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
            assert await binance.receive_json(timeout=5) == {"result": None, "id": 1}


async def test_obu_full_book_then_contiguous_deltas_and_a_skip_shows_as_a_gap() -> None:
    skip = StreamFault("skip", exchange="gate", channel="orderbook", after=4)
    async with (
        simulated(stream_faults=[skip]) as sim,
        aiohttp.ClientSession() as session,
        session.ws_connect(sim.base_url + WS_PATH) as ws,
    ):
        payload = [f"ob.{PAIR}.{OBU_DEPTH}"]
        await ws.send_json({"id": 1, "time": 1, "channel": "spot.obu", "event": "subscribe", "payload": payload})
        assert (await ws.receive_json(timeout=5))["result"] == {"status": "success"}
        pushes = [(await ws.receive_json(timeout=5))["result"] for _ in range(8)]

    full, deltas = pushes[0], pushes[1:]
    assert full["full"] is True and full["s"] == payload[0]
    bids, asks = levels(sim.market.book_at(SYMBOL_ID, sim.market.tick_of_update_id(full["u"])).top(OBU_DEPTH))
    assert (floats(full["b"]), floats(full["a"])) == (bids, asks)
    assert all("full" not in delta for delta in deltas)
    ends = [full["u"], *(delta["u"] for delta in deltas)]
    gaps = [delta["U"] - end - 1 for end, delta in zip(ends, deltas, strict=False)]
    # The 4th delta (the 5th frame) was lost: one tick's four update ids are missing.
    assert gaps == [0, 0, 0, 4, 0, 0, 0]


async def test_stale_snapshot_fails_the_sync_and_a_retry_succeeds() -> None:
    async with simulated() as sim, pro_client(sim.base_url, "gateeu") as exchange:
        tries = exchange.handle_option("watchOrderBook", "maxRetries", 3)
        # Every REST snapshot of ccxt's first sync lags its buffered deltas.
        sim.simulator.streams.plan.add([StreamFault("stale_snapshot", count=tries)])
        with pytest.raises(ccxtpro.ExchangeError, match="nonce is behind the cache"):
            await exchange.watch_order_book(SYMBOL)
        assert sim.simulator.stats.requests["gate.orderbook"] == tries

        book = await watched_book(exchange, 3)
        assert_book_is_true(sim.market, book, V1_DEPTH)


async def test_a_lost_delta_fails_the_book_and_a_retry_succeeds() -> None:
    async with simulated() as sim, pro_client(sim.base_url, "gateeu") as exchange:
        await exchange.watch_order_book(SYMBOL)
        sim.simulator.streams.plan.add([StreamFault("skip", exchange="gate", channel="orderbook")])
        with pytest.raises(ccxtpro.InvalidNonce):
            await watched_book(exchange, 20)

        book = await watched_book(exchange, 3)
        assert_book_is_true(sim.market, book, V1_DEPTH)
        assert sim.simulator.stats.requests["gate.orderbook"] == 2


async def test_only_obu_starts_with_a_full_book() -> None:
    async with (
        simulated() as sim,
        aiohttp.ClientSession() as session,
        session.ws_connect(sim.base_url + WS_PATH) as ws,
        session.ws_connect(sim.base_url + WS_PATH) as other,
    ):
        await ws.send_json({"id": 1, "time": 1, "channel": "spot.order_book_update", "event": "subscribe",
                            "payload": [PAIR, "100ms"]})  # fmt: skip
        await ws.send_json({"id": 2, "time": 1, "channel": "spot.obu", "event": "subscribe",
                            "payload": [f"ob.{PAIR}.400"]})  # fmt: skip
        await other.send_json({"time": 1, "channel": "spot.ping"})
        frames = [await ws.receive_json(timeout=5) for _ in range(8)]
        other_pong = await other.receive_json(timeout=5)

    acks = [frame for frame in frames if frame["event"] == "subscribe"]
    v1 = [frame["result"] for frame in frames if frame["channel"] == "spot.order_book_update" and "result" in frame]
    v1 = [result for result in v1 if result != {"status": "success"}]
    obu = [frame["result"] for frame in frames if frame["channel"] == "spot.obu" and frame["event"] == "update"]
    assert [ack["id"] for ack in acks] == [1, 2]
    assert v1 and all({"e", "E", "s", "U", "u"} <= set(result) and "full" not in result for result in v1)
    assert obu[0]["full"] is True and all("full" not in result for result in obu[1:])
    truth = levels(sim.market.book_at(SYMBOL_ID, sim.market.tick_of_update_id(obu[0]["u"])).top(400))
    assert (floats(obu[0]["b"]), floats(obu[0]["a"])) == truth
    assert other_pong["conn_id"] != acks[0]["conn_id"] == acks[1]["conn_id"]
