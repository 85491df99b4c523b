"""Websocket market streams: one session per connection, feeding what its client subscribed to.

The data is the REST side's (the market's trades and candles, `derived` tickers, `live` books),
so a stream and a REST call made at the same instant agree. Each exchange module (`binance_ws`,
`bybit_ws`, `gate_ws`) says how its clients subscribe and how its frames look (`WsVenue`); this
module runs the feeds:

* trades: every trade whose time has come, in id order, from the moment of subscription;
* tickers: the 24h ticker every `TICKER_PUSH_MS`;
* candles: the forming candle every `KLINE_PUSH_MS`, and each candle once more, final, when it
  closes;
* order books: on a live market (`live.LiveMarket`) a delta every tick, in update-id order (Bybit
  and Gate first send their snapshot), computed on the depth the subscription asked for.

Every frame passes the stream fault plan (`stream_faults.py`) on its way out: a connection can be
dropped, stalled, lose or reorder a frame; a book delta can carry a bid that crosses the book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson
from aiohttp import WSMsgType, web

from cryptoflow_exchange_sim.derived import TickerSnapshot, ticker_snapshot
from cryptoflow_exchange_sim.intervals import Interval
from cryptoflow_exchange_sim.live import BookState, LiveMarket
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Market, Trade, TradeWindow
from cryptoflow_exchange_sim.stream_faults import StreamFaultPlan

log = logging.getLogger(__name__)

Channel = Literal["trades", "ticker", "ohlcv", "orderbook"]
CHANNELS: tuple[Channel, ...] = ("trades", "ticker", "ohlcv", "orderbook")
TRADE_POLL_MS = 10
MINUTE_MS = 60_000
# From this far into a minute, a trade feed has the next minute's trades made ahead.
PREPARE_AFTER_MS = 30_000
# Between the steps of making a minute: ten busy minutes' work spread over ~5 s, not one burst.
PREPARE_PAUSE_S = 0.005
TICKER_PUSH_MS = 1000
KLINE_PUSH_MS = 1000
# A client that cannot keep up is cut off, as exchanges do, rather than buffered without end.
SEND_QUEUE_LIMIT = 100_000
Clock = Callable[[], int]
Frame = bytes | str


@dataclass(frozen=True, slots=True)
class Subscription:
    """One feed a client asked for: a channel of one symbol (with its interval or depth)."""

    channel: Channel
    symbol_id: str
    interval: Interval | None = None
    depth: int | None = None  # None: the whole book (Binance's diff stream)
    name: str = ""  # the exchange's own name for it, e.g. `btcusdt@trade`


@dataclass(frozen=True, slots=True)
class BookView:
    """What a book feed sends: the delta from the last view, with its update ids."""

    first_id: int
    last_id: int
    tick: int
    bids: Sequence[tuple[str, str]]
    asks: Sequence[tuple[str, str]]
    snapshot: bool = False


@dataclass(slots=True)
class Request:
    """What a client's message asks for, as the exchange module read it."""

    subscribe: list[Subscription] = field(default_factory=list)
    unsubscribe: list[Subscription] = field(default_factory=list)
    replies: list[Frame] = field(default_factory=list)


class WsVenue(Protocol):
    """One exchange's websocket dialect."""

    name: str
    paths: tuple[str, ...]

    def read(self, text: str, market: Market, now_ms: int) -> Request: ...

    def trade_frames(self, sub: Subscription, trades: Sequence[Trade], now_ms: int) -> list[Frame]: ...

    def ticker_frame(self, sub: Subscription, ticker: TickerSnapshot, now_ms: int) -> Frame: ...

    def kline_frame(self, sub: Subscription, kline: Kline, closed: bool, now_ms: int) -> Frame: ...

    def book_frame(self, sub: Subscription, view: BookView, now_ms: int) -> Frame: ...

    def sends_book_snapshot(self, sub: Subscription) -> bool: ...


@dataclass(slots=True)
class StreamStats:
    connections: int = 0
    open_connections: int = 0
    frames: Counter[str] = field(default_factory=Counter)
    subscriptions: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "open_connections": self.open_connections,
            "frames": dict(self.frames),
            "subscriptions": dict(self.subscriptions),
        }


@dataclass
class StreamContext:
    market: Market
    clock: Clock
    plan: StreamFaultPlan
    stats: StreamStats
    sessions: set[Session] = field(default_factory=set)
    # One minute's trades made ahead at a time (see Session._prepare_next_minute).
    preparing: asyncio.Lock = field(default_factory=asyncio.Lock)
    prepared: set[tuple[str, int]] = field(default_factory=set)
    preparing_tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Session:
    """One client connection: its subscriptions' feeds and one writer, so frames keep their order."""

    def __init__(self, venue: WsVenue, ws: web.WebSocketResponse, context: StreamContext) -> None:
        self.venue = venue
        self.ws = ws
        self.context = context
        self.feeds: dict[Subscription, asyncio.Task[None]] = {}
        self.queue: asyncio.Queue[tuple[str, Frame] | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.stalled_until_ms = 0

    async def run(self, request: web.Request) -> None:
        writer = asyncio.create_task(self._write())
        try:
            async for message in self.ws:
                if message.type != WSMsgType.TEXT:
                    continue
                self._handle(message.data)
                if self.closed.is_set():
                    break
        finally:
            for task in [*self.feeds.values(), writer]:
                task.cancel()
            for task in [*self.feeds.values(), writer]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _handle(self, text: str) -> None:
        context = self.context
        try:
            asked = self.venue.read(text, context.market, context.clock())
        except ValueError as error:
            self.enqueue("control", orjson.dumps({"error": str(error)}))
            return
        for reply in asked.replies:
            self.enqueue("control", reply)
        for sub in asked.unsubscribe:
            task = self.feeds.pop(sub, None)
            if task is not None:
                task.cancel()
        for sub in asked.subscribe:
            if sub in self.feeds:
                continue
            self.context.stats.subscriptions[f"{self.venue.name}.{sub.channel}"] += 1
            self.feeds[sub] = asyncio.create_task(self._feed(sub))

    def enqueue(self, channel: str, frame: Frame) -> None:
        if self.queue.qsize() >= SEND_QUEUE_LIMIT:
            self.close_now()
            return
        self.queue.put_nowait((channel, frame))

    def close_now(self) -> None:
        """Drop the connection without a closing handshake, as a network failure would."""
        self.closed.set()
        transport = self.ws._req.transport if self.ws._req is not None else None
        if transport is not None:
            transport.close()
        self.queue.put_nowait(None)

    async def _write(self) -> None:
        plan, stats, name = self.context.plan, self.context.stats, self.venue.name
        held: tuple[str, Frame] | None = None  # a frame a `reorder` fault sends after the next one
        while True:
            item = await self.queue.get()
            if item is None or self.ws.closed:
                return
            channel, frame = item
            now_ms = self.context.clock()
            if channel != "control":
                if now_ms < self.stalled_until_ms:
                    continue
                action = plan.decide(name, channel)
                if action is not None:
                    if action.kind == "drop":
                        self.close_now()
                        return
                    if action.kind == "stall":
                        self.stalled_until_ms = now_ms + int(action.seconds * 1000)
                        continue
                    if action.kind == "skip":
                        continue
                    if action.kind == "reorder":
                        held = item
                        continue
                    if action.kind == "corrupt":
                        frame = _corrupted(frame)
            await self._send(frame)
            stats.frames[f"{name}.{channel}"] += 1
            if held is not None and channel != "control":
                await self._send(held[1])
                stats.frames[f"{name}.{held[0]}"] += 1
                held = None

    async def _send(self, frame: Frame) -> None:
        try:
            if isinstance(frame, bytes):
                await self.ws.send_str(frame.decode())
            else:
                await self.ws.send_str(frame)
        except (ConnectionResetError, RuntimeError):
            self.closed.set()

    async def _feed(self, sub: Subscription) -> None:
        feeders = {
            "trades": self._feed_trades,
            "ticker": self._feed_ticker,
            "ohlcv": self._feed_klines,
            "orderbook": self._feed_book,
        }
        try:
            await feeders[sub.channel](sub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream feed failed", extra={"subscription": sub.name})

    async def _feed_trades(self, sub: Subscription) -> None:
        market, clock = self.context.market, self.context.clock
        cursor = clock()
        while True:
            await asyncio.sleep(TRADE_POLL_MS / 1000)
            now = clock()
            trades = market.trades(sub.symbol_id, TradeWindow(start_ms=cursor + 1, end_ms=now, limit=1_000_000), now)
            cursor = now
            for frame in self.venue.trade_frames(sub, trades, now):
                self.enqueue(sub.channel, frame)
            if now % MINUTE_MS >= PREPARE_AFTER_MS:
                self._prepare_next_minute(sub.symbol_id, now)

    def _prepare_next_minute(self, symbol_id: str, now: int) -> None:
        """Have the next minute's trades made before it starts, by a task of its own in small steps
        (a market that makes its trades: RandomWalkMarket.prepare_minute), one minute at a time:
        made on their first request, ten busy symbols' minutes (~10k trades each) held every feed
        up for a second at each minute's start. The feed does not wait for it."""
        context = self.context
        minute = now - now % MINUTE_MS + MINUTE_MS
        prepare = getattr(context.market, "prepare_minute", None)
        if prepare is None or (symbol_id, minute) in context.prepared:
            return
        context.prepared.difference_update([key for key in context.prepared if key[1] < minute])
        context.prepared.add((symbol_id, minute))

        async def one_at_a_time() -> None:
            async with context.preparing:
                await prepare(symbol_id, minute, PREPARE_PAUSE_S)

        task = asyncio.create_task(one_at_a_time())
        context.preparing_tasks.add(task)
        task.add_done_callback(context.preparing_tasks.discard)

    async def _feed_ticker(self, sub: Subscription) -> None:
        market, clock = self.context.market, self.context.clock
        while True:
            now = clock()
            self.enqueue(sub.channel, self.venue.ticker_frame(sub, ticker_snapshot(market, sub.symbol_id, now), now))
            await _sleep_until_next(clock, TICKER_PUSH_MS)

    async def _feed_klines(self, sub: Subscription) -> None:
        market, clock = self.context.market, self.context.clock
        interval = sub.interval
        assert interval is not None
        forming: int | None = None  # open time of the candle last sent as forming
        while True:
            now = clock()
            newest = market.klines(sub.symbol_id, interval, KlineWindow(None, now, 2), now)
            for kline in newest:
                closed = kline.close_time < now
                if closed and forming is not None and kline.open_time >= forming:
                    self.enqueue(sub.channel, self.venue.kline_frame(sub, kline, True, now))
                    forming = None
                elif not closed:
                    self.enqueue(sub.channel, self.venue.kline_frame(sub, kline, False, now))
                    forming = kline.open_time
            await _sleep_until_next(clock, KLINE_PUSH_MS)

    async def _feed_book(self, sub: Subscription) -> None:
        market, clock = self.context.market, self.context.clock
        if not isinstance(market, LiveMarket):
            raise RuntimeError("order book streams need a live market (--book-tick-ms)")
        tick = market.tick_at(clock())
        state = market.book_at(sub.symbol_id, tick)
        view = _view(state, sub.depth)
        if self.venue.sends_book_snapshot(sub):
            snapshot = BookView(state.update_id, state.update_id, tick, *_levels(view), snapshot=True)
            self.enqueue(sub.channel, self.venue.book_frame(sub, snapshot, clock()))
        while True:
            await _sleep_until(clock, (tick + 1) * market.tick_ms)
            # One delta per tick, late ones too: Bybit's `u` counts messages, so none may be merged.
            for step in range(tick + 1, market.tick_at(clock()) + 1):
                after = market.advance(sub.symbol_id, state, step)
                after_view = _view(after, sub.depth)
                bids = _diff(view[0], after_view[0])
                asks = _diff(view[1], after_view[1])
                if asks and self.context.plan.take("cross", self.venue.name, sub.channel):
                    # A bid at the best ask's price: the book the client builds is crossed.
                    best_ask = min(after_view[1], key=float)
                    bids = [*bids, (best_ask, "1.00000000")]
                delta = BookView(state.update_id + 1, after.update_id, step, bids, asks)
                self.enqueue(sub.channel, self.venue.book_frame(sub, delta, clock()))
                state, view, tick = after, after_view, step


def _corrupted(frame: Frame) -> bytes:
    """The frame with every price (`p`, `price`) replaced by text no parser takes for a number."""

    def spoil(value: object) -> object:
        if isinstance(value, dict):
            return {k: "garbage" if k in ("p", "price") else spoil(v) for k, v in value.items()}
        if isinstance(value, list):
            return [spoil(item) for item in value]
        return value

    return orjson.dumps(spoil(orjson.loads(frame)))


def _view(state: BookState, depth: int | None) -> tuple[dict[str, str], dict[str, str]]:
    top = state.top(depth if depth is not None else 1_000_000)
    return (
        {_fmt(level.price): _fmt(level.size) for level in top.bids},
        {_fmt(level.price): _fmt(level.size) for level in top.asks},
    )


def _levels(view: tuple[dict[str, str], dict[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return list(view[0].items()), list(view[1].items())


def _diff(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str]]:
    changed = [(price, size) for price, size in after.items() if before.get(price) != size]
    removed = [(price, "0.00000000") for price in before if price not in after]
    return changed + removed


def _fmt(value: object) -> str:
    return f"{value:.8f}"


async def _sleep_until(clock: Clock, when_ms: int) -> None:
    wait = when_ms - clock()
    if wait > 0:
        await asyncio.sleep(wait / 1000)


async def _sleep_until_next(clock: Clock, every_ms: int) -> None:
    now = clock()
    await _sleep_until(clock, now - now % every_ms + every_ms)


def websocket_handler(venue: WsVenue, context: StreamContext) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        session = Session(venue, ws, context)
        context.sessions.add(session)
        context.stats.connections += 1
        context.stats.open_connections += 1
        try:
            await session.run(request)
        finally:
            context.sessions.discard(session)
            context.stats.open_connections -= 1
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    return handle
